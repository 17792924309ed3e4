//! Outbox contract tests, run on SQLite and PostgreSQL: transactional enqueue, idempotency, per-key
//! order, permanent failures and manual retry, lease takeover with fencing, backoff, and (on
//! PostgreSQL) several brokers sharing one outbox.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hie_store::outbox::{self, Claimed, NewItem, OutboxCounts, OutboxPolicy, Report};
use hie_store::{Engine, Store, now_micros};

const TOPIC: &str = "test.feed";
const LEASE: Duration = Duration::from_secs(30);
const SECOND: i64 = 1_000_000;

async fn enqueue(store: &Store, key: &str, payload: &str, now: i64) -> i64 {
    enqueue_with(store, key, payload, None, now).await.expect("new item")
}

async fn enqueue_with(store: &Store, key: &str, payload: &str, idempotency_key: Option<&str>, now: i64) -> Option<i64> {
    let mut tx = store.begin().await.unwrap();
    let item = NewItem { topic: TOPIC, key, payload, idempotency_key };
    let id = outbox::enqueue(&mut tx, &item, now).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn claim(store: &Store, worker: &str, now: i64) -> Vec<Claimed> {
    store.outbox_claim(&[TOPIC], worker, 100, LEASE, now).await.unwrap()
}

fn payloads(items: &[Claimed]) -> Vec<&str> {
    items.iter().map(|item| item.payload.as_str()).collect()
}

#[tokio::test]
async fn rolled_back_enqueue_is_invisible() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let mut tx = store.begin().await.unwrap();
        let item = NewItem { topic: TOPIC, key: "patient:1", payload: "lost", idempotency_key: Some("k") };
        assert!(outbox::enqueue(&mut tx, &item, now).await.unwrap().is_some());
        tx.rollback().await.unwrap();
        assert!(claim(&store, "w1", now).await.is_empty(), "{engine:?}");
        assert!(store.outbox_list(None, 10).await.unwrap().is_empty(), "{engine:?}");

        // The idempotency key of a rolled-back item is free again.
        assert!(enqueue_with(&store, "patient:1", "kept", Some("k"), now).await.is_some(), "{engine:?}");
        assert_eq!(payloads(&claim(&store, "w1", now).await), ["kept"], "{engine:?}");
    }
}

#[tokio::test]
async fn idempotency_key_dedupes_per_topic() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let first = enqueue_with(&store, "patient:1", "one", Some("msg-1"), now).await;
        assert!(first.is_some(), "{engine:?}");
        assert_eq!(enqueue_with(&store, "patient:1", "again", Some("msg-1"), now).await, None, "{engine:?}");

        // The same key on another topic, and items without a key, are distinct items.
        let mut tx = store.begin().await.unwrap();
        let other_topic = NewItem { topic: "other", key: "patient:1", payload: "x", idempotency_key: Some("msg-1") };
        assert!(outbox::enqueue(&mut tx, &other_topic, now).await.unwrap().is_some(), "{engine:?}");
        tx.commit().await.unwrap();
        assert!(enqueue_with(&store, "patient:2", "a", None, now).await.is_some(), "{engine:?}");
        assert!(enqueue_with(&store, "patient:2", "b", None, now).await.is_some(), "{engine:?}");

        let rows = store.outbox_list(None, 10).await.unwrap();
        assert_eq!(rows.len(), 4, "{engine:?}");
        assert_eq!(rows[0].id, first.unwrap(), "{engine:?}");
        assert_eq!(rows[0].payload, "one", "{engine:?}");
    }
}

#[tokio::test]
async fn only_the_head_of_each_key_is_claimed() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        for payload in ["A1", "A2", "A3"] {
            enqueue(&store, "patient:A", payload, now).await;
        }
        enqueue(&store, "patient:B", "B1", now).await;

        let first = claim(&store, "w1", now).await;
        assert_eq!(payloads(&first), ["A1", "B1"], "{engine:?}");
        assert!(first.iter().all(|item| item.attempts == 1), "{engine:?}");
        // While A1 is leased nothing of key A moves, even for another worker.
        assert!(claim(&store, "w2", now).await.is_empty(), "{engine:?}");

        assert!(store.outbox_complete(&first[0], now).await.unwrap(), "{engine:?}");
        let second = claim(&store, "w2", now).await;
        assert_eq!(payloads(&second), ["A2"], "{engine:?}");
        assert!(store.outbox_complete(&second[0], now).await.unwrap(), "{engine:?}");
        assert!(store.outbox_complete(&first[1], now).await.unwrap(), "{engine:?}");
        assert_eq!(payloads(&claim(&store, "w1", now).await), ["A3"], "{engine:?}");

        let counts = store.outbox_counts().await.unwrap();
        assert_eq!(counts, OutboxCounts { pending: 0, leased: 1, failed: 0, done: 3 }, "{engine:?}");
    }
}

#[tokio::test]
async fn a_retry_in_backoff_holds_its_key_only() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        enqueue(&store, "patient:A", "A1", now).await;
        enqueue(&store, "patient:A", "A2", now).await;
        enqueue(&store, "patient:B", "B1", now).await;
        let policy = OutboxPolicy::default();

        let items = claim(&store, "w1", now).await;
        assert_eq!(payloads(&items), ["A1", "B1"], "{engine:?}");
        assert!(store.outbox_retry_later(&items[0], "peer down", now, &policy).await.unwrap(), "{engine:?}");
        assert!(store.outbox_complete(&items[1], now).await.unwrap(), "{engine:?}");
        enqueue(&store, "patient:B", "B2", now).await;

        // A1 waits out its backoff, A2 waits behind it; B keeps flowing.
        assert_eq!(payloads(&claim(&store, "w1", now).await), ["B2"], "{engine:?}");
        let later = now + 2 * SECOND;
        let retried = claim(&store, "w1", later).await;
        assert_eq!(payloads(&retried), ["A1"], "{engine:?}");
        assert_eq!(retried[0].attempts, 2, "{engine:?}");
    }
}

async fn enqueue_on(store: &Store, topic: &str, key: &str, payload: &str, now: i64) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let item = NewItem { topic, key, payload, idempotency_key: None };
    let id = outbox::enqueue(&mut tx, &item, now).await.unwrap().expect("new item");
    tx.commit().await.unwrap();
    id
}

async fn park(store: &Store, item: &Claimed, now: i64, policy: &OutboxPolicy) -> bool {
    let reports = [(item, Report::Park { error: "XDSUnknownPatientId" })];
    store.outbox_report_all(&reports, now, policy).await.unwrap()[0]
}

#[test]
fn a_parked_item_looks_again_after_a_quarter_of_its_wait_within_the_backoff_bounds() {
    let policy = OutboxPolicy::default();
    let within = |delay: Duration, nominal: Duration| delay >= nominal.mul_f64(0.8) && delay <= nominal.mul_f64(1.2);
    for (waited, nominal) in [
        (Duration::ZERO, policy.backoff_base),
        (Duration::from_secs(2), policy.backoff_base),
        (Duration::from_secs(40), Duration::from_secs(10)),
        (Duration::from_secs(3_600), policy.backoff_max),
    ] {
        let delay = policy.park_delay(waited);
        assert!(within(delay, nominal), "after {waited:?}: {delay:?}, expected about {nominal:?}");
    }
}

#[tokio::test]
async fn a_parked_head_holds_back_its_topic_only_and_wakes_when_its_key_moves() {
    const SUBMISSION: &str = "test.submission";
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let policy = OutboxPolicy::default();
        enqueue_on(&store, SUBMISSION, "patient:A", "S1", now).await;
        enqueue_on(&store, SUBMISSION, "patient:A", "S2", now).await;
        let topics = [TOPIC, SUBMISSION];
        let claim_both = |at: i64| store.outbox_claim(&topics, "w1", 100, LEASE, at);

        let first = claim_both(now).await.unwrap();
        assert_eq!(payloads(&first), ["S1"], "{engine:?}");
        assert!(park(&store, &first[0], now, &policy).await, "{engine:?}");
        let row = store.outbox_list(None, 10).await.unwrap().remove(0);
        assert!(row.parked, "{engine:?}");
        assert_eq!(row.attempts, 0, "waiting is not failing: the attempt is given back ({engine:?})");
        assert_eq!(row.last_error.as_deref(), Some("XDSUnknownPatientId"), "{engine:?}");
        assert_eq!(row.state, "pending", "{engine:?}");
        // Parked right after it was enqueued: it looks again soon (the shortest backoff).
        let due_in = row.next_attempt_at - now;
        let shortest = i64::try_from(policy.backoff_base.as_micros()).unwrap();
        let longest = i64::try_from(policy.backoff_max.as_micros()).unwrap();
        assert!(due_in >= shortest * 4 / 5 && due_in <= shortest * 6 / 5, "parked for {due_in} µs ({engine:?})");

        // After waiting 20 minutes it looks again after the longest backoff, not a quarter of that.
        let much_later = now + 1_200 * SECOND;
        let again = claim_both(much_later).await.unwrap();
        assert_eq!(payloads(&again), ["S1"], "{engine:?}");
        assert!(park(&store, &again[0], much_later, &policy).await, "{engine:?}");
        let row = store.outbox_list(None, 10).await.unwrap().remove(0);
        let due_in = row.next_attempt_at - much_later;
        assert!(due_in >= longest * 4 / 5 && due_in <= longest * 6 / 5, "parked for {due_in} µs ({engine:?})");

        // The feed queued after it passes it; the submission behind it does not.
        let now = much_later;
        enqueue_on(&store, TOPIC, "patient:A", "F1", now).await;
        let passing = claim_both(now + SECOND).await.unwrap();
        assert_eq!(payloads(&passing), ["F1"], "{engine:?}");

        // Delivering the feed makes the parked head due at once, before its own delay.
        let delivered_at = now + 2 * SECOND;
        assert!(store.outbox_complete(&passing[0], delivered_at).await.unwrap(), "{engine:?}");
        let woken = claim_both(delivered_at).await.unwrap();
        assert_eq!(payloads(&woken), ["S1"], "{engine:?}");
        assert_eq!(woken[0].attempts, 1, "{engine:?}");

        // Parked again, then a plain retry: no longer parked, so it holds its whole key again.
        assert!(park(&store, &woken[0], delivered_at, &policy).await, "{engine:?}");
        let later = delivered_at + 2 * longest;
        let again = claim_both(later).await.unwrap();
        assert_eq!(payloads(&again), ["S1"], "{engine:?}");
        assert!(store.outbox_retry_later(&again[0], "registry busy", later, &policy).await.unwrap(), "{engine:?}");
        enqueue_on(&store, TOPIC, "patient:A", "F2", later).await;
        assert!(claim_both(later).await.unwrap().is_empty(), "{engine:?}");
        let row = store.outbox_list(None, 10).await.unwrap().remove(0);
        assert!(!row.parked, "{engine:?}");
        assert_eq!(row.attempts, 1, "{engine:?}");

        // Other keys' deliveries wake nothing.
        let retried = claim_both(later + 10 * SECOND).await.unwrap();
        assert_eq!(payloads(&retried), ["S1"], "{engine:?}");
        assert!(park(&store, &retried[0], later + 10 * SECOND, &policy).await, "{engine:?}");
        enqueue_on(&store, TOPIC, "patient:B", "B1", later + 10 * SECOND).await;
        let other = claim_both(later + 11 * SECOND).await.unwrap();
        assert_eq!(payloads(&other), ["F2", "B1"], "{engine:?}");
        assert!(store.outbox_complete(&other[1], later + 11 * SECOND).await.unwrap(), "{engine:?}");
        assert!(claim_both(later + 12 * SECOND).await.unwrap().is_empty(), "{engine:?}");
    }
}

#[tokio::test]
async fn a_failed_head_blocks_its_key_until_retried_by_hand() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        enqueue(&store, "patient:A", "A1", now).await;
        enqueue(&store, "patient:A", "A2", now).await;
        enqueue(&store, "patient:B", "B1", now).await;

        let items = claim(&store, "w1", now).await;
        assert_eq!(payloads(&items), ["A1", "B1"], "{engine:?}");
        assert!(store.outbox_fail(&items[0], "XDSRegistryMetadataError", now).await.unwrap(), "{engine:?}");
        assert!(store.outbox_complete(&items[1], now).await.unwrap(), "{engine:?}");
        enqueue(&store, "patient:B", "B2", now).await;

        let much_later = now + 3600 * SECOND;
        assert_eq!(payloads(&claim(&store, "w1", much_later).await), ["B2"], "{engine:?}");
        assert!(claim(&store, "w1", much_later).await.is_empty(), "{engine:?}");

        let failed = store.outbox_list(Some("failed"), 10).await.unwrap();
        assert_eq!(failed.len(), 1, "{engine:?}");
        assert_eq!(failed[0].id, items[0].id, "{engine:?}");
        assert_eq!(failed[0].last_error.as_deref(), Some("XDSRegistryMetadataError"), "{engine:?}");
        assert_eq!(store.outbox_counts().await.unwrap().failed, 1, "{engine:?}");

        // Retrying a pending or unknown item by hand does nothing.
        assert!(!store.outbox_retry_failed(items[1].id, much_later).await.unwrap(), "{engine:?}");
        assert!(!store.outbox_retry_failed(-1, much_later).await.unwrap(), "{engine:?}");
        assert!(store.outbox_retry_failed(items[0].id, much_later).await.unwrap(), "{engine:?}");
        let retried = claim(&store, "w1", much_later).await;
        assert_eq!(payloads(&retried), ["A1"], "{engine:?}");
        assert_eq!(retried[0].attempts, 1, "attempts restart after a manual retry ({engine:?})");
        assert!(store.outbox_complete(&retried[0], much_later).await.unwrap(), "{engine:?}");
        assert_eq!(payloads(&claim(&store, "w1", much_later).await), ["A2"], "{engine:?}");
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holder_fenced() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let id = enqueue(&store, "patient:A", "A1", now).await;
        enqueue(&store, "patient:A", "A2", now).await;

        let crashed = claim(&store, "w1", now).await;
        assert_eq!(crashed.len(), 1, "{engine:?}");
        assert!(claim(&store, "w2", now + 29 * SECOND).await.is_empty(), "{engine:?}");

        let lease_end = now + 30 * SECOND;
        let taken = claim(&store, "w2", lease_end + 1).await;
        assert_eq!(taken.len(), 1, "{engine:?}");
        assert_eq!(taken[0].id, id, "{engine:?}");
        assert_eq!(taken[0].payload, "A1", "the head, never A2 ({engine:?})");
        assert_ne!(taken[0].lease_token, crashed[0].lease_token, "{engine:?}");
        assert_eq!(taken[0].attempts, 2, "the lost attempt counts ({engine:?})");
        let row = &store.outbox_list(Some("pending"), 10).await.unwrap()[0];
        assert_eq!(row.lease_owner.as_deref(), Some("w2"), "{engine:?}");
        assert_eq!(row.lease_until, Some(lease_end + 1 + 30 * SECOND), "{engine:?}");

        // The first holder comes back: every report it makes is refused.
        let policy = OutboxPolicy::default();
        assert!(!store.outbox_complete(&crashed[0], lease_end + 2).await.unwrap(), "{engine:?}");
        assert!(!store.outbox_retry_later(&crashed[0], "x", lease_end + 2, &policy).await.unwrap(), "{engine:?}");
        assert!(!store.outbox_fail(&crashed[0], "x", lease_end + 2).await.unwrap(), "{engine:?}");
        assert!(store.outbox_complete(&taken[0], lease_end + 2).await.unwrap(), "{engine:?}");
        // A report after completion is refused too, even with the right token.
        assert!(!store.outbox_complete(&taken[0], lease_end + 3).await.unwrap(), "{engine:?}");
        assert_eq!(payloads(&claim(&store, "w1", lease_end + 3).await), ["A2"], "{engine:?}");
    }
}

#[tokio::test]
async fn backoff_doubles_with_jitter_and_caps() {
    for (engine, store) in support::each_engine().await {
        let policy = OutboxPolicy {
            lease: LEASE,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts: 20,
        };
        let id = enqueue(&store, "patient:A", "A1", now_micros()).await;
        let mut now = now_micros();
        for attempts in 1..=9u32 {
            let items = claim(&store, "w1", now).await;
            assert_eq!(items.len(), 1, "{engine:?} attempt {attempts}");
            assert_eq!(items[0].attempts, attempts, "{engine:?}");
            assert!(store.outbox_retry_later(&items[0], "busy", now, &policy).await.unwrap(), "{engine:?}");
            let row = store.outbox_list(None, 1).await.unwrap().remove(0);
            assert_eq!(row.id, id, "{engine:?}");
            assert_eq!(row.state, "pending", "{engine:?}");
            let delay = (row.next_attempt_at - now) as f64 / SECOND as f64;
            let nominal = 2f64.powi(attempts as i32 - 1).min(60.0);
            assert!(
                delay >= nominal * 0.8 - 1e-6 && delay <= nominal * 1.2 + 1e-6,
                "{engine:?} attempt {attempts}: delay {delay}s, nominal {nominal}s"
            );
            // Not due a moment before its time.
            assert!(claim(&store, "w1", row.next_attempt_at - 1).await.is_empty(), "{engine:?}");
            now = row.next_attempt_at;
        }
    }
}

#[tokio::test]
async fn the_last_attempt_fails_for_good() {
    for (engine, store) in support::each_engine().await {
        let policy = OutboxPolicy { max_attempts: 3, ..OutboxPolicy::default() };
        enqueue(&store, "patient:A", "A1", now_micros()).await;
        let mut now = now_micros();
        for attempts in 1..=3u32 {
            let items = claim(&store, "w1", now).await;
            assert_eq!(items.len(), 1, "{engine:?} attempt {attempts}");
            assert!(store.outbox_retry_later(&items[0], "timeout", now, &policy).await.unwrap(), "{engine:?}");
            now += 3600 * SECOND;
        }
        assert!(claim(&store, "w1", now).await.is_empty(), "{engine:?}");
        let failed = store.outbox_list(Some("failed"), 10).await.unwrap();
        assert_eq!(failed.len(), 1, "{engine:?}");
        assert_eq!(failed[0].attempts, 3, "{engine:?}");
        assert_eq!(failed[0].last_error.as_deref(), Some("timeout"), "{engine:?}");
    }
}

#[tokio::test]
async fn topics_counts_and_purge() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        enqueue(&store, "patient:A", "A1", now).await;
        let mut tx = store.begin().await.unwrap();
        let audit = NewItem { topic: "audit", key: "audit", payload: "rec", idempotency_key: None };
        outbox::enqueue(&mut tx, &audit, now).await.unwrap();
        tx.commit().await.unwrap();

        // A worker only sees the topics it asks for.
        let audit_items = store.outbox_claim(&["audit"], "w1", 10, LEASE, now).await.unwrap();
        assert_eq!(payloads(&audit_items), ["rec"], "{engine:?}");
        assert!(store.outbox_claim(&[], "w1", 10, LEASE, now).await.unwrap().is_empty(), "{engine:?}");
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!(counts, OutboxCounts { pending: 1, leased: 1, failed: 0, done: 0 }, "{engine:?}");

        assert!(store.outbox_complete(&audit_items[0], now).await.unwrap(), "{engine:?}");
        assert_eq!(store.outbox_purge_done(now).await.unwrap(), 0, "not older than now ({engine:?})");
        assert_eq!(store.outbox_purge_done(now + 1).await.unwrap(), 1, "{engine:?}");
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!(counts, OutboxCounts { pending: 1, leased: 0, failed: 0, done: 0 }, "{engine:?}");
        assert_eq!(store.outbox_list(Some("done"), 10).await.unwrap().len(), 0, "{engine:?}");
    }
}

/// Two brokers (two pools on one database), eight claimers, enqueuers running at the same time:
/// every item is delivered exactly once and each key's items in enqueue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_brokers_share_the_outbox_in_order() {
    const N_ITEMS: usize = 2000;
    const N_KEYS: usize = 50;
    const PER_KEY: usize = N_ITEMS / N_KEYS;
    let url = support::pg_database().await;
    let brokers = [
        Store::connect(&support::options(url.clone(), 6)).await.unwrap(),
        Store::connect(&support::options(url, 6)).await.unwrap(),
    ];
    assert_eq!(brokers[0].engine(), Engine::Postgres);

    // Each broker enqueues half the keys: the first half of the items before the claimers start
    // (a backlog, each key's items adjacent), the rest while they run (keys interleaved).
    for task in spawn_enqueuers(&brokers, 0..PER_KEY / 2, true) {
        task.await.unwrap();
    }
    let enqueuers = spawn_enqueuers(&brokers, PER_KEY / 2..PER_KEY, false);

    let delivered = Arc::new(std::sync::Mutex::new(Vec::<(i64, usize, usize)>::new()));
    let in_flight = Arc::new(std::sync::Mutex::new(HashSet::<usize>::new()));
    let n_completed = Arc::new(AtomicUsize::new(0));
    let mut claimers = Vec::new();
    for claimer_idx in 0..8 {
        let store = brokers[claimer_idx % 2].clone();
        let delivered = Arc::clone(&delivered);
        let in_flight = Arc::clone(&in_flight);
        let n_completed = Arc::clone(&n_completed);
        claimers.push(tokio::spawn(async move {
            let worker = format!("broker{}-claimer{claimer_idx}", claimer_idx % 2);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
            while n_completed.load(Ordering::SeqCst) < N_ITEMS {
                assert!(tokio::time::Instant::now() < deadline, "outbox did not drain");
                let items =
                    store.outbox_claim(&[TOPIC], &worker, 4, Duration::from_secs(600), now_micros()).await.unwrap();
                if items.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                // Items are delivered concurrently, as the worker does; two items of one key in
                // flight at once would be a broken per-key order.
                let mut deliveries = Vec::new();
                for item in items {
                    let store = store.clone();
                    let delivered = Arc::clone(&delivered);
                    let in_flight = Arc::clone(&in_flight);
                    let n_completed = Arc::clone(&n_completed);
                    deliveries.push(tokio::spawn(async move {
                        let (key_idx, seq) = item.payload.split_once(':').unwrap();
                        let key_idx: usize = key_idx.parse().unwrap();
                        assert!(in_flight.lock().unwrap().insert(key_idx), "key {key_idx} delivered twice at once");
                        delivered.lock().unwrap().push((item.id, key_idx, seq.parse().unwrap()));
                        tokio::time::sleep(Duration::from_micros(rand::random_range(0..2000))).await;
                        // Leaves the key before completing: the key's next item cannot be claimed
                        // before this completion commits.
                        in_flight.lock().unwrap().remove(&key_idx);
                        assert!(store.outbox_complete(&item, now_micros()).await.unwrap());
                        n_completed.fetch_add(1, Ordering::SeqCst);
                    }));
                }
                for delivery in deliveries {
                    delivery.await.unwrap();
                }
            }
        }));
    }
    for task in enqueuers.into_iter().chain(claimers) {
        task.await.unwrap();
    }

    let delivered = delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), N_ITEMS);
    let distinct: HashSet<i64> = delivered.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(distinct.len(), N_ITEMS, "an item was delivered twice");
    let mut per_key: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (_, key_idx, seq) in delivered.iter() {
        per_key.entry(*key_idx).or_default().push(*seq);
    }
    assert_eq!(per_key.len(), N_KEYS);
    for (key_idx, seqs) in per_key {
        assert_eq!(seqs, (0..PER_KEY).collect::<Vec<_>>(), "key {key_idx} delivered out of order");
    }
    let counts = brokers[1].outbox_counts().await.unwrap();
    assert_eq!(counts, OutboxCounts { pending: 0, leased: 0, failed: 0, done: N_ITEMS as u64 });
}

/// Enqueues items `seqs` of every key, broker `i` taking the keys `k` with `k % 2 == i`. By key:
/// one transaction per key and ten items, so one key's items have adjacent ids (the claim must
/// still take only the head). Otherwise: one transaction per sequence number and ten keys.
fn spawn_enqueuers(
    brokers: &[Store; 2],
    seqs: std::ops::Range<usize>,
    by_key: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    const N_KEYS: usize = 50;
    let mut enqueuers = Vec::new();
    for (broker_idx, store) in brokers.iter().enumerate() {
        let store = store.clone();
        let seqs: Vec<usize> = seqs.clone().collect();
        enqueuers.push(tokio::spawn(async move {
            let keys: Vec<usize> = (0..N_KEYS).filter(|key_idx| key_idx % 2 == broker_idx).collect();
            let mut batches: Vec<Vec<(usize, usize)>> = Vec::new();
            if by_key {
                for key_idx in &keys {
                    for seq_chunk in seqs.chunks(10) {
                        batches.push(seq_chunk.iter().map(|seq| (*key_idx, *seq)).collect());
                    }
                }
            } else {
                for seq in &seqs {
                    for key_chunk in keys.chunks(10) {
                        batches.push(key_chunk.iter().map(|key_idx| (*key_idx, *seq)).collect());
                    }
                }
            }
            for batch in batches {
                let mut tx = store.begin().await.unwrap();
                for (key_idx, seq) in batch {
                    let key = format!("patient:{key_idx}");
                    let payload = format!("{key_idx}:{seq}");
                    let item = NewItem { topic: TOPIC, key: &key, payload: &payload, idempotency_key: None };
                    outbox::enqueue(&mut tx, &item, now_micros()).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    enqueuers
}
