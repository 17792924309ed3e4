//! Patients as the store keeps them: one row per patient, its identifiers (unique per assigning
//! authority), the merge link, an append-only history, and the log of HL7 messages already
//! applied, which makes ADT processing idempotent.
//!
//! This module stores and fetches; it decides nothing. Which patient a message addresses, and
//! whether a merge is allowed, is `hie-broker`'s call.

use crate::{Store, StoreError, Tx, on_pool, on_tx};

/// A patient row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRow {
    pub id: i64,
    pub merged_into: Option<i64>,
    pub demographics: Demographics,
}

/// What we keep of PID beyond identifiers: enough to show and to feed the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demographics {
    pub family_name: String,
    pub given_name: String,
    pub birth_date: String,
    pub sex: String,
}

/// An identifier row; `authority_key` is the canonical authority (see `hie_core::AuthorityKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierRow {
    pub authority_key: String,
    pub id_value: String,
    pub patient_id: i64,
    pub namespace_id: String,
    pub universal_id: String,
    pub universal_id_type: String,
    pub id_type_code: String,
    pub active: bool,
}

/// One entry of a patient's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub at: i64,
    pub event: String,
    pub message_control_id: String,
    pub detail: String,
}

/// The ACK already sent for a message, found by sender and MSH-10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAck {
    pub ack_code: String,
    pub ack: String,
}

type PatientTuple = (i64, Option<i64>, String, String, String, String);
type IdentifierTuple = (String, String, i64, String, String, String, String, i64);

const SELECT_PATIENT: &str =
    "SELECT id, merged_into, family_name, given_name, birth_date, sex FROM patients WHERE id = $1";
const SELECT_IDENTIFIER: &str = "SELECT authority_key, id_value, patient_id, namespace_id, universal_id, \
     universal_id_type, id_type_code, active FROM patient_identifiers WHERE authority_key = $1 AND id_value = $2";
const SELECT_IDENTIFIERS_OF: &str = "SELECT authority_key, id_value, patient_id, namespace_id, universal_id, \
     universal_id_type, id_type_code, active FROM patient_identifiers WHERE patient_id = $1 ORDER BY position, authority_key";
const SELECT_HISTORY_OF: &str =
    "SELECT at, event, message_control_id, detail FROM patient_history WHERE patient_id = $1 ORDER BY id";

/// Looks up an identifier, active or retired.
pub async fn find_identifier(
    tx: &mut Tx<'_>,
    authority_key: &str,
    id_value: &str,
) -> Result<Option<IdentifierRow>, StoreError> {
    let row: Option<IdentifierTuple> = on_tx!(tx, |conn| sqlx::query_as(SELECT_IDENTIFIER)
        .bind(authority_key)
        .bind(id_value)
        .fetch_optional(conn)
        .await?);
    Ok(row.map(identifier_from_tuple))
}

pub async fn patient(tx: &mut Tx<'_>, patient_id: i64) -> Result<Option<PatientRow>, StoreError> {
    let row: Option<PatientTuple> =
        on_tx!(tx, |conn| sqlx::query_as(SELECT_PATIENT).bind(patient_id).fetch_optional(conn).await?);
    Ok(row.map(patient_from_tuple))
}

pub async fn create_patient(tx: &mut Tx<'_>, demographics: &Demographics, now: i64) -> Result<i64, StoreError> {
    const SQL: &str = "INSERT INTO patients (created_at, updated_at, family_name, given_name, birth_date, sex) \
         VALUES ($1, $1, $2, $3, $4, $5) RETURNING id";
    let id: i64 = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(now)
        .bind(&demographics.family_name)
        .bind(&demographics.given_name)
        .bind(&demographics.birth_date)
        .bind(&demographics.sex)
        .fetch_one(conn)
        .await?);
    Ok(id)
}

pub async fn update_demographics(
    tx: &mut Tx<'_>,
    patient_id: i64,
    demographics: &Demographics,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE patients SET updated_at = $2, family_name = $3, given_name = $4, birth_date = $5, \
         sex = $6 WHERE id = $1";
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(patient_id)
        .bind(now)
        .bind(&demographics.family_name)
        .bind(&demographics.given_name)
        .bind(&demographics.birth_date)
        .bind(&demographics.sex)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(())
}

/// The patients holding any of the active identifiers `keys` (`(authority_key, id_value)`),
/// each with all its identifiers, in one statement. Ordered by patient id.
pub async fn patients_holding(
    tx: &mut Tx<'_>,
    keys: &[(&str, &str)],
) -> Result<Vec<(PatientRow, Vec<IdentifierRow>)>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::from(
        "SELECT p.id, p.merged_into, p.family_name, p.given_name, p.birth_date, p.sex, \
         h.authority_key, h.id_value, h.patient_id, h.namespace_id, h.universal_id, h.universal_id_type, \
         h.id_type_code, h.active \
         FROM patient_identifiers m JOIN patients p ON p.id = m.patient_id \
         JOIN patient_identifiers h ON h.patient_id = p.id WHERE m.active = 1 AND (",
    );
    sql.push_str(&pairs_matching("m.authority_key", "m.id_value", keys.len()));
    sql.push_str(") ORDER BY p.id, h.position, h.authority_key, h.id_value");
    type Joined =
        (i64, Option<i64>, String, String, String, String, String, String, i64, String, String, String, String, i64);
    let rows: Vec<Joined> = on_tx!(tx, |conn| {
        // Built only from placeholders: no value is spliced into the text.
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for (authority_key, id_value) in keys {
            query = query.bind(*authority_key).bind(*id_value);
        }
        query.fetch_all(conn).await?
    });
    let mut patients: Vec<(PatientRow, Vec<IdentifierRow>)> = Vec::new();
    for (id, merged_into, family_name, given_name, birth_date, sex, a, v, pid, ns, uid, uidt, code, active) in rows {
        if patients.last().is_none_or(|(patient, _)| patient.id != id) {
            let patient = patient_from_tuple((id, merged_into, family_name, given_name, birth_date, sex));
            patients.push((patient, Vec::new()));
        }
        if let Some((_, identifiers)) = patients.last_mut() {
            // A patient matched through several identifiers comes back once per match.
            if !identifiers.iter().any(|row: &IdentifierRow| row.authority_key == a && row.id_value == v) {
                identifiers.push(identifier_from_tuple((a, v, pid, ns, uid, uidt, code, active)));
            }
        }
    }
    Ok(patients)
}

/// Attaches several identifiers in one statement (see [`attach_identifier`]); `position` is
/// the first one's, the others follow.
pub async fn attach_identifiers(
    tx: &mut Tx<'_>,
    identifiers: &[IdentifierRow],
    position: i64,
) -> Result<(), StoreError> {
    if identifiers.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO patient_identifiers (authority_key, id_value, patient_id, namespace_id, universal_id, \
         universal_id_type, id_type_code, active, position) VALUES ",
    );
    for row_idx in 0..identifiers.len() {
        let base = row_idx * 8;
        if row_idx > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, 1, ${})",
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7,
            base + 8
        ));
    }
    sql.push_str(
        " ON CONFLICT (authority_key, id_value) DO UPDATE SET patient_id = excluded.patient_id, \
         namespace_id = excluded.namespace_id, universal_id = excluded.universal_id, \
         universal_id_type = excluded.universal_id_type, id_type_code = excluded.id_type_code, active = 1, \
         position = excluded.position",
    );
    on_tx!(tx, |conn| {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        for (row_idx, identifier) in identifiers.iter().enumerate() {
            query = query
                .bind(&identifier.authority_key)
                .bind(&identifier.id_value)
                .bind(identifier.patient_id)
                .bind(&identifier.namespace_id)
                .bind(&identifier.universal_id)
                .bind(&identifier.universal_id_type)
                .bind(&identifier.id_type_code)
                .bind(position + i64::try_from(row_idx).unwrap_or(0));
        }
        query.execute(conn).await?.rows_affected()
    });
    Ok(())
}

/// Gives `identifier.patient_id` the identifier, taking over a retired row of the same value if
/// there is one (an identifier retired by A47 may be issued again).
pub async fn attach_identifier(tx: &mut Tx<'_>, identifier: &IdentifierRow, position: i64) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO patient_identifiers (authority_key, id_value, patient_id, namespace_id, \
         universal_id, universal_id_type, id_type_code, active, position) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8) \
         ON CONFLICT (authority_key, id_value) DO UPDATE SET patient_id = excluded.patient_id, \
         namespace_id = excluded.namespace_id, universal_id = excluded.universal_id, \
         universal_id_type = excluded.universal_id_type, id_type_code = excluded.id_type_code, active = 1, \
         position = excluded.position";
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(&identifier.authority_key)
        .bind(&identifier.id_value)
        .bind(identifier.patient_id)
        .bind(&identifier.namespace_id)
        .bind(&identifier.universal_id)
        .bind(&identifier.universal_id_type)
        .bind(&identifier.id_type_code)
        .bind(position)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(())
}

/// Marks an identifier as no longer the patient's (A47); the row stays for history.
pub async fn retire_identifier(tx: &mut Tx<'_>, authority_key: &str, id_value: &str) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE patient_identifiers SET active = 0 WHERE authority_key = $1 AND id_value = $2";
    on_tx!(tx, |conn| sqlx::query(SQL).bind(authority_key).bind(id_value).execute(conn).await?.rows_affected());
    Ok(())
}

pub async fn set_merged_into(tx: &mut Tx<'_>, prior_id: i64, survivor_id: i64, now: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE patients SET merged_into = $2, updated_at = $3 WHERE id = $1";
    on_tx!(tx, |conn| sqlx::query(SQL).bind(prior_id).bind(survivor_id).bind(now).execute(conn).await?.rows_affected());
    Ok(())
}

pub async fn identifiers_of(tx: &mut Tx<'_>, patient_id: i64) -> Result<Vec<IdentifierRow>, StoreError> {
    let rows: Vec<IdentifierTuple> =
        on_tx!(tx, |conn| sqlx::query_as(SELECT_IDENTIFIERS_OF).bind(patient_id).fetch_all(conn).await?);
    Ok(rows.into_iter().map(identifier_from_tuple).collect())
}

pub async fn add_history(
    tx: &mut Tx<'_>,
    patient_id: i64,
    event: &str,
    message_control_id: &str,
    detail: &str,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str =
        "INSERT INTO patient_history (patient_id, at, event, message_control_id, detail) VALUES ($1, $2, $3, $4, $5)";
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(patient_id)
        .bind(now)
        .bind(event)
        .bind(message_control_id)
        .bind(detail)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(())
}

/// The ACK sent earlier for this sender's MSH-10, if the message was seen before.
pub async fn recorded_ack(tx: &mut Tx<'_>, sender: &str, control_id: &str) -> Result<Option<RecordedAck>, StoreError> {
    const SQL: &str = "SELECT ack_code, ack FROM hl7_inbound WHERE sender = $1 AND control_id = $2";
    let row: Option<(String, String)> =
        on_tx!(tx, |conn| sqlx::query_as(SQL).bind(sender).bind(control_id).fetch_optional(conn).await?);
    Ok(row.map(|(ack_code, ack)| RecordedAck { ack_code, ack }))
}

/// The ACKs recorded for several messages (`(sender, control_id)`), in one statement.
pub async fn recorded_acks(
    tx: &mut Tx<'_>,
    keys: &[(&str, &str)],
) -> Result<Vec<(String, String, RecordedAck)>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::from("SELECT sender, control_id, ack_code, ack FROM hl7_inbound WHERE ");
    sql.push_str(&pairs_matching("sender", "control_id", keys.len()));
    let rows: Vec<(String, String, String, String)> = on_tx!(tx, |conn| {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for (sender, control_id) in keys {
            query = query.bind(*sender).bind(*control_id);
        }
        query.fetch_all(conn).await?
    });
    Ok(rows
        .into_iter()
        .map(|(sender, control_id, ack_code, ack)| (sender, control_id, RecordedAck { ack_code, ack }))
        .collect())
}

/// Records several messages as handled in one statement (see [`record_ack`]).
pub async fn record_acks(tx: &mut Tx<'_>, records: &[(&str, &str, &RecordedAck)], now: i64) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("INSERT INTO hl7_inbound (sender, control_id, received_at, ack_code, ack) VALUES ");
    for row_idx in 0..records.len() {
        let base = row_idx * 4;
        if row_idx > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, $1, ${}, ${})", base + 2, base + 3, base + 4, base + 5));
    }
    sql.push_str(" ON CONFLICT (sender, control_id) DO NOTHING");
    on_tx!(tx, |conn| {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(now);
        for (sender, control_id, recorded) in records {
            query = query.bind(*sender).bind(*control_id).bind(&recorded.ack_code).bind(&recorded.ack);
        }
        query.execute(conn).await?.rows_affected()
    });
    Ok(())
}

/// Records a message as handled, with the ACK it got, in the transaction that applied it.
pub async fn record_ack(
    tx: &mut Tx<'_>,
    sender: &str,
    control_id: &str,
    recorded: &RecordedAck,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO hl7_inbound (sender, control_id, received_at, ack_code, ack) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sender, control_id) DO NOTHING";
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(sender)
        .bind(control_id)
        .bind(now)
        .bind(&recorded.ack_code)
        .bind(&recorded.ack)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(())
}

/// A patient with everything the API shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRecord {
    pub patient: PatientRow,
    pub identifiers: Vec<IdentifierRow>,
    pub history: Vec<HistoryRow>,
}

impl Store {
    /// The patient holding an active identifier, with its identifiers and history (read pool).
    pub async fn patient_by_identifier(
        &self,
        authority_key: &str,
        id_value: &str,
    ) -> Result<Option<PatientRecord>, StoreError> {
        let identifier: Option<IdentifierTuple> = on_pool!(self, |pool| sqlx::query_as(SELECT_IDENTIFIER)
            .bind(authority_key)
            .bind(id_value)
            .fetch_optional(pool)
            .await?);
        match identifier.map(identifier_from_tuple) {
            Some(identifier) if identifier.active => self.patient_record(identifier.patient_id).await,
            _ => Ok(None),
        }
    }

    /// A patient with its identifiers and history, by row id (read pool).
    pub async fn patient_record(&self, patient_id: i64) -> Result<Option<PatientRecord>, StoreError> {
        let Some(mut record) = self.patient_identity(patient_id).await? else {
            return Ok(None);
        };
        let history: Vec<(i64, String, String, String)> =
            on_pool!(self, |pool| sqlx::query_as(SELECT_HISTORY_OF).bind(patient_id).fetch_all(pool).await?);
        record.history = history
            .into_iter()
            .map(|(at, event, message_control_id, detail)| HistoryRow { at, event, message_control_id, detail })
            .collect();
        Ok(Some(record))
    }

    /// [`Store::patient_record`] with its history left empty: who the patient is now, for what
    /// tells others (the identity feed builds each message from it). The history only grows, and
    /// a feed item read all of it.
    pub async fn patient_identity(&self, patient_id: i64) -> Result<Option<PatientRecord>, StoreError> {
        let patient: Option<PatientTuple> =
            on_pool!(self, |pool| sqlx::query_as(SELECT_PATIENT).bind(patient_id).fetch_optional(pool).await?);
        let Some(patient) = patient.map(patient_from_tuple) else {
            return Ok(None);
        };
        let identifiers: Vec<IdentifierTuple> =
            on_pool!(self, |pool| sqlx::query_as(SELECT_IDENTIFIERS_OF).bind(patient_id).fetch_all(pool).await?);
        Ok(Some(PatientRecord {
            patient,
            identifiers: identifiers.into_iter().map(identifier_from_tuple).collect(),
            history: Vec::new(),
        }))
    }

    /// Forgets recorded HL7 messages received before `older_than` (micros): past the retention
    /// window a repeat is applied again, which is what senders expect of a duplicate window.
    pub async fn purge_recorded_acks(&self, older_than: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM hl7_inbound WHERE received_at < $1";
        let mut tx = self.begin().await?;
        let deleted = on_tx!(&mut tx, |conn| sqlx::query(SQL).bind(older_than).execute(conn).await?.rows_affected());
        tx.commit().await?;
        Ok(deleted)
    }

    /// Counts for metrics: patients, merged patients, messages recorded.
    pub async fn patient_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        const SQL: &str = "SELECT (SELECT COUNT(*) FROM patients), \
             (SELECT COUNT(*) FROM patients WHERE merged_into IS NOT NULL), (SELECT COUNT(*) FROM hl7_inbound)";
        let counts: (i64, i64, i64) = on_pool!(self, |pool| sqlx::query_as(SQL).fetch_one(pool).await?);
        Ok(counts)
    }
}

/// `(a = $1 AND b = $2) OR (a = $3 AND b = $4) …` for `n_pairs` pairs: the text holds only
/// placeholders, values are bound, so building it is safe.
fn pairs_matching(column_a: &str, column_b: &str, n_pairs: usize) -> String {
    (0..n_pairs)
        .map(|pair_idx| format!("({column_a} = ${} AND {column_b} = ${})", 2 * pair_idx + 1, 2 * pair_idx + 2))
        .collect::<Vec<_>>()
        .join(" OR ")
}

fn patient_from_tuple((id, merged_into, family_name, given_name, birth_date, sex): PatientTuple) -> PatientRow {
    PatientRow { id, merged_into, demographics: Demographics { family_name, given_name, birth_date, sex } }
}

fn identifier_from_tuple(
    (authority_key, id_value, patient_id, namespace_id, universal_id, universal_id_type, id_type_code, active): IdentifierTuple,
) -> IdentifierRow {
    IdentifierRow {
        authority_key,
        id_value,
        patient_id,
        namespace_id,
        universal_id,
        universal_id_type,
        id_type_code,
        active: active != 0,
    }
}
