//! Typed DIMSE-C operations as SCU on an [`Association`] (DICOM PS3.7 9.1, 9.3; PS3.4 Annex A,
//! B, C): C-ECHO, C-FIND, C-GET (answering its C-STORE sub-operations on the same association),
//! C-MOVE (its sub-operations arrive at our SCP, correlated through [`MoveRouter`]), C-STORE
//! (streamed from an `AsyncRead`) and C-CANCEL.
//!
//! Synchronous operations only (no Asynchronous Operations Window, PS3.7 D.3.3.3): one operation
//! at a time per association, so Message IDs are unique per association by construction;
//! C-MOVE Message IDs come from the [`MoveRouter`] so that they are also unique among moves in
//! flight process-wide.
//!
//! A total timeout per C-FIND/C-GET/C-MOVE (the caller's `timeout`) cuts off a PACS that sends
//! pending responses forever (dcm4che#199): when it runs out we send C-CANCEL-RQ, wait up to the
//! DIMSE timeout for the final response, and abort the association if none comes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dicom_object::InMemDicomObject;
use dicom_ul::pdu::AbortRQSource;
use hie_dimse::command::{CCancelRq, CEchoRq, CFindRq, CGetRq, CMoveRq, CStoreRq, CStoreRsp, StatusDetail};
use hie_dimse::status::{Outcome, SubOperationFailure, verdict};
use hie_dimse::{Command, DataSetType, Priority, Status, StatusClass, SubOperations, uids};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::association::{AbortedBy, Association, Incoming};
use crate::dataset;
use crate::error::{NetError, TimeoutKind, Violation, status_meaning};
use crate::moves::{MoveEvent, MoveRegistration};
use crate::sink::{InstanceInfo, StoreSink};

/// Caps on a C-FIND: a query that matches more than this is cancelled and reported truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindLimits {
    /// Most matches kept.
    pub max_matches: usize,
    /// Most identifier bytes kept, all matches together.
    pub max_bytes: usize,
    /// Total time for the whole query (`None`: only the DIMSE timeout between PDUs).
    pub timeout: Option<Duration>,
}

impl Default for FindLimits {
    fn default() -> FindLimits {
        FindLimits { max_matches: DEFAULT_MAX_MATCHES, max_bytes: DEFAULT_MAX_MATCH_BYTES, timeout: None }
    }
}

/// Why a C-FIND stopped before the PACS finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindStop {
    TooManyMatches { max: usize },
    TooManyBytes { max: usize },
    TimedOut { after: Duration },
}

/// The result of a C-FIND that got a final response.
#[derive(Debug)]
pub struct FindOutcome {
    /// The matches, decoded, in the order received.
    pub matches: Vec<InMemDicomObject>,
    /// The final status (success, a warning, or 0xFE00 after our C-CANCEL).
    pub status: Status,
    /// Set when we cancelled: the matches are a prefix of what the PACS had.
    pub stopped: Option<FindStop>,
}

/// Options of a C-GET or C-MOVE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetrieveOptions {
    /// Total time for the retrieve (`None`: only the DIMSE timeout between PDUs).
    pub timeout: Option<Duration>,
    /// How many instances the caller expects (for example from a C-FIND); fewer delivered is a
    /// failure even under a final Success.
    pub expected: Option<u32>,
}

/// A finished C-GET or C-MOVE: what the PACS reported and what we saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveOutcome {
    pub final_status: Status,
    /// The final response's counts, or ours when it reported none (see [`get`]).
    pub counts: SubOperations,
    pub error_comment: Option<String>,
    /// Instances that reached our sink and were answered with success or a warning.
    pub stored: u32,
    /// Instances we answered with a failure status (the sink refused them).
    pub refused: u32,
    /// Set (to the total timeout) when we sent C-CANCEL because the operation's total timeout
    /// ran out.
    pub timed_out: Option<Duration>,
    /// Whether we sent C-CANCEL because the sink said its consumer was gone
    /// ([`StoreSink::is_cancelled`]).
    pub cancelled: bool,
    /// The judgement: `hie_dimse::status::verdict` plus our own count of what arrived.
    pub verdict: Result<Outcome, RetrieveFailure>,
}

impl RetrieveOutcome {
    /// The outcome as a result: `Ok` only for a retrieve that delivered everything.
    pub fn into_result(self) -> Result<Outcome, NetError> {
        if let Some(after) = self.timed_out {
            return Err(NetError::Timeout { which: TimeoutKind::Operation, after });
        }
        self.verdict.map_err(NetError::Retrieve)
    }
}

/// Why a C-GET or C-MOVE did not deliver what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetrieveFailure {
    /// The final status and counts say so (PS3.4 C.4.2.3.1, C.4.3.3.1).
    #[error("{failure} ({}){}", status_meaning(failure_status(failure)), error_comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    SubOperations { failure: SubOperationFailure, error_comment: Option<String> },
    /// The PACS claims more instances delivered than reached our sink.
    #[error("final status {status} claims {claimed} instances delivered but {received} reached us")]
    CountMismatch { status: Status, claimed: u32, received: u32 },
}

/// C-ECHO (PS3.7 9.1.5, PS3.4 A.4): the peer's status.
pub async fn echo(association: &mut Association) -> Result<Status, NetError> {
    let pc_id = context_id(association, uids::VERIFICATION)?;
    let message_id = association.next_message_id();
    let request = CEchoRq { message_id, affected_sop_class_uid: uids::VERIFICATION.to_owned() };
    association.send_command(pc_id, &Command::CEchoRq(request)).await?;
    match association.receive().await? {
        Incoming::Command { command: Command::CEchoRsp(response), .. }
            if response.message_id_being_responded_to == message_id =>
        {
            Ok(response.status)
        }
        other => Err(unexpected(association, other, "while waiting for a C-ECHO-RSP").await),
    }
}

/// C-FIND (PS3.7 9.1.2, PS3.4 C.4.1): `identifier` is encoded in the context's transfer syntax;
/// pending matches are decoded with dicom-object (after a bounded pre-scan) and kept up to
/// `limits`; past them we send C-CANCEL and report the query truncated. A failure status is an
/// error ([`NetError::Refused`]); so is a cancel we did not ask for.
pub async fn find(
    association: &mut Association,
    model_sop_class: &str,
    identifier: &InMemDicomObject,
    limits: &FindLimits,
) -> Result<FindOutcome, NetError> {
    let pc_id = context_id(association, model_sop_class)?;
    let transfer_syntax = transfer_syntax(association, pc_id);
    let keys = dataset::encode(identifier, &transfer_syntax).map_err(NetError::InvalidRequest)?;
    let message_id = association.next_message_id();
    let request = CFindRq {
        message_id,
        affected_sop_class_uid: model_sop_class.to_owned(),
        priority: Priority::Medium,
        data_set_type: DataSetType::PRESENT,
    };
    association.send_command(pc_id, &Command::CFindRq(request)).await?;
    association.send_data_set(pc_id, &keys).await?;

    let mut clock = Clock::new(association, limits.timeout);
    let mut matches = Vec::new();
    let mut kept_bytes = 0usize;
    let mut stopped = None;
    // The identifier being received, or `None` while a data set is discarded.
    let mut collecting: Option<Vec<u8>> = None;
    let mut final_status: Option<Status> = None;
    loop {
        let incoming = match clock.next(association, pc_id, message_id).await? {
            Next::Incoming(incoming) => incoming,
            Next::TimedOut => {
                stopped.get_or_insert(FindStop::TimedOut { after: limits.timeout.unwrap_or_default() });
                continue;
            }
        };
        match incoming {
            Incoming::Command { pc_id: from, command: Command::CFindRsp(response) }
                if from == pc_id && response.message_id_being_responded_to == message_id =>
            {
                let has_data = response.data_set_type.is_present();
                if response.status.is_pending() {
                    collecting = None;
                    if has_data && stopped.is_none() {
                        if matches.len() >= limits.max_matches {
                            stopped = Some(FindStop::TooManyMatches { max: limits.max_matches });
                            clock.cancel(association, pc_id, message_id).await?;
                        } else {
                            collecting = Some(Vec::new());
                        }
                    }
                    continue;
                }
                final_status = Some(response.status);
                if !has_data {
                    return finish_find(response.status, response.detail, matches, stopped);
                }
                // A final response with a data set (rare): discard it, then finish.
                let detail = response.detail;
                drain_data_set(association, &mut clock, pc_id, message_id).await?;
                return finish_find(final_status.unwrap_or(response.status), detail, matches, stopped);
            }
            Incoming::DataFragment { pc_id: from, bytes, last } if from == pc_id && final_status.is_none() => {
                if let Some(buffer) = collecting.as_mut() {
                    if kept_bytes + bytes.len() > limits.max_bytes {
                        collecting = None;
                        stopped = Some(FindStop::TooManyBytes { max: limits.max_bytes });
                        clock.cancel(association, pc_id, message_id).await?;
                    } else {
                        kept_bytes += bytes.len();
                        buffer.extend_from_slice(&bytes);
                    }
                }
                if last && let Some(buffer) = collecting.take() {
                    match dataset::decode(&buffer, &transfer_syntax) {
                        Ok(object) => matches.push(object),
                        Err(detail) => {
                            return Err(association.violation(Violation::MalformedDataSet(detail)).await);
                        }
                    }
                }
            }
            other => return Err(unexpected(association, other, "while waiting for a C-FIND-RSP").await),
        }
    }
}

/// C-GET (PS3.7 9.1.3, PS3.4 C.4.3): sends the C-GET-RQ and, until the final C-GET-RSP, answers
/// each C-STORE-RQ sub-operation that arrives on this association: `sink.begin`, each data
/// fragment to `sink.data` as it arrives (never joined), and `sink.end` decides the C-STORE-RSP.
///
/// The final status and counts go through `hie_dimse::status::verdict` (a "success" with failed
/// or missing sub-operations is not one), and the counts must match the instances that reached
/// the sink. A final response without counts is judged on our own: completed = what we stored.
pub async fn get<S: StoreSink>(
    association: &mut Association,
    model_sop_class: &str,
    identifier: &InMemDicomObject,
    sink: &mut S,
    options: &RetrieveOptions,
) -> Result<RetrieveOutcome, NetError> {
    let pc_id = context_id(association, model_sop_class)?;
    let transfer_syntax = transfer_syntax(association, pc_id);
    let keys = dataset::encode(identifier, &transfer_syntax).map_err(NetError::InvalidRequest)?;
    let message_id = association.next_message_id();
    let request = CGetRq {
        message_id,
        affected_sop_class_uid: model_sop_class.to_owned(),
        priority: Priority::Medium,
        data_set_type: DataSetType::PRESENT,
    };
    association.send_command(pc_id, &Command::CGetRq(request)).await?;
    association.send_data_set(pc_id, &keys).await?;

    let mut clock = Clock::new(association, options.timeout);
    let mut tally = Tally::default();
    let mut store: Option<SubOperation> = None;
    let result = loop {
        // PS3.7 9.3.3.3: the consumer is gone; the C-STORE sub-operations still in flight are
        // answered (the sink refuses them) until the final response.
        if sink.is_cancelled()
            && !clock.cancelled
            && let Err(error) = clock.cancel(association, pc_id, message_id).await
        {
            break Err(error);
        }
        let incoming = match clock.next(association, pc_id, message_id).await {
            Ok(Next::Incoming(incoming)) => incoming,
            Ok(Next::TimedOut) => continue,
            Err(error) => break Err(error),
        };
        match incoming {
            Incoming::Command { pc_id: from, command: Command::CGetRsp(response) }
                if from == pc_id && response.message_id_being_responded_to == message_id =>
            {
                if response.status.is_pending() {
                    if response.data_set_type.is_present()
                        && let Err(error) = drain_data_set(association, &mut clock, pc_id, message_id).await
                    {
                        break Err(error);
                    }
                    continue;
                }
                if response.data_set_type.is_present()
                    && let Err(error) = drain_data_set(association, &mut clock, pc_id, message_id).await
                {
                    break Err(error);
                }
                break Ok(judge(
                    response.status,
                    response.sub_operations,
                    response.detail,
                    &tally,
                    &clock,
                    options,
                    true,
                ));
            }
            Incoming::Command { pc_id: from, command: Command::CStoreRq(request) } => {
                let context = association.context(from);
                let refusal = match context {
                    Some(context) if context.scp && context.abstract_syntax == request.affected_sop_class_uid => None,
                    // A C-STORE on a context we are not SCP for, or for another SOP class: PS3.7
                    // C.5.20 "SOP class not supported", rather than an abort, so the rest flows.
                    _ => Some(Status::SOP_CLASS_NOT_SUPPORTED),
                };
                let info = InstanceInfo {
                    sop_class_uid: request.affected_sop_class_uid.clone(),
                    sop_instance_uid: request.affected_sop_instance_uid.clone(),
                    transfer_syntax_uid: context.map(|context| context.transfer_syntax.clone()).unwrap_or_default(),
                };
                let refusal = match refusal {
                    Some(status) => Some(status),
                    None => sink.begin(&info).await.err(),
                };
                store = Some(SubOperation { pc_id: from, request, refusal });
            }
            Incoming::DataFragment { pc_id: from, bytes, last } if store.as_ref().is_some_and(|s| s.pc_id == from) => {
                let Some(current) = store.as_mut() else { continue };
                if current.refusal.is_none()
                    && let Err(status) = sink.data(bytes).await
                {
                    current.refusal = Some(status);
                }
                if last {
                    let Some(current) = store.take() else { continue };
                    let status = match current.refusal {
                        Some(status) => status,
                        None => sink.end().await,
                    };
                    tally.count(status);
                    if let Err(error) = answer_store(association, &current, status).await {
                        break Err(error);
                    }
                }
            }
            other => break Err(unexpected(association, other, "during a C-GET").await),
        }
    };
    if let Err(error) = &result
        && let Some(current) = &store
        && current.refusal.is_none()
    {
        sink.abort(error).await;
    }
    result
}

/// C-MOVE (PS3.7 9.1.4, PS3.4 C.4.2) to `destination_ae`: pending responses until the final one,
/// judged with `hie_dimse::status::verdict` against `options.expected`. The instances go to the
/// destination on other associations; to receive them ourselves use [`move_into`].
/// `message_id` is the one the [`crate::MoveRouter`] allocated, if any.
pub async fn move_(
    association: &mut Association,
    model_sop_class: &str,
    identifier: &InMemDicomObject,
    destination_ae: &str,
    message_id: Option<u16>,
    options: &RetrieveOptions,
) -> Result<RetrieveOutcome, NetError> {
    move_cancellable(association, model_sop_class, identifier, destination_ae, message_id, options, None).await
}

/// [`move_`] that sends C-CANCEL once `cancel` turns true (checked at each response).
async fn move_cancellable(
    association: &mut Association,
    model_sop_class: &str,
    identifier: &InMemDicomObject,
    destination_ae: &str,
    message_id: Option<u16>,
    options: &RetrieveOptions,
    cancel: Option<&AtomicBool>,
) -> Result<RetrieveOutcome, NetError> {
    crate::client::check_ae_title("move destination", destination_ae)?;
    let pc_id = context_id(association, model_sop_class)?;
    let transfer_syntax = transfer_syntax(association, pc_id);
    let keys = dataset::encode(identifier, &transfer_syntax).map_err(NetError::InvalidRequest)?;
    let message_id = message_id.unwrap_or_else(|| association.next_message_id());
    let request = CMoveRq {
        message_id,
        affected_sop_class_uid: model_sop_class.to_owned(),
        priority: Priority::Medium,
        move_destination: destination_ae.to_owned(),
        data_set_type: DataSetType::PRESENT,
    };
    association.send_command(pc_id, &Command::CMoveRq(request)).await?;
    association.send_data_set(pc_id, &keys).await?;

    let mut clock = Clock::new(association, options.timeout);
    loop {
        if cancel.is_some_and(|cancel| cancel.load(Ordering::Acquire)) && !clock.cancelled {
            clock.cancel(association, pc_id, message_id).await?;
        }
        let incoming = match clock.next(association, pc_id, message_id).await? {
            Next::Incoming(incoming) => incoming,
            Next::TimedOut => continue,
        };
        match incoming {
            Incoming::Command { pc_id: from, command: Command::CMoveRsp(response) }
                if from == pc_id && response.message_id_being_responded_to == message_id =>
            {
                if response.data_set_type.is_present() {
                    drain_data_set(association, &mut clock, pc_id, message_id).await?;
                }
                if response.status.is_pending() {
                    continue;
                }
                let tally = Tally::default();
                return Ok(judge(
                    response.status,
                    response.sub_operations,
                    response.detail,
                    &tally,
                    &clock,
                    options,
                    false,
                ));
            }
            other => return Err(unexpected(association, other, "during a C-MOVE").await),
        }
    }
}

/// C-MOVE of instances to ourselves: `registration` (from [`crate::MoveRouter::register`] with
/// our calling AE title) receives what the PACS stores at our SCP (AE title `destination_ae`)
/// for this move, and each instance streams into `sink` while the C-MOVE responses are awaited;
/// the verdict also compares the PACS's counts with what reached the sink.
pub async fn move_into<S: StoreSink>(
    association: &mut Association,
    model_sop_class: &str,
    identifier: &InMemDicomObject,
    destination_ae: &str,
    registration: &mut MoveRegistration,
    sink: &mut S,
    options: &RetrieveOptions,
) -> Result<RetrieveOutcome, NetError> {
    let message_id = registration.message_id();
    let mut tally = Tally::default();
    let mut routed = Routed::default();
    let cancel = AtomicBool::new(false);
    let result = {
        let moving = move_cancellable(
            association,
            model_sop_class,
            identifier,
            destination_ae,
            Some(message_id),
            options,
            Some(&cancel),
        );
        tokio::pin!(moving);
        loop {
            tokio::select! {
                // Instances first: the PACS sends the final response only after our SCP answered
                // every C-STORE, which waits on the events handled here.
                biased;
                Some(event) = registration.next_event() => {
                    routed.handle(event, sink, &mut tally).await;
                    if sink.is_cancelled() {
                        cancel.store(true, Ordering::Release);
                    }
                }
                result = &mut moving => break result,
            }
        }
    };
    while let Some(event) = registration.try_next_event() {
        routed.handle(event, sink, &mut tally).await;
    }
    if routed.open {
        let reason = NetError::Closed { context: "C-MOVE ended before the instance was complete" };
        sink.abort(&reason).await;
    }
    let mut outcome = result?;
    outcome.stored = tally.stored;
    outcome.refused = tally.refused;
    let counts = if reported_counts(&outcome.counts) { outcome.counts } else { tally.as_counts() };
    outcome.counts = counts;
    outcome.verdict =
        verdict_with_tally(outcome.final_status, counts, outcome.error_comment.clone(), &tally, options, true);
    Ok(outcome)
}

/// C-STORE as SCU (PS3.7 9.1.1, PS3.4 B.2): sends the C-STORE-RQ, then the data set read from
/// `data` (already encoded in the transfer syntax of the class's presentation context, without
/// the Part 10 file meta) in fragments of the peer's maximum, then returns the peer's status.
/// A read error from `data` aborts the association: a C-STORE cannot be cancelled halfway.
pub async fn store<R: AsyncRead + Unpin>(
    association: &mut Association,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    data: R,
) -> Result<Status, NetError> {
    Ok(store_with_detail(association, sop_class_uid, sop_instance_uid, data).await?.0)
}

/// [`store`] with the response's status detail (Error Comment, Offending Element).
pub async fn store_with_detail<R: AsyncRead + Unpin>(
    association: &mut Association,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    mut data: R,
) -> Result<(Status, StatusDetail), NetError> {
    let pc_id = context_id(association, sop_class_uid)?;
    let message_id = association.next_message_id();
    let request = CStoreRq {
        message_id,
        affected_sop_class_uid: sop_class_uid.to_owned(),
        affected_sop_instance_uid: sop_instance_uid.to_owned(),
        priority: Priority::Medium,
        move_originator_ae_title: None,
        move_originator_message_id: None,
        data_set_type: DataSetType::PRESENT,
    };
    association.send_command(pc_id, &Command::CStoreRq(request)).await?;
    let chunk_len = association.send_max_pdu().max_fragment_len();
    // One chunk is held back so that the last one sent carries the "last" flag and no empty
    // fragment is needed.
    let mut current = vec![0u8; chunk_len];
    let mut next = vec![0u8; chunk_len];
    let mut current_len = match read_full(&mut data, &mut current).await {
        Ok(len) => len,
        Err(error) => return Err(source_failed(association, error).await),
    };
    loop {
        let next_len = match read_full(&mut data, &mut next).await {
            Ok(len) => len,
            Err(error) => return Err(source_failed(association, error).await),
        };
        if next_len == 0 {
            association.send_data_fragment(pc_id, &current[..current_len], true).await?;
            break;
        }
        association.send_data_fragment(pc_id, &current[..current_len], false).await?;
        std::mem::swap(&mut current, &mut next);
        current_len = next_len;
    }
    match association.receive().await? {
        Incoming::Command { command: Command::CStoreRsp(response), .. }
            if response.message_id_being_responded_to == message_id =>
        {
            Ok((response.status, response.detail))
        }
        other => Err(unexpected(association, other, "while waiting for a C-STORE-RSP").await),
    }
}

/// C-CANCEL-RQ (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3) for the C-FIND, C-GET or C-MOVE with
/// `message_id` on `pc_id`. The operation's responses still follow, ending with a final one.
pub async fn cancel(association: &mut Association, pc_id: u8, message_id: u16) -> Result<(), NetError> {
    let request = CCancelRq { message_id_being_responded_to: message_id };
    association.send_command(pc_id, &Command::CCancelRq(request)).await
}

// ---- helpers ----

fn context_id(association: &Association, abstract_syntax: &str) -> Result<u8, NetError> {
    association
        .context_for(abstract_syntax)
        .map(|context| context.id)
        .ok_or_else(|| NetError::NoAcceptedContext { abstract_syntax: abstract_syntax.to_owned(), as_scp: false })
}

fn transfer_syntax(association: &Association, pc_id: u8) -> String {
    association.context(pc_id).map(|context| context.transfer_syntax.clone()).unwrap_or_default()
}

/// What came next: a message part, or the caller's total timeout (C-CANCEL has been sent).
enum Next {
    Incoming(Incoming),
    TimedOut,
}

/// The total timeout of one operation, and the cancel that follows it.
struct Clock {
    deadline: Option<Instant>,
    total: Option<Duration>,
    /// The DIMSE timeout: how long we wait for the final response after C-CANCEL.
    grace: Duration,
    cancelled: bool,
    timed_out: bool,
}

impl Clock {
    fn new(association: &Association, total: Option<Duration>) -> Clock {
        Clock {
            deadline: total.map(|total| Instant::now() + total),
            total,
            grace: association.read_timeout(),
            cancelled: false,
            timed_out: false,
        }
    }

    async fn next(&mut self, association: &mut Association, pc_id: u8, message_id: u16) -> Result<Next, NetError> {
        match association.receive_until(self.deadline).await? {
            Some(incoming) => Ok(Next::Incoming(incoming)),
            None if !self.cancelled => {
                self.timed_out = true;
                self.cancel(association, pc_id, message_id).await?;
                Ok(Next::TimedOut)
            }
            None => {
                association.abort_with(AbortRQSource::ServiceUser).await;
                let which = if self.timed_out { TimeoutKind::Operation } else { TimeoutKind::Cancel };
                let after = if self.timed_out { self.total.unwrap_or(self.grace) } else { self.grace };
                Err(NetError::Timeout { which, after })
            }
        }
    }

    /// Sends C-CANCEL once and gives the peer the grace time for its final response.
    async fn cancel(&mut self, association: &mut Association, pc_id: u8, message_id: u16) -> Result<(), NetError> {
        if self.cancelled {
            return Ok(());
        }
        self.cancelled = true;
        self.deadline = Some(Instant::now() + self.grace);
        tracing::info!(peer = %association.peer_addr(), message_id, "sending C-CANCEL");
        cancel(association, pc_id, message_id).await
    }
}

/// Receives and drops the data set that follows a response.
async fn drain_data_set(
    association: &mut Association,
    clock: &mut Clock,
    pc_id: u8,
    message_id: u16,
) -> Result<(), NetError> {
    loop {
        match clock.next(association, pc_id, message_id).await? {
            Next::TimedOut => {}
            Next::Incoming(Incoming::DataFragment { last: true, .. }) => return Ok(()),
            Next::Incoming(Incoming::DataFragment { .. }) => {}
            Next::Incoming(other) => return Err(unexpected(association, other, "inside a response data set").await),
        }
    }
}

/// A C-STORE sub-operation being received.
struct SubOperation {
    pc_id: u8,
    request: CStoreRq,
    /// Set when the instance is refused; its data is then discarded.
    refusal: Option<Status>,
}

async fn answer_store(association: &mut Association, store: &SubOperation, status: Status) -> Result<(), NetError> {
    let response = CStoreRsp {
        message_id_being_responded_to: store.request.message_id,
        affected_sop_class_uid: Some(store.request.affected_sop_class_uid.clone()),
        affected_sop_instance_uid: Some(store.request.affected_sop_instance_uid.clone()),
        status,
        detail: StatusDetail::default(),
    };
    association.send_command(store.pc_id, &Command::CStoreRsp(response)).await
}

/// What our sinks did with the instances of one retrieve.
#[derive(Debug, Default)]
struct Tally {
    stored: u32,
    warnings: u32,
    refused: u32,
}

impl Tally {
    fn count(&mut self, status: Status) {
        match status.class() {
            StatusClass::Success => self.stored += 1,
            StatusClass::Warning => {
                self.stored += 1;
                self.warnings += 1;
            }
            _ => self.refused += 1,
        }
    }

    fn as_counts(&self) -> SubOperations {
        let clamp = |count: u32| Some(u16::try_from(count).unwrap_or(u16::MAX));
        SubOperations {
            remaining: None,
            completed: clamp(self.stored - self.warnings),
            failed: clamp(self.refused),
            warning: clamp(self.warnings),
        }
    }
}

/// Routes the events of a move registration into a sink.
#[derive(Default)]
struct Routed {
    /// An instance has begun and not ended.
    open: bool,
    refusal: Option<Status>,
}

impl Routed {
    async fn handle<S: StoreSink>(&mut self, event: MoveEvent, sink: &mut S, tally: &mut Tally) {
        match event {
            MoveEvent::Begin(info) => {
                self.open = true;
                self.refusal = sink.begin(&info).await.err();
            }
            MoveEvent::Data(bytes) => {
                if self.open
                    && self.refusal.is_none()
                    && let Err(status) = sink.data(bytes).await
                {
                    self.refusal = Some(status);
                }
            }
            MoveEvent::End(reply) => {
                let status = match self.refusal.take() {
                    Some(status) => status,
                    None if self.open => sink.end().await,
                    None => Status::UNABLE_TO_PROCESS,
                };
                self.open = false;
                tally.count(status);
                let _ = reply.send(status);
            }
            MoveEvent::Aborted(reason) => {
                if self.open && self.refusal.is_none() {
                    tracing::debug!(%reason, "routed instance aborted");
                    sink.abort(&NetError::Closed { context: "(the storing association ended mid-instance)" }).await;
                }
                self.open = false;
                self.refusal = None;
            }
        }
    }
}

fn reported_counts(counts: &SubOperations) -> bool {
    counts.completed.is_some() || counts.failed.is_some() || counts.warning.is_some()
}

fn judge(
    status: Status,
    counts: SubOperations,
    detail: StatusDetail,
    tally: &Tally,
    clock: &Clock,
    options: &RetrieveOptions,
    compare_with_tally: bool,
) -> RetrieveOutcome {
    let counts = if compare_with_tally && !reported_counts(&counts) { tally.as_counts() } else { counts };
    let verdict = verdict_with_tally(status, counts, detail.error_comment.clone(), tally, options, compare_with_tally);
    RetrieveOutcome {
        final_status: status,
        counts,
        error_comment: detail.error_comment,
        stored: tally.stored,
        refused: tally.refused,
        timed_out: clock.timed_out.then(|| clock.total.unwrap_or_default()),
        cancelled: clock.cancelled && !clock.timed_out,
        verdict,
    }
}

fn verdict_with_tally(
    status: Status,
    counts: SubOperations,
    error_comment: Option<String>,
    tally: &Tally,
    options: &RetrieveOptions,
    compare_with_tally: bool,
) -> Result<Outcome, RetrieveFailure> {
    let outcome = verdict(status, counts, options.expected)
        .map_err(|failure| RetrieveFailure::SubOperations { failure, error_comment })?;
    let claimed = u32::from(counts.completed.unwrap_or(0)) + u32::from(counts.warning.unwrap_or(0));
    if compare_with_tally && claimed != tally.stored {
        return Err(RetrieveFailure::CountMismatch { status, claimed, received: tally.stored });
    }
    Ok(outcome)
}

fn failure_status(failure: &SubOperationFailure) -> Status {
    match failure {
        SubOperationFailure::NotFinal { status }
        | SubOperationFailure::Cancelled { status, .. }
        | SubOperationFailure::Failed { status, .. }
        | SubOperationFailure::SubOperationsFailed { status, .. }
        | SubOperationFailure::SubOperationsRemaining { status, .. }
        | SubOperationFailure::SubOperationsMissing { status, .. } => *status,
        _ => Status::UNABLE_TO_PROCESS,
    }
}

fn finish_find(
    status: Status,
    detail: StatusDetail,
    matches: Vec<InMemDicomObject>,
    stopped: Option<FindStop>,
) -> Result<FindOutcome, NetError> {
    match status.class() {
        StatusClass::Success | StatusClass::Warning => Ok(FindOutcome { matches, status, stopped }),
        StatusClass::Cancel if stopped.is_some() => Ok(FindOutcome { matches, status, stopped }),
        _ => Err(NetError::Refused { operation: "C-FIND", status, error_comment: detail.error_comment }),
    }
}

/// The error for a message that does not belong in the operation; aborts unless the peer did.
async fn unexpected(association: &mut Association, incoming: Incoming, state: &'static str) -> NetError {
    match incoming {
        Incoming::Aborted { source } => NetError::Aborted { by: AbortedBy::Peer, reason: source, context: state },
        Incoming::ReleaseRequested => {
            association.violation(Violation::UnexpectedPdu { pdu: "A-RELEASE-RQ", state }).await
        }
        Incoming::Command { command, .. } => {
            association.violation(Violation::unexpected_command(&command, state)).await
        }
        Incoming::DataFragment { .. } => {
            association.violation(Violation::UnexpectedCommand { command: "data fragment".to_owned(), state }).await
        }
    }
}

async fn source_failed(association: &mut Association, error: std::io::Error) -> NetError {
    association.abort_with(AbortRQSource::ServiceUser).await;
    NetError::Source(error)
}

/// Fills `buffer` from `reader` unless it ends first; returns how much was read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = reader.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Matches kept by default: a study-level query for a patient rarely passes a few hundred.
pub const DEFAULT_MAX_MATCHES: usize = 10_000;
/// Identifier bytes kept by default (an IMAGE-level match is a few hundred bytes).
pub const DEFAULT_MAX_MATCH_BYTES: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(completed: u16, failed: u16, warning: u16) -> SubOperations {
        SubOperations { remaining: None, completed: Some(completed), failed: Some(failed), warning: Some(warning) }
    }

    fn tally(stored: u32, warnings: u32, refused: u32) -> Tally {
        Tally { stored, warnings, refused }
    }

    #[test]
    fn a_pacs_claiming_more_than_reached_us_is_a_mismatch() {
        let options = RetrieveOptions::default();
        let verdict = verdict_with_tally(Status::SUCCESS, counts(10, 0, 0), None, &tally(9, 0, 0), &options, true);
        assert_eq!(verdict, Err(RetrieveFailure::CountMismatch { status: Status::SUCCESS, claimed: 10, received: 9 }));
        let verdict = verdict_with_tally(Status::SUCCESS, counts(10, 0, 0), None, &tally(10, 0, 0), &options, true);
        assert_eq!(verdict, Ok(Outcome::Success { completed: 10 }));
        // A plain C-MOVE to a third party has nothing of ours to compare with.
        let verdict = verdict_with_tally(Status::SUCCESS, counts(10, 0, 0), None, &Tally::default(), &options, false);
        assert_eq!(verdict, Ok(Outcome::Success { completed: 10 }));
    }

    #[test]
    fn the_callers_expectation_and_missing_counts() {
        let expecting = RetrieveOptions { expected: Some(12), ..RetrieveOptions::default() };
        let verdict = verdict_with_tally(Status::SUCCESS, counts(10, 0, 0), None, &tally(10, 0, 0), &expecting, true);
        assert!(matches!(
            verdict,
            Err(RetrieveFailure::SubOperations {
                failure: SubOperationFailure::SubOperationsMissing { delivered: 10, expected: 12, .. },
                ..
            })
        ));
        // A final response without counts is judged on what we stored (one with a warning).
        let ours = tally(3, 1, 0);
        assert!(!reported_counts(&SubOperations::default()));
        let substituted = ours.as_counts();
        assert_eq!((substituted.completed, substituted.warning, substituted.failed), (Some(2), Some(1), Some(0)));
        let verdict = verdict_with_tally(Status::SUCCESS, substituted, None, &ours, &RetrieveOptions::default(), true);
        assert!(matches!(verdict, Ok(Outcome::SuccessWithWarnings { completed: 2, warning: 1, .. })));
    }
}
