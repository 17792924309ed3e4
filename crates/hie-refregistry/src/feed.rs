//! The registry's Patient Identity Feed (ITI-8, ITI TF-2a 3.8): an MLLP listener taking HL7 v2
//! ADT, and what each message does to the registry's patients.
//!
//! - A01, A04, A05, A08: the patient's identifier in the affinity domain (the first PID-3
//!   repetition whose assigning authority is [`RefRegistryConfig::patient_id_authority`]) becomes
//!   known. Other repetitions are ignored (ITI TF-2a 3.8.4.1.3, ITI8-5/6); a message with none is
//!   accepted and changes nothing.
//! - A40: the MRG-1 patient (subsumed) is merged into the PID-3 patient (surviving); its metadata
//!   moves to the survivor and later submissions for it are refused (ITI TF-2a 3.8.4.2.3). A merge
//!   into itself, or into a patient that was itself merged away, is refused (AE, ERR-3 205).
//! - Any other event is refused with AR (ERR-3 201): these five are ITI-8's.
//!
//! Every message is answered with an original-mode ACK (ITI TF-2x C.2.3) only after the change
//! committed; the ACK is recorded with the change, so a repeat (same sender MSH-3|MSH-4 and MSH-10)
//! gets the same ACK and is not applied again. Parse failures get AR for an unsupported message
//! type, event or version, AE otherwise, with ERR naming the field; a database failure gets AE 207,
//! not recorded, so the sender's retry is applied.
//!
//! On SQLite the listener commits in groups: messages arriving on any connection while a commit
//! is in flight go into the next transaction together, each in a savepoint of its own (so one
//! that fails leaves the others in), and are answered after that one commit. One fsync per feed
//! message made the built-in registry, which shares the broker's disk, cost as much as the
//! broker's own ADT. On PostgreSQL each message is its own transaction, as before: commits there
//! run concurrently, and a batch's advisory locks held to its end would only widen what a
//! concurrent registration waits for.
//!
//! The listener bounds each connection: a frame cap (no byte beyond it is buffered), an idle
//! timeout, and a connection cap. Message bodies are PHI and are never logged.
//!
//! [`RefRegistryConfig::patient_id_authority`]: crate::RefRegistryConfig::patient_id_authority

use std::net::SocketAddr;
use std::sync::Arc;

use hie_hl7::ack::{AckCode, build_ack, salvage_header};
use hie_hl7::adt::{AdtEvent, AdtKind, AdtMessage, Cx, MessageHeader, parse_adt, parse_header};
use hie_hl7::{ErrorCode, Hl7Error, Location};
use hie_hl7_net::{Handler, Limits};
use hie_store::refregistry::{self, RecordedFeedAck};
use hie_store::{Engine, StoreError, Tx};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Inner;
use crate::ids;
use crate::metadata::patient_lock_key;

/// Serves the feed on `listener` until `shutdown` turns true.
pub(crate) async fn serve(registry: Arc<Inner>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let feed = &registry.config.feed;
    let limits = Limits {
        max_connections: feed.max_connections,
        max_frame_bytes: feed.max_frame_bytes,
        idle_timeout: feed.idle_timeout,
    };
    let writer = match registry.store.engine() {
        Engine::Sqlite => {
            let (jobs, queue) = mpsc::channel(GROUP_QUEUE_DEPTH);
            tokio::spawn(group_commit(Arc::clone(&registry), queue));
            Some(jobs)
        }
        Engine::Postgres => None,
    };
    let handler = Arc::new(Feed { registry, writer });
    // The writer stops when the handler, which holds its only sender, is gone with the listener.
    hie_hl7_net::serve(listener, limits, handler, "registry feed", shutdown).await;
}

/// The most messages one group commit takes.
const MAX_GROUP: usize = 64;

/// Messages waiting for the group-commit writer: beyond this, connections wait to hand theirs
/// over rather than memory growing.
const GROUP_QUEUE_DEPTH: usize = 1_024;

/// The registry as an MLLP frame handler.
struct Feed {
    registry: Arc<Inner>,
    /// The group-commit writer (SQLite); `None`: each message commits alone.
    writer: Option<mpsc::Sender<GroupJob>>,
}

/// A parsed message for the group-commit writer, and where its ACK goes (`None`: not stored).
struct GroupJob {
    message: AdtMessage,
    answer: oneshot::Sender<Option<String>>,
}

impl Handler for Feed {
    async fn answer(&self, frame: &[u8], _peer: SocketAddr) -> Vec<String> {
        vec![handle_frame_with(&self.registry, frame, self.writer.as_ref()).await]
    }
}

/// One feed message in, its ACK out (the HL7 rescue: every failure ends as AR or AE with ERR).
pub(crate) async fn handle_frame(registry: &Inner, frame: &[u8]) -> String {
    handle_frame_with(registry, frame, None).await
}

/// [`handle_frame`], through the group-commit writer if there is one.
async fn handle_frame_with(registry: &Inner, frame: &[u8], writer: Option<&mpsc::Sender<GroupJob>>) -> String {
    let text = match hie_hl7::charset::decode_to_utf8(frame) {
        Ok(text) => text,
        Err(error) => {
            let header = salvage_header(&String::from_utf8_lossy(frame));
            return ack(registry, &header, refusal_code(&error), Some(&error));
        }
    };
    let header = match parse_header(&text) {
        Ok(header) => header,
        Err(error) => return ack(registry, &salvage_header(&text), refusal_code(&error), Some(&error)),
    };
    let message = match parse_adt(&text) {
        Ok(message) => message,
        Err(error) => return ack(registry, &header, refusal_code(&error), Some(&error)),
    };
    if !matches!(message.event, AdtEvent::A01 | AdtEvent::A04 | AdtEvent::A05 | AdtEvent::A08 | AdtEvent::A40) {
        let error = Hl7Error::new(
            ErrorCode::UnsupportedEvent,
            Location::new("MSH", 1, 9, 2),
            "trigger event not in the Patient Identity Feed (A01, A04, A05, A08, A40)",
        );
        return ack(registry, &header, AckCode::AR, Some(&error));
    }
    let stored = match writer {
        Some(writer) => {
            let (answer, answered) = oneshot::channel();
            match writer.send(GroupJob { message, answer }).await {
                Ok(()) => answered.await.ok().flatten(),
                Err(_) => None,
            }
        }
        None => match apply(registry, &message).await {
            Ok(ack) => Some(ack),
            Err(error) => {
                tracing::warn!(%error, "registry feed message not stored");
                None
            }
        },
    };
    stored.unwrap_or_else(|| {
        let error = Hl7Error::new(ErrorCode::InternalError, Location::unknown(), "not stored; send it again");
        ack(registry, &header, AckCode::AE, Some(&error))
    })
}

/// The group-commit writer: applies what has queued up, each message in a savepoint, commits
/// once, then answers each. Runs until every sender is gone.
async fn group_commit(registry: Arc<Inner>, mut queue: mpsc::Receiver<GroupJob>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let answers = match apply_group(&registry, &group).await {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(%error, n_messages = group.len(), "registry feed group not stored");
                vec![None; group.len()]
            }
        };
        for (job, answer) in group.drain(..).zip(answers) {
            // The sender may have hung up; what it sent is committed either way.
            let _ = job.answer.send(answer);
        }
    }
}

/// One transaction for `group`: each message's ACK, or `None` for one whose savepoint failed
/// (rolled back alone). An error means nothing of the group is stored.
async fn apply_group(registry: &Inner, group: &[GroupJob]) -> Result<Vec<Option<String>>, StoreError> {
    let mut tx = registry.store.begin().await?;
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        let mut savepoint = tx.savepoint().await?;
        match apply_in(&mut savepoint, registry, &job.message).await {
            Ok(ack) => {
                savepoint.commit().await?;
                answers.push(Some(ack));
            }
            Err(error) => {
                tracing::warn!(%error, "registry feed message not stored");
                savepoint.rollback().await?;
                answers.push(None);
            }
        }
    }
    tx.commit().await?;
    Ok(answers)
}

/// Applies a message and records its ACK in one transaction; a repeat gets the recorded ACK.
async fn apply(registry: &Inner, message: &AdtMessage) -> Result<String, StoreError> {
    let mut tx = registry.store.begin().await?;
    let ack = apply_in(&mut tx, registry, message).await?;
    tx.commit().await?;
    Ok(ack)
}

/// [`apply`] inside `tx`; the caller commits. A repeat changes nothing.
async fn apply_in(tx: &mut Tx<'_>, registry: &Inner, message: &AdtMessage) -> Result<String, StoreError> {
    let header = &message.header;
    let sender = format!("{}|{}", header.sending_application, header.sending_facility);
    if let Some(recorded) = refregistry::feed_message(tx, &sender, &header.control_id).await? {
        tracing::debug!(control_id = %header.control_id, "registry feed message repeated; answered again");
        return Ok(recorded.ack);
    }
    let now = hie_store::now_micros();
    let authority = &registry.config.patient_id_authority;
    let in_domain = |identifiers: &[Cx]| {
        identifiers
            .iter()
            .find(|cx| {
                cx.authority.universal_id == authority.as_str()
                    && (cx.authority.universal_id_type.is_empty()
                        || cx.authority.universal_id_type.eq_ignore_ascii_case("ISO"))
            })
            .map(|cx| ids::patient_key(&cx.id, authority))
    };
    // First the ids each group names, then the locks on all of them (one sorted set, so two
    // feeds cannot deadlock; a registration for a subsumed patient waits), then the checks.
    let mut pairs = Vec::new();
    let mut registrations = Vec::new();
    for group in &message.groups {
        let surviving = in_domain(&group.pid.identifiers);
        match (message.event.kind(), &group.mrg) {
            (AdtKind::Merge, Some(mrg)) => {
                if let (Some(surviving), Some(subsumed)) = (surviving, in_domain(&mrg.prior_identifiers)) {
                    pairs.push((group.pid_index, subsumed, surviving));
                }
            }
            _ => registrations.extend(surviving),
        }
    }
    let keys: Vec<String> = pairs
        .iter()
        .flat_map(|(_, subsumed, surviving)| [patient_lock_key(subsumed), patient_lock_key(surviving)])
        .collect();
    refregistry::lock_keys(tx, &keys).await?;
    let mut refusal = None;
    for (pid_index, subsumed, surviving) in &pairs {
        if surviving == subsumed {
            refusal = Some(Hl7Error::new(
                ErrorCode::DuplicateKey,
                Location::new("MRG", *pid_index, 1, 1),
                "MRG-1 names the same patient as PID-3",
            ));
            break;
        }
        let survivor = refregistry::patient(tx, surviving).await?;
        if survivor.is_some_and(|patient| patient.merged_into.is_some()) {
            refusal = Some(Hl7Error::new(
                ErrorCode::DuplicateKey,
                Location::new("PID", *pid_index, 3, 1),
                "the PID-3 patient was itself merged into another",
            ));
            break;
        }
    }
    let code = if refusal.is_some() { AckCode::AE } else { AckCode::AA };
    if refusal.is_none() {
        for patient_id in &registrations {
            refregistry::register_patient(tx, patient_id, now).await?;
        }
        for (_, subsumed, surviving) in &pairs {
            let moved = refregistry::merge_patient(tx, subsumed, surviving, now).await?;
            tracing::info!(moved, "registry feed merge applied");
        }
    }
    let ack = ack(registry, header, code, refusal.as_ref());
    let recorded = RecordedFeedAck { ack_code: code.as_str().to_owned(), ack: ack.clone() };
    refregistry::record_feed_message(tx, &sender, &header.control_id, &recorded, now).await?;
    Ok(ack)
}

fn ack(registry: &Inner, header: &MessageHeader, code: AckCode, error: Option<&Hl7Error>) -> String {
    let feed = &registry.config.feed;
    let control_id = format!("{:016X}", rand::random::<u64>());
    let now_secs = u64::try_from(hie_store::now_micros() / MICROS_PER_SECOND).unwrap_or(0);
    build_ack(
        header,
        code,
        error,
        &control_id,
        &hie_core::clock::hl7_timestamp(now_secs),
        &feed.application,
        &feed.facility,
    )
}

/// ITI TF-2x C.2.3: AR when the message cannot be handled at all (type, event, version), AE for
/// content errors.
fn refusal_code(error: &Hl7Error) -> AckCode {
    match error.code {
        ErrorCode::UnsupportedMessageType | ErrorCode::UnsupportedEvent | ErrorCode::UnsupportedVersion => AckCode::AR,
        _ => AckCode::AE,
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;
