//! `hie-edge kos build` as an integration engineer runs it: against the quickstart's folder PACS
//! (the bundled samples), the manifest passes `dciodvfy -new`, references exactly what the NIST
//! fixture's own manifest references, and carries the configured Retrieve Location UID; an
//! unknown study or an unreachable PACS exits 1 with a message that says so, and a PACS
//! configured without its address exits 64.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hie_e2e::{quickstart_config, workspace_root};
use hie_kos::{ManifestSummary, read_manifest};

/// (fixture folder, Study Instance UID) of the studies bundled under `samples/dicom/`.
const STUDIES: [(&str, &str); 2] = [
    ("IDS-DEPT002-a", "1.3.6.1.4.1.21367.201599.1.201604020954059"),
    ("IDS-DEPT024-a", "1.3.6.1.4.1.21367.201599.1.201604020956016"),
];

/// `[node] repository_unique_id` of config/quickstart.toml.
const QUICKSTART_REPOSITORY: &str = "1.2.840.99999.1.2";

/// `kos build` with the quickstart config, run from the workspace root (the config's paths are
/// relative to it), without the developer's own overrides.
fn kos_build(study: &str, out: &Path, env: &[(&str, &str)]) -> Output {
    hie_e2e::init!();
    let mut c = Command::new(hie_e2e::broker_exe());
    for (k, _) in std::env::vars() {
        if k.starts_with("HIE_EDGE__") {
            c.env_remove(k);
        }
    }
    c.current_dir(workspace_root())
        .args(["kos", "build", "--config"])
        .arg(quickstart_config())
        .args(["--study", study, "--out"])
        .arg(out)
        .envs(env.iter().copied());
    c.output().expect("run kos build")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn fixture_kos(folder: &str) -> PathBuf {
    workspace_root().join("crates/hie-kos/test_data/studies").join(folder).join("kos.dcm")
}

fn manifest(path: &Path) -> ManifestSummary {
    read_manifest(&std::fs::read(path).expect("read the manifest")).expect("our manifest reads back")
}

/// `dciodvfy -new` exits 0 and prints no error.
fn assert_dciodvfy_clean(path: &Path) {
    let o = Command::new("dciodvfy").arg("-new").arg(path).output().expect("run dciodvfy (dicom3tools)");
    let report = text(&o);
    assert!(o.status.success(), "dciodvfy exit {:?}: {report}", o.status);
    let errors: Vec<&str> = report.lines().filter(|line| line.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors: {errors:#?}");
}

#[test]
fn manifests_of_the_sample_studies_are_valid_and_match_the_fixtures() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (folder, study) in STUDIES {
        let out = dir.path().join(format!("{folder}.dcm"));
        let o = kos_build(study, &out, &[]);
        assert!(o.status.success(), "{folder}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.lines().count(), 1, "one line on success: {stdout}");
        assert!(stdout.contains(study) && stdout.contains(&out.display().to_string()), "{stdout}");
        assert_dciodvfy_clean(&out);

        let ours = manifest(&out);
        let theirs = read_manifest(&std::fs::read(fixture_kos(folder)).expect("fixture kos.dcm")).expect("fixture");
        assert_eq!(ours.referenced(), theirs.referenced(), "{folder}: referenced instances differ");
        assert_eq!(ours.study_instance_uid, theirs.study_instance_uid, "{folder}");
        assert_eq!(ours.patient_id, theirs.patient_id, "{folder}");
        assert_eq!(ours.accession_number, theirs.accession_number, "{folder}");
        assert!(stdout.contains(&format!("{} instances", ours.n_instances())), "{stdout}");
        for series in &ours.series {
            assert_eq!(series.retrieve_ae_title.as_deref(), Some("HIE_EDGE"), "{folder}");
            assert_eq!(series.retrieve_location_uid.as_deref(), Some(QUICKSTART_REPOSITORY), "{folder}");
        }
    }
}

#[test]
fn an_environment_override_changes_the_retrieve_location() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("kos.dcm");
    let repository = "1.2.840.99999.7.7";
    let (_, study) = STUDIES[1];
    let o = kos_build(study, &out, &[("HIE_EDGE__NODE__REPOSITORY_UNIQUE_ID", repository)]);
    assert!(o.status.success(), "{}", text(&o));
    let ours = manifest(&out);
    assert!(!ours.series.is_empty());
    for series in &ours.series {
        assert_eq!(series.retrieve_location_uid.as_deref(), Some(repository));
    }
}

#[test]
fn an_unknown_study_exits_1_and_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("kos.dcm");
    let study = "1.2.840.99999.404.1";
    let o = kos_build(study, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(study), "{}", text(&o));
    assert!(!out.exists(), "nothing written for an unknown study");
}

#[test]
fn a_missing_pacs_folder_exits_1_as_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("kos.dcm");
    let missing = dir.path().join("no-such-pacs");
    let missing = missing.to_str().expect("UTF-8 temp path");
    let o = kos_build(STUDIES[0].1, &out, &[("HIE_EDGE__PACS__PATH", missing)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).to_lowercase().contains("unreachable"), "{}", text(&o));
}

#[test]
fn a_dicomweb_pacs_that_is_down_exits_1_as_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("kos.dcm");
    // A port nobody listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}/dicom-web");
    let o = kos_build(STUDIES[0].1, &out, &[("HIE_EDGE__PACS__KIND", "dicomweb"), ("HIE_EDGE__PACS__URL", &url)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("PACS unreachable") && text(&o).contains(&url), "{}", text(&o));
    assert!(!out.exists());
}

#[test]
fn a_dimse_pacs_without_its_address_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("kos.dcm");
    let o = kos_build(STUDIES[0].1, &out, &[("HIE_EDGE__PACS__KIND", "dimse")]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    for key in ["pacs.ae_title", "pacs.host"] {
        assert!(text(&o).contains(key), "{key}: {}", text(&o));
    }
}
