//! Patient state for a whole group commit in a few statements, whatever the batch holds.
//!
//! [`read_state`] loads everything a batch of ADT messages may look at in one statement: the
//! ACKs recorded for their MSH-10s, the patients holding their identifiers (each with all its
//! identifiers), patients asked for by id, and fresh patient ids. The broker decides in memory,
//! then [`write_changes`] writes every outcome (patients, identifiers, history, identity feeds,
//! ACK records, studies a merge makes due): on SQLite a few statements whose rows travel as bound
//! JSON arrays (`json_each`), on PostgreSQL one statement over `UNNEST` arrays whose
//! sub-statements are data-modifying CTEs. The SQL text never depends on the batch, so each
//! statement is prepared once per connection.
//!
//! [`WriteSession`] is the group-commit writer's use of the pair, with the fewest trips to the
//! database:
//! - SQLite: on the writer's in-process connection (`sqlite_native`): `BEGIN IMMEDIATE`, the
//!   read, the writes and `COMMIT` run on the calling thread, with no hand-off to another thread
//!   at all. Inside a [`Tx`] the same SQL goes through sqlx (one hand-off per read or write).
//! - PostgreSQL: the reads run on their own and the writes are one statement in its own implicit
//!   transaction, committed (WAL flushed, `synchronous_commit`) before the answer comes back: two
//!   round trips per batch. No lock is lost by reading outside the write transaction: READ
//!   COMMITTED reads take none either, and a write that meets a concurrent instance's row (an
//!   identifier or a message ID recorded meanwhile) fails on the unique key, so the whole batch
//!   is refused rather than applied twice.
//!
//! Nothing here decides: the broker works out which rows change; this module only moves them.

use std::future::Future;
use std::sync::LazyLock;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, SqliteConnection};

use crate::json::JsonArray;
use crate::outbox::ENQUEUE_LOCK_CLASS;
use crate::patients::{Demographics, IdentifierRow, PatientRow, RecordedAck};
use crate::sqlite_native;
use crate::sqlite_writer::WriterGuard;
use crate::submissions::REGISTERED_PUBLICATION;
use crate::{Backend, Store, StoreError, Tx};

/// What to load for a batch. Every list may be empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateRequest<'a> {
    /// `(sender, control_id)` of messages whose recorded ACK is wanted.
    pub acks: &'a [(&'a str, &'a str)],
    /// `(authority_key, id_value)`: each identifier found (active or retired) brings its patient
    /// and all that patient's identifiers.
    pub identifiers: &'a [(&'a str, &'a str)],
    /// Patients wanted by id, each with all its identifiers.
    pub patients: &'a [i64],
    /// How many fresh patient ids to hand out.
    pub new_ids: usize,
    /// The highest id handed out by an earlier read in the same transaction (0 for none). SQLite
    /// counts fresh ids up from the largest stored one, which does not move until the writes, so
    /// it needs to know where the previous read stopped.
    pub ids_handed_out: i64,
}

/// What [`read_state`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateRows {
    /// `(sender, control_id, ack)` for the requested messages that were seen before.
    pub acks: Vec<(String, String, RecordedAck)>,
    /// The patients found, once each, in no particular order.
    pub patients: Vec<PatientRow>,
    /// Every identifier of the patients found.
    pub identifiers: Vec<StoredIdentifier>,
    /// Fresh patient ids, ascending, unused by any row.
    pub new_ids: Vec<i64>,
}

/// An identifier row with its place in the patient's list (PID-3 order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentifier {
    pub row: IdentifierRow,
    pub position: i64,
}

/// Everything a batch writes. Rows are final states: one entry per patient and per identifier.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Patients to insert, with ids from [`StateRows::new_ids`].
    pub new_patients: Vec<NewPatient>,
    /// Stored patients to change.
    pub patient_updates: Vec<PatientUpdate>,
    /// Identifiers to insert or overwrite (all columns).
    pub identifiers: Vec<StoredIdentifier>,
    /// `(authority_key, id_value)` of stored identifiers to mark retired (none of `identifiers`).
    pub retired: Vec<(String, String)>,
    /// History entries, in the order they happened.
    pub history: Vec<NewHistory>,
    /// Outbox items, in enqueue order (id order, hence delivery order per key).
    pub outbox: Vec<NewOutboxItem>,
    /// Messages handled, with the ACK they got.
    pub acks: Vec<NewAck>,
    /// Affinity-domain patient IDs (CX, as submissions record them): every study whose registered
    /// version went under one of them is due now, as a change from source `merge` (the broker's
    /// decision, on a merge, that those studies get a new version).
    pub studies_registered_under: Vec<String>,
}

/// A patient to insert; `created_at` and `updated_at` are the batch's time.
#[derive(Debug, Clone)]
pub struct NewPatient {
    pub id: i64,
    pub merged_into: Option<i64>,
    pub demographics: Demographics,
}

/// A change to a stored patient; `updated_at` becomes the batch's time. Only what is `Some` is
/// written, so a column nobody changed keeps what another instance may have written meanwhile.
#[derive(Debug, Clone)]
pub struct PatientUpdate {
    pub id: i64,
    pub demographics: Option<Demographics>,
    /// Set by a merge (A40); a merge is never undone.
    pub merged_into: Option<i64>,
}

/// A history entry; `at` is the batch's time.
#[derive(Debug, Clone)]
pub struct NewHistory {
    pub patient_id: i64,
    pub event: String,
    pub message_control_id: String,
    pub detail: String,
}

/// An outbox item without an idempotency key, `pending` and due at the batch's time.
#[derive(Clone)]
pub struct NewOutboxItem {
    pub topic: String,
    pub key: String,
    pub payload: String,
}

/// A handled message and its ACK (see `patients::record_ack`).
#[derive(Debug, Clone)]
pub struct NewAck {
    pub sender: String,
    pub control_id: String,
    pub recorded: RecordedAck,
}

/// Where a batch's reads go: a transaction ([`Tx`]) or a [`WriteSession`].
pub trait ReadState: Send {
    fn read_state(&mut self, request: &StateRequest<'_>) -> impl Future<Output = Result<StateRows, StoreError>> + Send;
}

/// The writer connection held for one group commit: reads with [`WriteSession::read_state`],
/// then [`WriteSession::commit`] writes and commits. Dropped without a commit, nothing is
/// written (rolled back on the spot, or else by the next holder of the writer connection, see
/// `sqlite_writer`).
///
/// On SQLite its statements run on the calling thread (`sqlite_native`), and `commit` waits
/// there for the fsync: call it from a thread that may block, as the ADT writer's own does.
pub struct WriteSession {
    inner: Session,
}

enum Session {
    Sqlite {
        /// `None` once the connection has been handed back.
        connection: Option<WriterGuard>,
        /// `BEGIN IMMEDIATE` has been sent and neither COMMIT nor ROLLBACK has completed.
        in_transaction: bool,
    },
    Postgres {
        connection: PoolConnection<Postgres>,
    },
}

impl Store {
    /// Takes the writer connection (SQLite) or a pool connection (PostgreSQL) for one batch.
    pub async fn write_session(&self) -> Result<WriteSession, StoreError> {
        let inner = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                Session::Sqlite { connection: Some(writer.lock().await?), in_transaction: false }
            }
            Backend::Postgres { batch_writer, .. } => Session::Postgres { connection: batch_writer.acquire().await? },
        };
        Ok(WriteSession { inner })
    }
}

impl WriteSession {
    /// Loads state (see [`read_state`]). On SQLite the first read also opens the write
    /// transaction, so everything read stays true until the commit.
    pub async fn read_state(&mut self, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
        match &mut self.inner {
            Session::Sqlite { connection, in_transaction } => {
                native_read(native_in_transaction(connection, in_transaction)?, request)
            }
            Session::Postgres { connection } => pg_read(connection, request).await,
        }
    }

    /// Writes `changes` and commits; when this returns `Ok`, they are durable. On an error
    /// nothing of them is stored.
    pub async fn commit(mut self, changes: &Changes, now: i64) -> Result<(), StoreError> {
        let result = match &mut self.inner {
            Session::Sqlite { connection, in_transaction } => {
                let connection = native_in_transaction(connection, in_transaction)?;
                let result = native_write(connection, changes, now)
                    .and_then(|()| sqlite_native::execute(connection, "COMMIT", &[]).map(drop));
                if result.is_ok() {
                    *in_transaction = false;
                }
                result
            }
            // One statement, one implicit transaction: it either commits or leaves no trace.
            Session::Postgres { connection } => return pg_write(connection, changes, now).await,
        };
        if result.is_err() {
            // A statement before COMMIT failed inside the open transaction: undo it here so the
            // connection goes back clean. If that fails too, Drop leaves it to the next holder.
            let _ = self.roll_back();
        }
        result
    }

    /// Gives up the batch: nothing read or decided is written.
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        self.roll_back()
    }

    fn roll_back(&mut self) -> Result<(), StoreError> {
        if let Session::Sqlite { connection, in_transaction } = &mut self.inner
            && *in_transaction
        {
            sqlite_native::roll_back(native_connection(connection)?)?;
            *in_transaction = false;
        }
        Ok(())
    }
}

impl ReadState for WriteSession {
    async fn read_state(&mut self, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
        WriteSession::read_state(self, request).await
    }
}

impl ReadState for Tx<'_> {
    async fn read_state(&mut self, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
        read_state(self, request).await
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        if let Session::Sqlite { connection: Some(connection), in_transaction: true } = &mut self.inner {
            // Cancelled or failed between BEGIN and the end of the transaction. The in-process
            // connection can roll back right here; if even that fails, the next holder of the
            // writer slot rolls back (or reopens) first.
            if sqlite_native::roll_back(connection.native()).is_err() {
                connection.mark_needs_reset();
            }
        }
    }
}

/// Loads state inside `tx` (see [`StateRequest`]).
pub async fn read_state(tx: &mut Tx<'_>, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
    match tx {
        Tx::Sqlite(transaction) => sqlite_read(transaction, request).await,
        Tx::Postgres(transaction) => pg_read(transaction, request).await,
    }
}

/// Writes `changes` inside `tx`; the caller commits.
pub async fn write_changes(tx: &mut Tx<'_>, changes: &Changes, now: i64) -> Result<(), StoreError> {
    match tx {
        Tx::Sqlite(transaction) => sqlite_write(transaction, changes, now).await,
        Tx::Postgres(transaction) => pg_write(transaction, changes, now).await,
    }
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.new_patients.is_empty()
            && self.patient_updates.is_empty()
            && self.identifiers.is_empty()
            && self.retired.is_empty()
            && self.history.is_empty()
            && self.outbox.is_empty()
            && self.acks.is_empty()
            && self.studies_registered_under.is_empty()
    }
}

impl std::fmt::Debug for NewOutboxItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Payloads may hold PHI (see `outbox`).
        f.debug_struct("NewOutboxItem").field("topic", &self.topic).field("key", &self.key).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WriteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = match self.inner {
            Session::Sqlite { .. } => "sqlite",
            Session::Postgres { .. } => "postgres",
        };
        f.debug_struct("WriteSession").field("engine", &engine).finish_non_exhaustive()
    }
}

fn native_connection(connection: &mut Option<WriterGuard>) -> Result<&rusqlite::Connection, StoreError> {
    match connection {
        Some(connection) => Ok(connection.native()),
        None => Err(StoreError::Database(sqlx::Error::PoolClosed)),
    }
}

/// The session's in-process connection inside its write transaction, opened (`BEGIN IMMEDIATE`)
/// by the first read or write that needs it.
fn native_in_transaction<'a>(
    connection: &'a mut Option<WriterGuard>,
    in_transaction: &mut bool,
) -> Result<&'a rusqlite::Connection, StoreError> {
    let connection = native_connection(connection)?;
    if !*in_transaction {
        sqlite_native::execute(connection, "BEGIN IMMEDIATE", &[])?;
        *in_transaction = true;
    }
    Ok(connection)
}

// ---------------------------------------------------------------------------------------------
// Reads. One row shape for everything, tagged by `kind`:
// - ROW_ACK: t1 sender, t2 control_id, t3 ack_code, t4 ack;
// - ROW_PATIENT: n1 patient id, n2 merged_into, n3 identifier active, n4 position, t1-t4
//   demographics, t5-t10 identifier (NULL when the patient has none);
// - ROW_NEW_ID: n1 a fresh id (PostgreSQL), or the id to count up from (SQLite).

type StateTuple = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const ROW_ACK: i64 = 0;
const ROW_PATIENT: i64 = 1;
const ROW_NEW_ID: i64 = 2;

/// SQLite: `$1` acks `[[sender, control_id]…]`, `$2` identifiers `[[key, value]…]`, `$3`
/// patient ids `[id…]`, `$4` how many fresh ids, `$5` the highest id handed out already.
const SQLITE_READ: &str = "SELECT 0, NULL, NULL, NULL, NULL, sender, control_id, ack_code, ack, \
         NULL, NULL, NULL, NULL, NULL, NULL \
     FROM hl7_inbound WHERE (sender, control_id) IN (SELECT value->>0, value->>1 FROM json_each($1)) \
     UNION ALL \
     SELECT 1, p.id, p.merged_into, h.active, h.position, p.family_name, p.given_name, p.birth_date, p.sex, \
         h.authority_key, h.id_value, h.namespace_id, h.universal_id, h.universal_id_type, h.id_type_code \
     FROM patients p LEFT JOIN patient_identifiers h ON h.patient_id = p.id \
     WHERE p.id IN ( \
         SELECT m.patient_id FROM patient_identifiers m \
         WHERE (m.authority_key, m.id_value) IN (SELECT value->>0, value->>1 FROM json_each($2)) \
         UNION SELECT value FROM json_each($3)) \
     UNION ALL \
     SELECT 2, max(coalesce((SELECT max(id) FROM patients), 0), $5), $4, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
     WHERE $4 > 0";

/// PostgreSQL: `$1`/`$2` ack senders and control ids, `$3`/`$4` identifier keys and values, `$5`
/// patient ids, `$6` how many fresh ids (taken from the identity's sequence).
const PG_READ: &str = "SELECT 0::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, \
         sender, control_id, ack_code, ack, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text \
     FROM hl7_inbound WHERE (sender, control_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
     UNION ALL \
     SELECT 1, p.id, p.merged_into, h.active, h.position, p.family_name, p.given_name, p.birth_date, p.sex, \
         h.authority_key, h.id_value, h.namespace_id, h.universal_id, h.universal_id_type, h.id_type_code \
     FROM patients p LEFT JOIN patient_identifiers h ON h.patient_id = p.id \
     WHERE p.id IN ( \
         SELECT m.patient_id FROM patient_identifiers m \
         WHERE (m.authority_key, m.id_value) IN (SELECT * FROM unnest($3::text[], $4::text[])) \
         UNION SELECT unnest($5::bigint[])) \
     UNION ALL \
     SELECT 2, nextval(pg_get_serial_sequence('patients', 'id')), NULL, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
     FROM generate_series(1, $6::bigint)";

/// `$1`-`$3` of the SQLite read: acks, identifiers, patient ids as JSON arrays.
fn sqlite_read_arrays(request: &StateRequest<'_>) -> [String; 3] {
    let mut acks = JsonArray::new();
    for (sender, control_id) in request.acks {
        acks.row().str(sender).str(control_id);
    }
    let mut identifiers = JsonArray::new();
    for (authority_key, id_value) in request.identifiers {
        identifiers.row().str(authority_key).str(id_value);
    }
    let mut patients = JsonArray::new();
    for patient_id in request.patients {
        patients.int(*patient_id);
    }
    [acks.finish(), identifiers.finish(), patients.finish()]
}

/// SQLite counts fresh ids up from the largest one in use.
fn sqlite_count_up(base: i64, n_ids: i64) -> Vec<i64> {
    (1..=n_ids).map(|offset| base + offset).collect()
}

async fn sqlite_read(connection: &mut SqliteConnection, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
    let [acks, identifiers, patients] = sqlite_read_arrays(request);
    let rows: Vec<StateTuple> = sqlx::query_as(SQLITE_READ)
        .bind(acks)
        .bind(identifiers)
        .bind(patients)
        .bind(count(request.new_ids))
        .bind(request.ids_handed_out)
        .fetch_all(connection)
        .await?;
    state_from_rows(rows, sqlite_count_up)
}

/// [`sqlite_read`] on the writer's in-process connection.
fn native_read(connection: &rusqlite::Connection, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
    let [acks, identifiers, patients] = sqlite_read_arrays(request);
    let new_ids = count(request.new_ids);
    let rows = sqlite_native::query(
        connection,
        SQLITE_READ,
        &[&acks, &identifiers, &patients, &new_ids, &request.ids_handed_out],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                row.get(8)?,
                row.get(9)?,
                row.get(10)?,
                row.get(11)?,
                row.get(12)?,
                row.get(13)?,
                row.get(14)?,
            ))
        },
    )?;
    state_from_rows(rows, sqlite_count_up)
}

async fn pg_read(connection: &mut PgConnection, request: &StateRequest<'_>) -> Result<StateRows, StoreError> {
    let (senders, control_ids): (Vec<&str>, Vec<&str>) = request.acks.iter().copied().unzip();
    let (keys, values): (Vec<&str>, Vec<&str>) = request.identifiers.iter().copied().unzip();
    let rows: Vec<StateTuple> = sqlx::query_as(PG_READ)
        .bind(senders)
        .bind(control_ids)
        .bind(keys)
        .bind(values)
        .bind(request.patients)
        .bind(count(request.new_ids))
        .fetch_all(connection)
        .await?;
    state_from_rows(rows, |_, _| Vec::new())
}

/// Sorts the tagged rows out. `count_up(base, n)` turns SQLite's counting row into ids.
fn state_from_rows(rows: Vec<StateTuple>, count_up: impl Fn(i64, i64) -> Vec<i64>) -> Result<StateRows, StoreError> {
    let mut state = StateRows::default();
    for (kind, n1, n2, n3, n4, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10) in rows {
        match kind {
            ROW_ACK => {
                let (Some(sender), Some(control_id), Some(ack_code), Some(ack)) = (t1, t2, t3, t4) else {
                    return Err(StoreError::Corrupt("hl7_inbound row with NULL columns".to_owned()));
                };
                state.acks.push((sender, control_id, RecordedAck { ack_code, ack }));
            }
            ROW_PATIENT => {
                let Some(patient_id) = n1 else {
                    return Err(StoreError::Corrupt("patient row without id".to_owned()));
                };
                if !state.patients.iter().any(|patient| patient.id == patient_id) {
                    let demographics = Demographics {
                        family_name: t1.unwrap_or_default(),
                        given_name: t2.unwrap_or_default(),
                        birth_date: t3.unwrap_or_default(),
                        sex: t4.unwrap_or_default(),
                    };
                    state.patients.push(PatientRow { id: patient_id, merged_into: n2, demographics });
                }
                // A patient without identifiers comes back once, with NULLs on the right.
                if let (Some(active), Some(position), Some(authority_key), Some(id_value)) = (n3, n4, t5, t6) {
                    let row = IdentifierRow {
                        authority_key,
                        id_value,
                        patient_id,
                        namespace_id: t7.unwrap_or_default(),
                        universal_id: t8.unwrap_or_default(),
                        universal_id_type: t9.unwrap_or_default(),
                        id_type_code: t10.unwrap_or_default(),
                        active: active != 0,
                    };
                    state.identifiers.push(StoredIdentifier { row, position });
                }
            }
            ROW_NEW_ID => match (n1, n2) {
                // SQLite: where to count up from, and how many.
                (Some(base), Some(n_ids)) => state.new_ids.extend(count_up(base, n_ids)),
                (Some(id), None) => state.new_ids.push(id),
                _ => return Err(StoreError::Corrupt("fresh id row without id".to_owned())),
            },
            other => return Err(StoreError::Corrupt(format!("state row of kind {other}"))),
        }
    }
    state.new_ids.sort_unstable();
    Ok(state)
}

// ---------------------------------------------------------------------------------------------
// Writes.

/// SQLite: `$1` now, then one JSON array per statement (`$2`-`$9`, in the order below).
/// Statements run in order, each over its rows in array order (`ORDER BY key`), so history and
/// outbox ids follow the batch's order. Only the statements that have rows are sent (each costs
/// a few µs even with nothing to do, as much as a one-message batch's own work), so a batch's
/// text is one of the few combinations that occur (an update, a creation, a merge...), each
/// prepared once. `WHERE true` before `ON CONFLICT` resolves the parsing ambiguity of an upsert
/// fed by a SELECT (sqlite.org/lang_upsert.html).
const SQLITE_INSERT_PATIENTS: &str = "INSERT INTO patients (id, created_at, updated_at, merged_into, family_name, given_name, birth_date, sex) \
     SELECT value->>0, $1, $1, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each($2) ORDER BY key";
const SQLITE_UPDATE_PATIENTS: &str = "UPDATE patients SET updated_at = $1, merged_into = coalesce(u.value->>1, merged_into), \
     family_name = coalesce(u.value->>2, family_name), given_name = coalesce(u.value->>3, given_name), \
     birth_date = coalesce(u.value->>4, birth_date), sex = coalesce(u.value->>5, sex) \
     FROM json_each($3) AS u WHERE patients.id = u.value->>0";
const SQLITE_UPSERT_IDENTIFIERS: &str = "INSERT INTO patient_identifiers (authority_key, id_value, patient_id, \
     namespace_id, universal_id, universal_id_type, id_type_code, active, position) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8 \
     FROM json_each($4) WHERE true \
     ON CONFLICT (authority_key, id_value) DO UPDATE SET patient_id = excluded.patient_id, \
     namespace_id = excluded.namespace_id, universal_id = excluded.universal_id, \
     universal_id_type = excluded.universal_id_type, id_type_code = excluded.id_type_code, \
     active = excluded.active, position = excluded.position";
const SQLITE_RETIRE_IDENTIFIERS: &str = "UPDATE patient_identifiers SET active = 0 \
     WHERE (authority_key, id_value) IN (SELECT value->>0, value->>1 FROM json_each($5))";
const SQLITE_INSERT_HISTORY: &str = "INSERT INTO patient_history (patient_id, at, event, message_control_id, detail) \
     SELECT value->>0, $1, value->>1, value->>2, value->>3 FROM json_each($6) ORDER BY key";
const SQLITE_INSERT_OUTBOX: &str = "INSERT INTO outbox (topic, key, payload, idempotency_key, state, attempts, \
     next_attempt_at, created_at, updated_at) \
     SELECT value->>0, value->>1, value->>2, NULL, 'pending', 0, $1, $1, $1 FROM json_each($7) ORDER BY key";
const SQLITE_INSERT_ACKS: &str = "INSERT INTO hl7_inbound (sender, control_id, received_at, ack_code, ack) \
     SELECT value->>0, value->>1, $1, value->>2, value->>3 FROM json_each($8)";

/// `$9`: the studies registered under the listed patients are due now (as `studies::note_change`
/// does for a known study).
static SQLITE_STUDIES_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE studies SET state = 'pending', source = '{MERGE}', change_seq = change_seq + 1, \
         last_change_at = $1, due_at = $1, attempts = 0, last_error = NULL, updated_at = $1 \
         WHERE study_instance_uid IN (SELECT p.study_instance_uid FROM submissions p \
             WHERE {REGISTERED_PUBLICATION} AND p.affinity_patient_id IN (SELECT value FROM json_each($9)))",
        MERGE = crate::studies::ChangeSource::Merge.as_str(),
    )
});

/// The write statements in their fixed order, each with whether `changes` has rows for it. Only
/// those with rows run.
fn sqlite_write_statements(changes: &Changes) -> [(bool, &'static str); 8] {
    [
        (!changes.new_patients.is_empty(), SQLITE_INSERT_PATIENTS),
        (!changes.patient_updates.is_empty(), SQLITE_UPDATE_PATIENTS),
        (!changes.identifiers.is_empty(), SQLITE_UPSERT_IDENTIFIERS),
        (!changes.retired.is_empty(), SQLITE_RETIRE_IDENTIFIERS),
        (!changes.history.is_empty(), SQLITE_INSERT_HISTORY),
        (!changes.outbox.is_empty(), SQLITE_INSERT_OUTBOX),
        (!changes.acks.is_empty(), SQLITE_INSERT_ACKS),
        (!changes.studies_registered_under.is_empty(), SQLITE_STUDIES_DUE.as_str()),
    ]
}

/// `$2`-`$9` of the write statements: one JSON array of rows per table.
fn sqlite_write_arrays(changes: &Changes) -> [String; 8] {
    let mut new_patients = JsonArray::new();
    for patient in &changes.new_patients {
        let demographics = &patient.demographics;
        new_patients
            .row()
            .int(patient.id)
            .opt_int(patient.merged_into)
            .str(&demographics.family_name)
            .str(&demographics.given_name)
            .str(&demographics.birth_date)
            .str(&demographics.sex);
    }
    let mut updates = JsonArray::new();
    for update in &changes.patient_updates {
        let demographics = update.demographics.as_ref();
        updates
            .row()
            .int(update.id)
            .opt_int(update.merged_into)
            .opt_str(demographics.map(|d| d.family_name.as_str()))
            .opt_str(demographics.map(|d| d.given_name.as_str()))
            .opt_str(demographics.map(|d| d.birth_date.as_str()))
            .opt_str(demographics.map(|d| d.sex.as_str()));
    }
    let mut identifiers = JsonArray::new();
    for StoredIdentifier { row, position } in &changes.identifiers {
        identifiers
            .row()
            .str(&row.authority_key)
            .str(&row.id_value)
            .int(row.patient_id)
            .str(&row.namespace_id)
            .str(&row.universal_id)
            .str(&row.universal_id_type)
            .str(&row.id_type_code)
            .int(i64::from(row.active))
            .int(*position);
    }
    let mut retired = JsonArray::new();
    for (authority_key, id_value) in &changes.retired {
        retired.row().str(authority_key).str(id_value);
    }
    let mut history = JsonArray::new();
    for entry in &changes.history {
        history.row().int(entry.patient_id).str(&entry.event).str(&entry.message_control_id).str(&entry.detail);
    }
    let mut outbox = JsonArray::new();
    for item in &changes.outbox {
        outbox.row().str(&item.topic).str(&item.key).str(&item.payload);
    }
    let mut acks = JsonArray::new();
    for ack in &changes.acks {
        acks.row().str(&ack.sender).str(&ack.control_id).str(&ack.recorded.ack_code).str(&ack.recorded.ack);
    }
    let registered_under: Vec<&str> = changes.studies_registered_under.iter().map(String::as_str).collect();
    [
        new_patients.finish(),
        updates.finish(),
        identifiers.finish(),
        retired.finish(),
        history.finish(),
        outbox.finish(),
        acks.finish(),
        crate::retrieval::json_array(&registered_under),
    ]
}

/// Writes `changes` inside the caller's transaction, as one multi-statement execution (one
/// hand-off to the connection's worker thread).
async fn sqlite_write(connection: &mut SqliteConnection, changes: &Changes, now: i64) -> Result<(), StoreError> {
    let statements = sqlite_write_statements(changes);
    let sql: Vec<&str> = statements.iter().filter(|(needed, _)| *needed).map(|(_, sql)| *sql).collect();
    if sql.is_empty() {
        return Ok(());
    }
    let [a2, a3, a4, a5, a6, a7, a8, a9] = sqlite_write_arrays(changes);
    // Built only from the constants above: no value is spliced into the text.
    sqlx::query(sqlx::AssertSqlSafe(sql.join("; ")))
        .bind(now)
        .bind(a2)
        .bind(a3)
        .bind(a4)
        .bind(a5)
        .bind(a6)
        .bind(a7)
        .bind(a8)
        .bind(a9)
        .execute(connection)
        .await?;
    Ok(())
}

/// [`sqlite_write`] on the writer's in-process connection: each statement with rows on its own,
/// from the statement cache, in the same order.
fn native_write(connection: &rusqlite::Connection, changes: &Changes, now: i64) -> Result<(), StoreError> {
    let arrays = sqlite_write_arrays(changes);
    let [a2, a3, a4, a5, a6, a7, a8, a9] = &arrays;
    let values: [&dyn rusqlite::ToSql; 9] = [&now, a2, a3, a4, a5, a6, a7, a8, a9];
    for (_, sql) in sqlite_write_statements(changes).iter().filter(|(needed, _)| *needed) {
        sqlite_native::execute(connection, sql, &values)?;
    }
    Ok(())
}

/// PostgreSQL: one statement; `$1` now, `$2` the outbox lock class, then one set of arrays per
/// table, `$37` the patients whose registered studies are due (see [`Changes`]).
///
/// Order inside the statement, which per-key outbox order relies on (see `outbox::enqueue`):
/// the outbox rows are produced only after `gate` has been evaluated, a one-time filter that
/// first takes the advisory lock of every outbox key (held to the end of the implicit
/// transaction) and writes every patient row (whose row locks a concurrent writer of the same
/// patient waits on). So the identity's next values for a key are drawn in commit order. Rows
/// come out of `unnest` in array order, so ids within the batch follow its order too. CTEs that
/// nothing reads (identifiers, history, ACK records) still run to completion, and foreign keys
/// are checked at the end of the statement, when every sub-statement's rows exist.
static PG_WRITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH \
     new_patients AS ( \
         INSERT INTO patients (id, created_at, updated_at, merged_into, family_name, given_name, birth_date, sex) \
         OVERRIDING SYSTEM VALUE \
         SELECT n.id, $1, $1, n.merged_into, n.family_name, n.given_name, n.birth_date, n.sex \
         FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[]) \
             AS n(id, merged_into, family_name, given_name, birth_date, sex) \
         RETURNING id), \
     updated_patients AS ( \
         UPDATE patients p SET updated_at = $1, merged_into = coalesce(u.merged_into, p.merged_into), \
             family_name = coalesce(u.family_name, p.family_name), given_name = coalesce(u.given_name, p.given_name), \
             birth_date = coalesce(u.birth_date, p.birth_date), sex = coalesce(u.sex, p.sex) \
         FROM unnest($9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[]) \
             AS u(id, merged_into, family_name, given_name, birth_date, sex) \
         WHERE p.id = u.id \
         RETURNING p.id), \
     identifiers AS ( \
         INSERT INTO patient_identifiers (authority_key, id_value, patient_id, namespace_id, universal_id, \
             universal_id_type, id_type_code, active, position) \
         SELECT * FROM unnest($15::text[], $16::text[], $17::bigint[], $18::text[], $19::text[], $20::text[], \
             $21::text[], $22::bigint[], $23::bigint[]) \
         ON CONFLICT (authority_key, id_value) DO UPDATE SET patient_id = excluded.patient_id, \
             namespace_id = excluded.namespace_id, universal_id = excluded.universal_id, \
             universal_id_type = excluded.universal_id_type, id_type_code = excluded.id_type_code, \
             active = excluded.active, position = excluded.position \
         RETURNING 1), \
     retired AS ( \
         UPDATE patient_identifiers SET active = 0 \
         WHERE (authority_key, id_value) IN (SELECT * FROM unnest($24::text[], $25::text[])) \
         RETURNING 1), \
     history AS ( \
         INSERT INTO patient_history (patient_id, at, event, message_control_id, detail) \
         SELECT h.patient_id, $1, h.event, h.control_id, h.detail \
         FROM unnest($26::bigint[], $27::text[], $28::text[], $29::text[]) AS h(patient_id, event, control_id, detail) \
         RETURNING 1), \
     due_studies AS ( \
         UPDATE studies SET state = 'pending', source = '{MERGE}', change_seq = change_seq + 1, \
             last_change_at = $1, due_at = $1, attempts = 0, last_error = NULL, updated_at = $1 \
         WHERE study_instance_uid IN (SELECT p.study_instance_uid FROM submissions p \
             WHERE {REGISTERED_PUBLICATION} AND p.affinity_patient_id = ANY($37::text[])) \
         RETURNING 1), \
     acks AS ( \
         INSERT INTO hl7_inbound (sender, control_id, received_at, ack_code, ack) \
         SELECT a.sender, a.control_id, $1, a.ack_code, a.ack \
         FROM unnest($30::text[], $31::text[], $32::text[], $33::text[]) AS a(sender, control_id, ack_code, ack) \
         RETURNING 1), \
     locks AS MATERIALIZED ( \
         SELECT pg_advisory_xact_lock($2, hashtext(k.key)) \
         FROM (SELECT DISTINCT unnest($35::text[]) AS key) AS k), \
     gate AS MATERIALIZED ( \
         SELECT (SELECT count(*) FROM locks) + (SELECT count(*) FROM new_patients) \
             + (SELECT count(*) FROM updated_patients) AS n) \
     INSERT INTO outbox (topic, key, payload, idempotency_key, state, attempts, next_attempt_at, created_at, updated_at) \
     SELECT o.topic, o.key, o.payload, NULL, 'pending', 0, $1, $1, $1 \
     FROM unnest($34::text[], $35::text[], $36::text[]) AS o(topic, key, payload) \
     WHERE (SELECT n FROM gate) >= 0",
        MERGE = crate::studies::ChangeSource::Merge.as_str(),
    )
});

async fn pg_write(connection: &mut PgConnection, changes: &Changes, now: i64) -> Result<(), StoreError> {
    let new_patients = &changes.new_patients;
    let updates = &changes.patient_updates;
    let update_demographics = |field: fn(&Demographics) -> &str| -> Vec<Option<&str>> {
        updates.iter().map(|update| update.demographics.as_ref().map(field)).collect()
    };
    let identifiers = &changes.identifiers;
    let identifier_text = |field: fn(&IdentifierRow) -> &str| -> Vec<&str> {
        identifiers.iter().map(|stored| field(&stored.row)).collect()
    };
    let (retired_keys, retired_values): (Vec<&str>, Vec<&str>) =
        changes.retired.iter().map(|(key, value)| (key.as_str(), value.as_str())).unzip();
    let history = &changes.history;
    let acks = &changes.acks;
    let outbox = &changes.outbox;
    sqlx::query(PG_WRITE.as_str())
        .bind(now)
        .bind(ENQUEUE_LOCK_CLASS)
        .bind(new_patients.iter().map(|patient| patient.id).collect::<Vec<i64>>())
        .bind(new_patients.iter().map(|patient| patient.merged_into).collect::<Vec<Option<i64>>>())
        .bind(new_patients.iter().map(|patient| patient.demographics.family_name.as_str()).collect::<Vec<&str>>())
        .bind(new_patients.iter().map(|patient| patient.demographics.given_name.as_str()).collect::<Vec<&str>>())
        .bind(new_patients.iter().map(|patient| patient.demographics.birth_date.as_str()).collect::<Vec<&str>>())
        .bind(new_patients.iter().map(|patient| patient.demographics.sex.as_str()).collect::<Vec<&str>>())
        .bind(updates.iter().map(|update| update.id).collect::<Vec<i64>>())
        .bind(updates.iter().map(|update| update.merged_into).collect::<Vec<Option<i64>>>())
        .bind(update_demographics(|d| &d.family_name))
        .bind(update_demographics(|d| &d.given_name))
        .bind(update_demographics(|d| &d.birth_date))
        .bind(update_demographics(|d| &d.sex))
        .bind(identifier_text(|row| &row.authority_key))
        .bind(identifier_text(|row| &row.id_value))
        .bind(identifiers.iter().map(|stored| stored.row.patient_id).collect::<Vec<i64>>())
        .bind(identifier_text(|row| &row.namespace_id))
        .bind(identifier_text(|row| &row.universal_id))
        .bind(identifier_text(|row| &row.universal_id_type))
        .bind(identifier_text(|row| &row.id_type_code))
        .bind(identifiers.iter().map(|stored| i64::from(stored.row.active)).collect::<Vec<i64>>())
        .bind(identifiers.iter().map(|stored| stored.position).collect::<Vec<i64>>())
        .bind(retired_keys)
        .bind(retired_values)
        .bind(history.iter().map(|entry| entry.patient_id).collect::<Vec<i64>>())
        .bind(history.iter().map(|entry| entry.event.as_str()).collect::<Vec<&str>>())
        .bind(history.iter().map(|entry| entry.message_control_id.as_str()).collect::<Vec<&str>>())
        .bind(history.iter().map(|entry| entry.detail.as_str()).collect::<Vec<&str>>())
        .bind(acks.iter().map(|ack| ack.sender.as_str()).collect::<Vec<&str>>())
        .bind(acks.iter().map(|ack| ack.control_id.as_str()).collect::<Vec<&str>>())
        .bind(acks.iter().map(|ack| ack.recorded.ack_code.as_str()).collect::<Vec<&str>>())
        .bind(acks.iter().map(|ack| ack.recorded.ack.as_str()).collect::<Vec<&str>>())
        .bind(outbox.iter().map(|item| item.topic.as_str()).collect::<Vec<&str>>())
        .bind(outbox.iter().map(|item| item.key.as_str()).collect::<Vec<&str>>())
        .bind(outbox.iter().map(|item| item.payload.as_str()).collect::<Vec<&str>>())
        .bind(changes.studies_registered_under.iter().map(String::as_str).collect::<Vec<&str>>())
        // `execute` waits for ReadyForQuery, which follows the implicit transaction's commit.
        .execute(connection)
        .await?;
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
