//! Outbox worker tests on both engines: retryable and permanent failures, a panicking deliverer,
//! per-key order, wake-ups, graceful shutdown, and two workers (two brokers) on one PostgreSQL.

// The store's test support (fresh SQLite file, fresh PostgreSQL database), shared rather than copied.
#[path = "../../hie-store/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hie_outbound::{Deliver, DeliveryError, DeliveryFuture, LogDeliverer, OutboxWorker};
use hie_store::outbox::{self, Claimed, NewItem, OutboxPolicy};
use hie_store::{Store, now_micros};
use tokio::sync::watch;

const TOPIC: &str = "test.feed";

/// Payloads are `key:seq`. Fails retryably on the first attempt of every third item, panics on the
/// first attempt of `k1:1`, and refuses key `poison` for good. Records what it accepted.
#[derive(Default)]
struct Flaky {
    attempts: Mutex<HashMap<i64, u32>>,
    in_flight: Mutex<HashSet<String>>,
    // Asserting inside a delivery would only count as a deliverer panic, retried: keep a record.
    overlaps: Mutex<Vec<String>>,
    accepted: Mutex<Vec<(String, usize, i64)>>,
}

impl Flaky {
    async fn handle(&self, item: &Claimed) -> Result<(), DeliveryError> {
        let (key, seq) = item.payload.split_once(':').unwrap();
        let seq: usize = seq.parse().unwrap();
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let attempt = attempts.entry(item.id).or_default();
            *attempt += 1;
            *attempt
        };
        if !self.in_flight.lock().unwrap().insert(key.to_owned()) {
            self.overlaps.lock().unwrap().push(item.payload.clone());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.in_flight.lock().unwrap().remove(key);
        if key == "poison" {
            return Err(DeliveryError::Permanent("XDSRegistryMetadataError".to_owned()));
        }
        if key == "k1" && seq == 1 && attempt == 1 {
            panic!("deliverer bug");
        }
        if seq.is_multiple_of(3) && attempt == 1 {
            return Err(DeliveryError::Retryable("connection refused".to_owned()));
        }
        self.accepted.lock().unwrap().push((key.to_owned(), seq, item.id));
        Ok(())
    }
}

impl Deliver for Flaky {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn deliver<'a>(&'a self, item: &'a Claimed) -> DeliveryFuture<'a> {
        Box::pin(self.handle(item))
    }
}

fn fast_policy() -> OutboxPolicy {
    OutboxPolicy {
        lease: Duration::from_secs(30),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        max_attempts: 5,
    }
}

async fn enqueue_all(store: &Store, keys: &[&str], per_key: usize) {
    let mut tx = store.begin().await.unwrap();
    for seq in 0..per_key {
        for key in keys {
            let payload = format!("{key}:{seq}");
            let item = NewItem { topic: TOPIC, key, payload: &payload, idempotency_key: None };
            outbox::enqueue(&mut tx, &item, now_micros()).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

async fn wait_for_done(store: &Store, done: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = store.outbox_counts().await.unwrap();
        if counts.done >= done {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "outbox did not drain: {counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_in_order(accepted: &[(String, usize, i64)], keys: &[&str], per_key: usize) {
    let mut per_key_seqs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (key, seq, _) in accepted {
        per_key_seqs.entry(key.as_str()).or_default().push(*seq);
    }
    for key in keys {
        assert_eq!(per_key_seqs.remove(key).unwrap_or_default(), (0..per_key).collect::<Vec<_>>(), "key {key}");
    }
    assert!(per_key_seqs.is_empty(), "unexpected keys {per_key_seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_in_key_order_and_keeps_the_poison_visible() {
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let per_key = 7;
    for (engine, store) in support::each_engine().await {
        enqueue_all(&store, &keys, per_key).await;
        enqueue_all(&store, &["poison"], 3).await;

        let flaky = Arc::new(Flaky::default());
        let worker = OutboxWorker::new(store.clone(), vec![flaky.clone()], fast_policy(), "w1".to_owned())
            .with_poll_interval(Duration::from_millis(20))
            .with_concurrency(4);
        let (stop, shutdown) = watch::channel(false);
        let running = tokio::spawn(worker.run(shutdown));

        wait_for_done(&store, (keys.len() * per_key) as u64).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();

        assert!(flaky.overlaps.lock().unwrap().is_empty(), "{engine:?}: two items of one key in flight");
        let accepted = flaky.accepted.lock().unwrap().clone();
        assert_eq!(accepted.len(), keys.len() * per_key, "{engine:?}: each accepted once");
        assert_in_order(&accepted, &keys, per_key);

        // The poison head failed after one attempt, and its key's later items wait behind it.
        let failed = store.outbox_list(Some("failed"), 10).await.unwrap();
        assert_eq!(failed.len(), 1, "{engine:?}");
        assert_eq!(failed[0].payload, "poison:0", "{engine:?}");
        assert_eq!(failed[0].attempts, 1, "{engine:?}");
        assert_eq!(failed[0].last_error.as_deref(), Some("XDSRegistryMetadataError"), "{engine:?}");
        let pending = store.outbox_list(Some("pending"), 10).await.unwrap();
        let pending: Vec<&str> = pending.iter().map(|row| row.payload.as_str()).collect();
        assert_eq!(pending, ["poison:1", "poison:2"], "{engine:?}");

        // The panicking and the refused-once items took two attempts.
        let done = store.outbox_list(Some("done"), 100).await.unwrap();
        for row in done {
            let seq: usize = row.payload.split_once(':').unwrap().1.parse().unwrap();
            let expected = if seq.is_multiple_of(3) || row.payload == "k1:1" { 2 } else { 1 };
            assert_eq!(row.attempts, expected, "{engine:?} {}", row.payload);
        }
    }
}

#[tokio::test]
async fn a_poke_wakes_the_worker_without_polling() {
    let store = support::sqlite_store().await;
    let worker =
        OutboxWorker::new(store.clone(), vec![Arc::new(LogDeliverer::new(TOPIC))], fast_policy(), "w1".to_owned())
            .with_poll_interval(Duration::from_secs(3600));
    let waker = worker.waker();
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn(worker.run(shutdown));

    // Let the worker reach its wait with an empty outbox, then enqueue and poke it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    enqueue_all(&store, &["k0"], 3).await;
    waker.notify_one();
    tokio::time::timeout(Duration::from_secs(10), wait_for_done(&store, 3)).await.unwrap();

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
}

/// Holds every delivery until released, to observe shutdown with deliveries in flight.
struct Gate {
    started: tokio::sync::Semaphore,
    release: tokio::sync::Notify,
}

impl Deliver for Gate {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn deliver<'a>(&'a self, _item: &'a Claimed) -> DeliveryFuture<'a> {
        Box::pin(async move {
            self.started.add_permits(1);
            self.release.notified().await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn shutdown_finishes_deliveries_in_flight_and_claims_no_more() {
    let store = support::sqlite_store().await;
    enqueue_all(&store, &["k0", "k1", "k2"], 2).await;
    let gate = Arc::new(Gate { started: tokio::sync::Semaphore::new(0), release: tokio::sync::Notify::new() });
    let worker = OutboxWorker::new(store.clone(), vec![gate.clone()], fast_policy(), "w1".to_owned())
        .with_poll_interval(Duration::from_millis(10));
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn(worker.run(shutdown));

    // The three heads are in flight; stop, then let them finish.
    let started = gate.started.acquire_many(3).await.unwrap();
    started.forget();
    stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!running.is_finished(), "returned with deliveries in flight");
    gate.release.notify_waiters();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();

    let counts = store.outbox_counts().await.unwrap();
    assert_eq!((counts.done, counts.pending, counts.leased), (3, 3, 0), "{counts:?}");
}

/// Two brokers on one PostgreSQL database, each with its own worker: all delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_drain_one_postgres_outbox() {
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    let per_key = 10;
    let url = support::pg_database().await;
    let brokers = [
        Store::connect(&support::options(url.clone(), 4)).await.unwrap(),
        Store::connect(&support::options(url, 4)).await.unwrap(),
    ];
    enqueue_all(&brokers[0], &keys, per_key).await;

    let flaky = Arc::new(Flaky::default());
    let (stop, shutdown) = watch::channel(false);
    let mut running = Vec::new();
    for (broker_idx, store) in brokers.iter().enumerate() {
        let worker =
            OutboxWorker::new(store.clone(), vec![flaky.clone()], fast_policy(), format!("broker{broker_idx}"))
                .with_poll_interval(Duration::from_millis(10))
                .with_concurrency(4);
        running.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    wait_for_done(&brokers[1], (keys.len() * per_key) as u64).await;
    stop.send(true).unwrap();
    for worker in running {
        tokio::time::timeout(Duration::from_secs(10), worker).await.unwrap().unwrap();
    }

    assert!(flaky.overlaps.lock().unwrap().is_empty(), "two items of one key in flight");
    let accepted = flaky.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), keys.len() * per_key, "each accepted once");
    assert_in_order(&accepted, &keys, per_key);
}
