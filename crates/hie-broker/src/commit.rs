//! Group commit for ADT: one writer task applies messages from every MLLP connection in
//! batched transactions and answers each only after its batch is durable.
//!
//! One fsync per message caps a broker at the disk's commit rate (about 7-8k/s on SQLite here).
//! Messages that arrive while a commit is in flight are taken together into the next one, so
//! under load the cost of a commit is shared, and with one sender nothing waits for a batch to
//! fill: the writer takes what is queued and goes.
//!
//! On PostgreSQL, with one refinement: the senders a commit has just answered usually send again
//! soon (MLLP is one message at a time per connection), and taking only what is queued splits
//! many senders into two cohorts that alternate commits, each half the size. So after a commit
//! the writer waits for as many new messages as it just answered (beyond those already queued),
//! never longer than that commit took and at most [`MAX_GATHER`]. A PostgreSQL batch costs two
//! round trips and a commit, so joining the cohorts paid: +28% at 16 and +52% at 4 connections
//! (writer alone, medians of five alternating runs). On SQLite it cost half the throughput:
//! there the commit (the disk busy) overlaps the answered senders' work of sending again, and
//! waiting for them leaves the disk idle. Adaptive variants (wait only while the wait is short
//! against the commit; pick the faster way per epoch) were measured too and lost on SQLite as
//! well. With one sender the next message is the one awaited anyway, so nothing waits longer.
//!
//! A batch costs the same few trips to the database whatever it holds: one read of everything
//! its messages name (recorded ACKs, the patients holding their identifiers, fresh ids), the
//! identity rules applied in memory in arrival order (`working_set`), then one write of every
//! outcome with the commit (`hie_store::batch::WriteSession`). On SQLite all of it runs on the
//! writer's own thread, on an in-process connection; on PostgreSQL it is two round trips. Only
//! merges that follow `merged_into` chains read more. A refused message never undoes its
//! neighbours: the rules check before they change anything, and a message with several PID/MRG
//! groups is undone in memory if a later group is refused.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hie_hl7::adt::{AdtMessage, MessageHeader};
use hie_store::batch::{Changes, NewAck, WriteSession};
use hie_store::patients::RecordedAck;
use hie_store::{Engine, Store, StoreError, now_micros};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::adt::{self, AdtConfig, Outcome};
use crate::patients::{self, ApplyError};
use crate::working_set::Working;

/// Queue depth in front of the writer: enough to keep batches full, small enough that a stalled
/// database pushes back on senders instead of growing memory.
const QUEUE_DEPTH: usize = 4_096;

/// The longest the writer holds a batch open for senders it has just answered (PostgreSQL, see
/// the module doc); the last commit's duration bounds it below that.
pub const MAX_GATHER: Duration = Duration::from_millis(2);

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
    /// Starts the writer. `outbox_waker` is notified after a commit that queued outbox items.
    /// The handle finishes when the writer has stopped (every `AdtWriter` dropped).
    ///
    /// On SQLite the writer runs on a thread of its own: its batches run their statements on
    /// the calling thread (`hie_store::batch::WriteSession`), fsync included, which must not
    /// hold up a runtime worker that the connections' tasks need. On PostgreSQL it is a task
    /// like any other: its statements are network round trips.
    pub fn spawn(
        store: Store,
        config: Arc<AdtConfig>,
        outbox_waker: Arc<Notify>,
    ) -> (AdtWriter, tokio::task::JoinHandle<()>) {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(AdtStats::default());
        let writer = AdtWriter { jobs, stats: Arc::clone(&stats) };
        let task = match store.engine() {
            Engine::Postgres => tokio::spawn(run(store, config, outbox_waker, receiver, stats)),
            Engine::Sqlite => spawn_on_own_thread(run(store, config, outbox_waker, receiver, stats)),
        };
        (writer, task)
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

/// Runs `writer` on a new thread with a single-threaded runtime of its own; the returned task
/// finishes when it does. Should the thread not start, the writer runs as a task instead:
/// correct, only slower for the other tasks.
fn spawn_on_own_thread(writer: impl Future<Output = ()> + Send + 'static) -> tokio::task::JoinHandle<()> {
    let (finished, on_finish) = oneshot::channel::<()>();
    let (handover, start) = std::sync::mpsc::sync_channel::<Pin<Box<dyn Future<Output = ()> + Send>>>(1);
    let thread = std::thread::Builder::new().name("hie-adt-writer".to_owned()).spawn(move || {
        let Ok(writer) = start.recv() else { return };
        match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime.block_on(writer),
            Err(error) => tracing::error!(%error, "the ADT writer's runtime did not start"),
        }
        let _ = finished.send(());
    });
    let writer: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(writer);
    match thread {
        Ok(_) => match handover.send(writer) {
            Ok(()) => tokio::spawn(async move {
                let _ = on_finish.await;
            }),
            Err(std::sync::mpsc::SendError(writer)) => tokio::spawn(writer),
        },
        Err(error) => {
            tracing::warn!(%error, "no thread for the ADT writer; it runs as a task");
            tokio::spawn(writer)
        }
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
    let gathers = store.engine() == Engine::Postgres;
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    // After each commit: how many messages to wait for, and until when.
    let mut gather: Option<(usize, Instant)> = None;
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        if let Some((target, deadline)) = gather.take() {
            while batch.len() < target {
                let room = max_batch - batch.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let started = Instant::now();
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
        let answered = batch.len();
        for (job, decided) in batch.drain(..).zip(decisions) {
            count(&stats, &decided.outcome);
            let frames = adt::answer(&config, &decided.header, &decided.outcome, decided.application_ack);
            // The sender may have hung up; its message is committed either way.
            let _ = job.reply.send(frames);
        }
        if gathers {
            let finished = Instant::now();
            let linger = finished.duration_since(started).min(MAX_GATHER);
            gather = Some(((receiver.len() + answered).min(max_batch), finished + linger));
        }
    }
}

async fn commit_batch(
    store: &Store,
    config: &AdtConfig,
    batch: &[Job],
    now: i64,
) -> Result<(Vec<Decided>, bool), StoreError> {
    let mut session = store.write_session().await?;
    match decide(&mut session, config, batch).await {
        Ok((decisions, changes, enqueued)) => {
            if changes.is_empty() {
                // Only repeats: nothing to make durable.
                session.rollback().await?;
            } else {
                session.commit(&changes, now).await?;
            }
            Ok((decisions, enqueued))
        }
        Err(error) => {
            // The error is what the senders hear about; a failed rollback closes the connection.
            let _ = session.rollback().await;
            Err(error)
        }
    }
}

/// Reads the batch's state, applies each message in arrival order, and returns the answers
/// with everything to write (ACK records included). Nothing is written yet.
async fn decide(
    session: &mut WriteSession,
    config: &AdtConfig,
    batch: &[Job],
) -> Result<(Vec<Decided>, Changes, bool), StoreError> {
    let senders: Vec<String> = batch.iter().map(|job| sender_key(&job.message.header)).collect();
    let keys: Vec<(&str, &str)> = batch
        .iter()
        .zip(&senders)
        .map(|(job, sender)| (sender.as_str(), job.message.header.control_id.as_str()))
        .collect();
    let messages: Vec<&AdtMessage> = batch.iter().map(|job| &job.message).collect();
    let prefetch = patients::prefetch(&config.domain, messages.iter().copied());
    let mut work = Working::new(session);
    // Seen before this batch, or earlier in it: (sender, control id) -> recorded ACK.
    let mut seen: HashMap<(String, String), RecordedAck> = work
        .load(&keys, &prefetch)
        .await?
        .into_iter()
        .map(|(sender, control_id, recorded)| ((sender, control_id), recorded))
        .collect();
    let mut decisions = Vec::with_capacity(batch.len());
    let mut acks: Vec<NewAck> = Vec::new();
    let mut enqueued = false;
    for (job_idx, job) in batch.iter().enumerate() {
        let header = &job.message.header;
        let key = (senders[job_idx].clone(), header.control_id.clone());
        if let Some(recorded) = seen.get(&key) {
            let outcome = Outcome::Repeated { accepted: recorded.ack_code == "AA" };
            decisions.push(Decided { header: header.clone(), outcome, application_ack: recorded.ack.clone() });
            continue;
        }
        let outcome = match patients::apply_in(&mut work, &config.domain, &job.message).await {
            Ok(applied) => {
                enqueued |= applied.enqueued;
                Outcome::Accepted
            }
            Err(ApplyError::Rejected(error)) => Outcome::Rejected(error),
            // A read failed: the batch is answered AE and resent rather than committed around it.
            Err(ApplyError::Store(error)) => return Err(error),
        };
        let (code, application_ack) = adt::application_ack(config, header, &outcome);
        let recorded = RecordedAck { ack_code: code.as_str().to_owned(), ack: application_ack.clone() };
        // The answers are final (AA or AR) and recorded with the changes they answer, so a
        // repeat gets the same ACK without being applied again.
        acks.push(NewAck { sender: key.0.clone(), control_id: key.1.clone(), recorded: recorded.clone() });
        seen.insert(key, recorded);
        decisions.push(Decided { header: header.clone(), outcome, application_ack });
    }
    let mut changes = work.set.into_changes(config.patient_merge);
    changes.acks = acks;
    Ok((decisions, changes, enqueued))
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
