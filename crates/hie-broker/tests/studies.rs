//! The study scheduler on both engines, with an in-process PACS fed from the fixture studies: a
//! manifest is built once a study is quiet, a new version only when the evidence changes (an
//! instance added or removed), a study the PACS lost becomes `gone`, an unreachable PACS is
//! retried and then parked, and `evidence = received` builds from the listener's headers. The
//! manifests themselves are checked with `dciodvfy` and against the fixture's own KOS.

#[path = "../../hie-store/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hie_broker::ports::{
    FoundInstance, InstanceKey, Pacs, PacsError, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary,
};
use hie_broker::studies::{
    self, BuildOutcome, EvidenceSource, ManifestSettings, StudyConfig, StudyScheduler, poll_once,
};
use hie_kos::{StudyEvidence, StudyEvidenceBuilder, read_manifest};
use hie_store::outbox::OutboxPolicy;
use hie_store::studies::ReceivedInstance;
use hie_store::{Store, now_micros};

const STUDY_024: &str = "1.3.6.1.4.1.21367.201599.1.201604020956016";
const SECOND: i64 = 1_000_000;

fn images(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hie-kos/test_data/studies").join(folder).join("images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    files
}

fn evidence_of(files: &[PathBuf]) -> StudyEvidence {
    let mut builder = StudyEvidenceBuilder::new();
    for file in files {
        builder.add_part10(&std::fs::read(file).unwrap()).unwrap();
    }
    builder.build().unwrap()
}

/// A PACS whose answer the test sets: the files of the study it holds, or an error.
#[derive(Default)]
struct FakePacs {
    files: Mutex<Option<Vec<PathBuf>>>,
    error: Mutex<Option<PacsError>>,
    calls: Mutex<usize>,
}

impl Pacs for FakePacs {
    fn describe(&self) -> String {
        "fake".to_owned()
    }

    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        *self.calls.lock().unwrap() += 1;
        let answer = match (self.error.lock().unwrap().clone(), self.files.lock().unwrap().clone()) {
            (Some(error), _) => Err(error),
            (None, Some(files)) => Ok(evidence_of(&files)),
            (None, None) => Err(PacsError::UnknownStudy(study_instance_uid.to_owned())),
        };
        Box::pin(std::future::ready(answer))
    }

    fn find_instances<'a>(&'a self, _instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn retrieve<'a>(
        &'a self,
        _instances: &'a [InstanceKey],
        _transfer_syntaxes: &'a [String],
        _sink: tokio::sync::mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(std::future::ready(Ok(RetrieveReport::default())))
    }

    fn list_studies<'a>(&'a self, _from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        let files = self.files.lock().unwrap().clone();
        Box::pin(std::future::ready(Ok(files
            .map(|files| {
                vec![StudySummary { study_instance_uid: STUDY_024.to_owned(), n_instances: Some(files.len() as u64) }]
            })
            .unwrap_or_default())))
    }
}

fn settings() -> ManifestSettings {
    ManifestSettings {
        retrieve_ae_title: "HIE_EDGE".to_owned(),
        repository_unique_id: "1.2.840.99999.1.2".to_owned(),
        uid_root: "1.2.840.99999.1.3".to_owned(),
        institution_name: None,
    }
}

fn scheduler(store: &Store, pacs: Arc<FakePacs>, evidence: EvidenceSource, max_attempts: u32) -> StudyScheduler {
    let config = StudyConfig {
        quiet_period: Duration::from_secs(10),
        evidence,
        retry: OutboxPolicy {
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            max_attempts,
        },
        concurrency: 2,
        owner: "test".to_owned(),
        publish: None,
    };
    StudyScheduler::new(store.clone(), pacs, config, settings()).unwrap()
}

async fn arrive(store: &Store, now: i64) {
    let mut tx = store.begin().await.unwrap();
    studies::note_arrival(&mut tx, STUDY_024, Duration::from_secs(10), now).await.unwrap();
    tx.commit().await.unwrap();
}

fn dciodvfy_clean(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kos.dcm");
    std::fs::write(&path, bytes).unwrap();
    let output = std::process::Command::new("dciodvfy").arg("-new").arg(&path).output().expect("run dciodvfy");
    let report = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && !report.lines().any(|line| line.starts_with("Error")), "{report}");
}

#[tokio::test]
async fn a_manifest_is_built_when_quiet_and_versioned_only_on_change() {
    for (engine, store) in support::each_engine().await {
        let files = images("IDS-DEPT024-a");
        let pacs = Arc::new(FakePacs { files: Mutex::new(Some(files[..9].to_vec())), ..FakePacs::default() });
        let scheduler = scheduler(&store, Arc::clone(&pacs), EvidenceSource::Pacs, 5);
        let t0 = now_micros();
        arrive(&store, t0).await;
        assert!(scheduler.run_due(t0 + 5 * SECOND).await.unwrap().is_empty(), "{engine:?}: not quiet yet");
        assert_eq!(*pacs.calls.lock().unwrap(), 0, "{engine:?}: no PACS query before the quiet period");

        let outcomes = scheduler.run_due(t0 + 10 * SECOND).await.unwrap();
        assert_eq!(
            outcomes,
            [(STUDY_024.to_owned(), BuildOutcome::NewVersion { version: 1, n_instances: 9 })],
            "{engine:?}"
        );
        let (row, kos) = store.latest_manifest(STUDY_024).await.unwrap().unwrap();
        dciodvfy_clean(&kos);
        let summary = read_manifest(&kos).unwrap();
        assert_eq!(summary.sop_instance_uid, row.sop_instance_uid, "{engine:?}");
        assert_eq!(summary.n_instances(), 9, "{engine:?}");
        let study = store.study(STUDY_024).await.unwrap().unwrap();
        assert_eq!((study.state.as_str(), study.manifest_version), ("current", 1), "{engine:?}");
        assert_eq!(study.study_date.as_deref(), Some("20150324"), "{engine:?}");

        // The same instances arrive again: rebuilt, but no new version.
        arrive(&store, t0 + 20 * SECOND).await;
        let outcomes = scheduler.run_due(t0 + 30 * SECOND).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::Unchanged { version: 1 }, "{engine:?}");

        // The tenth instance arrives: version 2 references all ten, with new UIDs.
        *pacs.files.lock().unwrap() = Some(files.clone());
        arrive(&store, t0 + 40 * SECOND).await;
        let outcomes = scheduler.run_due(t0 + 50 * SECOND).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::NewVersion { version: 2, n_instances: 10 }, "{engine:?}");
        let versions = store.manifests(STUDY_024).await.unwrap();
        assert_eq!(versions.len(), 2, "{engine:?}");
        assert_ne!(versions[0].sop_instance_uid, versions[1].sop_instance_uid, "{engine:?}");
        assert_ne!(versions[0].fingerprint, versions[1].fingerprint, "{engine:?}");
        let (_, kos) = store.latest_manifest(STUDY_024).await.unwrap().unwrap();
        dciodvfy_clean(&kos);
        let fixture = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../hie-kos/test_data/studies/IDS-DEPT024-a/kos.dcm"),
        )
        .unwrap();
        assert_eq!(
            read_manifest(&kos).unwrap().referenced(),
            read_manifest(&fixture).unwrap().referenced(),
            "{engine:?}"
        );
        // Each version's referenced instances are kept for retrieval authorization.
        for (version, n_instances) in [(1, 9), (2, 10)] {
            let referenced = store.manifest_instances(STUDY_024, version).await.unwrap();
            assert_eq!(referenced.len(), n_instances, "{engine:?}");
        }
        let evidence = evidence_of(&files);
        let referenced = store.manifest_instances(STUDY_024, 2).await.unwrap();
        for series in &evidence.series {
            for instance in &series.instances {
                let row = referenced.iter().find(|row| row.sop_instance_uid == instance.sop_instance_uid);
                let row = row.unwrap_or_else(|| panic!("{engine:?}: {} not kept", instance.sop_instance_uid));
                assert_eq!(row.series_instance_uid, series.series_instance_uid, "{engine:?}");
                assert_eq!(row.sop_class_uid, instance.sop_class_uid, "{engine:?}");
            }
        }

        // The PACS loses the study: gone, no new version.
        *pacs.files.lock().unwrap() = None;
        studies::request(&store, STUDY_024).await.unwrap();
        let outcomes = scheduler.run_due(now_micros()).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::Gone, "{engine:?}");
        assert_eq!(store.study(STUDY_024).await.unwrap().unwrap().state, "gone", "{engine:?}");
        assert_eq!(store.manifests(STUDY_024).await.unwrap().len(), 2, "{engine:?}");
    }
}

#[tokio::test]
async fn an_unreachable_pacs_is_retried_with_backoff_then_parked() {
    for (engine, store) in support::each_engine().await {
        let pacs = Arc::new(FakePacs::default());
        *pacs.error.lock().unwrap() = Some(PacsError::Unreachable("connection refused".to_owned()));
        let scheduler = scheduler(&store, Arc::clone(&pacs), EvidenceSource::Pacs, 2);
        studies::request(&store, STUDY_024).await.unwrap();
        let outcomes = scheduler.run_due(now_micros()).await.unwrap();
        assert!(
            matches!(&outcomes[0].1, BuildOutcome::Retry { error } if error.contains("connection refused")),
            "{engine:?}: {outcomes:?}"
        );
        let study = store.study(STUDY_024).await.unwrap().unwrap();
        assert_eq!(study.state, "pending", "{engine:?}");
        assert!(study.due_at.unwrap() > now_micros(), "{engine:?}: backed off");
        let outcomes = scheduler.run_due(now_micros() + 60 * SECOND).await.unwrap();
        assert!(matches!(&outcomes[0].1, BuildOutcome::Failed { .. }), "{engine:?}: {outcomes:?}");
        let study = store.study(STUDY_024).await.unwrap().unwrap();
        assert_eq!(study.state, "failed", "{engine:?}");
        assert!(study.last_error.unwrap().contains("connection refused"), "{engine:?}");

        // Never manifested and unknown to the PACS: retried (the PACS may not have it yet), not gone.
        *pacs.error.lock().unwrap() = None;
        studies::request(&store, STUDY_024).await.unwrap();
        let outcomes = scheduler.run_due(now_micros()).await.unwrap();
        assert!(
            matches!(&outcomes[0].1, BuildOutcome::Retry { error } if error.contains("not in the PACS")),
            "{engine:?}: {outcomes:?}"
        );
    }
}

#[tokio::test]
async fn received_headers_make_the_evidence_when_configured() {
    for (engine, store) in support::each_engine().await {
        let pacs = Arc::new(FakePacs::default());
        let scheduler = scheduler(&store, Arc::clone(&pacs), EvidenceSource::Received, 5);
        let files = images("IDS-DEPT024-a");
        let mut tx = store.begin().await.unwrap();
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            let header = hie_kos::read_instance_header(&bytes).unwrap();
            let instance = hie_kos::from_instance_header(&header).unwrap();
            let received = ReceivedInstance {
                sop_instance_uid: instance.instance.sop_instance_uid,
                study_instance_uid: instance.study_instance_uid,
                series_instance_uid: instance.series.series_instance_uid,
                sop_class_uid: instance.instance.sop_class_uid,
                transfer_syntax_uid: "1.2.840.10008.1.2.1".to_owned(),
                calling_ae_title: "MODALITY".to_owned(),
                header: bytes,
                received_at: now_micros(),
            };
            hie_store::studies::put_received_instance(&mut tx, &received).await.unwrap();
        }
        studies::note_arrival(&mut tx, STUDY_024, Duration::ZERO, now_micros()).await.unwrap();
        tx.commit().await.unwrap();
        let outcomes = scheduler.run_due(now_micros()).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::NewVersion { version: 1, n_instances: files.len() }, "{engine:?}");
        assert_eq!(*pacs.calls.lock().unwrap(), 0, "{engine:?}: the PACS was not asked");
        let (_, kos) = store.latest_manifest(STUDY_024).await.unwrap().unwrap();
        dciodvfy_clean(&kos);
    }
}

#[tokio::test]
async fn a_poll_notices_new_grown_and_vanished_studies() {
    for (engine, store) in support::each_engine().await {
        let files = images("IDS-DEPT024-a");
        let pacs = Arc::new(FakePacs { files: Mutex::new(Some(files[..5].to_vec())), ..FakePacs::default() });
        let scheduler = scheduler(&store, Arc::clone(&pacs), EvidenceSource::Pacs, 5);
        let quiet = Duration::from_secs(10);
        // The fixture study is dated 2015: look back far enough.
        let lookback = 20 * 365;
        let t0 = now_micros();
        let report = poll_once(&store, pacs.as_ref(), lookback, quiet, t0).await.unwrap();
        assert_eq!((report.new, report.changed, report.vanished), (1, 0, 0), "{engine:?}");
        assert_eq!(scheduler.run_due(t0 + 10 * SECOND).await.unwrap().len(), 1, "{engine:?}");

        let report = poll_once(&store, pacs.as_ref(), lookback, quiet, t0 + 20 * SECOND).await.unwrap();
        assert_eq!(report.total(), 0, "{engine:?}: nothing changed");

        *pacs.files.lock().unwrap() = Some(files.clone());
        let report = poll_once(&store, pacs.as_ref(), lookback, quiet, t0 + 30 * SECOND).await.unwrap();
        assert_eq!((report.new, report.changed, report.vanished), (0, 1, 0), "{engine:?}");
        let outcomes = scheduler.run_due(t0 + 40 * SECOND).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::NewVersion { version: 2, n_instances: 10 }, "{engine:?}");

        *pacs.files.lock().unwrap() = None;
        let report = poll_once(&store, pacs.as_ref(), lookback, quiet, t0 + 50 * SECOND).await.unwrap();
        assert_eq!((report.new, report.changed, report.vanished), (0, 0, 1), "{engine:?}");
        let outcomes = scheduler.run_due(t0 + 60 * SECOND).await.unwrap();
        assert_eq!(outcomes[0].1, BuildOutcome::Gone, "{engine:?}");
        // A study outside the window is not reported as vanished.
        let report = poll_once(&store, pacs.as_ref(), 1, quiet, t0 + 70 * SECOND).await.unwrap();
        assert_eq!(report.total(), 0, "{engine:?}");
    }
}
