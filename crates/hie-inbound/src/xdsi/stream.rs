//! The response bodies of `/xdsi/imaging-source`: the MTOM root part, then one part per
//! document, streamed.
//!
//! RAD-69: the PACS retrieval runs in its own task and sends [`RetrieveEvent`]s into a bounded
//! channel. Before the answer is committed, [`Retrieval::first_instance`] waits for the first
//! instance in a requested transfer syntax: instances the PACS refuses or sends in another syntax
//! before it are answered as errors in the root part instead of being promised. After the root
//! part, each instance becomes a part as its events arrive (any order: parts are found by
//! Content-ID, XOP 1.0 section 3), a DIMSE data set behind the File Meta Information group of
//! `hie_dicom_net::file_meta`. Any failure after that (an instance lost or never sent, a transfer syntax that was not
//! asked for) ends the body with an error, which makes hyper abort the response.
//!
//! Dropping the body (the client went away) drops the channel's receiver, which cancels the PACS
//! retrieval (the port's contract: the adapter stops, its association is released or aborted);
//! the task is left to do that and aborted only if it has not ended after a grace period.
//!
//! ITI-43: one manifest is read from the store per part, as the part is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use hie_broker::ports::{InstanceKey, Pacs, PacsError, RetrieveEvent, RetrieveReport};
use hie_dicom_net::MetaIdentity;
use hie_store::Store;
use hie_xds::mtom::MtomWriter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{MIME_DICOM, XdsiStats};

/// Why an instance was not promised after all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The PACS did not give it in any requested transfer syntax.
    TransferSyntax,
    /// The PACS failed to deliver it.
    Failed(String),
}

/// What a retrieval task ends with: its report, and the error that stopped it early, if any.
type TaskOutcome = (RetrieveReport, Option<PacsError>);

/// The PACS retrieval task. Dropped with its channel's receiver (declared before it, so dropped
/// first), it is left to end on its own: the adapter sees its sink closed and cancels the way its
/// protocol wants (C-GET: C-CANCEL, the sub-operations in flight refused, the final response,
/// A-RELEASE; DICOMweb: the connection closed). Aborting it instead would drop the association
/// in the middle of an operation (Orthanc logs "Store Request Failed: DUL Peer Requested
/// Release"). It is aborted only if it has not ended after [`CANCEL_GRACE`].
struct TaskGuard {
    handle: Option<JoinHandle<TaskOutcome>>,
}

impl TaskGuard {
    /// The task's outcome once it has ended (`None` if it panicked or was aborted).
    async fn join(&mut self) -> Option<TaskOutcome> {
        let handle = self.handle.take()?;
        handle.await.ok()
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let Some(mut handle) = self.handle.take() else { return };
        if handle.is_finished() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if tokio::time::timeout(CANCEL_GRACE, &mut handle).await.is_err() {
                        tracing::warn!(grace = ?CANCEL_GRACE, "A cancelled PACS retrieval did not end; aborting it.");
                        handle.abort();
                    }
                });
            }
            Err(_) => handle.abort(),
        }
    }
}

/// One running PACS retrieval in `hie_retrieve_pacs_in_flight`.
struct PacsInFlight(Arc<XdsiStats>);

impl PacsInFlight {
    fn new(stats: Arc<XdsiStats>) -> PacsInFlight {
        stats.pacs_in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PacsInFlight(stats)
    }
}

impl Drop for PacsInFlight {
    fn drop(&mut self) {
        self.0.pacs_in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long a cancelled PACS retrieval may take to end on its own: beyond the adapters' own
/// bounds (a DIMSE timeout for the final response after C-CANCEL, then the release).
const CANCEL_GRACE: Duration = Duration::from_secs(120);

/// A retrieval that has been started and not yet committed to.
pub struct Retrieval {
    events: mpsc::Receiver<RetrieveEvent>,
    task: TaskGuard,
    wanted: HashSet<String>,
    syntaxes: Vec<String>,
}

/// What the first instance told.
pub struct Gate {
    /// The retrieval, ready to stream, when an instance in a requested syntax arrived.
    pub retrieval: Option<Started>,
    /// Instances refused before that, by SOP Instance UID.
    pub refused: HashMap<String, Refusal>,
}

/// A retrieval whose first instance has begun.
pub struct Started {
    events: mpsc::Receiver<RetrieveEvent>,
    task: TaskGuard,
    first: RetrieveEvent,
}

impl Retrieval {
    /// Starts fetching `keys` (any studies) in one of `syntaxes`: one `Pacs::retrieve` per study,
    /// in turn, into one channel of `buffer` events.
    pub fn start(
        pacs: Arc<dyn Pacs>,
        keys: Vec<InstanceKey>,
        syntaxes: Vec<String>,
        buffer: usize,
        stats: Arc<XdsiStats>,
    ) -> Retrieval {
        let (sink, events) = mpsc::channel(buffer.max(1));
        let wanted = keys.iter().map(|key| key.sop_instance_uid.clone()).collect();
        let task_syntaxes = syntaxes.clone();
        // Counted before the spawn and uncounted when the task's future is dropped (it ended or
        // was aborted), so the gauge never misses a task.
        let running = PacsInFlight::new(stats);
        let handle = tokio::spawn(async move {
            let _running = running;
            let mut studies: Vec<&str> = Vec::new();
            for key in &keys {
                if !studies.contains(&key.study_instance_uid.as_str()) {
                    studies.push(&key.study_instance_uid);
                }
            }
            let mut report = RetrieveReport::default();
            for study in studies {
                let of_study: Vec<InstanceKey> =
                    keys.iter().filter(|key| key.study_instance_uid == study).cloned().collect();
                match pacs.retrieve(&of_study, &task_syntaxes, sink.clone()).await {
                    Ok(part) => {
                        report.sent.extend(part.sent);
                        report.failed.extend(part.failed);
                    }
                    Err(error) => return (report, Some(error)),
                }
                if sink.is_closed() {
                    break;
                }
            }
            (report, None)
        });
        Retrieval { events, task: TaskGuard { handle: Some(handle) }, wanted, syntaxes }
    }

    /// Waits for the first instance in a requested syntax, or the end of the retrieval.
    pub async fn first_instance(mut self) -> Gate {
        let mut refused = HashMap::new();
        while let Some(event) = self.events.recv().await {
            if let RetrieveEvent::Begin { sop_instance_uid, transfer_syntax_uid, .. } = &event
                && self.wanted.contains(sop_instance_uid)
                && !refused.contains_key(sop_instance_uid)
            {
                if self.syntaxes.contains(transfer_syntax_uid) {
                    return Gate {
                        retrieval: Some(Started { events: self.events, task: self.task, first: event }),
                        refused,
                    };
                }
                // The PACS ignored the requested syntaxes for this one: it is not passed on.
                refused.insert(sop_instance_uid.clone(), Refusal::TransferSyntax);
            }
            // Data, End and Lost here belong to an instance that is not passed on.
        }
        match self.task.join().await {
            Some((report, error)) => {
                for (sop, why) in report.failed {
                    // The PACS answered and holds the instance (its lookup just said so), yet
                    // delivered it in none of the requested syntaxes.
                    let refusal = match &error {
                        None => Refusal::TransferSyntax,
                        Some(_) => Refusal::Failed(why),
                    };
                    refused.entry(sop).or_insert(refusal);
                }
                let why =
                    error.map_or_else(|| "not delivered by the imaging source".to_owned(), |error| error.to_string());
                for sop in &self.wanted {
                    refused.entry(sop.clone()).or_insert_with(|| Refusal::Failed(why.clone()));
                }
            }
            None => {
                for sop in &self.wanted {
                    refused
                        .entry(sop.clone())
                        .or_insert_with(|| Refusal::Failed("the retrieval task failed".to_owned()));
                }
            }
        }
        Gate { retrieval: None, refused }
    }
}

impl Started {
    /// The parts of the answer: `content_ids` maps each promised SOP Instance UID to its part.
    pub fn into_parts(self, content_ids: HashMap<String, String>, syntaxes: Vec<String>) -> Rad69Parts {
        Rad69Parts {
            events: self.events,
            task: self.task,
            pending: Some(self.first),
            content_ids,
            syntaxes,
            sent: HashSet::new(),
            current: Current::Between,
        }
    }
}

/// The parts that follow the root part.
pub enum Parts {
    /// Nothing is returned.
    None,
    Rad69(Box<Rad69Parts>),
    Iti43 {
        store: Store,
        manifests: Vec<Manifest>,
    },
}

/// One ITI-43 manifest to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub content_id: String,
    pub study_instance_uid: String,
    pub version: i64,
}

/// A committed RAD-69 retrieval.
pub struct Rad69Parts {
    events: mpsc::Receiver<RetrieveEvent>,
    task: TaskGuard,
    pending: Option<RetrieveEvent>,
    content_ids: HashMap<String, String>,
    syntaxes: Vec<String>,
    sent: HashSet<String>,
    current: Current,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Current {
    Between,
    Forwarding(String),
    Skipping,
}

/// What the completion log line says.
#[derive(Debug, Clone)]
pub struct LogContext {
    pub partner: String,
    pub transaction: &'static str,
    pub n_requested: usize,
    pub n_returned: usize,
    pub n_refused: usize,
    pub status: &'static str,
    pub started: Instant,
}

/// The whole response body: the root part, the document parts, the closing delimiter.
pub fn body(writer: MtomWriter, root_xml: Vec<u8>, parts: Parts, stats: Arc<XdsiStats>, log: LogContext) -> Body {
    stats.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let head = Bytes::from(writer.head(&root_xml));
    drop(root_xml);
    let state =
        BodyState { writer, head: Some(head), parts, stats, log, finished: false, n_bytes: 0, next_manifest: 0 };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let chunk = state.next_chunk().await?;
        Some((chunk, state))
    });
    Body::from_stream(stream)
}

struct BodyState {
    writer: MtomWriter,
    head: Option<Bytes>,
    parts: Parts,
    stats: Arc<XdsiStats>,
    log: LogContext,
    finished: bool,
    n_bytes: u64,
    next_manifest: usize,
}

impl BodyState {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if let Some(head) = self.head.take() {
            return Some(Ok(head));
        }
        if self.finished {
            return None;
        }
        match &mut self.parts {
            Parts::None => Some(Ok(self.close())),
            Parts::Iti43 { store, manifests } => {
                let Some(manifest) = manifests.get(self.next_manifest).cloned() else { return Some(Ok(self.close())) };
                self.next_manifest += 1;
                match store.manifest_kos(&manifest.study_instance_uid, manifest.version).await {
                    Ok(Some(kos)) => {
                        let mut chunk = BytesMut::from(&self.writer.part_header(&manifest.content_id, MIME_DICOM)[..]);
                        chunk.extend_from_slice(&kos);
                        self.count(kos.len());
                        Some(Ok(chunk.freeze()))
                    }
                    Ok(None) => Some(Err(self.abort("a manifest disappeared from the store".to_owned()))),
                    Err(error) => Some(Err(self.abort(format!("reading a manifest: {error}")))),
                }
            }
            Parts::Rad69(_) => self.next_instance_chunk().await,
        }
    }

    async fn next_instance_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            let Parts::Rad69(parts) = &mut self.parts else { return None };
            let event = match parts.pending.take() {
                Some(event) => Some(event),
                None => parts.events.recv().await,
            };
            match event {
                Some(RetrieveEvent::Begin { sop_class_uid, sop_instance_uid, transfer_syntax_uid, part10 }) => {
                    if parts.current != Current::Between {
                        return Some(Err(self.abort("the PACS began an instance inside another".to_owned())));
                    }
                    let promised = parts
                        .content_ids
                        .get(&sop_instance_uid)
                        .filter(|_| !parts.sent.contains(&sop_instance_uid))
                        .cloned();
                    let Some(content_id) = promised else {
                        parts.current = Current::Skipping;
                        continue;
                    };
                    if !parts.syntaxes.contains(&transfer_syntax_uid) {
                        let why =
                            format!("the PACS sent an instance in {transfer_syntax_uid}, which was not requested");
                        return Some(Err(self.abort(why)));
                    }
                    let mut chunk = BytesMut::from(&self.writer.part_header(&content_id, MIME_DICOM)[..]);
                    if !part10 {
                        // The PACS's AE title is not known here: Source Application Entity Title
                        // (0002,0016, optional) is left out.
                        let identity = MetaIdentity {
                            sop_class_uid: &sop_class_uid,
                            sop_instance_uid: &sop_instance_uid,
                            transfer_syntax_uid: &transfer_syntax_uid,
                            source_ae_title: "",
                        };
                        chunk.extend_from_slice(&hie_dicom_net::file_meta(&identity));
                    }
                    parts.current = Current::Forwarding(sop_instance_uid);
                    return Some(Ok(chunk.freeze()));
                }
                Some(RetrieveEvent::Data(bytes)) => match parts.current {
                    Current::Forwarding(_) => {
                        self.count(bytes.len());
                        return Some(Ok(bytes));
                    }
                    Current::Skipping => {}
                    Current::Between => {
                        return Some(Err(self.abort("the PACS sent data outside an instance".to_owned())));
                    }
                },
                Some(RetrieveEvent::End) => match std::mem::replace(&mut parts.current, Current::Between) {
                    Current::Forwarding(sop) => {
                        parts.sent.insert(sop);
                    }
                    Current::Skipping => {}
                    Current::Between => {
                        return Some(Err(self.abort("the PACS ended an instance it had not begun".to_owned())));
                    }
                },
                Some(RetrieveEvent::Lost(why)) => match std::mem::replace(&mut parts.current, Current::Between) {
                    Current::Forwarding(_) => {
                        return Some(Err(self.abort(format!("the PACS lost an instance: {why}"))));
                    }
                    Current::Skipping | Current::Between => {}
                },
                None => {
                    let outcome = parts.task.join().await;
                    if parts.current != Current::Between {
                        return Some(Err(self.abort("the retrieval ended inside an instance".to_owned())));
                    }
                    let n_missing = parts.content_ids.len().saturating_sub(parts.sent.len());
                    if n_missing == 0 {
                        return Some(Ok(self.close()));
                    }
                    let why = match outcome {
                        Some((_, Some(error))) => format!("{n_missing} promised instance(s) not delivered: {error}"),
                        Some((report, None)) => format!(
                            "{n_missing} promised instance(s) not delivered ({} reported failed)",
                            report.failed.len()
                        ),
                        None => format!("{n_missing} promised instance(s) not delivered: the retrieval task failed"),
                    };
                    return Some(Err(self.abort(why)));
                }
            }
        }
    }

    fn count(&mut self, n: usize) {
        self.n_bytes += u64::try_from(n).unwrap_or(u64::MAX);
        self.stats.add_bytes(n);
    }

    /// The closing delimiter: the answer is complete.
    fn close(&mut self) -> Bytes {
        self.finished = true;
        let log = &self.log;
        tracing::info!(
            partner = %log.partner,
            transaction = log.transaction,
            requested = log.n_requested,
            returned = log.n_returned,
            refused = log.n_refused,
            status = log.status,
            bytes = self.n_bytes,
            elapsed_ms = log.started.elapsed().as_millis() as u64,
            "Retrieval answered."
        );
        Bytes::from(self.writer.closing())
    }

    /// Ends the body with an error: hyper aborts the response rather than let it look complete.
    fn abort(&mut self, why: String) -> std::io::Error {
        self.finished = true;
        self.stats.aborted();
        let log = &self.log;
        tracing::warn!(
            partner = %log.partner,
            transaction = log.transaction,
            requested = log.n_requested,
            bytes = self.n_bytes,
            error = %why,
            "Retrieval aborted after its status was sent."
        );
        std::io::Error::other(why)
    }
}

impl Drop for BodyState {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if !self.finished {
            self.stats.aborted();
            let log = &self.log;
            tracing::info!(
                partner = %log.partner,
                transaction = log.transaction,
                bytes = self.n_bytes,
                "Retrieval cancelled: the client went away."
            );
        }
    }
}
