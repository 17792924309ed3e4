//! `hie-edge kos build` through every PACS adapter, for every fixture study (IDS-DEPT002-a,
//! IDS-DEPT024-a, and dcm4che's MR series, which has no fixture manifest and is checked against
//! its own images): `folder`; `dimse` with Orthanc (retrieve c-get, and c-move, which only changes
//! how instances would be fetched); `dimse` with dcmtk's dcmqrscp (no SOP Class UID in its
//! answers: the headers are fetched); `dicomweb` with Orthanc. Each manifest passes `dciodvfy
//! -new` with no error, references exactly the instances the PACS holds, and equals the fixture
//! manifest in what it references and in its key attributes.

use hie_testkit::fixtures::ALL;
use hie_testkit::{Dcmqrscp, DcmqrscpOptions, Orthanc};

use crate::dicom_common::{
    assert_dciodvfy_clean, expected_manifest, key_attributes, kos_build, output_text, referenced,
};

/// Builds the manifest of every fixture study with the `[pacs]` of `env` and checks it.
fn check_every_study(adapter: &str, env: &[(String, String)]) {
    let dir = tempfile::tempdir().expect("temp dir");
    for study in ALL {
        let out = dir.path().join(format!("{}-{adapter}.dcm", study.name));
        let output = kos_build(study.study_instance_uid, &out, env);
        assert!(output.status.success(), "{adapter} {}: {}", study.name, output_text(&output));
        let what = format!("{adapter} {}", study.name);
        assert_dciodvfy_clean(&out, &what);
        let (references, attributes) = expected_manifest(study);
        assert_eq!(referenced(&out), references, "{what}: references");
        assert_eq!(key_attributes(&out), attributes, "{what}: key attributes");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(&format!("{} instances", study.n_images)), "{what}: {stdout}");
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

/// An Orthanc holding the images of every fixture study (not their manifests).
fn orthanc_with_every_study() -> Orthanc {
    let orthanc = Orthanc::start();
    for study in ALL {
        orthanc.upload_all(&study.images());
    }
    orthanc
}

#[test]
fn folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    for study in ALL {
        let folder = dir.path().join(study.name);
        std::fs::create_dir_all(&folder).expect("study folder");
        for image in study.images() {
            std::fs::copy(&image, folder.join(image.file_name().expect("a file name"))).expect("copy an image");
        }
    }
    let path = dir.path().to_str().expect("UTF-8 temp path");
    check_every_study("folder", &env(&[("HIE_EDGE__PACS__KIND", "folder"), ("HIE_EDGE__PACS__PATH", path)]));
}

fn dimse_env(ae_title: &str, port: u16, retrieve: &str) -> Vec<(String, String)> {
    let port = port.to_string();
    let listen = hie_e2e::free_addr().to_string();
    env(&[
        ("HIE_EDGE__PACS__KIND", "dimse"),
        ("HIE_EDGE__PACS__AE_TITLE", ae_title),
        ("HIE_EDGE__PACS__HOST", "127.0.0.1"),
        ("HIE_EDGE__PACS__PORT", &port),
        ("HIE_EDGE__PACS__RETRIEVE", retrieve),
        // c-move needs a listener configured; kos build never opens it.
        ("HIE_EDGE__DICOM__LISTEN", &listen),
    ])
}

#[test]
fn dimse_with_orthanc_by_c_get_and_c_move() {
    let orthanc = orthanc_with_every_study();
    for retrieve in ["c-get", "c-move"] {
        check_every_study(
            &format!("dimse-orthanc-{retrieve}"),
            &dimse_env(orthanc.ae_title(), orthanc.dicom_port(), retrieve),
        );
    }
}

#[test]
fn dimse_with_dcmqrscp() {
    let dcmqrscp = Dcmqrscp::start_with(DcmqrscpOptions { ae_title: "DCMQRSCP".to_owned(), ..Default::default() });
    for study in ALL {
        dcmqrscp.load(&study.images());
    }
    check_every_study("dimse-dcmqrscp", &dimse_env("DCMQRSCP", dcmqrscp.port(), "c-get"));
}

#[test]
fn dicomweb_with_orthanc() {
    let orthanc = orthanc_with_every_study();
    let url = format!("{}/dicom-web", orthanc.http_url());
    check_every_study("dicomweb-orthanc", &env(&[("HIE_EDGE__PACS__KIND", "dicomweb"), ("HIE_EDGE__PACS__URL", &url)]));
}
