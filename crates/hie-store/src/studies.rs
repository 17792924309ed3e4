//! Studies the broker manifests: the readiness state of each study, the manifest versions built
//! for it, and the instance headers the DICOM listener received.
//!
//! Life of a study: every trigger (a C-STORE arrival, a PACS poll, an explicit request) calls
//! [`note_change`] in its own transaction, which makes the study `pending` and due after the
//! quiet period; later changes push the due time back, so a study is built once it has been quiet.
//! A scheduler [`Store::studies_claim_due`]s due studies with a lease (several broker instances
//! on one PostgreSQL share the work), builds the manifest, and calls [`finish_claim`] (plus
//! [`record_manifest`] when the manifest changed) in one transaction.
//!
//! A change that arrives while a study is being built bumps `change_seq`; the build's
//! [`finish_claim`] then leaves the study `pending`, so the later change is never lost.

use std::time::Duration;

use rand::Rng;

use crate::outbox::truncate_error;
use crate::{Engine, Store, StoreError, Tx, on_pool, on_tx};

/// What reported a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    /// An instance arrived at the DICOM listener.
    CStore,
    /// A PACS poll saw the study new, grown, shrunk or vanished.
    Poll,
    /// An operator or a command asked for it.
    Request,
    /// A patient merge asked for a new version (profile `[patient_merge] published = "republish"`).
    Merge,
}

impl ChangeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSource::CStore => "c-store",
            ChangeSource::Poll => "poll",
            ChangeSource::Request => "request",
            ChangeSource::Merge => "merge",
        }
    }
}

/// A change to record with [`note_change`].
#[derive(Debug, Clone, Copy)]
pub struct StudyChange<'a> {
    pub study_instance_uid: &'a str,
    pub source: ChangeSource,
    /// When the study should be built: now plus the quiet period, or now for a request.
    pub due_at: i64,
    /// The instance count the PACS reported, when the change comes from a poll.
    pub pacs_instances: Option<i64>,
}

/// Records a change: the study becomes `pending`, due at `change.due_at` (replacing an earlier due
/// time, so a study that keeps changing waits until it has been quiet). A `failed` study gets its
/// attempts back.
pub async fn note_change(tx: &mut Tx<'_>, change: &StudyChange<'_>, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO studies (study_instance_uid, state, source, change_seq, first_seen_at, \
             last_change_at, due_at, attempts, pacs_instances, updated_at) \
             VALUES ($1, 'pending', $2, 1, $3, $3, $4, 0, $5, $3) \
             ON CONFLICT (study_instance_uid) DO UPDATE SET state = 'pending', source = excluded.source, \
             change_seq = studies.change_seq + 1, last_change_at = excluded.last_change_at, \
             due_at = excluded.due_at, attempts = 0, last_error = NULL, \
             pacs_instances = COALESCE(excluded.pacs_instances, studies.pacs_instances), \
             updated_at = excluded.updated_at",
        )
        .bind(change.study_instance_uid)
        .bind(change.source.as_str())
        .bind(now)
        .bind(change.due_at)
        .bind(change.pacs_instances)
        .execute(conn)
        .await?;
    });
    Ok(())
}

/// A study a scheduler holds a lease on. [`finish_claim`] is fenced by `lease_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedStudy {
    pub study_instance_uid: String,
    pub change_seq: i64,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// Latest manifest version before this build (0: none).
    pub manifest_version: i64,
    pub lease_token: i64,
}

/// How a build ends, for [`finish_claim`].
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    /// The manifest reflects the PACS (a new version was recorded, or nothing had changed).
    Current { manifest_version: i64, study_date: Option<&'a str> },
    /// The PACS no longer holds a study that had a manifest.
    Gone,
    /// The build failed; try again at `at`.
    RetryAt { error: &'a str, at: i64 },
    /// The build failed for good (or its attempts are used up): visible until requested again.
    Failed { error: &'a str },
}

/// Ends a claim. If a change arrived since the claim, the study stays `pending` (due when that
/// change said) whatever the outcome, but the manifest version and errors are still recorded.
/// `false` when the lease was lost (another scheduler took the study over).
pub async fn finish_claim(
    tx: &mut Tx<'_>,
    claim: &ClaimedStudy,
    finish: Finish<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let (state, manifest_version, study_date, error, retry_at) = match finish {
        Finish::Current { manifest_version, study_date } => ("current", manifest_version, study_date, None, None),
        Finish::Gone => ("gone", claim.manifest_version, None, None, None),
        Finish::RetryAt { error, at } => ("pending", claim.manifest_version, None, Some(error), Some(at)),
        Finish::Failed { error } => ("failed", claim.manifest_version, None, Some(error), None),
    };
    let error = error.map(truncate_error);
    let updated = on_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE studies SET \
             state = CASE WHEN change_seq = $3 THEN $4 ELSE state END, \
             due_at = CASE WHEN change_seq = $3 THEN $5 ELSE due_at END, \
             attempts = CASE WHEN $4 IN ('current', 'gone') THEN 0 ELSE attempts END, \
             manifest_version = $6, study_date = COALESCE($7, study_date), last_error = $8, \
             lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = $9 \
             WHERE study_instance_uid = $1 AND lease_token = $2",
        )
        .bind(&claim.study_instance_uid)
        .bind(claim.lease_token)
        .bind(claim.change_seq)
        .bind(state)
        .bind(retry_at)
        .bind(manifest_version)
        .bind(study_date)
        .bind(error)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected()
    });
    Ok(updated == 1)
}

/// A manifest version to record with [`record_manifest`].
#[derive(Clone)]
pub struct NewManifest<'a> {
    pub study_instance_uid: &'a str,
    pub version: i64,
    pub sop_instance_uid: &'a str,
    pub series_instance_uid: &'a str,
    pub n_series: i64,
    pub n_instances: i64,
    pub fingerprint: &'a str,
    /// The KOS, DICOM Part 10.
    pub kos: &'a [u8],
    /// Distinct Modality values of the referenced series, backslash-separated.
    pub modalities: &'a str,
    /// Distinct Body Part Examined values, backslash-separated.
    pub body_parts: &'a str,
    /// Every instance the manifest references: what retrievals of this version may serve.
    pub instances: &'a [ReferencedInstance<'a>],
}

/// One instance a manifest references (an item of its Current Requested Procedure Evidence
/// Sequence, DICOM PS3.3 C.17.6.2.1), kept in `manifest_instances`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferencedInstance<'a> {
    pub series_instance_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub sop_class_uid: &'a str,
}

impl std::fmt::Debug for NewManifest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The KOS carries PHI (patient name, ID): left out.
        f.debug_struct("NewManifest")
            .field("study_instance_uid", &self.study_instance_uid)
            .field("version", &self.version)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("n_instances", &self.n_instances)
            .field("n_referenced", &self.instances.len())
            .finish_non_exhaustive()
    }
}

/// Stores a manifest version and the instances it references in the caller's transaction (the one
/// that finishes the claim).
pub async fn record_manifest(tx: &mut Tx<'_>, manifest: &NewManifest<'_>, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO manifests (study_instance_uid, version, sop_instance_uid, series_instance_uid, \
             n_series, n_instances, fingerprint, kos, modalities, body_parts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(manifest.study_instance_uid)
        .bind(manifest.version)
        .bind(manifest.sop_instance_uid)
        .bind(manifest.series_instance_uid)
        .bind(manifest.n_series)
        .bind(manifest.n_instances)
        .bind(manifest.fingerprint)
        .bind(manifest.kos)
        .bind(manifest.modalities)
        .bind(manifest.body_parts)
        .bind(now)
        .execute(conn)
        .await?;
    });
    for rows in manifest.instances.chunks(INSTANCE_ROWS_PER_INSERT) {
        let sql = instance_insert_sql(rows.len());
        on_tx!(tx, |conn| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in rows {
                query = query
                    .bind(manifest.study_instance_uid)
                    .bind(manifest.version)
                    .bind(row.series_instance_uid)
                    .bind(row.sop_instance_uid)
                    .bind(row.sop_class_uid);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

/// Rows per multi-row INSERT into `manifest_instances`: 5 parameters each, far below SQLite's
/// 32,766 and PostgreSQL's 65,535 bound parameters per statement, and few statements for a study
/// of thousands of instances.
const INSTANCE_ROWS_PER_INSERT: usize = 500;
const INSTANCE_COLUMNS_PER_ROW: usize = 5;

/// `INSERT INTO manifest_instances ... VALUES ($1, ..., $5), ($6, ...)` for `n_rows` rows.
fn instance_insert_sql(n_rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO manifest_instances (study_instance_uid, version, series_instance_uid, sop_instance_uid, \
         sop_class_uid) VALUES ",
    );
    for row in 0..n_rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..INSTANCE_COLUMNS_PER_ROW {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * INSTANCE_COLUMNS_PER_ROW + column + 1));
        }
        sql.push(')');
    }
    // A SOP Instance UID listed twice (under two series of a malformed study) is kept once: the
    // manifest is still recorded, and the first listing is the one authorized.
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// An instance header received by the DICOM listener.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReceivedInstance {
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub calling_ae_title: String,
    /// The data set up to Pixel Data, in `transfer_syntax_uid`.
    pub header: Vec<u8>,
    pub received_at: i64,
}

impl std::fmt::Debug for ReceivedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The header carries PHI: left out.
        f.debug_struct("ReceivedInstance")
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("study_instance_uid", &self.study_instance_uid)
            .field("calling_ae_title", &self.calling_ae_title)
            .field("header_len", &self.header.len())
            .finish_non_exhaustive()
    }
}

/// Stores (or replaces: a modality may send an instance again) a received instance header.
pub async fn put_received_instance(tx: &mut Tx<'_>, instance: &ReceivedInstance) -> Result<(), StoreError> {
    on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO dicom_instances (sop_instance_uid, study_instance_uid, series_instance_uid, \
             sop_class_uid, transfer_syntax_uid, calling_ae_title, header, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (sop_instance_uid) DO UPDATE SET study_instance_uid = excluded.study_instance_uid, \
             series_instance_uid = excluded.series_instance_uid, sop_class_uid = excluded.sop_class_uid, \
             transfer_syntax_uid = excluded.transfer_syntax_uid, calling_ae_title = excluded.calling_ae_title, \
             header = excluded.header, received_at = excluded.received_at",
        )
        .bind(&instance.sop_instance_uid)
        .bind(&instance.study_instance_uid)
        .bind(&instance.series_instance_uid)
        .bind(&instance.sop_class_uid)
        .bind(&instance.transfer_syntax_uid)
        .bind(&instance.calling_ae_title)
        .bind(&instance.header)
        .bind(instance.received_at)
        .execute(conn)
        .await?;
    });
    Ok(())
}

/// A study's row, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StudyRow {
    pub study_instance_uid: String,
    pub state: String,
    pub source: String,
    pub change_seq: i64,
    pub first_seen_at: i64,
    pub last_change_at: i64,
    pub due_at: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub manifest_version: i64,
    pub pacs_instances: Option<i64>,
    pub study_date: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub updated_at: i64,
}

/// A manifest version without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ManifestRow {
    pub study_instance_uid: String,
    pub version: i64,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub n_series: i64,
    pub n_instances: i64,
    pub fingerprint: String,
    pub modalities: String,
    pub body_parts: String,
    pub created_at: i64,
}

/// What a poll compares the PACS's listing against.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KnownStudy {
    pub study_instance_uid: String,
    pub state: String,
    pub pacs_instances: Option<i64>,
    pub study_date: Option<String>,
}

const STUDY_COLUMNS: &str = "study_instance_uid, state, source, change_seq, first_seen_at, last_change_at, due_at, \
     attempts, last_error, manifest_version, pacs_instances, study_date, lease_owner, lease_until, updated_at";
const MANIFEST_COLUMNS: &str = "study_instance_uid, version, sop_instance_uid, series_instance_uid, n_series, \
     n_instances, fingerprint, modalities, body_parts, created_at";

impl Store {
    /// Claims up to `limit` due `pending` studies for `owner`, leased until `now + lease`, earliest
    /// due first. Counts the attempt.
    pub async fn studies_claim_due(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
        now: i64,
    ) -> Result<Vec<ClaimedStudy>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // PostgreSQL: SKIP LOCKED lets instances claim side by side without waiting on each
        // other; SQLite has one writer, so the plain subquery is already exclusive.
        let lock = match self.engine() {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let sql = format!(
            "UPDATE studies SET lease_owner = $1, lease_token = $2, lease_until = $3, attempts = attempts + 1, \
             updated_at = $4 WHERE study_instance_uid IN (SELECT study_instance_uid FROM studies \
             WHERE state = 'pending' AND due_at IS NOT NULL AND due_at <= $4 \
             AND (lease_until IS NULL OR lease_until < $4) ORDER BY due_at LIMIT $5{lock}) \
             RETURNING study_instance_uid, change_seq, attempts, manifest_version"
        );
        let lease_token: i64 = rand::rng().random();
        let lease_until = now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        let rows: Vec<(String, i64, i64, i64)> = on_tx!(&mut tx, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(lease_token)
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(conn)
                .await?
        });
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(study_instance_uid, change_seq, attempts, manifest_version)| ClaimedStudy {
                study_instance_uid,
                change_seq,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                manifest_version,
                lease_token,
            })
            .collect())
    }

    /// The earliest due time among `pending` studies, so a scheduler can sleep until then.
    pub async fn studies_next_due(&self) -> Result<Option<i64>, StoreError> {
        let next = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(due_at) FROM studies WHERE state = 'pending' AND due_at IS NOT NULL",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(next)
    }

    pub async fn study(&self, study_instance_uid: &str) -> Result<Option<StudyRow>, StoreError> {
        let sql = format!("SELECT {STUDY_COLUMNS} FROM studies WHERE study_instance_uid = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, StudyRow>(sqlx::AssertSqlSafe(sql))
                .bind(study_instance_uid)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Studies in `state` (all when `None`), most recently changed first.
    pub async fn studies_list(&self, state: Option<&str>, limit: usize) -> Result<Vec<StudyRow>, StoreError> {
        let sql = format!(
            "SELECT {STUDY_COLUMNS} FROM studies WHERE ($1 IS NULL OR state = $1) \
             ORDER BY last_change_at DESC, study_instance_uid LIMIT $2"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, StudyRow>(sqlx::AssertSqlSafe(sql)).bind(state).bind(limit).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Every manifest version of a study, oldest first, without the bytes.
    pub async fn manifests(&self, study_instance_uid: &str) -> Result<Vec<ManifestRow>, StoreError> {
        let sql = format!("SELECT {MANIFEST_COLUMNS} FROM manifests WHERE study_instance_uid = $1 ORDER BY version");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, ManifestRow>(sqlx::AssertSqlSafe(sql)).bind(study_instance_uid).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// The latest manifest of a study, with its KOS bytes.
    pub async fn latest_manifest(
        &self,
        study_instance_uid: &str,
    ) -> Result<Option<(ManifestRow, Vec<u8>)>, StoreError> {
        let sql = format!(
            "SELECT {MANIFEST_COLUMNS}, kos FROM manifests WHERE study_instance_uid = $1 ORDER BY version DESC LIMIT 1"
        );
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, ManifestWithKos>(sqlx::AssertSqlSafe(sql))
                .bind(study_instance_uid)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|row| (row.manifest, row.kos)))
    }

    /// One manifest version, with its KOS bytes.
    pub async fn manifest(
        &self,
        study_instance_uid: &str,
        version: i64,
    ) -> Result<Option<(ManifestRow, Vec<u8>)>, StoreError> {
        let sql =
            format!("SELECT {MANIFEST_COLUMNS}, kos FROM manifests WHERE study_instance_uid = $1 AND version = $2");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, ManifestWithKos>(sqlx::AssertSqlSafe(sql))
                .bind(study_instance_uid)
                .bind(version)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|row| (row.manifest, row.kos)))
    }

    /// One manifest version's KOS bytes.
    pub async fn manifest_kos(&self, study_instance_uid: &str, version: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let kos = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT kos FROM manifests WHERE study_instance_uid = $1 AND version = $2")
                .bind(study_instance_uid)
                .bind(version)
                .fetch_optional(pool)
                .await?
        });
        Ok(kos)
    }

    /// The instance headers received for a study, in SOP Instance UID order.
    pub async fn received_instances(&self, study_instance_uid: &str) -> Result<Vec<ReceivedInstance>, StoreError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, ReceivedInstance>(
                "SELECT sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, \
                 transfer_syntax_uid, calling_ae_title, header, received_at FROM dicom_instances \
                 WHERE study_instance_uid = $1 ORDER BY sop_instance_uid",
            )
            .bind(study_instance_uid)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Studies a poll with this lookback should see: those whose Study Date is on or after
    /// `from_date` (DA, `YYYYMMDD`, which sorts as text), and those not built yet.
    pub async fn studies_for_poll(&self, from_date: &str) -> Result<Vec<KnownStudy>, StoreError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, KnownStudy>(
                "SELECT study_instance_uid, state, pacs_instances, study_date FROM studies \
                 WHERE study_date >= $1 OR study_date IS NULL",
            )
            .bind(from_date)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Counts by state, for `/metrics`.
    pub async fn study_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM studies GROUP BY state ORDER BY state")
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }
}

#[derive(sqlx::FromRow)]
struct ManifestWithKos {
    #[sqlx(flatten)]
    manifest: ManifestRow,
    kos: Vec<u8>,
}
