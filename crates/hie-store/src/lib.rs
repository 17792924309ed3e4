//! The broker's durable state, on sqlx: SQLite (the embedded default) or PostgreSQL (several
//! instances sharing one database).
//!
//! One [`Store`] hides the engine. Writes go through a [`Tx`]; SQLite gets a single writer
//! connection (`BEGIN IMMEDIATE`, WAL, `synchronous=FULL`; `sqlite_writer`) and a separate read
//! pool, PostgreSQL a pool shared by writers and readers. SQL is written once with `$n`
//! placeholders, which both engines bind by number, and run through the `on_tx!`/`on_pool!`
//! macros that expand the same code once per engine, so there is no `Any` driver and no
//! per-engine copy of a query.
//!
//! Modules:
//! - [`patients`]: identities, merges, history, and the inbound-message log that makes ADT idempotent.
//! - [`outbox`]: the durable outbox (enqueue in the caller's transaction, leased claims, backoff).
//! - [`studies`]: study readiness (triggers, quiet period, leased builds), manifest versions, and
//!   the instance headers the DICOM listener received.
//! - [`submissions`]: registry submissions (publish, deprecate) with their state and last exchange.
//! - [`retrieval`]: what a retrieval (RAD-69, ITI-43) may serve: instances and manifests of each
//!   study's current registered manifest.
//! - [`refregistry`]: the tables of the built-in reference XDS registry and repository (`reg_*`).
//! - [`batch`]: patient state for a whole group commit, read in one statement and written in a
//!   few, and the [`batch::WriteSession`] that runs a batch with the fewest round trips (on
//!   SQLite, none: in-process).
//! - `sqlite_writer`: the SQLite writer connection behind an async mutex, and [`SqliteTx`].
//! - `sqlite_native`: the writer's in-process connection (rusqlite), which runs the group
//!   commit's batches on the caller's thread.

pub mod batch;
mod json;
pub mod outbox;
pub mod patients;
pub mod refregistry;
pub mod retrieval;
mod sqlite_native;
mod sqlite_writer;
pub mod studies;
pub mod submissions;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, PgPool, Postgres, SqlitePool, Transaction};

pub use crate::sqlite_writer::SqliteTx;

/// Which database engine a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://path/file.db` or `postgres://user:password@host/db`.
    pub url: String,
    /// Connections in the (read) pool; the SQLite writer is always one connection.
    pub max_connections: u32,
    /// How long to wait for a lock or a connection before giving up.
    pub acquire_timeout: Duration,
}

/// Errors from the store, split by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no engine we support, or is malformed: a configuration problem.
    #[error("store url: {0}")]
    BadUrl(String),
    /// Migrations failed: the database is not in a state this version can use.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database refused or lost the operation; usually worth retrying later.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The same, from the SQLite writer's in-process connection (`sqlite_native`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row held something this version cannot read (a bug or a foreign writer).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite {
        // Boxed: the connect options it keeps (to reconnect) are large.
        writer: Box<sqlite_writer::Writer>,
        readers: SqlitePool,
    },
    /// `batch_writer`: one connection for the group-commit writer's batches (see
    /// `connect_postgres`); everything else uses `pool`.
    Postgres { pool: PgPool, batch_writer: PgPool },
}

/// A write transaction (or a savepoint inside one) on either engine.
#[derive(Debug)]
pub enum Tx<'c> {
    Sqlite(SqliteTx<'c>),
    Postgres(Transaction<'c, Postgres>),
}

/// Runs the same code against whichever engine a [`Tx`] holds: `$conn` is bound to
/// `&mut <Engine>Connection` in each arm, so queries and row decoding type-check per engine.
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::Tx::Sqlite(transaction) => {
                let $conn = &mut **transaction;
                $body
            }
            $crate::Tx::Postgres(transaction) => {
                let $conn = &mut **transaction;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

/// Like `on_tx!`, for reads that need no transaction: `$pool` is the engine's read pool.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.read_backend() {
            $crate::ReadPool::Sqlite($pool) => $body,
            $crate::ReadPool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

pub(crate) enum ReadPool<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

impl Store {
    /// Opens the database named by `options.url` and brings its schema up to date.
    pub async fn connect(options: &StoreOptions) -> Result<Store, StoreError> {
        let url = options.url.as_str();
        let backend = if url.starts_with("sqlite:") {
            connect_sqlite(options).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            connect_postgres(options).await?
        } else {
            return Err(StoreError::BadUrl(format!(
                "expected sqlite://… or postgres://…, got a url with scheme {:?}",
                url.split(':').next().unwrap_or_default()
            )));
        };
        Ok(Store { backend })
    }

    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sqlite { .. } => Engine::Sqlite,
            Backend::Postgres { .. } => Engine::Postgres,
        }
    }

    /// Starts a write transaction. On SQLite this takes the write lock at once (`BEGIN
    /// IMMEDIATE`) so a transaction never fails half-way on a lock upgrade.
    pub async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite { writer, .. } => Tx::Sqlite(SqliteTx::begin(writer.lock().await?).await?),
            Backend::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Checks the database answers; used by `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { writer, readers } => {
                writer.close().await;
                readers.close().await;
            }
            Backend::Postgres { pool, batch_writer } => {
                batch_writer.close().await;
                pool.close().await;
            }
        }
    }

    pub(crate) fn read_backend(&self) -> ReadPool<'_> {
        match &self.backend {
            Backend::Sqlite { readers, .. } => ReadPool::Sqlite(readers),
            Backend::Postgres { pool, .. } => ReadPool::Postgres(pool),
        }
    }
}

impl Tx<'_> {
    /// Opens a savepoint: work in it can be rolled back alone, leaving the outer transaction
    /// usable. The group-commit writer gives each message one.
    pub async fn savepoint(&mut self) -> Result<Tx<'_>, StoreError> {
        Ok(match self {
            Tx::Sqlite(transaction) => Tx::Sqlite(transaction.savepoint().await?),
            Tx::Postgres(transaction) => Tx::Postgres(sqlx::Connection::begin(&mut **transaction).await?),
        })
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(transaction) => transaction.commit().await?,
            Tx::Postgres(transaction) => transaction.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(transaction) => transaction.rollback().await?,
            Tx::Postgres(transaction) => transaction.rollback().await?,
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        match self {
            Tx::Sqlite(_) => Engine::Sqlite,
            Tx::Postgres(_) => Engine::Postgres,
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary: errors and exchanges kept for
/// operators are bounded, whatever a peer sends.
pub(crate) fn truncate_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Microseconds since the Unix epoch: the one time representation in the schema, identical on
/// both engines.
pub fn now_micros() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

async fn connect_sqlite(options: &StoreOptions) -> Result<Backend, StoreError> {
    let base = SqliteConnectOptions::from_str(&options.url)
        .map_err(|error| StoreError::BadUrl(error.to_string()))?
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk (WAL fsynced) before we ACK anything that depends on it.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(options.acquire_timeout);
    // One writer connection, held by one transaction at a time (`sqlite_writer`): SQLite
    // serializes writers anyway, and one connection lets the group-commit writer own the lock
    // without contention.
    let mut connection = base.clone().create_if_missing(true).connect().await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut connection).await?;
    let native = sqlite_native::open(&base, options.acquire_timeout)?;
    let writer = Box::new(sqlite_writer::Writer::new(connection, native, base.clone(), options.acquire_timeout));
    let readers = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(base.read_only(true))
        .await?;
    Ok(Backend::Sqlite { writer, readers })
}

async fn connect_postgres(options: &StoreOptions) -> Result<Backend, StoreError> {
    let connect_options =
        PgConnectOptions::from_str(&options.url).map_err(|error| StoreError::BadUrl(error.to_string()))?;
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect_options.clone())
        .await?;
    // Several instances may start at once against an empty database; the migrator takes an
    // advisory lock so only one applies the schema.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    warn_if_not_durable(&pool).await?;
    // The group-commit writer's statements (`batch`) take whole batches as arrays. PostgreSQL's
    // default plan cache keeps re-planning them on every execution (0.3-0.5 ms, more than the
    // statement runs), because its estimate for `unnest` of a parameter makes the generic plan
    // look dearer; their plan does not depend on the values, so this connection plans once. But
    // once means on whatever the tables held then: planned on a new, empty database, the read
    // and the write kept seq scans and hash joins and took 19 ms each at 30,000 rows (0.4 ms by
    // index), until autovacuum's ANALYZE invalidated them. Every statement here looks rows up by
    // key, so this connection never seq-scans. Its own pool, so neither setting reaches other
    // queries; no ping before each batch (a dead connection fails the batch, which is answered
    // AE and resent, and sqlx reconnects; with the ping, throughput measured the same).
    let batch_writer = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(false)
        .connect_with(connect_options.options([("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off")]))
        .await?;
    Ok(Backend::Postgres { pool, batch_writer })
}

/// An ACK promises durability, so a server with fsync or synchronous_commit off is worth a loud
/// warning at start (reliability-security R1).
async fn warn_if_not_durable(pool: &PgPool) -> Result<(), StoreError> {
    for setting in ["fsync", "synchronous_commit"] {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}"))).fetch_one(pool).await?;
        if value != "on" {
            tracing::warn!(setting, value, "PostgreSQL is not durable: ACKed messages can be lost on a crash");
        }
    }
    Ok(())
}
