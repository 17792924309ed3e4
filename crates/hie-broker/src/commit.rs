//! Group commit for ADT: one writer task applies messages from every MLLP connection in
//! batched transactions and answers each only after its batch is durable.
//!
//! One fsync per message caps a broker at the disk's commit rate (about 7-8k/s on SQLite here).
//! Messages that arrive while a commit is in flight are taken together into the next one, so
//! under load the cost of a commit is shared, and with one sender nothing waits for a batch to
//! fill: the writer takes what is queued and goes. A refused message never undoes its
//! neighbours: the identity rules check before they write, and messages with several PID/MRG
//! groups run in a savepoint. Duplicate detection and ACK records cost one statement per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hie_hl7::adt::{AdtMessage, MessageHeader};
use hie_store::patients::{self, RecordedAck};
use hie_store::{Store, StoreError, Tx, now_micros};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::adt::{self, AdtConfig, Outcome};
use crate::patients::{ApplyError, apply_adt};

/// Queue depth in front of the writer: enough to keep batches full, small enough that a stalled
/// database pushes back on senders instead of growing memory.
const QUEUE_DEPTH: usize = 4_096;

/// A handle for submitting ADT to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AdtWriter {
    jobs: mpsc::Sender<Job>,
    stats: Arc<AdtStats>,
}

/// Counters the API exports on `/metrics`.
#[derive(Debug, Default)]
pub struct AdtStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub repeats: AtomicU64,
    pub commits: AtomicU64,
    pub committed_messages: AtomicU64,
    pub failed_commits: AtomicU64,
}

/// The writer has stopped (shutdown); the message was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the ADT writer has stopped")]
pub struct WriterStopped;

#[derive(Debug)]
struct Job {
    message: AdtMessage,
    reply: oneshot::Sender<Vec<String>>,
}

/// What one message in a batch comes to, before the batch commits.
struct Decided {
    header: MessageHeader,
    outcome: Outcome,
    application_ack: String,
}

impl AdtWriter {
    /// Starts the writer task. `outbox_waker` is notified after a commit that queued outbox items.
    pub fn spawn(
        store: Store,
        config: Arc<AdtConfig>,
        outbox_waker: Arc<Notify>,
    ) -> (AdtWriter, tokio::task::JoinHandle<()>) {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(AdtStats::default());
        let task = tokio::spawn(run(store, config, outbox_waker, receiver, Arc::clone(&stats)));
        (AdtWriter { jobs, stats }, task)
    }

    /// Applies a message and returns the frames to answer with, once they may be sent: after the
    /// commit that made the message's effects durable.
    pub async fn submit(&self, message: AdtMessage) -> Result<Vec<String>, WriterStopped> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { message, reply }).await.map_err(|_| WriterStopped)?;
        answer.await.map_err(|_| WriterStopped)
    }

    /// The writer's counters, shared with `/metrics`.
    pub fn stats_handle(&self) -> Arc<AdtStats> {
        Arc::clone(&self.stats)
    }
}

async fn run(
    store: Store,
    config: Arc<AdtConfig>,
    outbox_waker: Arc<Notify>,
    mut receiver: mpsc::Receiver<Job>,
    stats: Arc<AdtStats>,
) {
    let max_batch = config.max_batch.max(1);
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let now = now_micros();
        let span = tracing::info_span!("adt.group_commit", n_messages = batch.len());
        let committed = tracing::Instrument::instrument(commit_batch(&store, &config, &batch, now), span).await;
        let (decisions, enqueued) = match committed {
            Ok(result) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.committed_messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
                result
            }
            Err(error) => {
                // Nothing of the batch is stored: every sender gets AE and will send again.
                tracing::warn!(%error, n_messages = batch.len(), "ADT batch commit failed");
                stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                let decisions = batch
                    .iter()
                    .map(|job| {
                        let outcome = Outcome::not_stored("the message could not be stored; send it again");
                        let (_, application_ack) = adt::application_ack(&config, &job.message.header, &outcome);
                        Decided { header: job.message.header.clone(), outcome, application_ack }
                    })
                    .collect();
                (decisions, false)
            }
        };
        if enqueued {
            outbox_waker.notify_one();
        }
        for (job, decided) in batch.drain(..).zip(decisions) {
            count(&stats, &decided.outcome);
            let frames = adt::answer(&config, &decided.header, &decided.outcome, decided.application_ack);
            // The sender may have hung up; its message is committed either way.
            let _ = job.reply.send(frames);
        }
    }
}

async fn commit_batch(
    store: &Store,
    config: &AdtConfig,
    batch: &[Job],
    now: i64,
) -> Result<(Vec<Decided>, bool), StoreError> {
    let mut tx = store.begin().await?;
    let senders: Vec<String> = batch.iter().map(|job| sender_key(&job.message.header)).collect();
    let keys: Vec<(&str, &str)> = batch
        .iter()
        .zip(&senders)
        .map(|(job, sender)| (sender.as_str(), job.message.header.control_id.as_str()))
        .collect();
    // Seen before this batch, or earlier in it: (sender, control id) -> recorded ACK.
    let mut seen: HashMap<(String, String), RecordedAck> = patients::recorded_acks(&mut tx, &keys)
        .await?
        .into_iter()
        .map(|(sender, control_id, recorded)| ((sender, control_id), recorded))
        .collect();
    let mut decisions = Vec::with_capacity(batch.len());
    let mut to_record: Vec<(usize, RecordedAck)> = Vec::new();
    let mut enqueued = false;
    for (job_idx, job) in batch.iter().enumerate() {
        let header = &job.message.header;
        let key = (senders[job_idx].clone(), header.control_id.clone());
        if let Some(recorded) = seen.get(&key) {
            let outcome = Outcome::Repeated { accepted: recorded.ack_code == "AA" };
            decisions.push(Decided { header: header.clone(), outcome, application_ack: recorded.ack.clone() });
            continue;
        }
        let (outcome, job_enqueued) = apply(&mut tx, config, &job.message, now).await?;
        enqueued |= job_enqueued;
        let (code, application_ack) = adt::application_ack(config, header, &outcome);
        let recorded = RecordedAck { ack_code: code.as_str().to_owned(), ack: application_ack.clone() };
        seen.insert(key, recorded.clone());
        to_record.push((job_idx, recorded));
        decisions.push(Decided { header: header.clone(), outcome, application_ack });
    }
    // The answers are final (AA or AR) and recorded with the changes they answer, so a repeat
    // gets the same ACK without being applied again.
    let records: Vec<(&str, &str, &RecordedAck)> =
        to_record.iter().map(|(job_idx, recorded)| (keys[*job_idx].0, keys[*job_idx].1, recorded)).collect();
    patients::record_acks(&mut tx, &records, now).await?;
    tx.commit().await?;
    Ok((decisions, enqueued))
}

/// Applies one message in the batch's transaction. The identity rules check everything before
/// writing anything, so a refused single-group message leaves no trace; a message with several
/// PID/MRG groups (A40, A47) may be refused at a later group, so it gets a savepoint.
async fn apply(
    tx: &mut Tx<'static>,
    config: &AdtConfig,
    message: &AdtMessage,
    now: i64,
) -> Result<(Outcome, bool), StoreError> {
    if message.groups.len() <= 1 {
        return match apply_adt(tx, &config.domain, message, now).await {
            Ok(applied) => Ok((Outcome::Accepted, applied.enqueued)),
            Err(ApplyError::Rejected(error)) => Ok((Outcome::Rejected(error), false)),
            // A failed statement can leave the transaction unusable (PostgreSQL aborts it), so
            // the whole batch is answered AE and resent rather than committed around the hole.
            Err(ApplyError::Store(error)) => Err(error),
        };
    }
    let mut savepoint = tx.savepoint().await?;
    match apply_adt(&mut savepoint, &config.domain, message, now).await {
        Ok(applied) => {
            savepoint.commit().await?;
            Ok((Outcome::Accepted, applied.enqueued))
        }
        Err(ApplyError::Rejected(error)) => {
            savepoint.rollback().await?;
            Ok((Outcome::Rejected(error), false))
        }
        Err(ApplyError::Store(error)) => Err(error),
    }
}

/// Who sent a message, for duplicate detection: MSH-3 and MSH-4 as received.
fn sender_key(header: &MessageHeader) -> String {
    format!("{}|{}", header.sending_application, header.sending_facility)
}

fn count(stats: &AdtStats, outcome: &Outcome) {
    let counter = match outcome {
        Outcome::Accepted => &stats.accepted,
        Outcome::Rejected(_) => &stats.rejected,
        Outcome::Error(_) | Outcome::NotStored(_) => &stats.errors,
        Outcome::Repeated { .. } => &stats.repeats,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
