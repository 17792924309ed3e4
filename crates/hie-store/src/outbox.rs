//! The durable outbox: everything the broker must send later (identity feeds, registry
//! submissions, audit records), written in the same transaction as the change it follows from.
//!
//! Life of an item: [`enqueue`] inserts it `pending` in the caller's transaction. A worker
//! [`Store::outbox_claim`]s it, which sets a lease (owner, random token, expiry) and counts the
//! attempt. The worker then reports [`Store::outbox_complete`] (`done`),
//! [`Store::outbox_retry_later`] (`pending` again after an exponential backoff with jitter, or
//! `failed` once the attempts are used up) or [`Store::outbox_fail`] (`failed`, permanent). A
//! `failed` item stays visible and blocks its key until [`Store::outbox_retry_failed`] puts it back.
//! [`Report::Park`] puts an item aside until another item of its key is delivered (a submission
//! waiting for its patient's identity feed): `pending`, its attempt given back, due after a quarter
//! of the time it has waited (within the backoff bounds) or as soon as an item of its key is
//! delivered, and meanwhile it holds back only the items of its own topic.
//!
//! Guarantees:
//! - Per-key order: only the head of a key (its earliest item not `done`) can be claimed, so items
//!   of one key are delivered one at a time, in id order. Other keys are not held up. A parked
//!   head is the head of its own topic only: later items of other topics of its key pass it.
//! - Leases: a crashed worker's item is claimed again once its lease runs out. Every report is
//!   fenced by the claim's lease token, so a worker that lost its lease cannot overwrite the
//!   outcome of the one that took the item over (it gets `false`).
//! - Delivery is at least once: a taken-over item may have reached its peer already. Payloads carry
//!   an idempotency key when the peer needs one.
//!
//! Payloads may hold PHI: nothing here logs them, and the `Debug` impls leave them out.

use std::fmt;
use std::time::Duration;

use rand::Rng;

use crate::{Engine, Store, StoreError, Tx, on_pool, on_tx};

/// An item to enqueue. `key` orders delivery: items with the same key go out one at a time, in
/// enqueue order (e.g. `patient:42`, so a merge never overtakes the feed it refers to).
#[derive(Clone, Copy)]
pub struct NewItem<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub payload: &'a str,
    /// At most one item per topic carries a given idempotency key; a second enqueue is a no-op.
    pub idempotency_key: Option<&'a str>,
}

/// An item a worker holds a lease on. Reports about it are fenced by `lease_token`.
#[derive(Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub lease_token: i64,
    /// When it was enqueued (microseconds since the Unix epoch): how long a parked item has waited.
    pub created_at: i64,
}

/// How long leases last and how failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxPolicy {
    /// A claim older than this is presumed dead and taken over.
    pub lease: Duration,
    /// The delay after the first failed attempt; it doubles with each further one.
    pub backoff_base: Duration,
    /// The longest delay between attempts (before jitter).
    pub backoff_max: Duration,
    /// After this many attempts a retryable failure becomes permanent (`failed`).
    pub max_attempts: u32,
}

/// One outbox row, as the API and console show it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub idempotency_key: Option<String>,
    /// `pending`, `done` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// Put aside until an item of its key is delivered ([`Report::Park`]).
    pub parked: bool,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How many items are in each state, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for a worker (due or in backoff).
    pub pending: u64,
    /// Pending and held by a worker (its lease may have run out without a takeover yet).
    pub leased: u64,
    pub failed: u64,
    pub done: u64,
}

/// The spread of the backoff delay around its nominal value: ±20 % (reliability-security R4), so
/// items that failed together do not all come back at the same instant.
pub const BACKOFF_JITTER: f64 = 0.2;

impl Default for OutboxPolicy {
    fn default() -> Self {
        OutboxPolicy {
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts: 20,
        }
    }
}

impl OutboxPolicy {
    /// The delay before the next attempt after `attempts` failed ones, before jitter:
    /// `backoff_base * 2^(attempts-1)`, capped at `backoff_max`.
    pub fn nominal_backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff_base.saturating_mul(1u32 << doublings).min(self.backoff_max)
    }

    /// [`Self::nominal_backoff`] spread by a random factor in `1 ± BACKOFF_JITTER`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        jitter(self.nominal_backoff(attempts))
    }

    /// How long a parked item waits if no item of its key is delivered meanwhile, having waited
    /// `waited` since it was enqueued: a quarter of that, between `backoff_base` and
    /// `backoff_max`, jittered. What it waits for is someone else's work (an ADT, a feed, an
    /// operator): soon after a near miss (images a moment before their ADT), then ever more
    /// patiently, without an attempt count to run out.
    pub fn park_delay(&self, waited: Duration) -> Duration {
        jitter((waited / PARK_DELAY_DIVISOR).clamp(self.backoff_base, self.backoff_max.max(self.backoff_base)))
    }
}

/// [`OutboxPolicy::park_delay`]: the next look after a quarter of the time waited so far.
const PARK_DELAY_DIVISOR: u32 = 4;

/// `nominal` spread by a random factor in `1 ± BACKOFF_JITTER`.
fn jitter(nominal: Duration) -> Duration {
    let factor = rand::rng().random_range((1.0 - BACKOFF_JITTER)..=(1.0 + BACKOFF_JITTER));
    nominal.mul_f64(factor)
}

impl fmt::Debug for NewItem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewItem")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Claimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRow")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .field("parked", &self.parked)
            .field("lease_owner", &self.lease_owner)
            .field("lease_until", &self.lease_until)
            .finish_non_exhaustive()
    }
}

/// Adds `item` to the outbox inside the caller's transaction, so it commits (or rolls back) with
/// the change it follows from. Returns the new id, or `None` when an item with the same topic and
/// idempotency key exists already.
///
/// After the commit, poke the outbox worker (its `waker`) so the item goes out without waiting for a
/// poll. Items of one key must come from transactions that commit one after the other (both
/// engines ensure it here); their ids, and so their delivery order, follow commit order.
pub async fn enqueue(tx: &mut Tx<'_>, item: &NewItem<'_>, now: i64) -> Result<Option<i64>, StoreError> {
    if let Tx::Postgres(transaction) = tx {
        // Per-key order is id order, so ids of one key must be handed out in commit order. Two
        // concurrent transactions could otherwise take ids 10 and 11 for one key and commit 11
        // first; a claimer would then deliver 11 before 10 becomes visible. The lock (held until
        // the whole transaction ends) makes the second wait for the first to commit. SQLite has a
        // single writer, which gives the same order for free.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(ENQUEUE_LOCK_CLASS)
            .bind(item.key)
            .execute(&mut **transaction)
            .await?;
    }
    let id = on_tx!(tx, |conn| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO outbox (topic, key, payload, idempotency_key, state, attempts, \
             next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5) \
             ON CONFLICT (topic, idempotency_key) DO NOTHING \
             RETURNING id",
        )
        .bind(item.topic)
        .bind(item.key)
        .bind(item.payload)
        .bind(item.idempotency_key)
        .bind(now)
        .fetch_optional(conn)
        .await?
    });
    Ok(id)
}

impl Store {
    /// Claims up to `limit` due items of `topics` for `worker`, each leased until `now + lease`.
    ///
    /// An item is claimable when it is `pending`, due, not under a live lease, and the head of its
    /// key (no earlier item of the same key is `pending` or `failed`). Items come back in id order.
    pub async fn outbox_claim(
        &self,
        topics: &[&str],
        worker: &str,
        limit: usize,
        lease: Duration,
        now: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        if topics.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let sql = claim_sql(self.engine(), topics.len());
        let lease_until = now.saturating_add(micros(lease));
        // One token per claim is enough: reports are fenced on (id, token), and a takeover always
        // draws a new one.
        let lease_token: i64 = rand::rng().random();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        if let Tx::Postgres(transaction) = &mut tx {
            // See `claim_sql`: keeps the planned walk of the pending index even without statistics.
            sqlx::query("SET LOCAL enable_sort = off").execute(&mut **transaction).await?;
        }
        let rows = on_tx!(&mut tx, |conn| {
            let mut query = sqlx::query_as::<_, ClaimedRow>(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(limit)
                .bind(worker)
                .bind(lease_token)
                .bind(lease_until);
            for topic in topics {
                query = query.bind(*topic);
            }
            query.fetch_all(conn).await?
        });
        tx.commit().await?;
        let mut claimed = rows.into_iter().map(ClaimedRow::into_claimed).collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order guarantee.
        claimed.sort_by_key(|item| item.id);
        Ok(claimed)
    }

    /// Marks a claimed item delivered. `false` when the lease was lost to another worker (the
    /// item will be, or was, delivered again by that one).
    pub async fn outbox_complete(&self, item: &Claimed, now: i64) -> Result<bool, StoreError> {
        self.single_report(item, Report::Delivered, now, &OutboxPolicy::default()).await
    }

    /// Reports a failed attempt worth retrying: the item waits `policy.backoff(attempts)`, or
    /// becomes `failed` once it has had `policy.max_attempts` attempts. `false` when the lease was
    /// lost.
    pub async fn outbox_retry_later(
        &self,
        item: &Claimed,
        error: &str,
        now: i64,
        policy: &OutboxPolicy,
    ) -> Result<bool, StoreError> {
        self.single_report(item, Report::RetryLater { error }, now, policy).await
    }

    /// Reports a permanent failure: the item becomes `failed`, stays visible, and blocks its key
    /// until retried by hand. `false` when the lease was lost.
    pub async fn outbox_fail(&self, item: &Claimed, error: &str, now: i64) -> Result<bool, StoreError> {
        self.single_report(item, Report::Failed { error }, now, &OutboxPolicy::default()).await
    }

    /// Records many outcomes in one transaction (one commit, one fsync), as a worker does after
    /// each round of deliveries. Returns, per report, `false` when that lease was lost.
    ///
    /// Deliveries, the bulk, are recorded by one statement for all of them: on SQLite the worker
    /// shares the single writer connection with the ADT writer, which waits meanwhile, so one
    /// hand-off instead of one per item matters. Failures go one statement each.
    pub async fn outbox_report_all(
        &self,
        reports: &[(&Claimed, Report<'_>)],
        now: i64,
        policy: &OutboxPolicy,
    ) -> Result<Vec<bool>, StoreError> {
        let delivered: Vec<(i64, i64)> = reports
            .iter()
            .filter(|(_, report)| matches!(report, Report::Delivered))
            .map(|(item, _)| (item.id, item.lease_token))
            .collect();
        let mut tx = self.begin().await?;
        let done_ids = mark_delivered(&mut tx, &delivered, now).await?;
        wake_parked(&mut tx, &done_ids, now).await?;
        let mut recorded = Vec::with_capacity(reports.len());
        for (item, report) in reports {
            if matches!(report, Report::Delivered) {
                recorded.push(done_ids.contains(&item.id));
                continue;
            }
            let (sql, error, next_attempt_at) = report_statement(item, *report, now, policy);
            let error = error.map(truncate_error);
            let updated = on_tx!(&mut tx, |conn| {
                sqlx::query(sql)
                    .bind(now)
                    .bind(item.id)
                    .bind(item.lease_token)
                    .bind(error)
                    .bind(next_attempt_at)
                    .execute(conn)
                    .await?
                    .rows_affected()
            });
            recorded.push(updated == 1);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Puts a `failed` item back to `pending`, due now, with its attempts reset (an operator's
    /// retry). `false` when no failed item has this id.
    pub async fn outbox_retry_failed(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let result = on_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                 lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $1 \
                 WHERE id = $2 AND state = 'failed'",
            )
            .bind(now)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(result == 1)
    }

    /// Items in `state` (all states when `None`), oldest first.
    pub async fn outbox_list(&self, state: Option<&str>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, OutboxRow>(
                "SELECT id, topic, key, payload, idempotency_key, state, attempts, \
                 next_attempt_at, parked <> 0 AS parked, lease_owner, lease_until, last_error, created_at, updated_at \
                 FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY id LIMIT $2",
            )
            .bind(state)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// How many items are in each state.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let rows: Vec<(String, bool, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT state, lease_token IS NOT NULL AS leased, COUNT(*) \
                 FROM outbox GROUP BY state, lease_token IS NOT NULL",
            )
            .fetch_all(pool)
            .await?
        });
        let mut counts = OutboxCounts::default();
        for (state, leased, count) in rows {
            let count = u64::try_from(count).unwrap_or_default();
            match (state.as_str(), leased) {
                ("pending", false) => counts.pending += count,
                ("pending", true) => counts.leased += count,
                ("failed", _) => counts.failed += count,
                ("done", _) => counts.done += count,
                (other, _) => return Err(StoreError::Corrupt(format!("outbox state {other:?}"))),
            }
        }
        Ok(counts)
    }

    /// Deletes `done` items last updated before `older_than`; returns how many. Only `done` rows
    /// go, so per-key order is unaffected.
    pub async fn outbox_purge_done(&self, older_than: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let deleted = on_tx!(&mut tx, |conn| {
            sqlx::query("DELETE FROM outbox WHERE state = 'done' AND updated_at < $1")
                .bind(older_than)
                .execute(conn)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        Ok(deleted)
    }

    async fn single_report(
        &self,
        item: &Claimed,
        report: Report<'_>,
        now: i64,
        policy: &OutboxPolicy,
    ) -> Result<bool, StoreError> {
        let recorded = self.outbox_report_all(&[(item, report)], now, policy).await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }
}

/// The outcome of one delivery attempt, as a worker reports it.
#[derive(Debug, Clone, Copy)]
pub enum Report<'a> {
    Delivered,
    /// Worth retrying after the policy's backoff (becomes `Failed` at `max_attempts`).
    RetryLater {
        error: &'a str,
    },
    /// Waits for another item of its key (see the module doc): no attempt counted, due after
    /// [`OutboxPolicy::park_delay`] or when an item of its key is delivered.
    Park {
        error: &'a str,
    },
    /// Permanent: the item stays visible as `failed` and blocks its key until retried by hand.
    Failed {
        error: &'a str,
    },
}

/// `wake_parked` on SQLite: `$1` now, `$2` the delivered ids (a JSON array).
const SQLITE_WAKE_PARKED: &str = "UPDATE outbox INDEXED BY outbox_parked SET next_attempt_at = $1 \
     WHERE parked = 1 AND state = 'pending' AND next_attempt_at > $1 \
     AND key IN (SELECT key FROM outbox WHERE id IN (SELECT value FROM json_each($2)))";
/// `mark_delivered` on SQLite: `$1` now, `$2` the `[id, lease token]` pairs (a JSON array).
const SQLITE_MARK_DELIVERED: &str = "UPDATE outbox NOT INDEXED SET state = 'done', lease_owner = NULL, \
     lease_token = NULL, lease_until = NULL, updated_at = $1 WHERE state = 'pending' \
     AND (id, lease_token) IN (SELECT value->>0, value->>1 FROM json_each($2)) RETURNING id";

/// Makes the parked items of the keys of `delivered` (ids just marked `done`) due now: what they
/// wait for may have been that delivery.
async fn wake_parked(tx: &mut Tx<'_>, delivered: &[i64], now: i64) -> Result<(), StoreError> {
    if delivered.is_empty() {
        return Ok(());
    }
    // `parked = 1 AND state = 'pending'` is `outbox_parked`'s condition, word for word, so SQLite
    // can use that (nearly always empty) index; it is named because SQLite, which keeps no
    // statistics, otherwise took `outbox_by_state` and read every pending row (about 1 ms per
    // round, inside the single writer's transaction, with a backlog of a few thousand items).
    match tx {
        Tx::Sqlite(transaction) => {
            let mut ids = crate::json::JsonArray::new();
            for id in delivered {
                ids.int(*id);
            }
            sqlx::query(SQLITE_WAKE_PARKED).bind(now).bind(ids.finish()).execute(&mut **transaction).await?;
        }
        Tx::Postgres(transaction) => {
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1 WHERE parked = 1 AND state = 'pending' \
                 AND next_attempt_at > $1 \
                 AND key IN (SELECT key FROM outbox WHERE id = ANY($2::bigint[]))",
            )
            .bind(now)
            .bind(delivered)
            .execute(&mut **transaction)
            .await?;
        }
    }
    Ok(())
}

/// Marks delivered items `done`, each fenced by its lease token (as `report_statement`);
/// returns the ids whose lease was still held. On SQLite, `NOT INDEXED` leaves the planner the
/// rowid lookups of the listed ids: otherwise it read every pending row through `outbox_by_state`
/// (1.5 ms per round with a backlog of a few thousand).
async fn mark_delivered(tx: &mut Tx<'_>, items: &[(i64, i64)], now: i64) -> Result<Vec<i64>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = match tx {
        Tx::Sqlite(transaction) => {
            let mut pairs = crate::json::JsonArray::new();
            for (id, lease_token) in items {
                pairs.row().int(*id).int(*lease_token);
            }
            sqlx::query_scalar(SQLITE_MARK_DELIVERED)
                .bind(now)
                .bind(pairs.finish())
                .fetch_all(&mut **transaction)
                .await?
        }
        Tx::Postgres(transaction) => {
            let (ids, tokens): (Vec<i64>, Vec<i64>) = items.iter().copied().unzip();
            sqlx::query_scalar(
                "UPDATE outbox SET state = 'done', lease_owner = NULL, lease_token = NULL, lease_until = NULL, \
                 updated_at = $1 WHERE state = 'pending' \
                 AND (id, lease_token) IN (SELECT * FROM unnest($2::bigint[], $3::bigint[])) RETURNING id",
            )
            .bind(now)
            .bind(ids)
            .bind(tokens)
            .fetch_all(&mut **transaction)
            .await?
        }
    };
    Ok(ids)
}

/// The fenced statement for one report: `$1` now, `$2` id, `$3` lease token, `$4` error,
/// `$5` next attempt.
fn report_statement<'a>(
    item: &Claimed,
    report: Report<'a>,
    now: i64,
    policy: &OutboxPolicy,
) -> (&'static str, Option<&'a str>, i64) {
    const DELIVERED: &str = "UPDATE outbox SET state = 'done', lease_owner = NULL, lease_token = NULL, \
         lease_until = NULL, updated_at = $1 WHERE id = $2 AND lease_token = $3 AND state = 'pending'";
    const RETRY_LATER: &str = "UPDATE outbox SET lease_owner = NULL, lease_token = NULL, lease_until = NULL, \
         updated_at = $1, last_error = $4, next_attempt_at = $5, parked = 0 \
         WHERE id = $2 AND lease_token = $3 AND state = 'pending'";
    // The attempt the claim counted is given back: waiting is not failing.
    const PARK: &str = "UPDATE outbox SET lease_owner = NULL, lease_token = NULL, lease_until = NULL, \
         updated_at = $1, last_error = $4, next_attempt_at = $5, parked = 1, \
         attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
         WHERE id = $2 AND lease_token = $3 AND state = 'pending'";
    const FAILED: &str = "UPDATE outbox SET state = 'failed', lease_owner = NULL, lease_token = NULL, \
         lease_until = NULL, updated_at = $1, last_error = $4, next_attempt_at = $5, parked = 0 \
         WHERE id = $2 AND lease_token = $3 AND state = 'pending'";
    match report {
        Report::Delivered => (DELIVERED, None, now),
        Report::RetryLater { error } if item.attempts >= policy.max_attempts => (FAILED, Some(error), now),
        Report::RetryLater { error } => {
            (RETRY_LATER, Some(error), now.saturating_add(micros(policy.backoff(item.attempts))))
        }
        Report::Park { error } => {
            let waited = Duration::from_micros(u64::try_from(now.saturating_sub(item.created_at)).unwrap_or(0));
            (PARK, Some(error), now.saturating_add(micros(policy.park_delay(waited))))
        }
        Report::Failed { error } => (FAILED, Some(error), now),
    }
}

/// The claim statement. `$1` now, `$2` limit, `$3` worker, `$4` lease token, `$5` lease end,
/// `$6`.. the topics.
///
/// Why it keeps per-key order with several claimers on PostgreSQL (READ COMMITTED):
/// - `FOR UPDATE SKIP LOCKED` alone would reorder: while claimer A holds the head of key K locked,
///   claimer B would skip it and take K's second item. Here B never considers the second item: the
///   `NOT EXISTS` sees the head as not `done` (locked, leased or not), so the second item is not a
///   candidate until the head's `done` is committed. `done` is final (only `failed` goes back to
///   `pending`), so a snapshot that shows the head `done` can never be stale in the unsafe
///   direction; a stale snapshot only makes a claimer more careful, not less.
/// - Two claimers racing for the same head: the loser either skips it (still locked) or, if the
///   winner has committed meanwhile, locks the new row version, on which PostgreSQL re-checks the
///   row's own conditions (EvalPlanQual): the fresh lease fails `lease_until <= now`, so it drops
///   out. Hence the lease condition sits on the locked row, not in a sub-query.
/// - Items of one key become visible in id order because `enqueue` serializes same-key inserts.
/// - A parked item, and the items of its topic behind it, hold back only their own topic: the
///   inner `NOT EXISTS` (the `outbox_parked` index, nearly always empty) finds the parked item at
///   or before the earlier item. `parked` changes only on a pending item's report, and a stale
///   view of it can only let an item of another topic pass a submission waiting for its patient,
///   which is what parking allows anyway.
/// - A lost lease is fenced: reports match `lease_token`, which a takeover replaces.
///
/// On SQLite the statement runs in a `BEGIN IMMEDIATE` transaction on the single writer, which
/// serializes claimers outright.
///
/// The pending partial index yields candidates in id order, so the scan stops after `limit`
/// heads; the open-by-key partial index answers each `NOT EXISTS` with one probe, so the cost does
/// not grow with the done rows, nor with a backlog. Both planners had to be held to that:
/// SQLite, which keeps no statistics, chose `outbox_by_state` and evaluated the `NOT EXISTS` for
/// every pending row before sorting them (37 ms per claim at 50,000 pending, inside the single
/// writer's transaction, which the ADT writer waits for), so its text names the index;
/// PostgreSQL did the same through a bitmap scan while the table had no statistics yet (a new or
/// fast-growing outbox before autovacuum's ANALYZE: 100-140 ms), so `outbox_claim` turns sorting
/// off for the claim's transaction (0.7 ms).
fn claim_sql(engine: Engine, n_topics: usize) -> String {
    let topics = (0..n_topics).map(|topic_idx| format!("${}", topic_idx + 6)).collect::<Vec<_>>().join(", ");
    let (index, lock) = match engine {
        Engine::Postgres => ("", "FOR UPDATE SKIP LOCKED"),
        Engine::Sqlite => ("INDEXED BY outbox_pending", ""),
    };
    format!(
        "WITH candidates AS MATERIALIZED ( \
             SELECT o.id FROM outbox o {index} \
             WHERE o.state = 'pending' \
               AND o.next_attempt_at <= $1 \
               AND (o.lease_until IS NULL OR o.lease_until <= $1) \
               AND o.topic IN ({topics}) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM outbox e \
                   WHERE e.key = o.key AND e.id < o.id AND e.state <> 'done' \
                     AND (e.topic = o.topic OR NOT EXISTS ( \
                         SELECT 1 FROM outbox p \
                         WHERE p.parked = 1 AND p.state = 'pending' \
                           AND p.key = e.key AND p.topic = e.topic AND p.id <= e.id))) \
             ORDER BY o.id \
             LIMIT $2 \
             {lock}) \
         UPDATE outbox SET attempts = attempts + 1, lease_owner = $3, lease_token = $4, \
             lease_until = $5, updated_at = $1 \
         WHERE id IN (SELECT id FROM candidates) \
         RETURNING id, topic, key, payload, attempts, lease_token, created_at"
    )
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    attempts: i64,
    lease_token: i64,
    created_at: i64,
}

impl ClaimedRow {
    fn into_claimed(self) -> Result<Claimed, StoreError> {
        let attempts = u32::try_from(self.attempts)
            .map_err(|_| StoreError::Corrupt(format!("outbox item {} has {} attempts", self.id, self.attempts)))?;
        Ok(Claimed {
            id: self.id,
            topic: self.topic,
            key: self.key,
            payload: self.payload,
            attempts,
            lease_token: self.lease_token,
            created_at: self.created_at,
        })
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Peers can answer with whole documents; the row keeps the start, enough to diagnose.
pub(crate) fn truncate_error(error: &str) -> &str {
    crate::truncate_str(error, MAX_ERROR_BYTES)
}

/// First key of the two-key PostgreSQL advisory locks that serialize same-key enqueues ("outb").
/// The two-key space does not overlap the one-key space the migrator uses.
pub(crate) const ENQUEUE_LOCK_CLASS: i32 = 0x6f75_7462;

const MAX_ERROR_BYTES: usize = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let policy = OutboxPolicy::default();
        assert_eq!(policy.nominal_backoff(1), Duration::from_secs(1));
        assert_eq!(policy.nominal_backoff(2), Duration::from_secs(2));
        assert_eq!(policy.nominal_backoff(6), Duration::from_secs(32));
        assert_eq!(policy.nominal_backoff(7), Duration::from_secs(60));
        assert_eq!(policy.nominal_backoff(u32::MAX), Duration::from_secs(60));
        for attempts in 1..30 {
            let delay = policy.backoff(attempts).as_secs_f64();
            let nominal = policy.nominal_backoff(attempts).as_secs_f64();
            assert!(delay >= nominal * 0.8 - 1e-9 && delay <= nominal * 1.2 + 1e-9);
        }
    }

    /// The claim walks the pending index in id order and stops at `limit` (see `claim_sql`):
    /// no temporary sort of every pending row, whatever SQLite's planner would guess.
    #[tokio::test]
    async fn the_sqlite_claim_walks_the_pending_index() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", claim_sql(Engine::Sqlite, 1));
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(sql));
        for value in [0, 16, 0, 0, 0] {
            query = query.bind(value);
        }
        let plan: Vec<String> =
            query.bind("iti8").fetch_all(&pool).await.unwrap().into_iter().map(|row| row.3).collect();
        assert!(plan.iter().any(|step| step.contains("USING INDEX outbox_pending")), "{plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// A round's reports look up the items they name (rowid, or the nearly empty parked index),
    /// not every pending row: with a backlog that cost a millisecond per round on the writer.
    #[tokio::test]
    async fn the_sqlite_round_reports_look_up_their_items() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.unwrap();
        for (sql, expected) in [
            (SQLITE_MARK_DELIVERED, "SEARCH outbox USING INTEGER PRIMARY KEY"),
            (SQLITE_WAKE_PARKED, "SEARCH outbox USING INDEX outbox_parked"),
        ] {
            let query =
                sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            let plan: Vec<String> =
                query.bind(0).bind("[]").fetch_all(&pool).await.unwrap().into_iter().map(|row| row.3).collect();
            assert!(plan.first().is_some_and(|step| step.starts_with(expected)), "{plan:?}");
            assert!(!plan.iter().any(|step| step.contains("outbox_by_state")), "{plan:?}");
        }
    }

    #[test]
    fn errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate_error(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
