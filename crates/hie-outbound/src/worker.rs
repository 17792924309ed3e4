//! The outbox drain worker: claims due items, delivers them concurrently (bounded), and records
//! each outcome in the store.
//!
//! One loop per broker instance. It claims as many items as it has free delivery slots, so a
//! slow peer holds slots but never the claim itself; per-key order comes from the claim, which
//! only ever hands out the head of a key. It wakes on a poke from the writer that just enqueued,
//! on a finished delivery (the next item of that key may now be due), or on the poll interval
//! (backoffs running out, other instances' items, expired leases).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hie_store::outbox::{Claimed, OutboxPolicy, Report};
use hie_store::{Store, now_micros};
use tokio::sync::{Notify, watch};
use tokio::task::{Id as TaskId, JoinError, JoinSet};

use crate::deliver::{Deliver, DeliveryError};

/// Drains the outbox for the topics of its deliverers.
pub struct OutboxWorker {
    store: Store,
    deliverers: HashMap<&'static str, Arc<dyn Deliver>>,
    policy: OutboxPolicy,
    worker_id: String,
    waker: Arc<Notify>,
    poll_interval: Duration,
    concurrency: usize,
    linger: Duration,
}

impl OutboxWorker {
    /// A worker delivering each topic through its deliverer (a later deliverer for the same topic
    /// replaces an earlier one). `worker_id` names the lease holder; make it unique per instance.
    pub fn new(store: Store, deliverers: Vec<Arc<dyn Deliver>>, policy: OutboxPolicy, worker_id: String) -> Self {
        let deliverers = deliverers.into_iter().map(|deliverer| (deliverer.topic(), deliverer)).collect();
        OutboxWorker {
            store,
            deliverers,
            policy,
            worker_id,
            waker: Arc::new(Notify::new()),
            poll_interval: DEFAULT_POLL_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
            linger: DEFAULT_LINGER,
        }
    }

    /// How often to look for due items when nothing pokes the worker (default 1 s).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// How many deliveries may run at once (default 16, at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long to wait after a poke, or after a round of deliveries, before claiming (default
    /// 10 ms): one claim and one report transaction then cover everything enqueued meanwhile,
    /// instead of costing the writer two commits per item. Every item waits it once per round, so
    /// it adds to each delivery's latency (50 ms cost a closed loop of 8 publications a third of
    /// its throughput).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The worker's wake-up: call `notify_one()` after committing a transaction that enqueued
    /// something. A poke while the worker is busy is kept for its next wait, so none is lost.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.waker)
    }

    /// Runs until `shutdown` turns true (or its sender goes away), then stops claiming, lets the
    /// deliveries in flight finish, records their outcomes and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut topics: Vec<&'static str> = self.deliverers.keys().copied().collect();
        topics.sort_unstable();
        tracing::info!(worker = %self.worker_id, ?topics, "outbox worker started");
        let mut in_flight: JoinSet<Result<(), DeliveryError>> = JoinSet::new();
        let mut claimed_by_task: HashMap<TaskId, Claimed> = HashMap::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free_slots = self.concurrency.saturating_sub(in_flight.len());
            if free_slots > 0 {
                match self
                    .store
                    .outbox_claim(&topics, &self.worker_id, free_slots, self.policy.lease, now_micros())
                    .await
                {
                    Ok(items) => {
                        for item in items {
                            self.start_delivery(item, &mut in_flight, &mut claimed_by_task).await;
                        }
                    }
                    // The claim is retried on the next wake-up; claimed items are safe in the store.
                    Err(error) => tracing::warn!(worker = %self.worker_id, %error, "outbox claim failed"),
                }
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(joined) = in_flight.join_next_with_id() => {
                    // Every delivery that has finished is recorded in one transaction.
                    let mut outcomes = vec![settle(joined, &mut claimed_by_task)];
                    while let Some(joined) = in_flight.try_join_next_with_id() {
                        outcomes.push(settle(joined, &mut claimed_by_task));
                    }
                    self.record_all(outcomes.into_iter().flatten().collect()).await;
                    // Finished heads may have released their keys' next items; gather those (and
                    // whatever arrives meanwhile) into one claim rather than one claim per round.
                    self.linger(&mut shutdown).await;
                }
                () = self.waker.notified() => self.linger(&mut shutdown).await,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        tracing::info!(worker = %self.worker_id, in_flight = in_flight.len(), "outbox worker stopping");
        let mut outcomes = Vec::new();
        while let Some(joined) = in_flight.join_next_with_id().await {
            outcomes.extend(settle(joined, &mut claimed_by_task));
        }
        self.record_all(outcomes).await;
        tracing::info!(worker = %self.worker_id, "outbox worker stopped");
    }

    /// Spawns the delivery of `item`, remembering which task carries it so that even a panicking
    /// deliverer's item gets an outcome.
    async fn start_delivery(
        &self,
        item: Claimed,
        in_flight: &mut JoinSet<Result<(), DeliveryError>>,
        claimed_by_task: &mut HashMap<TaskId, Claimed>,
    ) {
        // Only reached when every lease ran out without an outcome (e.g. the item crashes the
        // process): a retryable failure turns permanent at max_attempts and is never claimed again.
        if item.attempts > self.policy.max_attempts {
            let error = format!("{} attempts without a recorded outcome", item.attempts - 1);
            self.record(&item, Err(DeliveryError::Permanent(error))).await;
            return;
        }
        let Some(deliverer) = self.deliverers.get(item.topic.as_str()).map(Arc::clone) else {
            let error = format!("no deliverer for topic {:?}", item.topic);
            self.record(&item, Err(DeliveryError::Retryable(error))).await;
            return;
        };
        // Cut a delivery off well before its lease ends, so another instance never takes over an
        // item this one is still sending.
        let timeout = self.policy.lease / 2;
        let task_item = item.clone();
        let handle = in_flight.spawn(async move {
            match tokio::time::timeout(timeout, deliverer.deliver(&task_item)).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => Err(DeliveryError::Retryable(format!("no answer within {timeout:?}"))),
            }
        });
        claimed_by_task.insert(handle.id(), item);
    }

    /// Waits `linger` (or until shutdown) so the next claim and report cover many items.
    async fn linger(&self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            () = tokio::time::sleep(self.linger) => {}
            _ = shutdown.changed() => {}
        }
    }

    async fn record(&self, item: &Claimed, outcome: Result<(), DeliveryError>) {
        self.record_all(vec![(item.clone(), outcome)]).await;
    }

    /// Records outcomes in one transaction, then logs each (no payloads: they may hold PHI).
    async fn record_all(&self, outcomes: Vec<(Claimed, Result<(), DeliveryError>)>) {
        if outcomes.is_empty() {
            return;
        }
        let reports: Vec<(&Claimed, Report<'_>)> = outcomes
            .iter()
            .map(|(item, outcome)| {
                let report = match outcome {
                    Ok(()) => Report::Delivered,
                    Err(DeliveryError::Retryable(error)) => Report::RetryLater { error },
                    Err(DeliveryError::Permanent(error)) => Report::Failed { error },
                    Err(DeliveryError::Park(error)) => Report::Park { error },
                };
                (item, report)
            })
            .collect();
        let recorded = self.store.outbox_report_all(&reports, now_micros(), &self.policy).await;
        for (item_idx, (item, outcome)) in outcomes.iter().enumerate() {
            let outcome_name = match outcome {
                Ok(()) => "done",
                Err(DeliveryError::Retryable(_)) if item.attempts >= self.policy.max_attempts => "failed",
                Err(DeliveryError::Retryable(_)) => "retry",
                Err(DeliveryError::Permanent(_)) => "failed",
                Err(DeliveryError::Park(_)) => "parked",
            };
            // Error texts come from peers and may quote the payload: debug level only.
            if let Err(error) = outcome {
                tracing::debug!(id = item.id, %error, "outbox delivery failed");
            }
            match &recorded {
                Ok(flags) if flags.get(item_idx).copied().unwrap_or(false) => {
                    if outcome.is_ok() {
                        tracing::debug!(id = item.id, topic = %item.topic, attempts = item.attempts, "outbox item delivered");
                    } else {
                        tracing::info!(
                            id = item.id,
                            topic = %item.topic,
                            attempts = item.attempts,
                            outcome = outcome_name,
                            "outbox delivery failed"
                        );
                    }
                }
                Ok(_) => tracing::warn!(
                    id = item.id,
                    topic = %item.topic,
                    outcome = outcome_name,
                    "outbox lease lost before the outcome was recorded; another worker owns the item"
                ),
                // The lease runs out and the item is delivered again: at least once.
                Err(error) => tracing::warn!(
                    id = item.id,
                    topic = %item.topic,
                    outcome = outcome_name,
                    %error,
                    "could not record an outbox outcome"
                ),
            }
        }
    }
}

/// Pairs a finished delivery task with its item; a panic is a bug in the deliverer, not a
/// verdict on the item, so it counts as retryable.
fn settle(
    joined: Result<(TaskId, Result<(), DeliveryError>), JoinError>,
    claimed_by_task: &mut HashMap<TaskId, Claimed>,
) -> Option<(Claimed, Result<(), DeliveryError>)> {
    let (task_id, outcome) = match joined {
        Ok((task_id, outcome)) => (task_id, outcome),
        Err(join_error) => {
            let reason = if join_error.is_panic() { "deliverer panicked" } else { "delivery cancelled" };
            (join_error.id(), Err(DeliveryError::Retryable(reason.to_owned())))
        }
    };
    claimed_by_task.remove(&task_id).map(|item| (item, outcome))
}

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_CONCURRENCY: usize = 16;
const DEFAULT_LINGER: Duration = Duration::from_millis(10);
