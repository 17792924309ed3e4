//! The identity feed sender (ITI-8 Patient Identity Source): drains the `iti8` outbox topic to
//! the registry's MLLP endpoint (`[registry] feed = "mllp://host:port"`), one message per item,
//! each answered by an HL7 ACK before the item is done.
//!
//! Each message is built when it is sent, from the store ([`hie_broker::feed::iti8_message`]),
//! with MSH-10 derived from the outbox item id, so a retry after a lost ACK carries the same
//! control ID and a receiver that dedupes by MSH-10 applies it once. The ACK must answer that
//! control ID (MSA-2): an ACK for another message is never taken for ours.
//!
//! Connections stay open between deliveries (up to [`MAX_IDLE_CONNECTIONS`], each reused for at
//! most [`MAX_IDLE`] after its last answer), as MLLP intends: a connection per message cost a TCP
//! handshake, an accept and a connection task on each side for every feed, and under a burst of
//! ADT that was a good part of what the feed took from the broker. A reused connection that turns
//! out closed (the receiver's idle timeout, a restart) is dropped and the message goes once more
//! on a fresh one; it carries the same control ID, so a receiver that saw it applies it once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hie_broker::feed::{FeedError, FeedItem, FeedParties, iti8_message};
use hie_core::AffinityDomain;
use hie_hl7::mllp::{MllpDecoder, encode};
use hie_store::Store;
use hie_store::outbox::Claimed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::deliver::{Deliver, DeliveryError, DeliveryFuture};

/// Largest ACK read back.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// Open connections kept for the next deliveries: as many as the outbox worker runs at once by
/// default, so a steady feed never connects.
pub const MAX_IDLE_CONNECTIONS: usize = 16;

/// The longest a connection waits unused before it is closed rather than reused: well inside
/// any receiver's idle timeout (ours is 60 s by default), so a reused one is rarely stale.
pub const MAX_IDLE: Duration = Duration::from_secs(5);

/// Where and how the feed goes.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// `host:port` of the registry's MLLP listener.
    pub address: String,
    pub parties: FeedParties,
    pub connect_timeout: Duration,
    /// Longest wait for the ACK.
    pub ack_timeout: Duration,
}

/// Sends identity feeds over MLLP.
#[derive(Debug, Clone)]
pub struct MllpFeed {
    store: Store,
    domain: AffinityDomain,
    settings: FeedSettings,
    /// Connections between deliveries, most recently used last.
    idle: Arc<Mutex<Vec<Connection>>>,
}

/// An open connection to the receiver, with what it has read beyond the last ACK (nothing, or
/// it is not reused).
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    idle_since: Instant,
}

/// How an exchange on one connection failed.
enum ExchangeError {
    /// The connection broke (closed, reset) before an ACK came back: worth one more try on a
    /// fresh connection if this one had been reused.
    Broken(DeliveryError),
    /// Anything else (no ACK in time, an unreadable answer): the delivery fails.
    Failed(DeliveryError),
}

impl MllpFeed {
    pub fn new(store: Store, domain: AffinityDomain, settings: FeedSettings) -> MllpFeed {
        MllpFeed { store, domain, settings, idle: Arc::new(Mutex::new(Vec::new())) }
    }

    async fn deliver_item(&self, item: &Claimed) -> Result<(), DeliveryError> {
        let Some(feed) = FeedItem::parse(&item.payload) else {
            return Err(DeliveryError::Permanent(format!("outbox item {}: not a feed payload", item.id)));
        };
        let store_error = |error: hie_store::StoreError| DeliveryError::Retryable(format!("store: {error}"));
        let Some(patient) = self.store.patient_identity(feed.patient).await.map_err(store_error)? else {
            return Err(DeliveryError::Permanent(format!("patient #{} is not in the store", feed.patient)));
        };
        let prior = match feed.prior {
            Some(prior) => self.store.patient_identity(prior).await.map_err(store_error)?,
            None => None,
        };
        let control_id = format!("HIEF{}", item.id);
        let timestamp = hie_core::clock::hl7_timestamp(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
        );
        let message = match iti8_message(
            &feed,
            &patient,
            prior.as_ref(),
            &self.domain,
            &self.settings.parties,
            &control_id,
            &timestamp,
        ) {
            Ok(message) => message,
            Err(FeedError::NoAffinityDomainId(patient_id)) => {
                // The link was undone since the item was queued (an identifier change): the
                // registry has nothing to learn. Blocking the patient's later items would be worse.
                tracing::warn!(item = item.id, patient_id, "identity feed skipped: no affinity-domain identifier now");
                return Ok(());
            }
        };
        let ack = self.exchange(message.as_bytes()).await?;
        check_ack(&ack, &control_id)
    }

    /// Sends one framed message and reads one framed answer, on a kept connection if there is
    /// one (see the module doc).
    async fn exchange(&self, message: &[u8]) -> Result<String, DeliveryError> {
        let mut frame = Vec::with_capacity(message.len() + 3);
        encode(message, &mut frame);
        if let Some(mut connection) = self.take_idle() {
            match self.exchange_on(&mut connection, &frame).await {
                Ok(ack) => {
                    self.keep(connection);
                    return Ok(ack);
                }
                Err(ExchangeError::Broken(error)) => {
                    tracing::debug!(%error, "kept registry feed connection was closed; sending on a new one");
                }
                Err(ExchangeError::Failed(error)) => return Err(error),
            }
        }
        let mut connection = self.connect().await?;
        match self.exchange_on(&mut connection, &frame).await {
            Ok(ack) => {
                self.keep(connection);
                Ok(ack)
            }
            Err(ExchangeError::Broken(error) | ExchangeError::Failed(error)) => Err(error),
        }
    }

    async fn connect(&self) -> Result<Connection, DeliveryError> {
        let address = &self.settings.address;
        let unreachable = |error: &dyn std::fmt::Display| {
            DeliveryError::Retryable(format!("registry feed {address}: connect: {error}"))
        };
        let stream = tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable(&"timed out"))?
            .map_err(|error| unreachable(&error))?;
        stream.set_nodelay(true).map_err(|error| unreachable(&error))?;
        Ok(Connection { stream, buffer: BytesMut::with_capacity(4096), idle_since: Instant::now() })
    }

    async fn exchange_on(&self, connection: &mut Connection, frame: &[u8]) -> Result<String, ExchangeError> {
        let address = &self.settings.address;
        let broken = |what: &str, error: &dyn std::fmt::Display| {
            ExchangeError::Broken(DeliveryError::Retryable(format!("registry feed {address}: {what}: {error}")))
        };
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            ExchangeError::Failed(DeliveryError::Retryable(format!("registry feed {address}: {what}: {error}")))
        };
        connection.stream.write_all(frame).await.map_err(|error| broken("send", &error))?;
        let mut decoder = MllpDecoder::new(MAX_ACK_BYTES);
        let Connection { stream, buffer, .. } = connection;
        let read = async {
            loop {
                if let Some(payload) = decoder.decode(buffer).map_err(|error| failed("ACK", &error))? {
                    return Ok(payload);
                }
                if stream.read_buf(buffer).await.map_err(|error| broken("receive", &error))? == 0 {
                    return Err(broken("receive", &"connection closed before the ACK"));
                }
            }
        };
        let payload = tokio::time::timeout(self.settings.ack_timeout, read)
            .await
            .map_err(|_| failed("ACK", &format!("none within {:?}", self.settings.ack_timeout)))??;
        hie_hl7::charset::decode_to_utf8(&payload).map_err(|error| failed("unreadable ACK", &format!("{error:?}")))
    }

    /// The most recently used kept connection that is still fresh; older ones are closed.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|connection| connection.idle_since.elapsed() < MAX_IDLE);
        idle.pop()
    }

    /// Keeps `connection` for a later delivery, unless it has bytes nobody asked for or there
    /// are enough kept already.
    fn keep(&self, mut connection: Connection) {
        if !connection.buffer.is_empty() {
            return;
        }
        connection.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(connection);
        }
    }
}

impl Deliver for MllpFeed {
    fn topic(&self) -> &'static str {
        hie_broker::patients::IDENTITY_FEED_TOPIC
    }

    fn deliver<'a>(&'a self, item: &'a Claimed) -> DeliveryFuture<'a> {
        Box::pin(self.deliver_item(item))
    }
}

/// AA or CA answering `control_id` is success; AR is a refusal for good; AE, or an answer to
/// another message, is retried (HL7 v2.5.1 2.9.2: AE may be transient, AR is not).
fn check_ack(ack: &str, control_id: &str) -> Result<(), DeliveryError> {
    let msa = ack
        .split(['\r', '\n'])
        .find(|segment| segment.starts_with("MSA"))
        .ok_or_else(|| DeliveryError::Retryable("registry feed: answer without MSA".to_owned()))?;
    let separator = msa.chars().nth(3).unwrap_or('|');
    let fields: Vec<&str> = msa.split(separator).collect();
    let code = fields.get(1).copied().unwrap_or_default();
    let answered = fields.get(2).copied().unwrap_or_default();
    let text = fields.get(3).copied().unwrap_or_default();
    if answered != control_id {
        return Err(DeliveryError::Retryable(format!(
            "registry feed: the ACK answers {answered:?}, not our {control_id:?}"
        )));
    }
    match code {
        "AA" | "CA" => Ok(()),
        "AR" | "CR" => Err(DeliveryError::Permanent(format!("registry feed refused ({code}): {text}"))),
        other => Err(DeliveryError::Retryable(format!("registry feed error ({other}): {text}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hie_core::{AssigningAuthority, Oid};
    use tokio::net::TcpListener;

    use super::*;

    /// What the fake receiver does with each connection after its first ACK.
    #[derive(Clone, Copy)]
    enum Receiver {
        /// Answers every frame.
        Stays,
        /// Closes the connection after one answer.
        ClosesAfterOne,
        /// Never answers.
        Silent,
    }

    /// An MLLP receiver that ACKs each frame with its MSH-10 and counts connections.
    async fn receiver(behaviour: Receiver) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut decoder = MllpDecoder::new(MAX_ACK_BYTES);
                    let mut buffer = BytesMut::new();
                    loop {
                        let Ok(Some(message)) = decoder.decode(&mut buffer) else {
                            if stream.read_buf(&mut buffer).await.unwrap_or(0) == 0 {
                                return;
                            }
                            continue;
                        };
                        if matches!(behaviour, Receiver::Silent) {
                            continue;
                        }
                        let text = String::from_utf8_lossy(&message).into_owned();
                        let control_id = text.split('|').nth(9).unwrap_or_default().to_owned();
                        let ack = format!("MSH|^~\\&|R|H|E|E|20261201||ACK|1|P|2.3.1\rMSA|AA|{control_id}\r");
                        let mut frame = Vec::new();
                        encode(ack.as_bytes(), &mut frame);
                        if stream.write_all(&frame).await.is_err() || matches!(behaviour, Receiver::ClosesAfterOne) {
                            return;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    async fn feed(address: String, dir: &std::path::Path) -> MllpFeed {
        let url = format!("sqlite://{}?mode=rwc", dir.join("feed.db").display());
        let store = Store::connect(&hie_store::StoreOptions {
            url,
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        let local = AssigningAuthority {
            namespace_id: "HOSP".to_owned(),
            universal_id: "1.2.840.99999.1.1".to_owned(),
            universal_id_type: "ISO".to_owned(),
        };
        let domain = AffinityDomain::new(Oid::parse("1.3.6.1.4.1.21367.13.20.1000").unwrap(), local);
        let parties = FeedParties {
            sending_application: "E".to_owned(),
            sending_facility: "E".to_owned(),
            receiving_application: "R".to_owned(),
            receiving_facility: "H".to_owned(),
        };
        let settings = FeedSettings {
            address,
            parties,
            connect_timeout: Duration::from_secs(2),
            ack_timeout: Duration::from_millis(300),
        };
        MllpFeed::new(store, domain, settings)
    }

    fn message(control_id: &str) -> String {
        format!("MSH|^~\\&|E|E|R|H|20261201||ADT^A08|{control_id}|P|2.3.1\rEVN|A08\r")
    }

    #[tokio::test]
    async fn deliveries_share_one_kept_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (address, accepted) = receiver(Receiver::Stays).await;
        let feed = feed(address, dir.path()).await;
        for n in 0..5 {
            let control_id = format!("HIEF{n}");
            let ack = feed.exchange(message(&control_id).as_bytes()).await.unwrap();
            check_ack(&ack, &control_id).unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "five messages, one connection");
    }

    #[tokio::test]
    async fn a_kept_connection_found_closed_is_replaced_without_a_failed_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let (address, accepted) = receiver(Receiver::ClosesAfterOne).await;
        let feed = feed(address, dir.path()).await;
        for n in 0..3 {
            let control_id = format!("HIEF{n}");
            let ack = feed.exchange(message(&control_id).as_bytes()).await.expect("sent again on a new connection");
            check_ack(&ack, &control_id).unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_ack_in_time_fails_the_delivery_and_the_connection_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (address, accepted) = receiver(Receiver::Silent).await;
        let feed = feed(address, dir.path()).await;
        for _ in 0..2 {
            let error = feed.exchange(message("HIEF1").as_bytes()).await.unwrap_err();
            assert!(matches!(&error, DeliveryError::Retryable(text) if text.contains("none within")), "{error:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a connection that timed out is not reused");
    }

    #[test]
    fn acks_are_checked_by_code_and_control_id() {
        let ack = |code: &str, id: &str| format!("MSH|^~\\&|R|H|E|E|20261201||ACK|1|P|2.3.1\rMSA|{code}|{id}|text\r");
        assert_eq!(check_ack(&ack("AA", "HIEF1"), "HIEF1"), Ok(()));
        assert_eq!(check_ack(&ack("CA", "HIEF1"), "HIEF1"), Ok(()));
        assert!(matches!(check_ack(&ack("AR", "HIEF1"), "HIEF1"), Err(DeliveryError::Permanent(_))));
        assert!(matches!(check_ack(&ack("AE", "HIEF1"), "HIEF1"), Err(DeliveryError::Retryable(_))));
        assert!(
            matches!(check_ack(&ack("AA", "HIEF2"), "HIEF1"), Err(DeliveryError::Retryable(text)) if text.contains("HIEF2"))
        );
        assert!(matches!(check_ack("garbage", "HIEF1"), Err(DeliveryError::Retryable(_))));
    }
}
