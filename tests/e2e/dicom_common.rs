//! What the DICOM end-to-end modules share: `hie-edge kos build` run as a user runs it,
//! `dciodvfy`, what a manifest references and says, what a fixture study holds, and waiting for
//! a study's state in the broker's REST API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use hie_e2e::{BrokerProc, quickstart_config, workspace_root};
use hie_kos::read_manifest;
use hie_testkit::FixtureStudy;

/// (series, SOP class, SOP instance), as `hie_kos::ManifestSummary::referenced` gives them.
pub type Reference = (String, String, String);

/// The attributes a manifest copies that the tests compare: patient ID, name, birth date and
/// sex, study UID, accession number, study date and time.
pub const KEY_ATTRIBUTES: [(dicom_core::Tag, &str); 8] = [
    (tags::PATIENT_ID, "PatientID"),
    (tags::PATIENT_NAME, "PatientName"),
    (tags::PATIENT_BIRTH_DATE, "PatientBirthDate"),
    (tags::PATIENT_SEX, "PatientSex"),
    (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
    (tags::ACCESSION_NUMBER, "AccessionNumber"),
    (tags::STUDY_DATE, "StudyDate"),
    (tags::STUDY_TIME, "StudyTime"),
];

/// `hie-edge kos build` with the quickstart config and `env` overrides (none from the shell).
pub fn kos_build(study: &str, out: &Path, env: &[(String, String)]) -> Output {
    hie_e2e::init!();
    let mut command = Command::new(hie_e2e::broker_exe());
    for (key, _) in std::env::vars() {
        if key.starts_with("HIE_EDGE__") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(workspace_root())
        .args(["kos", "build", "--config"])
        .arg(quickstart_config())
        .args(["--study", study, "--out"])
        .arg(out)
        .envs(env.iter().map(|(key, value)| (key.as_str(), value.as_str())));
    command.output().expect("run kos build")
}

pub fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Panics unless `dciodvfy -new` exits 0 and prints no error.
pub fn assert_dciodvfy_clean(path: &Path, what: &str) {
    let output = Command::new("dciodvfy").arg("-new").arg(path).output().expect("run dciodvfy (dicom3tools)");
    let report = output_text(&output);
    assert!(output.status.success(), "{what}: dciodvfy exit {:?}: {report}", output.status);
    let errors: Vec<&str> = report.lines().filter(|line| line.starts_with("Error")).collect();
    assert!(errors.is_empty(), "{what}: dciodvfy errors: {errors:#?}");
}

/// What a manifest file references.
pub fn referenced(kos: &Path) -> BTreeSet<Reference> {
    read_manifest(&std::fs::read(kos).expect("read the manifest")).expect("a readable manifest").referenced()
}

/// What the images of `files` are, as a manifest references them.
pub fn references_of(files: &[PathBuf]) -> BTreeSet<Reference> {
    files
        .iter()
        .map(|path| {
            let object = dicom_object::open_file(path).expect("a fixture image");
            let text = |tag| attribute(&object, tag);
            (text(tags::SERIES_INSTANCE_UID), text(tags::SOP_CLASS_UID), text(tags::SOP_INSTANCE_UID))
        })
        .collect()
}

/// A string attribute, trimmed of padding; empty when absent.
pub fn attribute(object: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    object
        .element(tag)
        .ok()
        .and_then(|element| element.to_str().ok())
        .map(|value| value.trim_matches(|c: char| c == '\0' || c == ' ').to_owned())
        .unwrap_or_default()
}

/// The key attributes of a DICOM file, by name.
pub fn key_attributes(path: &Path) -> Vec<(&'static str, String)> {
    let object = dicom_object::open_file(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    KEY_ATTRIBUTES.iter().map(|(tag, name)| (*name, attribute(&object, *tag))).collect()
}

/// What the manifest of `study` must say: the NIST fixture KOS's references and key attributes,
/// or, for a study without one, its own images' (the references of every image, the key
/// attributes of the first).
pub fn expected_manifest(study: &FixtureStudy) -> (BTreeSet<Reference>, Vec<(&'static str, String)>) {
    let images = study.images();
    let from_images = references_of(&images);
    let expected = match study.kos() {
        Some(kos) => {
            let fixture = referenced(&kos);
            assert_eq!(fixture, from_images, "{}: the fixture KOS references the fixture images", study.name);
            (fixture, key_attributes(&kos))
        }
        None => (from_images, key_attributes(&images[0])),
    };
    for name in ["PatientID", "PatientName", "StudyInstanceUID", "StudyDate"] {
        let value = expected.1.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str());
        assert!(value.is_some_and(|value| !value.is_empty()), "{}: the fixture has a {name}", study.name);
    }
    expected
}

/// The split of a study's images by series, in Series Instance UID order.
pub fn images_by_series(study: &FixtureStudy) -> Vec<Vec<PathBuf>> {
    let mut series: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for path in study.images() {
        let object = dicom_object::open_file(&path).expect("a fixture image");
        series.entry(attribute(&object, tags::SERIES_INSTANCE_UID)).or_default().push(path);
    }
    series.into_values().collect()
}

/// `GET /api/studies/{uid}` as JSON; `None` while the broker does not know the study.
pub fn study_json(broker: &BrokerProc, study: &str) -> Option<serde_json::Value> {
    let (status, body) = broker.get(&format!("/api/studies/{study}"));
    match status {
        200 => Some(serde_json::from_str(&body).unwrap_or_else(|error| panic!("{body}: {error}"))),
        404 => None,
        other => panic!("GET /api/studies/{study}: {other} {body}\nbroker log:\n{}", broker.stderr_tail(30)),
    }
}

/// Waits (polling the REST API) until the study's JSON satisfies `done`; panics after `limit`
/// with the last answer and the broker's log.
pub fn wait_for_study(
    broker: &BrokerProc,
    study: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        last = study_json(broker, study);
        if let Some(json) = &last
            && done(json)
        {
            return json.clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("study {study}: not {what} within {limit:?}; last: {last:#?}\nbroker log:\n{}", broker.stderr_tail(60));
}

/// The latest manifest of a study from the broker, written to `dir`.
pub fn fetch_manifest(broker: &BrokerProc, study: &str, dir: &Path, name: &str) -> PathBuf {
    let (status, bytes) = broker.get_bytes(&format!("/api/studies/{study}/manifest"));
    assert_eq!(status, 200, "GET /api/studies/{study}/manifest: {}", String::from_utf8_lossy(&bytes));
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the manifest");
    path
}

/// A counter's value in `/metrics` (the sample line starting with `series`), 0 when absent.
pub fn metric(broker: &BrokerProc, series: &str) -> f64 {
    let (status, text) = broker.get("/metrics");
    assert_eq!(status, 200);
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// `storescu` as a modality (`-aet calling`) to the broker's listener; the tool's output.
pub fn storescu(broker: &BrokerProc, calling: &str, files: &[PathBuf]) -> hie_testkit::ToolOutput {
    let port = broker.dicom_addr().port().to_string();
    let mut args: Vec<String> =
        ["-aet", calling, "-aec", "HIE_EDGE", "127.0.0.1", &port].iter().map(|arg| (*arg).to_owned()).collect();
    args.extend(files.iter().map(|path| path.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    hie_testkit::dcmtk("storescu", &args)
}
