//! The DICOMweb PACS adapter (and the DIMSE one beside it) against a real Orthanc: a manifest built
//! from what Orthanc answers (QIDO-RS, then WADO-RS metadata; C-FIND) says what one built from the
//! very same files says (the folder adapter): the same references, and the same patient and study
//! attributes, sequences included. Orthanc's QIDO-RS returns only the fields it indexes, so
//! without the metadata the Procedure Code Sequence (which the typeCode is mapped from) was lost.

use std::path::Path;
use std::process::Command;

use hie_testkit::{Orthanc, StudyOverrides};

/// Attributes the manifest copies from the images, compared one by one (dcmdump's rendering).
const COPIED: [&str; 12] = [
    "0010,0010",
    "0010,0020",
    "0010,0030",
    "0010,0040",
    "0008,0020",
    "0008,0030",
    "0008,0050",
    "0008,0090",
    "0008,1030",
    "0008,1032",
    "0020,0010",
    "0020,000d",
];

fn kos_build(study: &str, out: &Path, env: &[(&str, &str)]) {
    hie_e2e::init!();
    let mut command = Command::new(hie_e2e::broker_exe());
    for (key, _) in std::env::vars() {
        if key.starts_with("HIE_EDGE__") {
            command.env_remove(key);
        }
    }
    let output = command
        .args(["kos", "build", "--config"])
        .arg(hie_e2e::quickstart_config())
        .args(["--study", study, "--out"])
        .arg(out)
        .envs(env.iter().copied())
        .output()
        .expect("run kos build");
    assert!(output.status.success(), "kos build {env:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// dcmdump's lines for `tag` without its length column: an empty value is "(no value available)"
/// whether the file pads it or the JSON left it out.
fn dump(path: &Path, tag: &str) -> String {
    let output = Command::new("dcmdump").args(["+P", tag]).arg(path).output().expect("run dcmdump");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn same_manifest_from_every_adapter(folder: &Path, study: &str, expect_procedure: Option<&str>) {
    let orthanc = Orthanc::start();
    let files: Vec<_> =
        std::fs::read_dir(folder).expect("study folder").map(|entry| entry.expect("entry").path()).collect();
    orthanc.upload_all(&files);
    let out = tempfile::tempdir().expect("temp dir");
    let (from_files, from_orthanc) = (out.path().join("folder.dcm"), out.path().join("dicomweb.dcm"));
    kos_build(study, &from_files, &[("HIE_EDGE__PACS__PATH", &folder.display().to_string())]);
    let url = format!("{}/dicom-web", orthanc.http_url());
    let port = orthanc.dicom_port().to_string();
    let by_dimse = [
        ("HIE_EDGE__PACS__KIND", "dimse"),
        ("HIE_EDGE__PACS__AE_TITLE", orthanc.ae_title()),
        ("HIE_EDGE__PACS__HOST", "127.0.0.1"),
        ("HIE_EDGE__PACS__PORT", &port),
    ];
    let by_dicomweb = [("HIE_EDGE__PACS__KIND", "dicomweb"), ("HIE_EDGE__PACS__URL", &url)];
    kos_build(study, &from_orthanc, &by_dicomweb);
    let from_dimse = out.path().join("dimse.dcm");
    kos_build(study, &from_dimse, &by_dimse);
    let read = |path: &Path| hie_kos::read_manifest(&std::fs::read(path).expect("manifest")).expect("a manifest");
    for (adapter, built) in [("dicomweb", &from_orthanc), ("dimse", &from_dimse)] {
        assert_eq!(read(built).referenced(), read(&from_files).referenced(), "{adapter}: the same instances");
        for tag in COPIED {
            assert_eq!(dump(built, tag), dump(&from_files, tag), "{adapter}: ({tag}) differs");
        }
        if let Some(code) = expect_procedure {
            let sequence = dump(built, "0008,1032");
            assert!(sequence.contains(code), "{adapter}: the Procedure Code Sequence reached the manifest: {sequence}");
        }
    }
}

#[test]
fn a_manifest_from_orthanc_copies_what_the_images_say() {
    let dir = tempfile::tempdir().expect("temp dir");
    let overrides = StudyOverrides {
        patient_id: Some("DW-1".to_owned()),
        patient_name: Some("Web^Dicom".to_owned()),
        accession_number: Some("ACCDW1".to_owned()),
        procedure_code: Some(("CTCAP".to_owned(), "99SEH".to_owned(), "CT chest abdomen pelvis".to_owned())),
        ..StudyOverrides::default()
    };
    let template = &hie_testkit::fixtures::IDS_DEPT024_A.images()[0];
    let study = hie_testkit::generate_study_with(template, 3, 2, dir.path(), &overrides);
    same_manifest_from_every_adapter(dir.path(), &study.study_instance_uid, Some("CTCAP"));
}

#[test]
fn a_nist_fixture_from_orthanc_matches_its_files() {
    let fixture = hie_testkit::fixtures::IDS_DEPT002_A;
    let images = fixture.images();
    let folder = images[0].parent().expect("the images folder");
    same_manifest_from_every_adapter(folder, fixture.study_instance_uid, None);
}
