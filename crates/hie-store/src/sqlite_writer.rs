//! The SQLite store's one writer connection, behind an async mutex rather than in a pool, and the
//! write transactions ([`SqliteTx`]) taken on it.
//!
//! Why not a pool of one: sqlx's pool pings a connection whenever it comes back (in a spawned
//! task, which the next acquire waits for), and a ping is a round trip to the connection's
//! worker thread. The group-commit writer takes the connection for every batch, and that wait
//! measured 60-70 µs per batch at one sender and 130 µs at sixteen. Without it the writer alone
//! (`hie-broker`'s `writer_alone` example, three alternating runs) went from 1,166-1,309 to
//! 1,309-1,435 msgs/s at one sender and from 4,670-5,024 to 5,040-5,369 at sixteen. An
//! in-process SQLite connection does not go stale, so nothing needs the ping.
//!
//! What the pool gave and this keeps: one holder at a time, a bounded wait (`acquire_timeout`),
//! and no transaction left open for the next holder. A holder that goes away inside a
//! transaction (a cancelled future, an error before COMMIT) cannot roll back from `Drop`, so it
//! marks the connection, and the next [`Writer::lock`] rolls back (replacing the connection if
//! it no longer answers) before handing it out. Transactions are framed by hand (`BEGIN
//! IMMEDIATE`, savepoints by name), never through sqlx's transaction manager, so sqlx's idea of
//! the nesting depth never disagrees with the connection's.
//!
//! The slot also holds the writer's in-process connection (`sqlite_native`), which the
//! group-commit writer's batches use. Holding the slot is what entitles either connection to
//! write, so the two never contend for SQLite's write lock.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{StoreError, sqlite_native};

/// The writer connection and what its next holder must know.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` once the store is closed.
    connection: Option<SqliteConnection>,
    /// The in-process connection to the same file; `None` once the store is closed.
    native: Option<rusqlite::Connection>,
    /// A holder left a transaction open: roll back first.
    needs_reset: bool,
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
    pub(crate) fn new(
        connection: SqliteConnection,
        native: rusqlite::Connection,
        options: SqliteConnectOptions,
        timeout: Duration,
    ) -> Writer {
        let slot =
            Slot { connection: Some(connection), native: Some(native), needs_reset: false, savepoint_abandoned: false };
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
            // "no transaction is active" is fine: the holder may have failed before BEGIN, or
            // SQLite may have rolled back already. A connection that no longer answers a
            // statement after that is replaced.
            let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            if sqlx::query("SELECT 1").execute(&mut *connection).await.is_err() {
                let fresh = self.options.connect().await?;
                if let Some(broken) = slot.connection.replace(fresh) {
                    let _ = broken.close().await;
                }
            }
            if let Some(native) = &slot.native
                && sqlite_native::roll_back(native).is_err()
            {
                let fresh = sqlite_native::open(&self.options, self.timeout)?;
                slot.native = Some(fresh);
            }
            slot.needs_reset = false;
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
        // Closing it checkpoints the WAL if it is the last connection; no statement is open.
        if let Some(native) = slot.native.take() {
            let _ = native.close();
        }
    }
}

impl WriterGuard {
    /// The next holder rolls back whatever this one leaves open.
    pub(crate) fn mark_needs_reset(&mut self) {
        self.guard.needs_reset = true;
    }

    /// The in-process connection (`sqlite_native`), for the group-commit writer's batches.
    pub(crate) fn native(&mut self) -> &rusqlite::Connection {
        self.guard.native.as_ref().expect("a held writer slot holds its connections")
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
    /// `depth`: 1 inside the transaction, 2 inside that savepoint... A savepoint borrows the
    /// frame it was opened in, so only one is open per depth and `hie_sp<depth>` names it.
    Savepoint {
        slot: &'c mut Slot,
        depth: usize,
    },
}

impl SqliteTx<'static> {
    pub(crate) async fn begin(mut guard: WriterGuard) -> Result<SqliteTx<'static>, StoreError> {
        if let Err(error) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *guard).await {
            guard.mark_needs_reset();
            return Err(error.into());
        }
        Ok(SqliteTx { frame: Frame::Transaction(guard), open: true })
    }
}

impl SqliteTx<'_> {
    /// Opens a savepoint inside this transaction.
    pub(crate) async fn savepoint(&mut self) -> Result<SqliteTx<'_>, StoreError> {
        let (slot, depth) = match &mut self.frame {
            Frame::Transaction(guard) => (&mut *guard.guard, 1),
            Frame::Savepoint { slot, depth } => (&mut **slot, *depth + 1),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!("SAVEPOINT hie_sp{depth}"))).execute(connection_mut(slot)).await?;
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

    /// Ended cleanly: nothing for Drop to do. A transaction's end also ends whatever a
    /// savepoint abandoned inside it.
    fn close_frame(&mut self) {
        self.open = false;
        if let Frame::Transaction(guard) = &mut self.frame {
            guard.guard.savepoint_abandoned = false;
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
            Frame::Savepoint { slot, .. } => slot.savepoint_abandoned = true,
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
        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut connection).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut connection).await.unwrap();
        let native = sqlite_native::open(&options, Duration::from_millis(200)).unwrap();
        Writer::new(connection, native, options, Duration::from_millis(200))
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
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap()).await.unwrap();
        insert(&mut tx).await;
        drop(tx);
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap()).await.expect("no transaction is left open");
        insert(&mut tx).await;
        tx.commit().await.unwrap();
        assert_eq!(rows(&writer).await, 1, "only the committed row");
    }

    #[tokio::test]
    async fn savepoints_roll_back_alone_and_an_abandoned_one_fails_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path()).await;
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap()).await.unwrap();
        insert(&mut tx).await;
        let mut savepoint = tx.savepoint().await.unwrap();
        insert(&mut savepoint).await;
        savepoint.rollback().await.unwrap();
        let mut savepoint = tx.savepoint().await.unwrap();
        insert(&mut savepoint).await;
        // One level deeper, rolled back alone: the outer savepoint keeps its row.
        let mut inner = savepoint.savepoint().await.unwrap();
        insert(&mut inner).await;
        inner.rollback().await.unwrap();
        savepoint.commit().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&writer).await, 2);

        let mut tx = SqliteTx::begin(writer.lock().await.unwrap()).await.unwrap();
        insert(&mut tx).await;
        {
            let mut savepoint = tx.savepoint().await.unwrap();
            insert(&mut savepoint).await;
        }
        assert!(tx.commit().await.is_err(), "the abandoned savepoint's work must not be committed");
        assert_eq!(rows(&writer).await, 2, "nothing of that transaction is kept");
        let mut tx = SqliteTx::begin(writer.lock().await.unwrap()).await.unwrap();
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
