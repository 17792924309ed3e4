//! Submissions to the registry: what was (or will be) published for each manifest version, and
//! the deprecations of studies that are gone. The outbox carries their delivery (topic
//! [`PUBLISH_TOPIC`]); this table carries what an operator needs: state, attempts, the last error
//! with its XDS codes, the exact last request and response.
//!
//! The identifiers a submission uses (document entryUUID, SubmissionSet uniqueId and entryUUID)
//! are drawn once, by [`enqueue`], in the transaction that made the manifest version: every retry
//! resubmits the same ones (reliability-security finding 3), so a registry that committed an
//! earlier attempt recognizes the retry instead of registering the manifest twice.

use crate::outbox::{self, NewItem, truncate_error};
use crate::retrieval::{json_array, json_list};
use crate::{Store, StoreError, Tx, on_pool, on_tx};

/// The outbox topic of registry submissions; the payload is `submission=<id>`.
pub const PUBLISH_TOPIC: &str = "xds.publish";

/// What a submission does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionKind {
    /// Register a manifest version (replacing the study's previous one, if published).
    Publish,
    /// Deprecate the study's published manifest (ITI-57).
    Deprecate,
}

impl SubmissionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionKind::Publish => "publish",
            SubmissionKind::Deprecate => "deprecate",
        }
    }
}

/// A submission to queue.
#[derive(Debug, Clone)]
pub struct NewSubmission<'a> {
    pub study_instance_uid: &'a str,
    pub manifest_version: i64,
    pub kind: SubmissionKind,
    pub document_unique_id: &'a str,
    pub document_entry_uuid: &'a str,
    pub submission_set_unique_id: &'a str,
    pub submission_set_uuid: &'a str,
    /// Outbox ordering key: the patient (`patient:<id>`) when known, so the identity feed goes
    /// first, else the study.
    pub key: &'a str,
}

/// Records a submission and its outbox item in the caller's transaction. Returns its id.
pub async fn enqueue(tx: &mut Tx<'_>, submission: &NewSubmission<'_>, now: i64) -> Result<i64, StoreError> {
    let id = on_tx!(tx, |conn| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO submissions (study_instance_uid, manifest_version, kind, document_unique_id, \
             document_entry_uuid, submission_set_unique_id, submission_set_uuid, state, attempts, \
             created_at, updated_at, outbox_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', 0, $8, $8, $9) RETURNING id",
        )
        .bind(submission.study_instance_uid)
        .bind(submission.manifest_version)
        .bind(submission.kind.as_str())
        .bind(submission.document_unique_id)
        .bind(submission.document_entry_uuid)
        .bind(submission.submission_set_unique_id)
        .bind(submission.submission_set_uuid)
        .bind(now)
        .bind(submission.key)
        .fetch_one(conn)
        .await?
    });
    let payload = format!("submission={id}");
    let item = NewItem {
        topic: PUBLISH_TOPIC,
        key: submission.key,
        payload: &payload,
        idempotency_key: Some(submission.submission_set_unique_id),
    };
    outbox::enqueue(tx, &item, now).await?;
    Ok(id)
}

/// A submission row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubmissionRow {
    pub id: i64,
    pub study_instance_uid: String,
    pub manifest_version: i64,
    pub kind: String,
    pub document_unique_id: String,
    pub document_entry_uuid: String,
    pub submission_set_unique_id: String,
    pub submission_set_uuid: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub error_codes: Option<String>,
    pub registry_entry_uuid: Option<String>,
    pub replaced_unique_id: Option<String>,
    pub note: Option<String>,
    pub request: Option<String>,
    pub response: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The outbox key it was queued under (`None` for rows older than the column).
    pub outbox_key: Option<String>,
    /// The affinity-domain patient ID (CX) its last request went under (`None` until sent, and
    /// for rows older than the column).
    pub affinity_patient_id: Option<String>,
}

/// What one attempt came to, for [`Store::submission_attempted`].
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The SOAP request sent (attachments left out), when one was sent.
    pub request: Option<&'a str>,
    /// The answer received, when one was.
    pub response: Option<&'a str>,
    pub error: Option<&'a str>,
    /// XDS error codes of the answer, space-separated.
    pub error_codes: Option<&'a str>,
    /// The affinity-domain patient ID (CX) the request went under, when one was built.
    pub affinity_patient_id: Option<&'a str>,
}

/// How a submission ended, for [`Store::submission_finished`].
#[derive(Debug, Clone, Copy)]
pub enum Ended<'a> {
    /// The registry holds it: with the entryUUID it holds, what it replaced, and a note (e.g.
    /// "confirmed by ITI-18 after a duplicate answer").
    Done { registry_entry_uuid: Option<&'a str>, replaced_unique_id: Option<&'a str>, note: Option<&'a str> },
    /// It will never go through as it is.
    Failed,
    /// A newer version was queued first; nothing was sent.
    Superseded,
}

/// Longest request or response kept per submission: metadata, not documents.
const MAX_EXCHANGE_BYTES: usize = 256 * 1024;

const COLUMNS: &str = "id, study_instance_uid, manifest_version, kind, document_unique_id, document_entry_uuid, \
     submission_set_unique_id, submission_set_uuid, state, attempts, last_error, error_codes, registry_entry_uuid, \
     replaced_unique_id, note, request, response, created_at, updated_at, outbox_key, affinity_patient_id";

/// A study's registered publish submission `p`: its last done publish, with no done deprecation
/// after it (as `retrieval` defines current).
pub(crate) const REGISTERED_PUBLICATION: &str = "p.kind = 'publish' AND p.state = 'done' \
     AND p.id = (SELECT MAX(q.id) FROM submissions q WHERE q.study_instance_uid = p.study_instance_uid \
         AND q.kind = 'publish' AND q.state = 'done') \
     AND NOT EXISTS (SELECT 1 FROM submissions d WHERE d.study_instance_uid = p.study_instance_uid \
         AND d.kind = 'deprecate' AND d.state = 'done' AND d.id > p.id)";

impl Store {
    pub async fn submission(&self, id: i64) -> Result<Option<SubmissionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM submissions WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, SubmissionRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// A study's submissions, oldest first.
    pub async fn submissions_of(&self, study_instance_uid: &str) -> Result<Vec<SubmissionRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM submissions WHERE study_instance_uid = $1 ORDER BY id");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, SubmissionRow>(sqlx::AssertSqlSafe(sql))
                .bind(study_instance_uid)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// The latest submissions of any study, newest first.
    pub async fn submissions_recent(
        &self,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubmissionRow>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM submissions WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, SubmissionRow>(sqlx::AssertSqlSafe(sql)).bind(state).bind(limit).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// The study's last publish submission that the registry holds (the one a new version
    /// replaces, or a deprecation deprecates).
    pub async fn last_published(&self, study_instance_uid: &str) -> Result<Option<SubmissionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM submissions WHERE study_instance_uid = $1 AND kind = 'publish' \
             AND state = 'done' ORDER BY id DESC LIMIT 1"
        );
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, SubmissionRow>(sqlx::AssertSqlSafe(sql))
                .bind(study_instance_uid)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// The registered publish submission of every study whose registered version went under one
    /// of `affinity_patient_ids` (CX, as sent), by study: what a merge of that patient concerns.
    /// One statement, however many IDs.
    pub async fn registered_under(&self, affinity_patient_ids: &[&str]) -> Result<Vec<SubmissionRow>, StoreError> {
        if affinity_patient_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM submissions p WHERE {REGISTERED_PUBLICATION} \
             AND p.affinity_patient_id IN {ids} ORDER BY p.study_instance_uid",
            ids = json_list(self.engine(), 1),
        );
        let ids = json_array(affinity_patient_ids);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, SubmissionRow>(sqlx::AssertSqlSafe(sql)).bind(&ids).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// The latest `publish` submission of one manifest version, whatever its state.
    pub async fn publication_of(
        &self,
        study_instance_uid: &str,
        version: i64,
    ) -> Result<Option<SubmissionRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM submissions WHERE study_instance_uid = $1 AND manifest_version = $2 \
             AND kind = 'publish' ORDER BY id DESC LIMIT 1"
        );
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, SubmissionRow>(sqlx::AssertSqlSafe(sql))
                .bind(study_instance_uid)
                .bind(version)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Whether a later submission of the same study is queued or done: this one then must not be
    /// sent (an older version sent after a newer one would replace it).
    pub async fn submission_superseded(&self, submission: &SubmissionRow) -> Result<bool, StoreError> {
        let later = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM submissions WHERE study_instance_uid = $1 AND id > $2 \
                 AND state IN ('queued', 'done')",
            )
            .bind(&submission.study_instance_uid)
            .bind(submission.id)
            .fetch_one(pool)
            .await?
        });
        Ok(later > 0)
    }

    /// The outbox key of the study's latest queued submission, if one is queued: a new submission
    /// of the study joins it so the study's submissions leave in order.
    pub async fn study_queue_key(&self, study_instance_uid: &str) -> Result<Option<String>, StoreError> {
        let key = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT outbox_key FROM submissions WHERE study_instance_uid = $1 AND state = 'queued' \
                 AND outbox_key IS NOT NULL ORDER BY id DESC LIMIT 1",
            )
            .bind(study_instance_uid)
            .fetch_optional(pool)
            .await?
        });
        Ok(key)
    }

    /// Records an attempt: counts it, keeps the (truncated) exchange and the error.
    pub async fn submission_attempted(&self, id: i64, attempt: &Attempt<'_>, now: i64) -> Result<(), StoreError> {
        let keep = |text: Option<&str>| text.map(|text| truncate_exchange(text).to_owned());
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE submissions SET attempts = attempts + 1, request = COALESCE($2, request), \
                 response = $3, last_error = $4, error_codes = $5, updated_at = $6, \
                 affinity_patient_id = COALESCE($7, affinity_patient_id) WHERE id = $1",
            )
            .bind(id)
            .bind(keep(attempt.request))
            .bind(keep(attempt.response))
            .bind(attempt.error.map(|error| truncate_error(error).to_owned()))
            .bind(attempt.error_codes)
            .bind(now)
            .bind(attempt.affinity_patient_id)
            .execute(conn)
            .await?;
        });
        tx.commit().await
    }

    /// Records how a submission ended.
    pub async fn submission_finished(&self, id: i64, ended: Ended<'_>, now: i64) -> Result<(), StoreError> {
        let (state, entry_uuid, replaced, note) = match ended {
            Ended::Done { registry_entry_uuid, replaced_unique_id, note } => {
                ("done", registry_entry_uuid, replaced_unique_id, note)
            }
            Ended::Failed => ("failed", None, None, None),
            Ended::Superseded => {
                ("superseded", None, None, Some("a newer version was queued before this one was sent"))
            }
        };
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE submissions SET state = $2, registry_entry_uuid = COALESCE($3, registry_entry_uuid), \
                 replaced_unique_id = COALESCE($4, replaced_unique_id), note = COALESCE($5, note), \
                 last_error = CASE WHEN $2 = 'failed' THEN last_error ELSE NULL END, updated_at = $6 WHERE id = $1",
            )
            .bind(id)
            .bind(state)
            .bind(entry_uuid)
            .bind(replaced)
            .bind(note)
            .bind(now)
            .execute(conn)
            .await?;
        });
        tx.commit().await
    }

    /// Puts a failed submission back in the queue for an operator's retry, due now. Its outbox item
    /// is put back when it is `failed` too (the attempts ran out: it held its key meanwhile);
    /// otherwise (a refused submission released its key at once) a new item is queued at the end
    /// of the key it was queued under. `false` when no failed submission has this id.
    pub async fn submission_requeue(&self, id: i64, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let updated = on_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE submissions SET state = 'queued', updated_at = $2 WHERE id = $1 AND state = 'failed'")
                .bind(id)
                .bind(now)
                .execute(conn)
                .await?
                .rows_affected()
        });
        if updated != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let payload = format!("submission={id}");
        let reset = on_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL, \
                 lease_token = NULL, lease_until = NULL, updated_at = $1 WHERE topic = $2 AND state = 'failed' \
                 AND (payload = $3 OR idempotency_key = (SELECT submission_set_unique_id FROM submissions WHERE id = $4))",
            )
            .bind(now)
            .bind(PUBLISH_TOPIC)
            .bind(&payload)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
        });
        if reset == 0 {
            let (study, key) = on_tx!(&mut tx, |conn| {
                sqlx::query_as::<_, (String, Option<String>)>(
                    "SELECT study_instance_uid, outbox_key FROM submissions WHERE id = $1",
                )
                .bind(id)
                .fetch_one(conn)
                .await?
            });
            let key = key.unwrap_or_else(|| format!("study:{study}"));
            // No idempotency key: the submission's own was taken by its first item, and only one
            // transition from `failed` succeeds, so a retry is queued once.
            let item = NewItem { topic: PUBLISH_TOPIC, key: &key, payload: &payload, idempotency_key: None };
            outbox::enqueue(&mut tx, &item, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

fn truncate_exchange(text: &str) -> &str {
    crate::truncate_str(text, MAX_EXCHANGE_BYTES)
}
