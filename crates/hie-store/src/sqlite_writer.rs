//! The SQLite store's one writer connection, behind an async mutex rather than in a pool, and the
//! write transactions ([`SqliteTx`]) taken on it.
//!
//! Why not a pool of one: sqlx's pool pings a connection whenever it comes back (in a spawned
//! task, which the next acquire waits for), and a ping is a round trip to the connection's
//! worker thread. With the ADT journal the group-commit writer takes the connection for every
//! batch, and the wait measured 60-70 µs per batch at one sender and 130 at sixteen, a tenth of
//! the batch. An in-process SQLite connection does not go stale, so nothing needs the ping.
//!
//! What the pool gave and this keeps: one holder at a time, a bounded wait (`acquire_timeout`),
//! and no transaction left open for the next holder. A holder that goes away inside a
//! transaction (a cancelled future, an error before COMMIT) cannot roll back from `Drop`, so it
//! marks the connection, and the next [`Writer::lock`] rolls back (and restores
//! `synchronous=FULL`) before handing it out. Transactions are framed by hand (`BEGIN
//! IMMEDIATE`, savepoints by name), never through sqlx's transaction manager, so sqlx's idea of
//! the nesting depth never disagrees with the connection's. The connection's `synchronous`
//! setting is tracked here too, so a transaction that must be durable always runs at FULL.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::StoreError;

/// The writer connection and what its next holder must know.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` once the store is closed.
    connection: Option<SqliteConnection>,
    /// A holder left a transaction open, or a statement that set `synchronous` failed: roll
    /// back and set FULL first.
    needs_reset: bool,
    /// The connection is at synchronous=NORMAL (see [`WriterGuard::synchronous_for`]).
    normal: bool,
    /// Savepoints open inside the current transaction.
    depth: usize,
    /// A savepoint was dropped without being released or rolled back: the transaction around it
    /// must not commit what it did.
    savepoint_abandoned: bool,
}

/// The one writer connection of a SQLite store.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    slot: Arc<Mutex<Slot>>,
    options: SqliteConnectOptions,
    timeout: Duration,
}

/// The writer connection, held. Dereferences to the connection.
#[derive(Debug)]
pub(crate) struct WriterGuard {
    guard: OwnedMutexGuard<Slot>,
}

impl Writer {
    pub(crate) fn new(connection: SqliteConnection, options: SqliteConnectOptions, timeout: Duration) -> Writer {
        let slot = Slot {
            connection: Some(connection),
            needs_reset: false,
            normal: false,
            depth: 0,
            savepoint_abandoned: false,
        };
        Writer { slot: Arc::new(Mutex::new(slot)), options, timeout }
    }

    /// Waits (at most `acquire_timeout`) for the connection, cleaned up after its last holder.
    pub(crate) async fn lock(&self) -> Result<WriterGuard, StoreError> {
        let mut guard = tokio::time::timeout(self.timeout, Arc::clone(&self.slot).lock_owned())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?;
        let slot = &mut *guard;
        if slot.needs_reset {
            let connection = slot.connection.as_mut().ok_or(StoreError::Database(sqlx::Error::PoolClosed))?;
            // "no transaction is active" is fine: the holder may have failed before BEGIN.
            let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            if sqlx::query("PRAGMA synchronous = FULL").execute(&mut *connection).await.is_err() {
                let fresh = self.options.connect().await?;
                if let Some(broken) = slot.connection.replace(fresh) {
                    let _ = broken.close().await;
                }
            }
            slot.needs_reset = false;
            slot.normal = false;
            slot.depth = 0;
            slot.savepoint_abandoned = false;
        }
        if slot.connection.is_none() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        Ok(WriterGuard { guard })
    }

    /// Closes the connection once its holder lets go; later locks fail.
    pub(crate) async fn close(&self) {
        let mut slot = self.slot.lock().await;
        if let Some(connection) = slot.connection.take() {
            let _ = connection.close().await;
        }
    }
}

impl WriterGuard {
    /// The next holder rolls back whatever this one leaves open, and restores FULL.
    pub(crate) fn mark_needs_reset(&mut self) {
        self.guard.needs_reset = true;
    }

    /// The statement to run before `BEGIN` so that the transaction commits at NORMAL
    /// (`unsynced`) or FULL, `None` when the connection is there already. SQLite refuses the
    /// change inside a transaction, and the setting stays until changed, so it travels with the
    /// next BEGIN rather than costing a statement after each COMMIT. Recorded as done: if the
    /// statement fails, the holder must [`WriterGuard::mark_needs_reset`].
    pub(crate) fn synchronous_for(&mut self, unsynced: bool) -> Option<&'static str> {
        if self.guard.normal == unsynced {
            return None;
        }
        self.guard.normal = unsynced;
        Some(if unsynced { "PRAGMA synchronous = NORMAL" } else { "PRAGMA synchronous = FULL" })
    }
}

impl Deref for WriterGuard {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        connection(&self.guard)
    }
}

impl DerefMut for WriterGuard {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        connection_mut(&mut self.guard)
    }
}

/// [`Writer::lock`] hands out only slots that hold a connection, and nothing takes it while the
/// slot is held.
fn connection(slot: &Slot) -> &SqliteConnection {
    slot.connection.as_ref().expect("a held writer slot holds its connection")
}

fn connection_mut(slot: &mut Slot) -> &mut SqliteConnection {
    slot.connection.as_mut().expect("a held writer slot holds its connection")
}

/// A write transaction on the writer connection (`BEGIN IMMEDIATE`), or a savepoint inside one.
/// Dereferences to the connection. Dropped without [`SqliteTx::commit`] or
/// [`SqliteTx::rollback`], nothing of it is kept.
#[derive(Debug)]
pub struct SqliteTx<'c> {
    frame: Frame<'c>,
    open: bool,
}

#[derive(Debug)]
enum Frame<'c> {
    Transaction(WriterGuard),
    Savepoint { slot: &'c mut Slot, depth: usize },
}

impl SqliteTx<'static> {
    /// `unsynced`: the commit runs at synchronous=NORMAL (see `Store::begin_unsynced`).
    pub(crate) async fn begin(mut guard: WriterGuard, unsynced: bool) -> Result<SqliteTx<'static>, StoreError> {
        let sql = match guard.synchronous_for(unsynced) {
            None => "BEGIN IMMEDIATE",
            Some(_) if unsynced => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
            Some(_) => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
        };
        if let Err(error) = sqlx::query(sql).execute(&mut *guard).await {
            guard.mark_needs_reset();
            return Err(error.into());
        }
        Ok(SqliteTx { frame: Frame::Transaction(guard), open: true })
    }
}

impl SqliteTx<'_> {
    /// Opens a savepoint inside this transaction.
    pub(crate) async fn savepoint(&mut self) -> Result<SqliteTx<'_>, StoreError> {
        let slot = self.slot_mut();
        let depth = slot.depth + 1;
        sqlx::query(sqlx::AssertSqlSafe(format!("SAVEPOINT hie_sp{depth}"))).execute(connection_mut(slot)).await?;
        slot.depth = depth;
        Ok(SqliteTx { frame: Frame::Savepoint { slot, depth }, open: true })
    }

    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let result = match &mut self.frame {
            Frame::Transaction(guard) => {
                if guard.guard.savepoint_abandoned {
                    Err(StoreError::Database(sqlx::Error::Protocol(
                        "a savepoint was abandoned inside the transaction; rolled back".to_owned(),
                    )))
                } else {
                    sqlx::query("COMMIT").execute(&mut **guard).await.map(drop).map_err(StoreError::from)
                }
            }
            Frame::Savepoint { slot, depth } => {
                let sql = format!("RELEASE hie_sp{depth}");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(connection_mut(slot)).await.map(drop).map_err(Into::into)
            }
        };
        if result.is_ok() {
            self.close_frame();
        }
        // On an error, Drop leaves the transaction to be rolled back.
        result
    }

    pub(crate) async fn rollback(mut self) -> Result<(), StoreError> {
        let result = match &mut self.frame {
            Frame::Transaction(guard) => sqlx::query("ROLLBACK").execute(&mut **guard).await.map(drop),
            Frame::Savepoint { slot, depth } => {
                let sql = format!("ROLLBACK TO hie_sp{depth}; RELEASE hie_sp{depth}");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(connection_mut(slot)).await.map(drop)
            }
        };
        if result.is_ok() {
            self.close_frame();
        }
        Ok(result?)
    }

    fn slot_mut(&mut self) -> &mut Slot {
        match &mut self.frame {
            Frame::Transaction(guard) => &mut guard.guard,
            Frame::Savepoint { slot, .. } => slot,
        }
    }

    /// Ended cleanly: nothing for Drop to do.
    fn close_frame(&mut self) {
        self.open = false;
        match &mut self.frame {
            Frame::Transaction(guard) => {
                guard.guard.depth = 0;
                guard.guard.savepoint_abandoned = false;
            }
            Frame::Savepoint { slot, depth } => slot.depth = *depth - 1,
        }
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match &mut self.frame {
            Frame::Transaction(guard) => guard.mark_needs_reset(),
            Frame::Savepoint { slot, depth } => {
                slot.depth = *depth - 1;
                slot.savepoint_abandoned = true;
            }
        }
    }
}

impl Deref for SqliteTx<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match &self.frame {
            Frame::Transaction(guard) => guard,
            Frame::Savepoint { slot, .. } => connection(slot),
        }
    }
}

impl DerefMut for SqliteTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut self.frame {
            Frame::Transaction(guard) => guard,
            Frame::Savepoint { slot, .. } => connection_mut(slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    async fn writer(dir: &std::path::Path) -> Writer {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.join("w.db").display()))
            .unwrap()
            .create_if_missing(true);
        let mut connection = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut connection).await.unwrap();
        Writer::new(connection, options, Duration::from_millis(200))
    }

    async fn rows(writer: &Writer) -> i64 {
        let mut guard = writer.lock().await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut *guard).await.unwrap()
    }

    async fn insert(tx: &mut SqliteTx<'_>) {
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut **tx).await.unwrap();
    }

    #[tokio::test]
    async fn a_transaction_dropped_open_is_rolled_back_before_the_next_holder_starts() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path()).await;
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap(), false).await.unwrap();
        insert(&mut tx).await;
        drop(tx);
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap(), false).await.expect("no transaction is left open");
        insert(&mut tx).await;
        tx.commit().await.unwrap();
        assert_eq!(rows(&writer).await, 1, "only the committed row");
    }

    #[tokio::test]
    async fn savepoints_roll_back_alone_and_an_abandoned_one_fails_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path()).await;
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap(), false).await.unwrap();
        insert(&mut tx).await;
        let mut savepoint = tx.savepoint().await.unwrap();
        insert(&mut savepoint).await;
        savepoint.rollback().await.unwrap();
        let mut savepoint = tx.savepoint().await.unwrap();
        insert(&mut savepoint).await;
        savepoint.commit().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&writer).await, 2);

        let mut tx = SqliteTx::begin(writer.lock().await.unwrap(), false).await.unwrap();
        insert(&mut tx).await;
        {
            let mut savepoint = tx.savepoint().await.unwrap();
            insert(&mut savepoint).await;
        }
        assert!(tx.commit().await.is_err(), "the abandoned savepoint's work must not be committed");
        assert_eq!(rows(&writer).await, 2, "nothing of that transaction is kept");
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap(), false).await.unwrap();
        insert(&mut tx).await;
        tx.commit().await.expect("the next transaction is unaffected");
        assert_eq!(rows(&writer).await, 3);
    }

    #[tokio::test]
    async fn the_connection_has_one_holder_the_wait_is_bounded_and_close_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path()).await;
        let held = writer.lock().await.unwrap();
        assert!(matches!(writer.lock().await, Err(StoreError::Database(sqlx::Error::PoolTimedOut))));
        drop(held);
        writer.close().await;
        assert!(matches!(writer.lock().await, Err(StoreError::Database(sqlx::Error::PoolClosed))));
    }
}

#[cfg(test)]
mod synchronous_tests {
    use std::str::FromStr as _;

    use super::*;

    async fn setting(writer: &Writer) -> i64 {
        let mut guard = writer.lock().await.unwrap();
        sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *guard).await.unwrap()
    }

    #[tokio::test]
    async fn each_transaction_commits_at_the_setting_it_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .unwrap()
            .create_if_missing(true)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let connection = options.connect().await.unwrap();
        let writer = Writer::new(connection, options, Duration::from_secs(1));
        // 2 = FULL, 1 = NORMAL.
        for (unsynced, want) in [(true, 1), (true, 1), (false, 2), (true, 1)] {
            let tx = SqliteTx::begin(writer.lock().await.unwrap(), unsynced).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(setting(&writer).await, want, "after a transaction with unsynced={unsynced}");
        }
        // Left open at NORMAL: the next holder gets FULL back, whatever it then asks for.
        let tx = SqliteTx::begin(writer.lock().await.unwrap(), true).await.unwrap();
        drop(tx);
        assert_eq!(setting(&writer).await, 2);
        let tx = SqliteTx::begin(writer.lock().await.unwrap(), false).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(setting(&writer).await, 2);
    }
}
