//! Polling a DIMSE PACS: a broker with `[pacs] kind = "dimse"` (Orthanc) and a short poll
//! interval notices a study uploaded to Orthanc (REST) and manifests it; deleting one instance in
//! Orthanc gives a new version with one reference fewer; deleting the study makes it `gone`.

use std::time::Duration;

use hie_e2e::{BrokerOptions, Engine};
use hie_testkit::Orthanc;
use hie_testkit::fixtures::IDS_DEPT024_A;

use crate::broker_with;
use crate::dicom_common::{assert_dciodvfy_clean, fetch_manifest, referenced, references_of, wait_for_study};

const WITHIN: Duration = Duration::from_secs(60);

#[test]
fn polls_see_new_studies_deleted_instances_and_deleted_studies() {
    let orthanc = Orthanc::start();
    let port = orthanc.dicom_port().to_string();
    let broker = broker_with(
        BrokerOptions::new(Engine::Sqlite)
            .env("HIE_EDGE__PACS__KIND", "dimse")
            .env("HIE_EDGE__PACS__AE_TITLE", orthanc.ae_title())
            .env("HIE_EDGE__PACS__HOST", "127.0.0.1")
            .env("HIE_EDGE__PACS__PORT", &port)
            .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "1")
            .env("HIE_EDGE__DICOM__QUIET_PERIOD_SECS", "1"),
    );
    let study = IDS_DEPT024_A.study_instance_uid;
    let images = IDS_DEPT024_A.images();
    orthanc.upload_all(&images);
    let dir = tempfile::tempdir().expect("temp dir");

    let first = wait_for_study(&broker, study, WITHIN, "current v1", |json| {
        json["state"] == "current" && json["manifest_version"] == 1
    });
    assert_eq!(first["source"], "poll", "{first:#}");
    let kos = fetch_manifest(&broker, study, dir.path(), "v1.dcm");
    assert_dciodvfy_clean(&kos, "v1");
    assert_eq!(referenced(&kos), references_of(&images));

    let (deleted, kept) = images.split_first().expect("images");
    let deleted_uid = references_of(std::slice::from_ref(deleted)).into_iter().next().expect("one").2;
    let id = orthanc.lookup(&deleted_uid).expect("Orthanc holds the instance");
    assert_eq!(orthanc.delete(&format!("/instances/{id}")), 200);
    let second = wait_for_study(&broker, study, WITHIN, "current v2", |json| {
        json["state"] == "current" && json["manifest_version"] == 2
    });
    assert_eq!(second["manifests"][1]["n_instances"], images.len() - 1, "{second:#}");
    let kos = fetch_manifest(&broker, study, dir.path(), "v2.dcm");
    assert_dciodvfy_clean(&kos, "v2");
    assert_eq!(referenced(&kos), references_of(kept), "one reference fewer");

    let study_id = orthanc.lookup(study).expect("Orthanc holds the study");
    assert_eq!(orthanc.delete(&format!("/studies/{study_id}")), 200);
    let gone = wait_for_study(&broker, study, WITHIN, "gone", |json| json["state"] == "gone");
    assert_eq!(gone["manifest_version"], 2, "no new version for a study that is gone");
}
