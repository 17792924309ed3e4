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
//! On SQLite with a journal (`hie_store::journal`, the default for a store in a file), a batch
//! is made durable by its journal rows, one per message under a sequential key, while its
//! changes to the store commit beside them without waiting for the disk; the batch is answered
//! when both are done, so what it changed is visible the moment its ACKs go out. A store commit
//! costs the pages it touches, spread over the tables' indexes, and the journal's commit costs
//! the few pages at the end of its file: the two run side by side on their own connections. The
//! store is made durable every [`SYNC_EVERY_MESSAGES`] messages or [`SYNC_EVERY`] (a commit with
//! its fsync), and the journal rows it covers are pruned. At start, whatever the journal still
//! holds is applied again in order ([`AdtWriter::spawn_journaled`]): messages the store kept are
//! repeats by sender and MSH-10 and change nothing, those a crash of the machine lost are
//! applied as they were the first time.
//!
//! A batch costs the same few trips to the database whatever it holds: one read of everything
//! its messages name (recorded ACKs, the patients holding their identifiers, fresh ids), the
//! identity rules applied in memory in arrival order (`working_set`), then one write of every
//! outcome with the commit (`hie_store::batch::WriteSession`). On SQLite that is two hand-offs
//! to the connection's thread; on PostgreSQL two round trips. Only merges that follow
//! `merged_into` chains read more. A refused message never undoes its neighbours: the rules
//! check before they change anything, and a message with several PID/MRG groups is undone in
//! memory if a later group is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hie_hl7::adt::{AdtMessage, MessageHeader};
use hie_store::batch::{Changes, NewAck, WriteSession};
use hie_store::journal::{AdtJournal, JournalEntry, JournalRow};
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

/// With a journal, the store's changes are made durable at least every this many messages...
pub const SYNC_EVERY_MESSAGES: usize = 4_096;

/// ...and at least this often, bounding the journal and the work a replay may have to redo.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);

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
    /// Journaled messages applied again at start (none applied twice: see the module doc).
    pub replayed: AtomicU64,
}

/// The writer has stopped (shutdown); the message was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the ADT writer has stopped")]
pub struct WriterStopped;

#[derive(Debug)]
struct Job {
    message: AdtMessage,
    /// The message as received (decoded to UTF-8), which the journal keeps; without it the
    /// batch is committed to the store with its fsync.
    text: Option<String>,
    reply: oneshot::Sender<Vec<String>>,
}

/// The writer's journal and where it stands (see the module doc).
struct Journal {
    journal: AdtJournal,
    /// The seq of the last message taken.
    last_seq: i64,
    /// Every message up to this seq has its store changes on disk: its rows may go.
    durable_through: i64,
    /// Messages whose store changes may not be on disk yet, and since when.
    unsynced: usize,
    unsynced_since: Instant,
    /// A batch's store changes were committed without their journal rows and without an fsync.
    must_sync: bool,
}

impl Journal {
    /// Every message taken so far has its store changes on disk.
    fn mark_durable(&mut self) {
        self.durable_through = self.last_seq;
        self.unsynced = 0;
        self.unsynced_since = Instant::now();
    }
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
        Self::start(store, None, config, outbox_waker, Arc::new(AdtStats::default()))
    }

    /// Starts the writer with a journal (SQLite; see the module doc), after applying again
    /// whatever the journal still holds. An error there is the broker's to report: it must not
    /// take new messages over ones it has not applied.
    pub async fn spawn_journaled(
        store: Store,
        journal: AdtJournal,
        config: Arc<AdtConfig>,
        outbox_waker: Arc<Notify>,
    ) -> Result<(AdtWriter, tokio::task::JoinHandle<()>), StoreError> {
        let stats = Arc::new(AdtStats::default());
        let rows = journal.rows().await?;
        let (replayed, enqueued) = replay(&store, &config, &rows).await?;
        if !rows.is_empty() {
            tracing::info!(journaled = rows.len(), replayed, "ADT journal applied at start");
        }
        stats.replayed.store(replayed as u64, Ordering::Relaxed);
        if enqueued {
            outbox_waker.notify_one();
        }
        let last_seq = journal.last_seq().await?;
        // Replayed batches were committed with their fsync: every row may go.
        let journal = Journal {
            journal,
            last_seq,
            durable_through: last_seq,
            unsynced: 0,
            unsynced_since: Instant::now(),
            must_sync: false,
        };
        Ok(Self::start(store, Some(journal), config, outbox_waker, stats))
    }

    fn start(
        store: Store,
        journal: Option<Journal>,
        config: Arc<AdtConfig>,
        outbox_waker: Arc<Notify>,
        stats: Arc<AdtStats>,
    ) -> (AdtWriter, tokio::task::JoinHandle<()>) {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run(store, journal, config, outbox_waker, receiver, Arc::clone(&stats)));
        (AdtWriter { jobs, stats }, task)
    }

    /// Applies a message and returns the frames to answer with, once they may be sent: after the
    /// commit that made the message's effects durable.
    pub async fn submit(&self, message: AdtMessage) -> Result<Vec<String>, WriterStopped> {
        self.send(Job { message, text: None, reply: oneshot::channel().0 }).await
    }

    /// As [`AdtWriter::submit`], with the text the message was parsed from (`hie_hl7::adt::parse_adt`),
    /// which a journaled writer keeps instead of waiting for the store's fsync.
    pub async fn submit_received(&self, message: AdtMessage, text: String) -> Result<Vec<String>, WriterStopped> {
        self.send(Job { message, text: Some(text), reply: oneshot::channel().0 }).await
    }

    async fn send(&self, mut job: Job) -> Result<Vec<String>, WriterStopped> {
        let (reply, answer) = oneshot::channel();
        job.reply = reply;
        self.jobs.send(job).await.map_err(|_| WriterStopped)?;
        answer.await.map_err(|_| WriterStopped)
    }

    /// The writer's counters, shared with `/metrics`.
    pub fn stats_handle(&self) -> Arc<AdtStats> {
        Arc::clone(&self.stats)
    }
}

async fn run(
    store: Store,
    mut journal: Option<Journal>,
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
        let committed = match journal.as_mut() {
            Some(journal) if batch.iter().all(|job| job.text.is_some()) => {
                tracing::Instrument::instrument(commit_journaled(&store, &config, &batch, now, journal), span).await
            }
            _ => tracing::Instrument::instrument(commit_batch(&store, &config, &batch, now, true), span).await,
        };
        let (decisions, enqueued) = match committed {
            Ok(committed) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.committed_messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
                (committed.decisions, committed.enqueued)
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
    if let Some(journal) = journal {
        journal.journal.close().await;
    }
}

/// Journals the batch and commits its store changes side by side (see the module doc).
async fn commit_journaled(
    store: &Store,
    config: &AdtConfig,
    batch: &[Job],
    now: i64,
    journal: &mut Journal,
) -> Result<Committed, StoreError> {
    if journal.must_sync {
        // An earlier batch was stored without its journal rows and is not on disk yet. A resend
        // of it would be answered from the store, so nothing is answered until it is on disk.
        store.make_durable().await?;
        journal.must_sync = false;
        journal.mark_durable();
    }
    let first = journal.last_seq + 1;
    let last = journal.last_seq + batch.len() as i64;
    journal.last_seq = last;
    let entries: Vec<JournalEntry<'_>> = batch
        .iter()
        .zip(first..)
        .map(|(job, seq)| JournalEntry { seq, received_at: now, message: job.text.as_deref().unwrap_or_default() })
        .collect();
    let sync_store =
        journal.unsynced + batch.len() >= SYNC_EVERY_MESSAGES || journal.unsynced_since.elapsed() >= SYNC_EVERY;
    let (journaled, stored) = tokio::join!(
        journal.journal.append(&entries, journal.durable_through),
        commit_batch(store, config, batch, now, sync_store)
    );
    match (&journaled, &stored) {
        // A commit with its fsync puts every earlier one on disk too (the WAL is written in
        // order); a batch of repeats only commits nothing.
        (_, Ok(committed)) if sync_store && committed.wrote => journal.mark_durable(),
        (_, Ok(_)) => journal.unsynced += batch.len(),
        (Ok(()), Err(_)) => {
            // Journaled, not stored: answered as not stored, so a replay must not apply them.
            if let Err(error) = journal.journal.forget(first, last).await {
                tracing::warn!(%error, first, last, "could not drop the journal rows of a failed ADT batch");
            }
        }
        (Err(_), Err(_)) => {}
    }
    if journaled.is_err() && stored.as_ref().is_ok_and(|committed| committed.wrote && !sync_store) {
        // Stored but not journaled: answered as not stored too. The store's changes stand (with
        // their recorded ACKs), so a resend is a repeat and gets the answer it would have had,
        // once they are on disk (see the top of this function).
        journal.must_sync = true;
    }
    journaled?;
    stored
}

/// Applies journaled messages again, in order, with the time they were first written with.
/// Returns how many were applied (the others were repeats) and whether outbox items were queued.
async fn replay(store: &Store, config: &AdtConfig, rows: &[JournalRow]) -> Result<(usize, bool), StoreError> {
    let mut applied = 0;
    let mut enqueued = false;
    let max_batch = config.max_batch.max(1);
    for same_time in rows.chunk_by(|a, b| a.received_at == b.received_at) {
        for chunk in same_time.chunks(max_batch) {
            let mut jobs = Vec::with_capacity(chunk.len());
            for row in chunk {
                match hie_hl7::adt::parse_adt(&row.message) {
                    // Nobody waits for these answers.
                    Ok(message) => jobs.push(Job { message, text: None, reply: oneshot::channel().0 }),
                    // It parsed when it was taken: only a different parser could refuse it now.
                    Err(error) => {
                        tracing::warn!(seq = row.seq, code = ?error.code, "a journaled ADT message no longer parses; skipped")
                    }
                }
            }
            let committed = commit_batch(store, config, &jobs, chunk[0].received_at, true).await?;
            applied += committed
                .decisions
                .iter()
                .filter(|decided| !matches!(decided.outcome, Outcome::Repeated { .. }))
                .count();
            enqueued |= committed.enqueued;
        }
    }
    Ok((applied, enqueued))
}

/// What a committed batch comes to.
struct Committed {
    decisions: Vec<Decided>,
    /// Outbox items were queued.
    enqueued: bool,
    /// Something was written (a batch of repeats only writes nothing, and commits nothing).
    wrote: bool,
}

/// Decides the batch and commits its changes to the store, with the store's fsync when `synced`.
async fn commit_batch(
    store: &Store,
    config: &AdtConfig,
    batch: &[Job],
    now: i64,
    synced: bool,
) -> Result<Committed, StoreError> {
    let mut session = if synced { store.write_session().await? } else { store.write_session_unsynced().await? };
    match decide(&mut session, config, batch).await {
        Ok((decisions, changes, enqueued)) => {
            let wrote = !changes.is_empty();
            if wrote {
                session.commit(&changes, now).await?;
            } else {
                // Only repeats: nothing to make durable.
                session.rollback().await?;
            }
            Ok(Committed { decisions, enqueued, wrote })
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
