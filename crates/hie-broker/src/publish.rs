//! Publishing manifests to the HIE (XDS-I.b Imaging Document Source, RAD-68/ITI-41 or ITI-42):
//! what is queued when a manifest version is made or a study is gone, and what a registry's
//! answer means for the submission.
//!
//! A new manifest version queues a `publish` submission in the same transaction that records the
//! version ([`enqueue_publication`]); a study gone from the PACS queues a `deprecate` submission
//! ([`enqueue_deprecation`]). Both are keyed by the patient when the identity store has linked
//! them to the affinity domain, so the identity feed that introduces the patient to the registry
//! goes out first, and by the study otherwise ([`ordering_key`]). Their identifiers are drawn here, once. The outbound deliverer builds the
//! metadata when it sends ([`metadata`]), so it uses the patient's identity as it is then, and
//! reads the registry's answer through [`classify`].
//!
//! Modules: [`metadata`] (DocumentEntry and SubmissionSet from the KOS and the profile).

pub mod metadata;

use std::sync::Arc;

use hie_core::AffinityDomain;
use hie_core::profile::Profile;
use hie_store::submissions::{self, NewSubmission, SubmissionKind};
use hie_store::{Store, StoreError, Tx};
use hie_xds::RetryClass;
use hie_xds::messages::{RegistryResponse, ResponseStatus, Severity};

/// How manifests reach the registry (`[registry] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ITI-41 Provide and Register (RAD-68) to a Document Repository, the KOS attached (MTOM).
    Provide,
    /// ITI-42 Register to the registry; the broker is the repository and serves the KOS (ITI-43).
    Register,
}

/// What publishing needs to decide and queue.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub mode: Mode,
    pub profile: Arc<Profile>,
    pub domain: AffinityDomain,
    /// Our repositoryUniqueId (the manifests' Retrieve Location UID).
    pub repository_unique_id: String,
}

/// Queues the publication of a manifest version in the caller's transaction (the one that
/// records the version), under `submission_set_unique_id` (an OID drawn for it); the entryUUIDs
/// are drawn here.
pub async fn enqueue_publication(
    tx: &mut Tx<'_>,
    study_instance_uid: &str,
    version: i64,
    document_unique_id: &str,
    key: &str,
    submission_set_unique_id: &str,
    now: i64,
) -> Result<i64, StoreError> {
    let kind = SubmissionKind::Publish;
    enqueue(tx, kind, study_instance_uid, version, document_unique_id, key, submission_set_unique_id, now).await
}

/// Queues the deprecation of a study's published manifest (the study is gone from the PACS). The
/// deliverer deprecates whatever version the registry holds when it runs; if none was ever
/// published, nothing is sent.
pub async fn enqueue_deprecation(
    tx: &mut Tx<'_>,
    study_instance_uid: &str,
    version: i64,
    document_unique_id: &str,
    key: &str,
    submission_set_unique_id: &str,
    now: i64,
) -> Result<i64, StoreError> {
    let kind = SubmissionKind::Deprecate;
    enqueue(tx, kind, study_instance_uid, version, document_unique_id, key, submission_set_unique_id, now).await
}

#[allow(clippy::too_many_arguments)] // reason: two public wrappers pass everything through
async fn enqueue(
    tx: &mut Tx<'_>,
    kind: SubmissionKind,
    study_instance_uid: &str,
    version: i64,
    document_unique_id: &str,
    key: &str,
    submission_set_unique_id: &str,
    now: i64,
) -> Result<i64, StoreError> {
    let document_entry_uuid = urn_uuid();
    let submission_set_uuid = urn_uuid();
    let submission = NewSubmission {
        study_instance_uid,
        manifest_version: version,
        kind,
        document_unique_id,
        document_entry_uuid: &document_entry_uuid,
        submission_set_unique_id,
        submission_set_uuid: &submission_set_uuid,
        key,
    };
    submissions::enqueue(tx, &submission, now).await
}

/// The outbox ordering key for a study's submissions. While one of the study's submissions is
/// queued, the next joins its key, so the study's versions and its deprecation leave in order.
/// Otherwise the patient's key, when the identity store knows the patient the KOS names (a merged
/// patient: the survivor) and has linked them to the affinity domain: the identity feed that
/// introduces them to the registry is queued under it already, so it goes first. Otherwise the
/// study's own key: a patient known only by MRN gets their identity feed when an ADT links them,
/// later, and a submission queued ahead of that feed under the patient's key would wait for the
/// registry to know the patient while holding the feed up behind it.
pub async fn ordering_key(
    store: &Store,
    domain: &AffinityDomain,
    facts: &metadata::KosFacts,
    study_instance_uid: &str,
) -> Result<String, StoreError> {
    if let Some(key) = store.study_queue_key(study_instance_uid).await? {
        return Ok(key);
    }
    let authority = images_authority(facts, domain);
    let key = domain.key(&authority);
    let study_key = || format!("study:{study_instance_uid}");
    let Some(mut record) = store.patient_by_identifier(key.as_str(), &facts.patient_id).await? else {
        return Ok(study_key());
    };
    for _ in 0..MAX_MERGE_HOPS {
        let Some(survivor) = record.patient.merged_into else { break };
        match store.patient_record(survivor).await? {
            Some(next) => record = next,
            None => break,
        }
    }
    let affinity = domain.key(&hie_core::AssigningAuthority {
        universal_id: domain.patient_id_authority().to_string(),
        universal_id_type: "ISO".to_owned(),
        ..Default::default()
    });
    let linked = record.identifiers.iter().any(|row| row.active && row.authority_key == affinity.as_str());
    Ok(if linked { format!("patient:{}", record.patient.id) } else { study_key() })
}

/// The affinity-domain patient ID (CX) the KOS's patient is published under, from the identity
/// store: a merged patient's survivor's. `None` when the patient is unknown or not linked (yet).
pub async fn affinity_patient_id(
    store: &Store,
    domain: &AffinityDomain,
    facts: &metadata::KosFacts,
) -> Result<Option<String>, StoreError> {
    let key = domain.key(&images_authority(facts, domain));
    let Some(mut record) = store.patient_by_identifier(key.as_str(), &facts.patient_id).await? else {
        return Ok(None);
    };
    for _ in 0..MAX_MERGE_HOPS {
        let Some(survivor) = record.patient.merged_into else { break };
        match store.patient_record(survivor).await? {
            Some(next) => record = next,
            None => break,
        }
    }
    let affinity_key = domain.key(&hie_core::AssigningAuthority {
        universal_id: domain.patient_id_authority().to_string(),
        universal_id_type: "ISO".to_owned(),
        ..Default::default()
    });
    Ok(record
        .identifiers
        .iter()
        .find(|row| row.active && row.authority_key == affinity_key.as_str())
        .map(|row| metadata::affinity_cx(&row.id_value, domain.patient_id_authority().as_str())))
}

/// Merge links followed to a survivor, at most (a cycle is refused by the identity rules; this
/// only bounds the walk).
const MAX_MERGE_HOPS: usize = 16;

/// The assigning authority of the images' Patient ID: their issuer, else the hospital's.
pub fn images_authority(facts: &metadata::KosFacts, domain: &AffinityDomain) -> hie_core::AssigningAuthority {
    if facts.patient_id_issuer.is_empty() && facts.patient_id_issuer_oid.is_empty() {
        return domain.local_authority().clone();
    }
    hie_core::AssigningAuthority {
        namespace_id: facts.patient_id_issuer.clone(),
        universal_id: facts.patient_id_issuer_oid.clone(),
        universal_id_type: if facts.patient_id_issuer_oid.is_empty() { String::new() } else { "ISO".to_owned() },
    }
}

/// A random version-4 UUID as an OID under `2.25` (DICOM PS3.5 B.2, ITU-T X.667), for a uniqueId
/// drawn at delivery rather than from the node's UID root.
pub fn uuid_oid() -> String {
    format!("{UUID_OID_ROOT}.{}", uuid::Uuid::new_v4().as_u128())
}

/// The arc of UUID-derived OIDs (ITU-T X.667; DICOM PS3.5 B.2).
const UUID_OID_ROOT: &str = "2.25";

/// A random version-4 UUID as `urn:uuid:...` (RFC 4122), for entryUUIDs.
pub fn urn_uuid() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// What a registry's answer means for a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Registered (warnings aside).
    Accepted { warnings: Vec<String> },
    /// Transient: send the same submission again later.
    Retry(String),
    /// The registry does not know the patient yet: wait for the identity feed, then resend.
    AwaitIdentity(String),
    /// A duplicate uniqueId: perhaps our own earlier attempt was registered and its answer lost.
    /// Check with ITI-18 before deciding.
    Verify(String),
    /// The submission itself is wrong; resending it can't help.
    Fatal(String),
}

/// Classifies a RegistryResponse (landscape-and-requirements 3.6): the gravest error decides.
pub fn classify(response: &RegistryResponse) -> Verdict {
    let describe = |code: &hie_xds::ErrorCode, context: &str| format!("{code}: {context}");
    let mut warnings = Vec::new();
    let mut worst: Option<(u8, String)> = None;
    for error in &response.errors {
        let text = describe(&error.code, &error.context);
        let class = if error.severity == Severity::Warning { RetryClass::Accepted } else { error.code.retry_class() };
        let rank = match class {
            RetryClass::Accepted => {
                warnings.push(text);
                continue;
            }
            RetryClass::RetryWithBackoff => 1,
            RetryClass::VerifyByQuery => 2,
            RetryClass::ParkUntilIdentityFeed => 3,
            _ => 4,
        };
        if worst.as_ref().is_none_or(|(worst_rank, _)| rank > *worst_rank) {
            worst = Some((rank, text));
        }
    }
    match (&response.status, worst) {
        (ResponseStatus::Success, None) => Verdict::Accepted { warnings },
        (_, Some((1, text))) => Verdict::Retry(text),
        (_, Some((2, text))) => Verdict::Verify(text),
        (_, Some((3, text))) => Verdict::AwaitIdentity(text),
        (_, Some((_, text))) => Verdict::Fatal(text),
        // Failure or PartialSuccess with no error: a registry bug; retrying is the safe side.
        (status, None) => Verdict::Retry(format!("status {} without an error", status.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use hie_xds::ErrorCode;
    use hie_xds::messages::RegistryError;

    use super::*;

    fn response(status: ResponseStatus, errors: &[(&str, Severity)]) -> RegistryResponse {
        RegistryResponse {
            status,
            errors: errors
                .iter()
                .map(|(code, severity)| RegistryError {
                    code: ErrorCode::parse(code),
                    context: "why".to_owned(),
                    severity: *severity,
                    location: None,
                })
                .collect(),
            ..RegistryResponse::default()
        }
    }

    #[test]
    fn the_gravest_error_decides() {
        assert_eq!(classify(&response(ResponseStatus::Success, &[])), Verdict::Accepted { warnings: vec![] });
        let warned = classify(&response(ResponseStatus::Success, &[("XDSExtraMetadataNotSaved", Severity::Warning)]));
        assert!(matches!(warned, Verdict::Accepted { warnings } if warnings.len() == 1));
        assert!(matches!(
            classify(&response(ResponseStatus::Failure, &[("XDSRegistryBusy", Severity::Error)])),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            classify(&response(ResponseStatus::Failure, &[("XDSUnknownPatientId", Severity::Error)])),
            Verdict::AwaitIdentity(_)
        ));
        assert!(matches!(
            classify(&response(ResponseStatus::Failure, &[("XDSDuplicateUniqueIdInRegistry", Severity::Error)])),
            Verdict::Verify(_)
        ));
        let mixed = response(
            ResponseStatus::Failure,
            &[("XDSRegistryBusy", Severity::Error), ("XDSRegistryMetadataError", Severity::Error)],
        );
        assert!(matches!(classify(&mixed), Verdict::Fatal(text) if text.starts_with("XDSRegistryMetadataError")));
        assert!(matches!(classify(&response(ResponseStatus::Failure, &[])), Verdict::Retry(_)));
    }
}
