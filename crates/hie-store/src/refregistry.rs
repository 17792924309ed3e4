//! The tables of the built-in reference XDS Document Registry and Document Repository (crate
//! `hie-refregistry`), prefixed `reg_`: patients known from its identity feed, the feed's message
//! log, DocumentEntries (with the multi-valued codes the stored queries filter on),
//! SubmissionSets, Folders, Associations, and the repository's document bytes.
//!
//! This module stores and fetches; it decides nothing. Whether a submission is acceptable is
//! `hie-refregistry`'s call, which reads what it needs in the transaction ([`Tx`] functions), then
//! writes everything or nothing. Read-only queries (ITI-18, ITI-43) go through [`Store`] methods on
//! the read pool.
//!
//! Concurrency: SQLite has one writer, so a registration's checks and writes never interleave
//! with another's. On PostgreSQL [`lock_keys`] takes transaction-scoped advisory locks on the
//! uniqueIds and entryUUIDs a registration checks, so two submissions of one uniqueId, or two
//! replacements of one document, are decided one after the other.

use crate::{Store, StoreError, Tx, on_pool, on_tx};

/// `reg_document_codes.kind` of an eventCodeList code.
pub const CODE_EVENT: &str = "event";
/// `reg_document_codes.kind` of a confidentialityCode.
pub const CODE_CONFIDENTIALITY: &str = "confidentiality";
/// `reg_document_codes.kind` of an authorPerson (scheme empty).
pub const CODE_AUTHOR_PERSON: &str = "author";

/// A patient the registry knows.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RegPatient {
    /// Canonical affinity-domain CX (`id^^^&oid&ISO`).
    pub patient_id: String,
    /// The surviving patient, once this one was merged (A40).
    pub merged_into: Option<String>,
}

/// The ACK recorded for a feed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFeedAck {
    pub ack_code: String,
    pub ack: String,
}

/// A DocumentEntry row. `ebrim` is the registered ExtrinsicObject; times are padded DTM.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DocumentRow {
    pub entry_uuid: String,
    pub unique_id: String,
    pub lid: String,
    pub version: i64,
    pub status: String,
    pub patient_id: String,
    pub object_type: String,
    pub mime_type: String,
    pub hash: Option<String>,
    pub size: Option<i64>,
    pub repository_unique_id: Option<String>,
    pub creation_time: Option<String>,
    pub service_start_time: Option<String>,
    pub service_stop_time: Option<String>,
    pub class_code: Option<String>,
    pub class_scheme: Option<String>,
    pub type_code: Option<String>,
    pub type_scheme: Option<String>,
    pub format_code: Option<String>,
    pub format_scheme: Option<String>,
    pub facility_code: Option<String>,
    pub facility_scheme: Option<String>,
    pub practice_code: Option<String>,
    pub practice_scheme: Option<String>,
    /// The SubmissionSet the entry was registered in.
    pub submission_set_uuid: String,
    pub ebrim: String,
    pub created_at: i64,
}

/// One multi-valued code of a DocumentEntry (`kind` is one of the `CODE_*` constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentCode {
    pub kind: &'static str,
    pub code: String,
    pub scheme: String,
}

/// A SubmissionSet row.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubmissionSetRow {
    pub entry_uuid: String,
    pub unique_id: String,
    pub source_id: String,
    pub patient_id: String,
    pub status: String,
    pub submission_time: Option<String>,
    pub content_type_code: Option<String>,
    pub content_type_scheme: Option<String>,
    pub author_person: Option<String>,
    pub ebrim: String,
    pub created_at: i64,
}

/// A Folder row.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FolderRow {
    pub entry_uuid: String,
    pub unique_id: String,
    pub lid: String,
    pub version: i64,
    pub patient_id: String,
    pub status: String,
    pub last_update_time: String,
    pub ebrim: String,
    pub created_at: i64,
}

/// An Association row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AssociationRow {
    pub entry_uuid: String,
    pub association_type: String,
    pub source_uuid: String,
    pub target_uuid: String,
    pub status: String,
    pub ebrim: String,
    pub created_at: i64,
}

/// A document held by the repository.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepositoryDocumentRow {
    pub unique_id: String,
    pub mime_type: String,
    /// SHA-1, lower-case hex.
    pub hash: String,
    pub size: i64,
    pub content: Vec<u8>,
    pub created_at: i64,
}

/// What kind of registry object an entryUUID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    DocumentEntry,
    SubmissionSet,
    Folder,
    Association,
}

/// An existing registry object, as a submission's references see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingObject {
    pub entry_uuid: String,
    pub kind: ObjectKind,
    /// Empty for associations.
    pub patient_id: String,
    pub status: String,
    pub lid: String,
    pub version: i64,
}

/// What [`put_repository_document`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutDocument {
    /// The document was stored.
    Stored,
    /// The same bytes (same hash and size) were already stored under this uniqueId.
    AlreadyStored,
    /// Other bytes are stored under this uniqueId.
    Conflict { hash: String, size: i64 },
}

/// A coded value to match: the code, and the coding scheme when the query gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeMatch {
    pub code: String,
    pub scheme: Option<String>,
}

/// A time range over padded DTM text: `from <= t < to` (ITI TF-2a 3.18.4.1.2.3.7.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// FindDocuments' filter (ITI TF-2a 3.18.4.1.2.3.7.1). An empty list does not filter; each
/// inner list of `event_codes` and `confidentiality_codes` is OR-ed, the lists AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentFilter {
    pub patient_id: String,
    pub statuses: Vec<String>,
    pub object_types: Vec<String>,
    pub class_codes: Vec<CodeMatch>,
    pub type_codes: Vec<CodeMatch>,
    pub practice_setting_codes: Vec<CodeMatch>,
    pub healthcare_facility_type_codes: Vec<CodeMatch>,
    pub format_codes: Vec<CodeMatch>,
    pub event_codes: Vec<Vec<CodeMatch>>,
    pub confidentiality_codes: Vec<Vec<CodeMatch>>,
    /// authorPerson patterns, SQL LIKE syntax (`%`, `_`), OR-ed.
    pub author_persons: Vec<String>,
    pub creation_time: TimeRange,
    pub service_start_time: TimeRange,
    pub service_stop_time: TimeRange,
}

/// FindSubmissionSets' filter (ITI TF-2a 3.18.4.1.2.3.7.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmissionSetFilter {
    pub patient_id: String,
    pub statuses: Vec<String>,
    pub source_ids: Vec<String>,
    pub content_type_codes: Vec<CodeMatch>,
    pub author_persons: Vec<String>,
    pub submission_time: TimeRange,
}

/// Which end of an association a lookup matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociationEnd {
    Source,
    Target,
    Either,
}

/// Row counts of the registry's tables (tests check that a refusal leaves nothing behind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegCounts {
    pub patients: i64,
    pub feed_messages: i64,
    pub documents: i64,
    pub document_codes: i64,
    pub submission_sets: i64,
    pub folders: i64,
    pub associations: i64,
    pub repository_documents: i64,
}

const DOCUMENT_COLUMNS: &str = "entry_uuid, unique_id, lid, version, status, patient_id, object_type, mime_type, \
     hash, size, repository_unique_id, creation_time, service_start_time, service_stop_time, class_code, \
     class_scheme, type_code, type_scheme, format_code, format_scheme, facility_code, facility_scheme, \
     practice_code, practice_scheme, submission_set_uuid, ebrim, created_at";
const SUBMISSION_SET_COLUMNS: &str = "entry_uuid, unique_id, source_id, patient_id, status, submission_time, \
     content_type_code, content_type_scheme, author_person, ebrim, created_at";
const FOLDER_COLUMNS: &str =
    "entry_uuid, unique_id, lid, version, patient_id, status, last_update_time, ebrim, created_at";
const ASSOCIATION_COLUMNS: &str = "entry_uuid, association_type, source_uuid, target_uuid, status, ebrim, created_at";

/// Advisory lock class of registry keys (PostgreSQL), apart from the outbox's.
const REGISTRY_LOCK_CLASS: i32 = 0x5245_4700;

/// Serializes registrations that touch the same `keys` (uniqueIds, entryUUIDs) on PostgreSQL,
/// until the transaction ends. Keys are locked in sorted order, so two registrations cannot
/// deadlock. SQLite's single writer needs nothing.
pub async fn lock_keys(tx: &mut Tx<'_>, keys: &[String]) -> Result<(), StoreError> {
    let Tx::Postgres(transaction) = tx else {
        return Ok(());
    };
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    sorted.dedup();
    for key in sorted {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(REGISTRY_LOCK_CLASS)
            .bind(key)
            .execute(&mut **transaction)
            .await?;
    }
    Ok(())
}

/// A known patient.
pub async fn patient(tx: &mut Tx<'_>, patient_id: &str) -> Result<Option<RegPatient>, StoreError> {
    const SQL: &str = "SELECT patient_id, merged_into FROM reg_patients WHERE patient_id = $1";
    let row = on_tx!(tx, |conn| sqlx::query_as::<_, RegPatient>(SQL).bind(patient_id).fetch_optional(conn).await?);
    Ok(row)
}

/// Registers a patient; `false` when it was known already (merged or not: a merged patient stays
/// merged, ITI TF-2a 3.8.4.1.3).
pub async fn register_patient(tx: &mut Tx<'_>, patient_id: &str, now: i64) -> Result<bool, StoreError> {
    const SQL: &str = "INSERT INTO reg_patients (patient_id, merged_into, created_at, updated_at) \
         VALUES ($1, NULL, $2, $2) ON CONFLICT (patient_id) DO NOTHING";
    let inserted = on_tx!(tx, |conn| sqlx::query(SQL).bind(patient_id).bind(now).execute(conn).await?.rows_affected());
    Ok(inserted == 1)
}

/// Merges `subsumed` into `surviving` (A40): both become known, `subsumed` and every patient
/// merged into it earlier point at `surviving`, and the metadata of `subsumed` (DocumentEntries,
/// SubmissionSets, Folders) moves to `surviving`. Returns the number of registry objects moved.
pub async fn merge_patient(tx: &mut Tx<'_>, subsumed: &str, surviving: &str, now: i64) -> Result<u64, StoreError> {
    register_patient(tx, surviving, now).await?;
    register_patient(tx, subsumed, now).await?;
    const POINT: &str = "UPDATE reg_patients SET merged_into = $2, updated_at = $3 \
         WHERE patient_id = $1 OR merged_into = $1";
    on_tx!(tx, |conn| sqlx::query(POINT).bind(subsumed).bind(surviving).bind(now).execute(conn).await?.rows_affected());
    let mut moved = 0;
    for table in ["reg_documents", "reg_submission_sets", "reg_folders"] {
        let sql = format!("UPDATE {table} SET patient_id = $2 WHERE patient_id = $1");
        moved += on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(subsumed)
            .bind(surviving)
            .execute(conn)
            .await?
            .rows_affected());
    }
    Ok(moved)
}

/// The ACK recorded for a feed message, if it was seen before.
pub async fn feed_message(
    tx: &mut Tx<'_>,
    sender: &str,
    control_id: &str,
) -> Result<Option<RecordedFeedAck>, StoreError> {
    const SQL: &str = "SELECT ack_code, ack FROM reg_feed_messages WHERE sender = $1 AND control_id = $2";
    let row: Option<(String, String)> =
        on_tx!(tx, |conn| sqlx::query_as(SQL).bind(sender).bind(control_id).fetch_optional(conn).await?);
    Ok(row.map(|(ack_code, ack)| RecordedFeedAck { ack_code, ack }))
}

/// Records a feed message with its ACK, in the transaction that applied it.
pub async fn record_feed_message(
    tx: &mut Tx<'_>,
    sender: &str,
    control_id: &str,
    recorded: &RecordedFeedAck,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO reg_feed_messages (sender, control_id, received_at, ack_code, ack) \
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

/// The DocumentEntries registered under any of `unique_ids`.
pub async fn documents_with_unique_ids(tx: &mut Tx<'_>, unique_ids: &[&str]) -> Result<Vec<DocumentRow>, StoreError> {
    if unique_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {DOCUMENT_COLUMNS} FROM reg_documents WHERE unique_id IN ({}) ORDER BY created_at, entry_uuid",
        placeholders(1, unique_ids.len())
    );
    let rows = on_tx!(tx, |conn| {
        let mut query = sqlx::query_as::<_, DocumentRow>(sqlx::AssertSqlSafe(sql.clone()));
        for unique_id in unique_ids {
            query = query.bind(*unique_id);
        }
        query.fetch_all(conn).await?
    });
    Ok(rows)
}

/// The uniqueIds among `unique_ids` that a SubmissionSet or a Folder already has.
pub async fn package_unique_ids_in_use(tx: &mut Tx<'_>, unique_ids: &[&str]) -> Result<Vec<String>, StoreError> {
    if unique_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = placeholders(1, unique_ids.len());
    let sql = format!(
        "SELECT unique_id FROM reg_submission_sets WHERE unique_id IN ({list}) \
         UNION SELECT unique_id FROM reg_folders WHERE unique_id IN ({list})"
    );
    let rows: Vec<(String,)> = on_tx!(tx, |conn| {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for unique_id in unique_ids {
            query = query.bind(*unique_id);
        }
        query.fetch_all(conn).await?
    });
    Ok(rows.into_iter().map(|(unique_id,)| unique_id).collect())
}

/// The registry objects with any of the entryUUIDs `uuids`, whatever their kind.
pub async fn existing_objects(tx: &mut Tx<'_>, uuids: &[&str]) -> Result<Vec<ExistingObject>, StoreError> {
    if uuids.is_empty() {
        return Ok(Vec::new());
    }
    let list = placeholders(1, uuids.len());
    let sql = format!(
        "SELECT entry_uuid, 'D', patient_id, status, lid, version FROM reg_documents WHERE entry_uuid IN ({list}) \
         UNION ALL SELECT entry_uuid, 'S', patient_id, status, entry_uuid, CAST(1 AS BIGINT) \
         FROM reg_submission_sets WHERE entry_uuid IN ({list}) \
         UNION ALL SELECT entry_uuid, 'F', patient_id, status, lid, version FROM reg_folders WHERE entry_uuid IN ({list}) \
         UNION ALL SELECT entry_uuid, 'A', '', status, entry_uuid, CAST(1 AS BIGINT) \
         FROM reg_associations WHERE entry_uuid IN ({list})"
    );
    let rows: Vec<(String, String, String, String, String, i64)> = on_tx!(tx, |conn| {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for uuid in uuids {
            query = query.bind(*uuid);
        }
        query.fetch_all(conn).await?
    });
    rows.into_iter()
        .map(|(entry_uuid, kind, patient_id, status, lid, version)| {
            let kind = match kind.as_str() {
                "D" => ObjectKind::DocumentEntry,
                "S" => ObjectKind::SubmissionSet,
                "F" => ObjectKind::Folder,
                "A" => ObjectKind::Association,
                other => return Err(StoreError::Corrupt(format!("registry object kind {other:?}"))),
            };
            Ok(ExistingObject { entry_uuid, kind, patient_id, status, lid, version })
        })
        .collect()
}

/// The latest version of the DocumentEntry with logical id `lid`.
pub async fn latest_document_version(tx: &mut Tx<'_>, lid: &str) -> Result<Option<DocumentRow>, StoreError> {
    let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM reg_documents WHERE lid = $1 ORDER BY version DESC LIMIT 1");
    let row = on_tx!(tx, |conn| sqlx::query_as::<_, DocumentRow>(sqlx::AssertSqlSafe(sql.clone()))
        .bind(lid)
        .fetch_optional(conn)
        .await?);
    Ok(row)
}

/// The Folders that hold `document_uuid` (a HasMember association from the Folder).
pub async fn folders_holding(
    tx: &mut Tx<'_>,
    document_uuid: &str,
    has_member: &str,
) -> Result<Vec<String>, StoreError> {
    const SQL: &str = "SELECT a.source_uuid FROM reg_associations a JOIN reg_folders f ON f.entry_uuid = a.source_uuid \
         WHERE a.target_uuid = $1 AND a.association_type = $2 ORDER BY a.created_at, a.source_uuid";
    let rows: Vec<(String,)> =
        on_tx!(tx, |conn| sqlx::query_as(SQL).bind(document_uuid).bind(has_member).fetch_all(conn).await?);
    Ok(rows.into_iter().map(|(uuid,)| uuid).collect())
}

/// Stores a DocumentEntry and its multi-valued codes.
pub async fn insert_document(tx: &mut Tx<'_>, row: &DocumentRow, codes: &[DocumentCode]) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO reg_documents ({DOCUMENT_COLUMNS}) VALUES ({})", placeholders(1, 27));
    on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(&row.entry_uuid)
        .bind(&row.unique_id)
        .bind(&row.lid)
        .bind(row.version)
        .bind(&row.status)
        .bind(&row.patient_id)
        .bind(&row.object_type)
        .bind(&row.mime_type)
        .bind(&row.hash)
        .bind(row.size)
        .bind(&row.repository_unique_id)
        .bind(&row.creation_time)
        .bind(&row.service_start_time)
        .bind(&row.service_stop_time)
        .bind(&row.class_code)
        .bind(&row.class_scheme)
        .bind(&row.type_code)
        .bind(&row.type_scheme)
        .bind(&row.format_code)
        .bind(&row.format_scheme)
        .bind(&row.facility_code)
        .bind(&row.facility_scheme)
        .bind(&row.practice_code)
        .bind(&row.practice_scheme)
        .bind(&row.submission_set_uuid)
        .bind(&row.ebrim)
        .bind(row.created_at)
        .execute(conn)
        .await?
        .rows_affected());
    // Rows per statement stay well under both engines' parameter limits (4 per row).
    for chunk in codes.chunks(MAX_ROWS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO reg_document_codes (entry_uuid, kind, code, scheme) VALUES ");
        for row_idx in 0..chunk.len() {
            if row_idx > 0 {
                sql.push_str(", ");
            }
            let base = row_idx * 3 + 1;
            sql.push_str(&format!("($1, ${}, ${}, ${})", base + 1, base + 2, base + 3));
        }
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(&row.entry_uuid);
            for code in chunk {
                query = query.bind(code.kind).bind(&code.code).bind(&code.scheme);
            }
            query.execute(conn).await?.rows_affected()
        });
    }
    Ok(())
}

/// Stores a SubmissionSet.
pub async fn insert_submission_set(tx: &mut Tx<'_>, row: &SubmissionSetRow) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO reg_submission_sets ({SUBMISSION_SET_COLUMNS}) VALUES ({})", placeholders(1, 11));
    on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(&row.entry_uuid)
        .bind(&row.unique_id)
        .bind(&row.source_id)
        .bind(&row.patient_id)
        .bind(&row.status)
        .bind(&row.submission_time)
        .bind(&row.content_type_code)
        .bind(&row.content_type_scheme)
        .bind(&row.author_person)
        .bind(&row.ebrim)
        .bind(row.created_at)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(())
}

/// Stores a Folder.
pub async fn insert_folder(tx: &mut Tx<'_>, row: &FolderRow) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO reg_folders ({FOLDER_COLUMNS}) VALUES ({})", placeholders(1, 9));
    on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .bind(&row.entry_uuid)
        .bind(&row.unique_id)
        .bind(&row.lid)
        .bind(row.version)
        .bind(&row.patient_id)
        .bind(&row.status)
        .bind(&row.last_update_time)
        .bind(&row.ebrim)
        .bind(row.created_at)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(())
}

/// Stores associations, several per statement.
pub async fn insert_associations(tx: &mut Tx<'_>, rows: &[AssociationRow]) -> Result<(), StoreError> {
    for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
        let mut sql = format!("INSERT INTO reg_associations ({ASSOCIATION_COLUMNS}) VALUES ");
        for row_idx in 0..chunk.len() {
            if row_idx > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("({})", placeholders(row_idx * 7 + 1, 7)));
        }
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for row in chunk {
                query = query
                    .bind(&row.entry_uuid)
                    .bind(&row.association_type)
                    .bind(&row.source_uuid)
                    .bind(&row.target_uuid)
                    .bind(&row.status)
                    .bind(&row.ebrim)
                    .bind(row.created_at);
            }
            query.execute(conn).await?.rows_affected()
        });
    }
    Ok(())
}

/// Sets the status of a DocumentEntry; returns the rows changed (0 or 1).
pub async fn set_document_status(tx: &mut Tx<'_>, entry_uuid: &str, status: &str) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE reg_documents SET status = $2 WHERE entry_uuid = $1";
    let changed =
        on_tx!(tx, |conn| sqlx::query(SQL).bind(entry_uuid).bind(status).execute(conn).await?.rows_affected());
    Ok(changed)
}

/// Sets the status of a Folder; returns the rows changed (0 or 1).
pub async fn set_folder_status(tx: &mut Tx<'_>, entry_uuid: &str, status: &str) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE reg_folders SET status = $2 WHERE entry_uuid = $1";
    let changed =
        on_tx!(tx, |conn| sqlx::query(SQL).bind(entry_uuid).bind(status).execute(conn).await?.rows_affected());
    Ok(changed)
}

/// Sets Folder.lastUpdateTime (a document was added to the folder, ITI TF-3 4.2.3.4.4).
pub async fn touch_folder(tx: &mut Tx<'_>, entry_uuid: &str, last_update_time: &str) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE reg_folders SET last_update_time = $2 WHERE entry_uuid = $1";
    on_tx!(tx, |conn| sqlx::query(SQL).bind(entry_uuid).bind(last_update_time).execute(conn).await?.rows_affected());
    Ok(())
}

/// Stores a document unless the same uniqueId is there already; says which.
pub async fn put_repository_document(tx: &mut Tx<'_>, row: &RepositoryDocumentRow) -> Result<PutDocument, StoreError> {
    const EXISTING: &str = "SELECT hash, size FROM reg_repository_documents WHERE unique_id = $1";
    let existing: Option<(String, i64)> =
        on_tx!(tx, |conn| sqlx::query_as(EXISTING).bind(&row.unique_id).fetch_optional(conn).await?);
    if let Some((hash, size)) = existing {
        if hash.eq_ignore_ascii_case(&row.hash) && size == row.size {
            return Ok(PutDocument::AlreadyStored);
        }
        return Ok(PutDocument::Conflict { hash, size });
    }
    const INSERT: &str = "INSERT INTO reg_repository_documents (unique_id, mime_type, hash, size, content, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)";
    on_tx!(tx, |conn| sqlx::query(INSERT)
        .bind(&row.unique_id)
        .bind(&row.mime_type)
        .bind(&row.hash)
        .bind(row.size)
        .bind(&row.content)
        .bind(row.created_at)
        .execute(conn)
        .await?
        .rows_affected());
    Ok(PutDocument::Stored)
}

/// Whether an error means the database was busy (a pool that handed out no connection in time,
/// a locked SQLite file): the operation may succeed later.
pub fn is_busy(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::PoolTimedOut) => true,
        StoreError::Database(sqlx::Error::Database(database)) => database.message().contains("database is locked"),
        _ => false,
    }
}

impl Store {
    /// A known patient (read pool).
    pub async fn reg_patient(&self, patient_id: &str) -> Result<Option<RegPatient>, StoreError> {
        const SQL: &str = "SELECT patient_id, merged_into FROM reg_patients WHERE patient_id = $1";
        let row =
            on_pool!(self, |pool| sqlx::query_as::<_, RegPatient>(SQL).bind(patient_id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// FindDocuments: at most `limit` entries, oldest first.
    pub async fn reg_find_documents(
        &self,
        filter: &DocumentFilter,
        limit: usize,
    ) -> Result<Vec<DocumentRow>, StoreError> {
        let mut sql = Sql::new(format!("SELECT {DOCUMENT_COLUMNS} FROM reg_documents d WHERE d.patient_id = "));
        sql.bind_text(&filter.patient_id);
        sql.any_of("d.status", &filter.statuses);
        sql.any_of("d.object_type", &filter.object_types);
        let single_codes = [
            ("d.class_code", "d.class_scheme", &filter.class_codes),
            ("d.type_code", "d.type_scheme", &filter.type_codes),
            ("d.practice_code", "d.practice_scheme", &filter.practice_setting_codes),
            ("d.facility_code", "d.facility_scheme", &filter.healthcare_facility_type_codes),
            ("d.format_code", "d.format_scheme", &filter.format_codes),
        ];
        for (code_column, scheme_column, codes) in single_codes {
            sql.codes(code_column, scheme_column, codes);
        }
        for (kind, groups) in [(CODE_EVENT, &filter.event_codes), (CODE_CONFIDENTIALITY, &filter.confidentiality_codes)]
        {
            for group in groups.iter().filter(|group| !group.is_empty()) {
                sql.push(
                    " AND EXISTS (SELECT 1 FROM reg_document_codes c WHERE c.entry_uuid = d.entry_uuid AND c.kind = ",
                );
                sql.bind_text(kind);
                sql.codes("c.code", "c.scheme", group);
                sql.push(")");
            }
        }
        if !filter.author_persons.is_empty() {
            sql.push(" AND EXISTS (SELECT 1 FROM reg_document_codes c WHERE c.entry_uuid = d.entry_uuid AND c.kind = ");
            sql.bind_text(CODE_AUTHOR_PERSON);
            sql.like_any("c.code", &filter.author_persons);
            sql.push(")");
        }
        sql.range("d.creation_time", &filter.creation_time);
        sql.range("d.service_start_time", &filter.service_start_time);
        sql.range("d.service_stop_time", &filter.service_stop_time);
        sql.push(" ORDER BY d.created_at, d.entry_uuid LIMIT ");
        sql.bind_int(i64::try_from(limit).unwrap_or(i64::MAX));
        self.reg_fetch::<DocumentRow>(sql).await
    }

    /// FindSubmissionSets: at most `limit` sets, oldest first.
    pub async fn reg_find_submission_sets(
        &self,
        filter: &SubmissionSetFilter,
        limit: usize,
    ) -> Result<Vec<SubmissionSetRow>, StoreError> {
        let mut sql =
            Sql::new(format!("SELECT {SUBMISSION_SET_COLUMNS} FROM reg_submission_sets s WHERE s.patient_id = "));
        sql.bind_text(&filter.patient_id);
        sql.any_of("s.status", &filter.statuses);
        sql.any_of("s.source_id", &filter.source_ids);
        sql.codes("s.content_type_code", "s.content_type_scheme", &filter.content_type_codes);
        if !filter.author_persons.is_empty() {
            sql.like_any("s.author_person", &filter.author_persons);
        }
        sql.range("s.submission_time", &filter.submission_time);
        sql.push(" ORDER BY s.created_at, s.entry_uuid LIMIT ");
        sql.bind_int(i64::try_from(limit).unwrap_or(i64::MAX));
        self.reg_fetch::<SubmissionSetRow>(sql).await
    }

    /// DocumentEntries by entryUUID, in registration order.
    pub async fn reg_documents_by_uuid(&self, uuids: &[String]) -> Result<Vec<DocumentRow>, StoreError> {
        self.reg_by_column(DOCUMENT_COLUMNS, "reg_documents", "entry_uuid", uuids).await
    }

    /// DocumentEntries by uniqueId (several per uniqueId after resubmissions), in registration order.
    pub async fn reg_documents_by_unique_id(&self, unique_ids: &[String]) -> Result<Vec<DocumentRow>, StoreError> {
        self.reg_by_column(DOCUMENT_COLUMNS, "reg_documents", "unique_id", unique_ids).await
    }

    /// SubmissionSets by entryUUID.
    pub async fn reg_submission_sets_by_uuid(&self, uuids: &[String]) -> Result<Vec<SubmissionSetRow>, StoreError> {
        self.reg_by_column(SUBMISSION_SET_COLUMNS, "reg_submission_sets", "entry_uuid", uuids).await
    }

    /// SubmissionSets by uniqueId.
    pub async fn reg_submission_sets_by_unique_id(
        &self,
        unique_ids: &[String],
    ) -> Result<Vec<SubmissionSetRow>, StoreError> {
        self.reg_by_column(SUBMISSION_SET_COLUMNS, "reg_submission_sets", "unique_id", unique_ids).await
    }

    /// Folders by entryUUID.
    pub async fn reg_folders_by_uuid(&self, uuids: &[String]) -> Result<Vec<FolderRow>, StoreError> {
        self.reg_by_column(FOLDER_COLUMNS, "reg_folders", "entry_uuid", uuids).await
    }

    /// Associations with an end in `uuids` (`end` says which), of one of `types` (all when
    /// empty), at most `limit`, in registration order.
    pub async fn reg_associations(
        &self,
        uuids: &[String],
        end: AssociationEnd,
        types: &[String],
        limit: usize,
    ) -> Result<Vec<AssociationRow>, StoreError> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(format!("SELECT {ASSOCIATION_COLUMNS} FROM reg_associations a WHERE ("));
        let list = sql.bind_list(uuids);
        match end {
            AssociationEnd::Source => sql.push(&format!("a.source_uuid IN ({list})")),
            AssociationEnd::Target => sql.push(&format!("a.target_uuid IN ({list})")),
            AssociationEnd::Either => sql.push(&format!("a.source_uuid IN ({list}) OR a.target_uuid IN ({list})")),
        }
        sql.push(")");
        sql.any_of("a.association_type", types);
        sql.push(" ORDER BY a.created_at, a.entry_uuid LIMIT ");
        sql.bind_int(i64::try_from(limit).unwrap_or(i64::MAX));
        self.reg_fetch::<AssociationRow>(sql).await
    }

    /// The repository's documents among `unique_ids`, with their bytes.
    pub async fn reg_repository_documents(
        &self,
        unique_ids: &[String],
    ) -> Result<Vec<RepositoryDocumentRow>, StoreError> {
        self.reg_by_column(
            "unique_id, mime_type, hash, size, content, created_at",
            "reg_repository_documents",
            "unique_id",
            unique_ids,
        )
        .await
    }

    /// Row counts of every registry table.
    pub async fn reg_counts(&self) -> Result<RegCounts, StoreError> {
        const SQL: &str = "SELECT (SELECT COUNT(*) FROM reg_patients), (SELECT COUNT(*) FROM reg_feed_messages), \
             (SELECT COUNT(*) FROM reg_documents), (SELECT COUNT(*) FROM reg_document_codes), \
             (SELECT COUNT(*) FROM reg_submission_sets), (SELECT COUNT(*) FROM reg_folders), \
             (SELECT COUNT(*) FROM reg_associations), (SELECT COUNT(*) FROM reg_repository_documents)";
        let counts: (i64, i64, i64, i64, i64, i64, i64, i64) =
            on_pool!(self, |pool| sqlx::query_as(SQL).fetch_one(pool).await?);
        Ok(RegCounts {
            patients: counts.0,
            feed_messages: counts.1,
            documents: counts.2,
            document_codes: counts.3,
            submission_sets: counts.4,
            folders: counts.5,
            associations: counts.6,
            repository_documents: counts.7,
        })
    }

    async fn reg_by_column<R>(
        &self,
        columns: &str,
        table: &str,
        column: &str,
        values: &[String],
    ) -> Result<Vec<R>, StoreError>
    where
        R: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(format!("SELECT {columns} FROM {table} WHERE {column} IN ("));
        let list = sql.bind_list(values);
        sql.push(&list);
        sql.push(") ORDER BY created_at");
        self.reg_fetch::<R>(sql).await
    }

    async fn reg_fetch<R>(&self, sql: Sql) -> Result<Vec<R>, StoreError>
    where
        R: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let Sql { text, binds } = sql;
        let rows = on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(text.clone()));
            for bind in &binds {
                query = match bind {
                    Bind::Text(value) => query.bind(value.as_str()),
                    Bind::Int(value) => query.bind(*value),
                };
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }
}

impl std::fmt::Debug for DocumentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The patient id and the ebRIM (sourcePatientInfo) are PHI: left out.
        f.debug_struct("DocumentRow")
            .field("entry_uuid", &self.entry_uuid)
            .field("unique_id", &self.unique_id)
            .field("status", &self.status)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SubmissionSetRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmissionSetRow")
            .field("entry_uuid", &self.entry_uuid)
            .field("unique_id", &self.unique_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FolderRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderRow")
            .field("entry_uuid", &self.entry_uuid)
            .field("unique_id", &self.unique_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RepositoryDocumentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryDocumentRow")
            .field("unique_id", &self.unique_id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A statement under construction: the text holds only placeholders, values go to `binds`, so
/// building it from a query's parameters is safe.
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

enum Bind {
    Text(String),
    Int(i64),
}

impl Sql {
    fn new(text: String) -> Sql {
        Sql { text, binds: Vec::new() }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn placeholder(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    fn bind_text(&mut self, value: &str) {
        let placeholder = self.placeholder(Bind::Text(value.to_owned()));
        self.text.push_str(&placeholder);
    }

    fn bind_int(&mut self, value: i64) {
        let placeholder = self.placeholder(Bind::Int(value));
        self.text.push_str(&placeholder);
    }

    /// Binds every value and returns `$a, $b, ...` for an IN list.
    fn bind_list(&mut self, values: &[String]) -> String {
        values.iter().map(|value| self.placeholder(Bind::Text(value.clone()))).collect::<Vec<_>>().join(", ")
    }

    /// ` AND column IN (...)` unless `values` is empty.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let list = self.bind_list(values);
        self.text.push_str(&format!(" AND {column} IN ({list})"));
    }

    /// ` AND ((code = $a AND scheme = $b) OR code = $c ...)` unless `codes` is empty.
    fn codes(&mut self, code_column: &str, scheme_column: &str, codes: &[CodeMatch]) {
        if codes.is_empty() {
            return;
        }
        let mut alternatives = Vec::with_capacity(codes.len());
        for code in codes {
            let code_placeholder = self.placeholder(Bind::Text(code.code.clone()));
            match &code.scheme {
                Some(scheme) => {
                    let scheme_placeholder = self.placeholder(Bind::Text(scheme.clone()));
                    alternatives.push(format!(
                        "({code_column} = {code_placeholder} AND {scheme_column} = {scheme_placeholder})"
                    ));
                }
                None => alternatives.push(format!("{code_column} = {code_placeholder}")),
            }
        }
        self.text.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }

    /// ` AND (column LIKE $a OR ...)`.
    fn like_any(&mut self, column: &str, patterns: &[String]) {
        let alternatives: Vec<String> = patterns
            .iter()
            .map(|pattern| format!("{column} LIKE {}", self.placeholder(Bind::Text(pattern.clone()))))
            .collect();
        self.text.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }

    /// ` AND column >= $from AND column < $to` for the bounds given.
    fn range(&mut self, column: &str, range: &TimeRange) {
        if let Some(from) = &range.from {
            let placeholder = self.placeholder(Bind::Text(from.clone()));
            self.text.push_str(&format!(" AND {column} >= {placeholder}"));
        }
        if let Some(to) = &range.to {
            let placeholder = self.placeholder(Bind::Text(to.clone()));
            self.text.push_str(&format!(" AND {column} < {placeholder}"));
        }
    }
}

/// `$first, $first+1, ...`, `count` placeholders.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// Rows per multi-row INSERT: 7 columns x 500 rows stays under SQLite's and PostgreSQL's limits.
const MAX_ROWS_PER_INSERT: usize = 500;
