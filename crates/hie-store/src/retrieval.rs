//! What a retrieval may serve: the lookups that authorize RAD-69 and ITI-43 requests before any
//! PACS access (reliability-security 7, "Per-partner authorization").
//!
//! Only what hie-edge registered, and only while it is current, is served:
//! - a manifest version is **registered** when a `publish` submission of that version is `done`
//!   (the registry holds it);
//! - it is **current** when that submission is the study's last `done` publish and no later `done`
//!   `deprecate` exists (a replaced version has a later done publish; a deprecated study has a
//!   later done deprecation).
//!
//! Each lookup is one statement for the whole request, however many documents it names: the
//! requested UIDs travel as one JSON array parameter (`json_each` on SQLite,
//! `jsonb_array_elements_text` on PostgreSQL), so the statement does not grow with the request and
//! no engine's bound-parameter limit is reached.

use crate::{Engine, Store, StoreError, on_pool};

/// One instance of a RAD-69 request, by its place in the study hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestedInstance<'a> {
    pub study_instance_uid: &'a str,
    pub series_instance_uid: &'a str,
    pub sop_instance_uid: &'a str,
}

/// An instance the study's current registered manifest references.
#[derive(Debug, Clone, PartialEq, Eq, Hash, sqlx::FromRow)]
pub struct AuthorizedInstance {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    /// The manifest version that references it.
    pub manifest_version: i64,
}

/// A manifest (KOS) that is its study's current registered version: what ITI-43 serves.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CurrentManifest {
    /// The KOS SOP Instance UID, its XDS uniqueId.
    pub document_unique_id: String,
    pub study_instance_uid: String,
    pub version: i64,
}

/// The done publish submission of each study that is current: the study's last done publish,
/// with no done deprecation after it. `p` is the submission, `m` its manifest.
const CURRENT_PUBLICATION: &str = "p.kind = 'publish' AND p.state = 'done' \
     AND p.id = (SELECT MAX(q.id) FROM submissions q WHERE q.study_instance_uid = p.study_instance_uid \
         AND q.kind = 'publish' AND q.state = 'done') \
     AND NOT EXISTS (SELECT 1 FROM submissions d WHERE d.study_instance_uid = p.study_instance_uid \
         AND d.kind = 'deprecate' AND d.state = 'done' AND d.id > p.id) \
     AND m.sop_instance_uid = p.document_unique_id";

impl Store {
    /// Of `requested`, the instances that their study's current registered manifest references
    /// (study, series and SOP Instance UID all match), in no particular order. One statement.
    pub async fn authorized_instances(
        &self,
        requested: &[RequestedInstance<'_>],
    ) -> Result<Vec<AuthorizedInstance>, StoreError> {
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        let mut studies: Vec<&str> = requested.iter().map(|instance| instance.study_instance_uid).collect();
        studies.sort_unstable();
        studies.dedup();
        let sops: Vec<&str> = requested.iter().map(|instance| instance.sop_instance_uid).collect();
        let sql = format!(
            "SELECT mi.study_instance_uid, mi.series_instance_uid, mi.sop_instance_uid, mi.sop_class_uid, \
             mi.version AS manifest_version \
             FROM submissions p \
             JOIN manifests m ON m.study_instance_uid = p.study_instance_uid AND m.version = p.manifest_version \
             JOIN manifest_instances mi ON mi.study_instance_uid = m.study_instance_uid AND mi.version = m.version \
             WHERE {CURRENT_PUBLICATION} AND p.study_instance_uid IN {studies_list} \
             AND mi.sop_instance_uid IN {sops_list}",
            studies_list = json_list(self.engine(), 1),
            sops_list = json_list(self.engine(), 2),
        );
        let studies_json = json_array(&studies);
        let sops_json = json_array(&sops);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AuthorizedInstance>(sqlx::AssertSqlSafe(sql))
                .bind(&studies_json)
                .bind(&sops_json)
                .fetch_all(pool)
                .await?
        });
        // The statement matched study and SOP Instance UID; the series must match as well (a
        // request naming an instance under another series is not for that instance).
        let wanted: std::collections::HashSet<RequestedInstance<'_>> = requested.iter().copied().collect();
        Ok(rows
            .into_iter()
            .filter(|row| {
                wanted.contains(&RequestedInstance {
                    study_instance_uid: &row.study_instance_uid,
                    series_instance_uid: &row.series_instance_uid,
                    sop_instance_uid: &row.sop_instance_uid,
                })
            })
            .collect())
    }

    /// Every instance manifest `version` of `study_instance_uid` references, by SOP Instance UID.
    pub async fn manifest_instances(
        &self,
        study_instance_uid: &str,
        version: i64,
    ) -> Result<Vec<AuthorizedInstance>, StoreError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AuthorizedInstance>(
                "SELECT study_instance_uid, series_instance_uid, sop_instance_uid, sop_class_uid, \
                 version AS manifest_version FROM manifest_instances \
                 WHERE study_instance_uid = $1 AND version = $2 ORDER BY sop_instance_uid",
            )
            .bind(study_instance_uid)
            .bind(version)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Of `document_unique_ids` (KOS uniqueIds), those that are their study's current registered
    /// manifest, without the bytes. One statement.
    pub async fn current_manifests(&self, document_unique_ids: &[&str]) -> Result<Vec<CurrentManifest>, StoreError> {
        if document_unique_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT m.sop_instance_uid AS document_unique_id, m.study_instance_uid, m.version \
             FROM submissions p \
             JOIN manifests m ON m.study_instance_uid = p.study_instance_uid AND m.version = p.manifest_version \
             WHERE {CURRENT_PUBLICATION} AND m.sop_instance_uid IN {ids_list}",
            ids_list = json_list(self.engine(), 1),
        );
        let ids_json = json_array(document_unique_ids);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, CurrentManifest>(sqlx::AssertSqlSafe(sql)).bind(&ids_json).fetch_all(pool).await?
        });
        Ok(rows)
    }
}

/// A subquery listing the strings of the JSON array bound as parameter `$n`.
pub(crate) fn json_list(engine: Engine, n: usize) -> String {
    match engine {
        Engine::Sqlite => format!("(SELECT value FROM json_each(${n}))"),
        Engine::Postgres => format!("(SELECT jsonb_array_elements_text(${n}::jsonb))"),
    }
}

/// `values` as a JSON array of strings (RFC 8259 section 7 escapes).
pub(crate) fn json_array(values: &[&str]) -> String {
    let mut json = String::with_capacity(values.iter().map(|value| value.len() + 3).sum::<usize>() + 2);
    json.push('[');
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push('"');
        for character in value.chars() {
            match character {
                '"' => json.push_str("\\\""),
                '\\' => json.push_str("\\\\"),
                control if u32::from(control) < 0x20 => json.push_str(&format!("\\u{:04x}", u32::from(control))),
                other => json.push(other),
            }
        }
        json.push('"');
    }
    json.push(']');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays_escape_what_json_requires() {
        assert_eq!(json_array(&[]), "[]");
        assert_eq!(json_array(&["1.2.3", "a\"b\\c\n"]), r#"["1.2.3","a\"b\\c\u000a"]"#);
    }
}
