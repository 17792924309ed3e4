//! The DICOM listener (`[dicom] listen`): a verification and storage SCP on hie-dicom-net that
//! keeps what a manifest needs of each instance and none of its pixel data, and the destination
//! of our own C-MOVEs (sub-operations go to the `MoveRouter` the PACS adapter shares).
//!
//! Each C-STORE's data set streams through a `HeaderCollector`: the elements are scanned as the
//! fragments arrive and only the prefix before the top-level Pixel Data (7FE0,0010) is kept, at
//! most [`ListenerConfig::max_header_bytes`]. At the end of the data set the prefix gets generated
//! File Meta Information (a Part 10 object cut before Pixel Data), is read back to check it names
//! the instance the C-STORE-RQ announced, and is written with `hie_store::studies::
//! put_received_instance` together with `hie_broker::studies::note_arrival` in one transaction;
//! only after the commit is C-STORE-RSP Success sent, and the study scheduler woken.
//!
//! Statuses (PS3.4 B.2.3), each with an Error Comment saying why:
//! - 0xA700 (refused: out of resources): the header exceeds the cap, or the store failed (the
//!   sender retries later);
//! - 0xA900 (data set does not match SOP class): the data set names another SOP class;
//! - 0xC000 (cannot understand): the data set is malformed, or lacks the UIDs a manifest needs,
//!   or names another instance than the C-STORE-RQ.
//!
//! Deflated Explicit VR Little Endian and Explicit VR Big Endian are never accepted in
//! negotiation (the scan reads little-endian, uninflated data sets).
//!
//! Patient data never reaches the log: only UIDs, AE titles and addresses do, and at debug level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hie_dicom_net::header::UNREADABLE_TRANSFER_SYNTAXES;
use hie_dicom_net::{
    AssociationInfo, HeaderCollector, HeaderError, InstanceInfo, MetaIdentity, MoveRouter, NetError, ScpHandler,
    ServerEvent, ServerPolicy, ServerTimeouts, StoreSink, part10_header,
};
use hie_dimse::Status;
use hie_dimse::command::CStoreRq;
use hie_store::Store;
use hie_store::studies::ReceivedInstance;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// The listener's settings (`[dicom]`).
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Our AE title: the Called AE Title must be it.
    pub ae_title: String,
    /// Calling AE titles let in; empty: any.
    pub allowed_calling_ae_titles: Vec<String>,
    pub max_associations: usize,
    /// ARTIM: how long a peer may take to open or release an association.
    pub association_timeout: Duration,
    /// An association silent this long is aborted.
    pub idle_timeout: Duration,
    /// The quiet period a C-STORE arrival restarts for its study.
    pub quiet_period: Duration,
    /// The largest header (data set before Pixel Data) kept.
    pub max_header_bytes: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DicomStats {
    pub associations_accepted: AtomicU64,
    pub associations_rejected: AtomicU64,
    /// Connections that ended before any association (ARTIM, a bad first PDU, both caps).
    pub connections_dropped: AtomicU64,
    /// Instances whose header was committed (and answered Success).
    pub instances_stored: AtomicU64,
    /// Instances answered with a failure status by the listener.
    pub instances_refused: AtomicU64,
}

/// The hie-dicom-net policy for `config`.
pub fn policy(config: &ListenerConfig) -> ServerPolicy {
    let mut policy = ServerPolicy::new(config.ae_title.clone());
    policy.allowed_calling_ae_titles =
        (!config.allowed_calling_ae_titles.is_empty()).then(|| config.allowed_calling_ae_titles.clone());
    policy.max_associations = config.max_associations.max(1);
    policy.timeouts = ServerTimeouts { association: config.association_timeout, idle: config.idle_timeout };
    policy.refused_transfer_syntaxes = UNREADABLE_TRANSFER_SYNTAXES.iter().map(|ts| (*ts).to_owned()).collect();
    policy
}

/// What the listener needs from the rest of the broker.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    pub store: Store,
    /// Shared with the PACS adapter, which registers its C-MOVEs in it.
    pub router: MoveRouter,
    /// The study scheduler's waker, notified after each commit.
    pub scheduler: Arc<Notify>,
    pub stats: Arc<DicomStats>,
}

/// Serves the listener on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    context: ListenerContext,
    shutdown: watch::Receiver<bool>,
) {
    let addr = listener.local_addr().ok();
    let policy = Arc::new(policy(&config));
    tracing::info!(addr = ?addr, ae_title = %config.ae_title, "DICOM listener serving");
    let handler = Listener { context, quiet_period: config.quiet_period, max_header_bytes: config.max_header_bytes };
    hie_dicom_net::serve(listener, policy, handler, shutdown).await;
}

struct Listener {
    context: ListenerContext,
    quiet_period: Duration,
    max_header_bytes: usize,
}

impl ScpHandler for Listener {
    type Sink = HeaderSink;

    async fn store_sink(
        &self,
        association: &AssociationInfo,
        request: &CStoreRq,
        transfer_syntax_uid: &str,
    ) -> Result<HeaderSink, Status> {
        Ok(HeaderSink {
            context: self.context.clone(),
            quiet_period: self.quiet_period,
            max_header_bytes: self.max_header_bytes,
            calling_ae_title: association.calling_ae.clone(),
            peer: association.peer_addr,
            sop_class_uid: request.affected_sop_class_uid.clone(),
            sop_instance_uid: request.affected_sop_instance_uid.clone(),
            transfer_syntax_uid: transfer_syntax_uid.to_owned(),
            collector: None,
            comment: None,
        })
    }

    fn move_router(&self) -> Option<&MoveRouter> {
        Some(&self.context.router)
    }

    fn observe(&self, event: ServerEvent<'_>) {
        let stats = &self.context.stats;
        let counter = match event {
            ServerEvent::Accepted(_) => &stats.associations_accepted,
            ServerEvent::Rejected { .. } => &stats.associations_rejected,
            _ => &stats.connections_dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One instance on its way to the store.
struct HeaderSink {
    context: ListenerContext,
    quiet_period: Duration,
    max_header_bytes: usize,
    calling_ae_title: String,
    peer: SocketAddr,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax_uid: String,
    collector: Option<HeaderCollector>,
    comment: Option<String>,
}

impl HeaderSink {
    /// Refuses the instance with `status` and why; counted, logged without patient data.
    fn refuse(&mut self, status: Status, why: String) -> Status {
        tracing::info!(
            peer = %self.peer,
            calling = %self.calling_ae_title,
            sop_instance_uid = %self.sop_instance_uid,
            %status,
            reason = %why,
            "C-STORE refused"
        );
        self.context.stats.instances_refused.fetch_add(1, Ordering::Relaxed);
        self.collector = None;
        self.comment = Some(why);
        status
    }

    fn header_refusal(&mut self, error: HeaderError) -> Status {
        let status = match error {
            HeaderError::TooLarge { .. } => Status::OUT_OF_RESOURCES,
            _ => CANNOT_UNDERSTAND,
        };
        self.refuse(status, error.to_string())
    }

    /// Checks the header names the announced instance and commits it with the arrival.
    async fn commit(&mut self, prefix: &[u8]) -> Status {
        let identity = MetaIdentity {
            sop_class_uid: &self.sop_class_uid,
            sop_instance_uid: &self.sop_instance_uid,
            transfer_syntax_uid: &self.transfer_syntax_uid,
            source_ae_title: &self.calling_ae_title,
        };
        let header = part10_header(&identity, prefix);
        let parsed = match hie_kos::read_instance_header(&header) {
            Ok(object) => object,
            Err(error) => return self.refuse(CANNOT_UNDERSTAND, format!("unreadable data set: {error}")),
        };
        let instance = match hie_kos::from_instance_header(&parsed) {
            Ok(instance) => instance,
            Err(error) => return self.refuse(CANNOT_UNDERSTAND, error.to_string()),
        };
        if instance.instance.sop_class_uid != self.sop_class_uid {
            let why = format!("the data set's SOP Class UID is {}", instance.instance.sop_class_uid);
            return self.refuse(Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, why);
        }
        if instance.instance.sop_instance_uid != self.sop_instance_uid {
            let why = format!("the data set is instance {}", instance.instance.sop_instance_uid);
            return self.refuse(CANNOT_UNDERSTAND, why);
        }
        let now = hie_store::now_micros();
        let received = ReceivedInstance {
            sop_instance_uid: instance.instance.sop_instance_uid,
            study_instance_uid: instance.study_instance_uid,
            series_instance_uid: instance.series.series_instance_uid,
            sop_class_uid: instance.instance.sop_class_uid,
            transfer_syntax_uid: self.transfer_syntax_uid.clone(),
            calling_ae_title: self.calling_ae_title.clone(),
            header,
            received_at: now,
        };
        match store_arrival(&self.context.store, &received, self.quiet_period, now).await {
            Ok(()) => {
                self.context.stats.instances_stored.fetch_add(1, Ordering::Relaxed);
                self.context.scheduler.notify_one();
                tracing::debug!(
                    calling = %self.calling_ae_title,
                    study = %received.study_instance_uid,
                    sop_instance_uid = %received.sop_instance_uid,
                    "instance header stored"
                );
                Status::SUCCESS
            }
            Err(error) => {
                tracing::warn!(%error, "storing a received instance failed");
                self.refuse(Status::OUT_OF_RESOURCES, "the broker's store is unavailable".to_owned())
            }
        }
    }
}

impl StoreSink for HeaderSink {
    async fn begin(&mut self, instance: &InstanceInfo) -> Result<(), Status> {
        match HeaderCollector::new(&instance.transfer_syntax_uid, self.max_header_bytes) {
            Ok(collector) => {
                self.collector = Some(collector);
                Ok(())
            }
            Err(error) => Err(self.header_refusal(error)),
        }
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        let Some(collector) = self.collector.as_mut() else { return Err(Status::UNABLE_TO_PROCESS) };
        match collector.push(&fragment) {
            Ok(()) => Ok(()),
            Err(error) => Err(self.header_refusal(error)),
        }
    }

    async fn end(&mut self) -> Status {
        let Some(collector) = self.collector.take() else { return Status::UNABLE_TO_PROCESS };
        match collector.finish() {
            Ok(prefix) => self.commit(&prefix).await,
            Err(error) => self.header_refusal(error),
        }
    }

    async fn abort(&mut self, reason: &NetError) {
        tracing::debug!(peer = %self.peer, %reason, "C-STORE broke off; nothing stored");
        self.collector = None;
    }

    fn error_comment(&mut self) -> Option<String> {
        self.comment.take()
    }
}

/// The header and the study's arrival, in one transaction.
async fn store_arrival(
    store: &Store,
    received: &ReceivedInstance,
    quiet_period: Duration,
    now: i64,
) -> Result<(), hie_store::StoreError> {
    let mut tx = store.begin().await?;
    hie_store::studies::put_received_instance(&mut tx, received).await?;
    hie_broker::studies::note_arrival(&mut tx, &received.study_instance_uid, quiet_period, now).await?;
    tx.commit().await
}

/// PS3.4 B.2.3: "Error: Cannot understand" (C000 to CFFF); we use the first code.
const CANNOT_UNDERSTAND: Status = Status(0xC000);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allowed: &[&str]) -> ListenerConfig {
        ListenerConfig {
            ae_title: "HIE_EDGE".to_owned(),
            allowed_calling_ae_titles: allowed.iter().map(|ae| (*ae).to_owned()).collect(),
            max_associations: 0,
            association_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(7),
            quiet_period: Duration::from_secs(1),
            max_header_bytes: 1024,
        }
    }

    #[test]
    fn the_policy_follows_the_dicom_section_and_refuses_unreadable_syntaxes() {
        let open = policy(&config(&[]));
        assert_eq!(open.ae_title, "HIE_EDGE");
        assert_eq!(open.allowed_calling_ae_titles, None, "an empty list lets any calling AE in");
        assert_eq!(open.max_associations, 1, "at least one association");
        assert_eq!(open.timeouts, ServerTimeouts { association: Duration::from_secs(5), idle: Duration::from_secs(7) });
        for ts in ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"] {
            assert!(open.refused_transfer_syntaxes.iter().any(|refused| refused == ts), "{ts}");
        }
        let closed = policy(&config(&["CT1", "PACS"]));
        assert_eq!(closed.allowed_calling_ae_titles, Some(vec!["CT1".to_owned(), "PACS".to_owned()]));
    }
}
