//! Shared by the retrieval test and bench: recording that the registry holds a study's manifest
//! (a done publish submission, exactly as the publisher records one), so a retrieval may serve it
//! without a registry in the loop.

use std::time::{Duration, Instant};

use hie_store::submissions::{Ended, NewSubmission, SubmissionKind};
use hie_store::{Store, now_micros};

/// Waits (until `deadline`) for the broker to have built `study`'s manifest, then records it as
/// registered. Returns the manifest's uniqueId. `log` names what the broker said, for a timeout.
pub async fn record_registered(store: &Store, study: &str, deadline: Instant, log: impl Fn() -> String) -> String {
    let manifest = loop {
        if let Some(row) = store.study(study).await.unwrap()
            && row.state == "current"
            && let Some((manifest, _)) = store.latest_manifest(study).await.unwrap()
        {
            break manifest;
        }
        assert!(Instant::now() < deadline, "no manifest for {study}; broker log:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unique = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let mut tx = store.begin().await.unwrap();
    let id = hie_store::submissions::enqueue(
        &mut tx,
        &NewSubmission {
            study_instance_uid: study,
            manifest_version: manifest.version,
            kind: SubmissionKind::Publish,
            document_unique_id: &manifest.sop_instance_uid,
            document_entry_uuid: &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            submission_set_unique_id: &unique,
            submission_set_uuid: &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            key: &format!("study:{study}"),
        },
        now_micros(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let done = Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None };
    store.submission_finished(id, done, now_micros()).await.unwrap();
    manifest.sop_instance_uid
}
