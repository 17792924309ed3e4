//! The broker's DICOM listener as a modality meets it: `storescu` sends a fixture study, the
//! broker shows it `pending`, then (after the quiet period) `current` with manifest version 1,
//! whose KOS passes `dciodvfy` and references what was sent (`evidence = "received"`) or what the
//! PACS holds (`evidence = "pacs"`, Orthanc holding the same study); a second series sent later
//! makes version 2. `echoscu` works; a wrong called AE and an unknown calling AE are rejected
//! (PS3.8 Table 9-21 reasons 7 and 3).

use std::time::Duration;

use hie_e2e::{BrokerOptions, BrokerProc, Engine};
use hie_testkit::fixtures::{IDS_DEPT002_A, IDS_DEPT024_A};
use hie_testkit::{Orthanc, dcmtk};

use crate::broker_with;
use crate::dicom_common::{
    assert_dciodvfy_clean, fetch_manifest, images_by_series, metric, referenced, references_of, storescu, study_json,
    wait_for_study,
};

const MODALITY: &str = "MODALITY";
/// Long enough to see the study pending after storescu returns, short enough for a test.
const QUIET_SECS: &str = "3";
const BUILT_WITHIN: Duration = Duration::from_secs(60);

/// A broker that takes C-STOREs from `MODALITY` only and builds manifests from what it
/// received (the quickstart's folder PACS stays configured, unpolled).
fn receiving_broker(engine: Engine) -> BrokerProc {
    broker_with(
        BrokerOptions::new(engine)
            .env("HIE_EDGE__DICOM__EVIDENCE", "received")
            .env("HIE_EDGE__DICOM__QUIET_PERIOD_SECS", QUIET_SECS)
            .env("HIE_EDGE__DICOM__ALLOWED_CALLING_AE_TITLES", MODALITY)
            .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0"),
    )
}

fn version_of(json: &serde_json::Value) -> i64 {
    json["manifest_version"].as_i64().unwrap_or_default()
}

#[test]
fn a_modality_sends_a_study_in_two_series_and_gets_two_manifest_versions() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let broker = receiving_broker(engine);
        let study = IDS_DEPT002_A.study_instance_uid;
        let series = images_by_series(&IDS_DEPT002_A);
        assert_eq!(series.len(), 2);
        let dir = tempfile::tempdir().expect("temp dir");

        let sent = storescu(&broker, MODALITY, &series[0]);
        assert!(sent.success(), "storescu: {}", sent.combined());
        let pending = study_json(&broker, study).expect("the study is known once its instances are stored");
        assert_eq!(pending["state"], "pending", "{pending:#}");
        assert_eq!(pending["source"], "c-store", "{pending:#}");

        let first = wait_for_study(&broker, study, BUILT_WITHIN, "current v1", |json| {
            json["state"] == "current" && version_of(json) == 1
        });
        assert_eq!(first["manifests"][0]["n_instances"], series[0].len(), "{first:#}");
        let kos = fetch_manifest(&broker, study, dir.path(), "v1.dcm");
        assert_dciodvfy_clean(&kos, "manifest v1");
        assert_eq!(referenced(&kos), references_of(&series[0]), "v1 references the first series");

        let sent = storescu(&broker, MODALITY, &series[1]);
        assert!(sent.success(), "storescu: {}", sent.combined());
        wait_for_study(&broker, study, BUILT_WITHIN, "current v2", |json| {
            json["state"] == "current" && version_of(json) == 2
        });
        let kos = fetch_manifest(&broker, study, dir.path(), "v2.dcm");
        assert_dciodvfy_clean(&kos, "manifest v2");
        assert_eq!(referenced(&kos), references_of(&IDS_DEPT002_A.images()), "v2 references both series");

        let stored = metric(&broker, "hie_dicom_instances_total{outcome=\"stored\"}");
        assert_eq!(stored, IDS_DEPT002_A.n_images as f64);
        assert!(metric(&broker, "hie_dicom_associations_total{fate=\"accepted\"}") >= 2.0);
        // No patient data in the log: names and IDs of the fixture never appear.
        let log = broker.stderr_log();
        assert!(!log.contains("Multi^Mr") && !log.contains("IDS-DEPT002-a"), "PHI in the log:\n{log}");
    }
}

#[test]
fn with_pacs_evidence_the_manifest_references_what_the_pacs_holds() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT024_A.images());
    let port = orthanc.dicom_port().to_string();
    let broker = broker_with(
        BrokerOptions::new(Engine::Sqlite)
            .env("HIE_EDGE__DICOM__EVIDENCE", "pacs")
            .env("HIE_EDGE__DICOM__QUIET_PERIOD_SECS", QUIET_SECS)
            .env("HIE_EDGE__PACS__KIND", "dimse")
            .env("HIE_EDGE__PACS__AE_TITLE", orthanc.ae_title())
            .env("HIE_EDGE__PACS__HOST", "127.0.0.1")
            .env("HIE_EDGE__PACS__PORT", &port)
            .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0"),
    );
    let study = IDS_DEPT024_A.study_instance_uid;
    // The modality sends three images; the PACS holds all ten.
    let images = IDS_DEPT024_A.images();
    let sent = storescu(&broker, "ANY_MODALITY", &images[..3]);
    assert!(sent.success(), "storescu: {}", sent.combined());
    assert_eq!(study_json(&broker, study).expect("known")["state"], "pending");
    wait_for_study(&broker, study, BUILT_WITHIN, "current v1", |json| json["state"] == "current");
    let dir = tempfile::tempdir().expect("temp dir");
    let kos = fetch_manifest(&broker, study, dir.path(), "v1.dcm");
    assert_dciodvfy_clean(&kos, "manifest from the PACS");
    assert_eq!(referenced(&kos), references_of(&images), "what Orthanc holds");
}

#[test]
fn echo_works_and_wrong_ae_titles_are_rejected_with_their_reasons() {
    let broker = receiving_broker(Engine::Sqlite);
    let port = broker.dicom_addr().port().to_string();
    let echo =
        |calling: &str, called: &str| dcmtk("echoscu", &["-v", "-aet", calling, "-aec", called, "127.0.0.1", &port]);
    let ok = echo(MODALITY, "HIE_EDGE");
    assert!(ok.success(), "echoscu: {}", ok.combined());

    let wrong_called = echo(MODALITY, "SOMEONE_ELSE");
    assert!(!wrong_called.success(), "a wrong called AE title is rejected");
    let text = wrong_called.combined();
    assert!(text.contains("Rejected Permanent") && text.contains("Called AE Title Not Recognized"), "{text}");

    let stranger = echo("STRANGER", "HIE_EDGE");
    assert!(!stranger.success(), "an unknown calling AE title is rejected");
    let text = stranger.combined();
    assert!(text.contains("Rejected Permanent") && text.contains("Calling AE Title Not Recognized"), "{text}");

    assert_eq!(metric(&broker, "hie_dicom_associations_total{fate=\"rejected\"}"), 2.0);
    // A store from the stranger is refused the same way, and stores nothing.
    let refused = storescu(&broker, "STRANGER", &IDS_DEPT024_A.images()[..1]);
    assert!(!refused.success());
    assert!(study_json(&broker, IDS_DEPT024_A.study_instance_uid).is_none());
}
