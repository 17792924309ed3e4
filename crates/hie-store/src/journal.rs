//! The ADT journal: on SQLite, the durable record of every ADT message the group-commit writer
//! takes, in its own database file beside the store.
//!
//! Why a second file. A commit's fsync costs what the commit wrote: the pages of the patient
//! tables and their indexes, spread wherever the keys sort (about 21 WAL frames for a batch of 8
//! messages). The journal writes each message as one row under a sequential key, so its commit
//! is a few frames at the end of its own WAL, as cheap as the disk's bare commit. The writer
//! commits a batch's journal rows (synchronous=FULL) and its patient changes in the store
//! (synchronous=NORMAL: visible at once, on disk by the next fsync of the store's WAL) side by
//! side, and answers only when both are done. After a crash of the machine, the store holds a
//! prefix of its commits (WAL order) and the journal every message answered, so replaying the
//! journal in order (repeats are recognised by sender and MSH-10, as always) brings the store back
//! to what was answered.
//!
//! Rows are kept until the store's changes for them are known to be on disk (a store commit
//! with synchronous=FULL after them), then pruned with a later append.
//!
//! This module only stores and returns rows; `hie_broker::commit` decides when.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection as _, Row as _};
use tokio::sync::Mutex;

use crate::StoreError;
use crate::json::JsonArray;

/// The schema, created when the file is new. `seq` is the writer's order of arrival.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS adt_journal ( \
        seq INTEGER PRIMARY KEY, \
        received_at INTEGER NOT NULL, \
        message TEXT NOT NULL)";

/// `$1`: prune every row up to this seq; `$2`: `[[seq, received_at, message], ...]`.
const APPEND: &str = "BEGIN IMMEDIATE; \
    DELETE FROM adt_journal WHERE seq <= $1; \
    INSERT INTO adt_journal (seq, received_at, message) \
        SELECT value->>0, value->>1, value->>2 FROM json_each($2); \
    COMMIT";

/// A message to journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalEntry<'a> {
    pub seq: i64,
    /// Microseconds since the epoch: the time the batch's changes are written with.
    pub received_at: i64,
    /// The message as decoded to UTF-8 (`hie_hl7::charset::decode_to_utf8`).
    pub message: &'a str,
}

/// A journaled message read back for replay.
#[derive(Clone, PartialEq, Eq)]
pub struct JournalRow {
    pub seq: i64,
    pub received_at: i64,
    pub message: String,
}

impl std::fmt::Debug for JournalRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The message is PHI.
        f.debug_struct("JournalRow")
            .field("seq", &self.seq)
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

/// The journal database: one connection, WAL, synchronous=FULL.
///
/// The connection is held directly rather than through a pool: a pool checks a connection
/// before handing it out, a round trip to SQLite's worker thread per append, and only the
/// group-commit writer appends.
#[derive(Debug)]
pub struct AdtJournal {
    connection: Mutex<SqliteConnection>,
    options: SqliteConnectOptions,
}

impl AdtJournal {
    /// Opens (creating if missing) the journal at `url` (`sqlite://...`).
    pub async fn open(url: &str, acquire_timeout: Duration) -> Result<AdtJournal, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::BadUrl(error.to_string()))?
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a message is answered only once its row is on disk.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(acquire_timeout)
            .create_if_missing(true);
        let mut connection = SqliteConnection::connect_with(&options).await?;
        sqlx::query(SCHEMA).execute(&mut connection).await?;
        Ok(AdtJournal { connection: Mutex::new(connection), options })
    }

    /// Writes `entries` durably, and in the same commit removes every row up to `prune_through`
    /// (0 for none). Their seqs must be above every seq already stored.
    pub async fn append(&self, entries: &[JournalEntry<'_>], prune_through: i64) -> Result<(), StoreError> {
        let mut rows = JsonArray::new();
        for entry in entries {
            rows.row().int(entry.seq).int(entry.received_at).str(entry.message);
        }
        let mut connection = self.connection.lock().await;
        let result = sqlx::query(APPEND).bind(prune_through).bind(rows.finish()).execute(&mut *connection).await;
        if result.is_err() {
            // A statement failed inside the open transaction: end it, or start over on a new
            // connection, so the next append does not run inside it.
            if sqlx::query("ROLLBACK").execute(&mut *connection).await.is_err()
                && let Ok(fresh) = SqliteConnection::connect_with(&self.options).await
            {
                let broken = std::mem::replace(&mut *connection, fresh);
                let _ = broken.close().await;
            }
        }
        result?;
        Ok(())
    }

    /// Removes every row from `first` to `last`: messages whose batch was answered as not
    /// stored, which must not come back at a replay.
    pub async fn forget(&self, first: i64, last: i64) -> Result<(), StoreError> {
        let mut connection = self.connection.lock().await;
        sqlx::query("DELETE FROM adt_journal WHERE seq BETWEEN $1 AND $2")
            .bind(first)
            .bind(last)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    /// Every row still journaled, in seq order.
    pub async fn rows(&self) -> Result<Vec<JournalRow>, StoreError> {
        let mut connection = self.connection.lock().await;
        let rows = sqlx::query("SELECT seq, received_at, message FROM adt_journal ORDER BY seq")
            .fetch_all(&mut *connection)
            .await?;
        rows.iter()
            .map(|row| Ok(JournalRow { seq: row.try_get(0)?, received_at: row.try_get(1)?, message: row.try_get(2)? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The highest seq stored (0 when empty).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let mut connection = self.connection.lock().await;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(seq) FROM adt_journal").fetch_one(&mut *connection).await?;
        Ok(last.unwrap_or(0))
    }

    /// Closes the connection (the WAL is checkpointed); the journal is unusable afterwards.
    pub async fn close(self) {
        let _ = self.connection.into_inner().close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, message: &str) -> JournalEntry<'_> {
        JournalEntry { seq, received_at: 1_000 + seq, message }
    }

    #[tokio::test]
    async fn appends_prunes_and_reads_back_in_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("journal.db").display());
        let journal = AdtJournal::open(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(journal.last_seq().await.unwrap(), 0);
        // Segment ends are CR and the text may hold anything JSON must escape.
        let tricky = "MSH|^~\\&|A|B\rPID|||1^^^X||O\"Brien\\T\\é\r";
        journal.append(&[entry(1, "one"), entry(2, tricky)], 0).await.unwrap();
        journal.append(&[entry(3, "three")], 1).await.unwrap();
        journal.close().await;

        let journal = AdtJournal::open(&url, Duration::from_secs(5)).await.unwrap();
        let rows = journal.rows().await.unwrap();
        let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        assert_eq!(seqs, [2, 3], "row 1 was pruned with the second append");
        assert_eq!(rows[0].message, tricky);
        assert_eq!(rows[0].received_at, 1_002);
        assert_eq!(journal.last_seq().await.unwrap(), 3);

        journal.forget(3, 3).await.unwrap();
        let seqs: Vec<i64> = journal.rows().await.unwrap().iter().map(|row| row.seq).collect();
        assert_eq!(seqs, [2]);
    }

    #[tokio::test]
    async fn a_failed_append_leaves_nothing_and_the_journal_usable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("journal.db").display());
        let journal = AdtJournal::open(&url, Duration::from_secs(5)).await.unwrap();
        journal.append(&[entry(1, "one")], 0).await.unwrap();
        // A seq already stored breaks the primary key: the whole append is refused.
        assert!(journal.append(&[entry(2, "two"), entry(1, "again")], 0).await.is_err());
        let seqs: Vec<i64> = journal.rows().await.unwrap().iter().map(|row| row.seq).collect();
        assert_eq!(seqs, [1]);
        journal.append(&[entry(2, "two")], 0).await.unwrap();
        assert_eq!(journal.last_seq().await.unwrap(), 2);
    }
}
