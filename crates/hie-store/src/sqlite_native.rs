//! The SQLite writer's in-process connection: the group-commit writer's batches run through it
//! (rusqlite, on the calling thread) instead of through sqlx.
//!
//! Why a second driver: sqlx runs each SQLite connection on a worker thread of its own and hands
//! every statement, and every row it streams back, across a channel to that thread. Thread
//! wake-ups on the machines we run on cost 20-60 µs each (`docs/performance.md`, B-ADT fourth
//! round), and `perf` put about 40% of the worker's time in the scheduler. A one-message batch
//! paid more for those hand-offs than for its SQL. This connection runs the batch's statements
//! where the batch is decided, with no hand-off at all, so the caller must be a thread that may
//! block for a commit's fsync (the ADT writer runs on one of its own).
//!
//! It is the same SQLite build (rusqlite and sqlx share `libsqlite3-sys`), the same file, and
//! the same settings as sqlx's connections (WAL, `synchronous=FULL`, foreign keys, the busy
//! timeout), and it lives in the writer's slot beside sqlx's writer connection
//! (`sqlite_writer`), so the two never write at once. The SQL is the same text sqlx runs, with
//! `$n` parameters bound by number here too ([`bind`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OpenFlags, Row, Statement};
use sqlx::sqlite::SqliteConnectOptions;

use crate::StoreError;

/// Statements a batch may use, prepared once each: the read, the write statements, framing.
const STATEMENT_CACHE: usize = 32;

/// Opens the writer's in-process connection to the file of `options` (already created and
/// migrated by sqlx).
pub(crate) fn open(options: &SqliteConnectOptions, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let path = options.get_filename();
    if is_in_memory(path) {
        // Every connection to an in-memory database has a database of its own: the writer's two
        // connections and the readers would each see a different one.
        return Err(StoreError::BadUrl(format!(
            "{}: an in-memory SQLite database cannot be shared by the writer and the readers; use a file",
            path.display()
        )));
    }
    let connection =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    connection.busy_timeout(busy_timeout)?;
    // The journal mode is the file's (sqlx set WAL when it created it); synchronous and foreign
    // keys are per connection.
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    let journal_mode: String = connection.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!("the SQLite store is in journal mode {journal_mode}, not WAL")));
    }
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

fn is_in_memory(path: &Path) -> bool {
    // sqlx names an in-memory database `:memory:`, or `file:…` with a shared cache.
    path.to_str().is_some_and(|path| path == ":memory:" || path.starts_with("file:"))
}

/// Runs `sql` (one statement, from the statement cache) with `values[n - 1]` bound to `$n`.
pub(crate) fn execute(connection: &Connection, sql: &str, values: &[&dyn ToSql]) -> Result<usize, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    bind(&mut statement, values)?;
    Ok(statement.raw_execute()?)
}

/// Runs the query `sql` like [`execute`] and maps every row it returns.
pub(crate) fn query<T>(
    connection: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
    mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    bind(&mut statement, values)?;
    let mut rows = statement.raw_query();
    let mut mapped = Vec::new();
    while let Some(row) = rows.next()? {
        mapped.push(map(row)?);
    }
    Ok(mapped)
}

/// Ends the open transaction, if any. "No transaction is active" is not an error here: SQLite
/// rolls back by itself after some failures.
pub(crate) fn roll_back(connection: &Connection) -> Result<(), StoreError> {
    if !connection.is_autocommit() {
        execute(connection, "ROLLBACK", &[])?;
    }
    Ok(())
}

/// Binds by number: SQLite sees `$3` as a parameter *named* `$3`, numbered by first use, so a
/// statement that uses `$1` and `$3` has parameters 1 and 2. sqlx reads the number from the name
/// the same way, which lets both drivers run the same text.
fn bind(statement: &mut Statement<'_>, values: &[&dyn ToSql]) -> Result<(), StoreError> {
    for index in 1..=statement.parameter_count() {
        let number = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|number| number.parse::<usize>().ok())
            .filter(|number| (1..=values.len()).contains(number));
        let Some(number) = number else {
            let name = statement.parameter_name(index).unwrap_or("?").to_owned();
            return Err(StoreError::Corrupt(format!(
                "statement parameter {name} is not one of $1..${} (a bug in the statement's text)",
                values.len()
            )));
        };
        statement.raw_bind_parameter(index, values[number - 1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use sqlx::ConnectOptions as _;

    use super::*;

    async fn created(dir: &Path) -> SqliteConnectOptions {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.join("n.db").display()))
            .unwrap()
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut connection = options.clone().create_if_missing(true).connect().await.unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER, b TEXT)").execute(&mut connection).await.unwrap();
        options
    }

    #[tokio::test]
    async fn parameters_bind_by_the_number_in_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open(&created(dir.path()).await, Duration::from_secs(1)).unwrap();
        // `$3` comes first, so SQLite numbers it 1: binding by position would swap the values.
        execute(&connection, "INSERT INTO t (b, a) VALUES ($3, $1)", &[&7_i64, &"unused", &"seven"]).unwrap();
        let rows = query(&connection, "SELECT a, b FROM t WHERE a = $1", &[&7_i64], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .unwrap();
        assert_eq!(rows, vec![(7, "seven".to_owned())]);
        let missing = execute(&connection, "INSERT INTO t (a) VALUES ($2)", &[&1_i64]);
        assert!(matches!(missing, Err(StoreError::Corrupt(_))), "{missing:?}");
        let unnamed = execute(&connection, "INSERT INTO t (a) VALUES (?)", &[&1_i64]);
        assert!(matches!(unnamed, Err(StoreError::Corrupt(_))), "{unnamed:?}");
    }

    #[tokio::test]
    async fn the_connection_is_durable_and_checks_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open(&created(dir.path()).await, Duration::from_secs(1)).unwrap();
        let synchronous: i64 = connection.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "synchronous=FULL");
        let foreign_keys: i64 = connection.pragma_query_value(None, "foreign_keys", |row| row.get(0)).unwrap();
        assert_eq!(foreign_keys, 1);
        execute(&connection, "BEGIN IMMEDIATE", &[]).unwrap();
        assert!(!connection.is_autocommit());
        roll_back(&connection).unwrap();
        assert!(connection.is_autocommit());
        roll_back(&connection).expect("nothing open is not an error");
    }

    #[test]
    fn an_in_memory_store_is_refused() {
        for url in ["sqlite::memory:", "sqlite:file:x?mode=memory"] {
            let options = SqliteConnectOptions::from_str(url).unwrap();
            assert!(matches!(open(&options, Duration::from_secs(1)), Err(StoreError::BadUrl(_))), "{url}");
        }
    }
}
