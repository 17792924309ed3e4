//! Contract tests of the retrieval authorization lookups, on both engines: only instances of each
//! study's current registered manifest (and only that manifest) are authorized.

mod support;

use hie_store::retrieval::RequestedInstance;
use hie_store::studies::{self, ChangeSource, NewManifest, ReferencedInstance, StudyChange};
use hie_store::submissions::{self, Ended, NewSubmission, SubmissionKind};
use hie_store::{Store, now_micros};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Records manifest `version` of `study` referencing `instances` (series, sop).
async fn manifest(store: &Store, study: &str, version: i64, instances: &[(&str, &str)]) -> String {
    let now = now_micros();
    let kos_uid = format!("{study}.99.{version}");
    let referenced: Vec<ReferencedInstance<'_>> = instances
        .iter()
        .map(|(series, sop)| ReferencedInstance {
            series_instance_uid: series,
            sop_instance_uid: sop,
            sop_class_uid: CT,
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    let change =
        StudyChange { study_instance_uid: study, source: ChangeSource::Request, due_at: now, pacs_instances: None };
    studies::note_change(&mut tx, &change, now).await.unwrap();
    let manifest = NewManifest {
        study_instance_uid: study,
        version,
        sop_instance_uid: &kos_uid,
        series_instance_uid: &format!("{study}.98"),
        n_series: 1,
        n_instances: i64::try_from(instances.len()).unwrap(),
        fingerprint: "f",
        kos: kos_uid.as_bytes(),
        modalities: "CT",
        body_parts: "",
        instances: &referenced,
    };
    studies::record_manifest(&mut tx, &manifest, now).await.unwrap();
    tx.commit().await.unwrap();
    kos_uid
}

/// Queues a submission of `kind` for `study` version `version` and ends it as `ended` (None: left queued).
async fn submission(store: &Store, study: &str, version: i64, kind: SubmissionKind, ended: Option<Ended<'_>>) -> i64 {
    let now = now_micros();
    let unique = format!("{study}.{version}.{}.{}", kind.as_str(), rand_suffix());
    let document_unique_id = format!("{study}.99.{version}");
    let mut tx = store.begin().await.unwrap();
    let id = submissions::enqueue(
        &mut tx,
        &NewSubmission {
            study_instance_uid: study,
            manifest_version: version,
            kind,
            document_unique_id: &document_unique_id,
            document_entry_uuid: &format!("urn:uuid:{unique}"),
            submission_set_unique_id: &unique,
            submission_set_uuid: &format!("urn:uuid:s-{unique}"),
            key: &format!("study:{study}"),
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    if let Some(ended) = ended {
        store.submission_finished(id, ended, now).await.unwrap();
    }
    id
}

fn rand_suffix() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

const DONE: Ended<'static> = Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None };

fn request<'a>(study: &'a str, series: &'a str, sop: &'a str) -> RequestedInstance<'a> {
    RequestedInstance { study_instance_uid: study, series_instance_uid: series, sop_instance_uid: sop }
}

async fn authorized(store: &Store, requested: &[RequestedInstance<'_>]) -> Vec<String> {
    let mut sops: Vec<String> =
        store.authorized_instances(requested).await.unwrap().into_iter().map(|row| row.sop_instance_uid).collect();
    sops.sort();
    sops
}

async fn current(store: &Store, ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> =
        store.current_manifests(ids).await.unwrap().into_iter().map(|row| row.document_unique_id).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn only_the_current_registered_manifest_authorizes() {
    for (engine, store) in support::each_engine().await {
        let study = "1.2.40.1";
        let all = [
            request(study, "1.2.40.1.1", "1.2.40.1.1.1"),
            request(study, "1.2.40.1.1", "1.2.40.1.1.2"),
            request(study, "1.2.40.1.2", "1.2.40.1.2.1"),
            request(study, "1.2.40.1.1", "1.2.40.1.1.5"),
        ];
        let v1 = manifest(
            &store,
            study,
            1,
            &[("1.2.40.1.1", "1.2.40.1.1.1"), ("1.2.40.1.1", "1.2.40.1.1.2"), ("1.2.40.1.2", "1.2.40.1.2.1")],
        )
        .await;
        // Recorded but not registered yet: nothing.
        assert!(authorized(&store, &all).await.is_empty(), "{engine:?}");
        submission(&store, study, 1, SubmissionKind::Publish, None).await;
        assert!(authorized(&store, &all).await.is_empty(), "{engine:?}: queued is not registered");
        assert!(current(&store, &[&v1]).await.is_empty(), "{engine:?}");

        let publish_1 = submission(&store, study, 1, SubmissionKind::Publish, None).await;
        store.submission_finished(publish_1, DONE, now_micros()).await.unwrap();
        assert_eq!(authorized(&store, &all).await, ["1.2.40.1.1.1", "1.2.40.1.1.2", "1.2.40.1.2.1"], "{engine:?}");
        assert_eq!(current(&store, &[&v1, "9.9.9"]).await, [v1.as_str()], "{engine:?}");

        // The SOP Instance UID under another series, or under another study, is not that instance.
        let misplaced =
            [request(study, "1.2.40.1.2", "1.2.40.1.1.1"), request("1.2.40.2", "1.2.40.1.1", "1.2.40.1.1.2")];
        assert!(authorized(&store, &misplaced).await.is_empty(), "{engine:?}");

        // Version 2 (one instance dropped, one added) is recorded and queued: version 1 stays current.
        let v2 = manifest(
            &store,
            study,
            2,
            &[("1.2.40.1.1", "1.2.40.1.1.1"), ("1.2.40.1.1", "1.2.40.1.1.2"), ("1.2.40.1.1", "1.2.40.1.1.5")],
        )
        .await;
        let publish_2 = submission(&store, study, 2, SubmissionKind::Publish, None).await;
        assert_eq!(authorized(&store, &all).await, ["1.2.40.1.1.1", "1.2.40.1.1.2", "1.2.40.1.2.1"], "{engine:?}");
        // A failed version 2 leaves version 1 current.
        store.submission_finished(publish_2, Ended::Failed, now_micros()).await.unwrap();
        assert_eq!(current(&store, &[&v1, &v2]).await, [v1.as_str()], "{engine:?}");
        // Once version 2 is registered, it replaces version 1.
        submission(&store, study, 2, SubmissionKind::Publish, Some(DONE)).await;
        assert_eq!(authorized(&store, &all).await, ["1.2.40.1.1.1", "1.2.40.1.1.2", "1.2.40.1.1.5"], "{engine:?}");
        assert_eq!(current(&store, &[&v1, &v2]).await, [v2.as_str()], "{engine:?}");

        // A queued deprecation changes nothing; a done one withdraws the study.
        submission(&store, study, 2, SubmissionKind::Deprecate, None).await;
        assert_eq!(authorized(&store, &all).await.len(), 3, "{engine:?}");
        submission(&store, study, 2, SubmissionKind::Deprecate, Some(DONE)).await;
        assert!(authorized(&store, &all).await.is_empty(), "{engine:?}");
        assert!(current(&store, &[&v1, &v2]).await.is_empty(), "{engine:?}");

        // The study comes back: a new publication after the deprecation is current again.
        let v3 = manifest(&store, study, 3, &[("1.2.40.1.2", "1.2.40.1.2.1")]).await;
        submission(&store, study, 3, SubmissionKind::Publish, Some(DONE)).await;
        assert_eq!(authorized(&store, &all).await, ["1.2.40.1.2.1"], "{engine:?}");
        assert_eq!(current(&store, &[&v1, &v2, &v3]).await, [v3], "{engine:?}");

        // Another study's state does not leak into this one's.
        let other = "1.2.40.3";
        manifest(&store, other, 1, &[("1.2.40.3.1", "1.2.40.3.1.1")]).await;
        submission(&store, other, 1, SubmissionKind::Publish, Some(Ended::Failed)).await;
        assert!(authorized(&store, &[request(other, "1.2.40.3.1", "1.2.40.3.1.1")]).await.is_empty(), "{engine:?}");
        assert!(store.authorized_instances(&[]).await.unwrap().is_empty(), "{engine:?}");
        assert!(store.current_manifests(&[]).await.unwrap().is_empty(), "{engine:?}");
    }
}

#[tokio::test]
async fn a_request_of_thousands_of_instances_is_one_lookup() {
    for (engine, store) in support::each_engine().await {
        let study = "1.2.41.1";
        let series = "1.2.41.1.1";
        let sops: Vec<String> = (0..3_000).map(|n| format!("1.2.41.1.1.{n}")).collect();
        let instances: Vec<(&str, &str)> = sops.iter().map(|sop| (series, sop.as_str())).collect();
        // Only every other instance is in the manifest.
        let referenced: Vec<(&str, &str)> = instances.iter().copied().step_by(2).collect();
        manifest(&store, study, 1, &referenced).await;
        submission(&store, study, 1, SubmissionKind::Publish, Some(DONE)).await;
        let requested: Vec<RequestedInstance<'_>> =
            instances.iter().map(|(series, sop)| request(study, series, sop)).collect();
        let found = store.authorized_instances(&requested).await.unwrap();
        assert_eq!(found.len(), 1_500, "{engine:?}");
        assert!(found.iter().all(|row| row.sop_class_uid == CT && row.manifest_version == 1), "{engine:?}");
        // Peculiar bytes in a requested UID are data, not SQL or JSON.
        let odd = [request(study, series, "1.2\"]'); DROP TABLE manifests; --"), request(study, series, "\\\n")];
        assert!(store.authorized_instances(&odd).await.unwrap().is_empty(), "{engine:?}");
        assert_eq!(store.manifests(study).await.unwrap().len(), 1, "{engine:?}");
    }
}
