//! What a patient merge does to what was published, on both engines, with patients made by real
//! ADT and the study scheduler over an in-process PACS: under the profile's `republish` policy
//! the A40's commit makes the prior patient's registered study due, and the scheduler builds a
//! new version (a new KOS SOP Instance UID, so a new uniqueId, although nothing in the study
//! changed) queued for publication under the survivor; once that version is on its way, the
//! study is not versioned again. Under `registry` (XDS.b: the registry moves the documents) the
//! merge makes nothing due and an unchanged study stays at its version.

mod common;
#[path = "../../hie-store/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hie_broker::ports::{FoundInstance, InstanceKey, Pacs, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary};
use hie_broker::publish::metadata::affinity_cx;
use hie_broker::studies::{
    self, BuildOutcome, EvidenceSource, ManifestSettings, PublishHook, StudyConfig, StudyScheduler,
};
use hie_core::profile::PatientMergePolicy;
use hie_kos::{StudyEvidence, StudyEvidenceBuilder};
use hie_store::outbox::OutboxPolicy;
use hie_store::submissions::{Attempt, Ended};
use hie_store::{Store, now_micros};

use common::{AFFINITY_OID, domain};
const STUDY_024: &str = "1.3.6.1.4.1.21367.201599.1.201604020956016";
/// The fixture images' Patient ID (no issuer: the hospital's MRN).
const PRIOR_MRN: &str = "IDS-DEPT024-a";
const QUIET: Duration = Duration::from_secs(10);
const SECOND: i64 = 1_000_000;

/// The PACS holds the fixture study, always the same.
struct FixturePacs;

impl Pacs for FixturePacs {
    fn describe(&self) -> String {
        "fixture".to_owned()
    }

    fn study_evidence<'a>(&'a self, _study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hie-kos/test_data/studies/IDS-DEPT024-a/images");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect();
        files.sort();
        let mut builder = StudyEvidenceBuilder::new();
        for file in &files {
            builder.add_part10(&std::fs::read(file).unwrap()).unwrap();
        }
        let evidence = builder.build().unwrap();
        Box::pin(async move { Ok(evidence) })
    }

    fn find_instances<'a>(&'a self, _instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn retrieve<'a>(
        &'a self,
        _instances: &'a [InstanceKey],
        _transfer_syntaxes: &'a [String],
        _sink: tokio::sync::mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(async { Ok(RetrieveReport::default()) })
    }

    fn list_studies<'a>(&'a self, _from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn scheduler(store: &Store, patient_merge: PatientMergePolicy) -> StudyScheduler {
    let config = StudyConfig {
        quiet_period: QUIET,
        evidence: EvidenceSource::Pacs,
        retry: OutboxPolicy::default(),
        concurrency: 2,
        owner: "test".to_owned(),
        publish: Some(PublishHook {
            domain: domain(),
            outbox_waker: Arc::new(tokio::sync::Notify::new()),
            patient_merge,
        }),
    };
    let settings = ManifestSettings {
        retrieve_ae_title: "HIE_EDGE".to_owned(),
        repository_unique_id: "1.2.840.99999.1.2".to_owned(),
        uid_root: "1.2.840.99999.1.3".to_owned(),
        institution_name: None,
    };
    StudyScheduler::new(store.clone(), Arc::new(FixturePacs), config, settings).unwrap()
}

async fn adt(store: &Store, merge: PatientMergePolicy, event: &str, control_id: &str, pid3: &str, mrg1: Option<&str>) {
    common::adt(store, merge, event, control_id, pid3, mrg1).await;
}

fn pid3(mrn: &str, ad_id: &str) -> String {
    format!("{mrn}^^^HOSP&1.2.840.99999.1.1&ISO^MR~{ad_id}^^^&{AFFINITY_OID}&ISO^PI")
}

/// Both patients announced, the study manifested (version 1) and its submission done under the
/// prior patient's affinity-domain ID, as the publisher records it. Returns the time reached.
async fn published_for_prior(store: &Store, scheduler: &StudyScheduler, merge: PatientMergePolicy) -> i64 {
    adt(store, merge, "A04", "P1", &pid3(PRIOR_MRN, "AD-PRIOR"), None).await;
    adt(store, merge, "A04", "S1", &pid3("MRN-SURV", "AD-SURV"), None).await;
    let t0 = now_micros();
    let mut tx = store.begin().await.unwrap();
    studies::note_arrival(&mut tx, STUDY_024, QUIET, t0).await.unwrap();
    tx.commit().await.unwrap();
    let outcomes = scheduler.run_due(t0 + 11 * SECOND).await.unwrap();
    assert_eq!(outcomes[0].1, BuildOutcome::NewVersion { version: 1, n_instances: 10 });
    let v1 = store.publication_of(STUDY_024, 1).await.unwrap().expect("version 1 queued");
    let prior_cx = affinity_cx("AD-PRIOR", AFFINITY_OID);
    let attempt = Attempt {
        request: Some("<request/>"),
        response: Some("<response/>"),
        error: None,
        error_codes: None,
        affinity_patient_id: Some(&prior_cx),
    };
    store.submission_attempted(v1.id, &attempt, t0).await.unwrap();
    let done = Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None };
    store.submission_finished(v1.id, done, t0).await.unwrap();
    // Nothing moved yet: a request finds the study as registered.
    studies::request(store, STUDY_024).await.unwrap();
    let outcomes = scheduler.run_due(now_micros()).await.unwrap();
    assert_eq!(outcomes[0].1, BuildOutcome::Unchanged { version: 1 });
    now_micros()
}

#[tokio::test]
async fn under_republish_a_merge_queues_a_new_version_of_the_prior_patients_registered_study() {
    for (engine, store) in support::each_engine().await {
        let merge = PatientMergePolicy::Republish;
        let scheduler = scheduler(&store, merge);
        published_for_prior(&store, &scheduler, merge).await;

        adt(&store, merge, "A40", "M1", &pid3("MRN-SURV", "AD-SURV"), Some(&pid3(PRIOR_MRN, "AD-PRIOR"))).await;
        let study = store.study(STUDY_024).await.unwrap().unwrap();
        assert_eq!((study.state.as_str(), study.source.as_str()), ("pending", "merge"), "{engine:?}: {study:#?}");
        let due_at = study.due_at.expect("due");
        let outcomes = scheduler.run_due(due_at).await.unwrap();
        assert_eq!(outcomes.len(), 1, "{engine:?}: due at once, no quiet period");
        assert_eq!(outcomes[0].1, BuildOutcome::NewVersion { version: 2, n_instances: 10 }, "{engine:?}");
        let manifests = store.manifests(STUDY_024).await.unwrap();
        assert_eq!(manifests[0].fingerprint, manifests[1].fingerprint, "{engine:?}: the same content");
        assert_ne!(manifests[0].sop_instance_uid, manifests[1].sop_instance_uid, "{engine:?}: a uniqueId of its own");
        let v2 = store.publication_of(STUDY_024, 2).await.unwrap().expect("version 2 queued");
        assert_eq!(
            (v2.state.as_str(), v2.document_unique_id.as_str()),
            ("queued", manifests[1].sop_instance_uid.as_str())
        );
        let survivor = store.patient_by_identifier("uid:1.2.840.99999.1.1", "MRN-SURV").await.unwrap().unwrap();
        assert_eq!(v2.outbox_key, Some(format!("patient:{}", survivor.patient.id)), "{engine:?}: after the A40's feed");

        // Version 2 is on its way: asking again changes nothing.
        studies::request(&store, STUDY_024).await.unwrap();
        let outcomes = scheduler.run_due(now_micros()).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::Unchanged { version: 2 }, "{engine:?}");
    }
}

#[tokio::test]
async fn under_registry_a_merge_resends_nothing() {
    for (engine, store) in support::each_engine().await {
        let merge = PatientMergePolicy::Registry;
        let scheduler = scheduler(&store, merge);
        published_for_prior(&store, &scheduler, merge).await;

        adt(&store, merge, "A40", "M1", &pid3("MRN-SURV", "AD-SURV"), Some(&pid3(PRIOR_MRN, "AD-PRIOR"))).await;
        let study = store.study(STUDY_024).await.unwrap().unwrap();
        assert_eq!((study.state.as_str(), study.due_at), ("current", None), "{engine:?}: {study:#?}");
        studies::request(&store, STUDY_024).await.unwrap();
        let outcomes = scheduler.run_due(now_micros()).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::Unchanged { version: 1 }, "{engine:?}: the registry moved it");
        assert!(store.publication_of(STUDY_024, 2).await.unwrap().is_none(), "{engine:?}");
    }
}
