//! Issue 4, "a patient merge updates what was published for the merged patient as the profile
//! prescribes", end to end with Orthanc as the PACS, ADT by MLLP and ITI-18 by curl:
//!
//! - `[patient_merge] published = "registry"` (XDS.b), against the built-in registry, which applies
//!   the A40 it is fed (ITI TF-2a 3.8.4.2.3): after the merge ITI-18 finds the study's manifest
//!   under the survivor's affinity-domain ID and none under the prior's, nothing was resent, and a
//!   new series is published as a replacement (RPLC) under the survivor.
//! - `"republish"`, against a registry that ignores merges: a second broker's built-in registry
//!   that the broker under test (`kind = "remote"`, no identity feed of its own) never tells of the
//!   merge; the test feeds it the two patients itself. The A40 alone makes the study's next
//!   version: the entry under the prior patient is Deprecated (ITI-57) and an Approved one, an
//!   original, exists under the survivor.
//! - `"registry"` against that registry: the replacement is refused (XDSPatientIdDoesNotMatch),
//!   and that stops the study, visibly.

use std::path::Path;
use std::process::Command;

use hie_e2e::{BrokerOptions, BrokerProc, Engine, wait_until};
use hie_testkit::Orthanc;
use serde_json::Value;

use crate::publishing::*;

/// `ADT^A40`: `prior` merged into `survivor`, each named by MRN and affinity-domain ID.
fn a40(survivor: &Patient, prior: &Patient) -> Vec<u8> {
    let cx = |patient: &Patient| {
        format!(
            "{}^^^{LOCAL_AUTHORITY}^MR~{}^^^IHEBLUE&{AD_OID}&ISO^PI",
            patient.mrn,
            patient.ad_id.as_deref().unwrap_or_default()
        )
    };
    let control_id = hie_e2e::control_id("MRG");
    hie_e2e::hl7(&[
        &format!("MSH|^~\\&|E2E_RIS|E2E_HOSP|HIE_EDGE|HIE_EDGE|20261201100000||ADT^A40^ADT_A39|{control_id}|P|2.5"),
        "EVN|A40|20261201100000",
        &format!("PID|1||{}||{}||19780324|M", cx(survivor), survivor.name),
        &format!("MRG|{}", cx(prior)),
    ])
}

/// Sends one HL7 message to an MLLP port with python-hl7's `mllp_send`; asserts MSA-1 AA.
fn send_mllp(port: u16, message: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("message.hl7");
    std::fs::write(&file, message).expect("write the message");
    let output = Command::new(hie_e2e::venv_bin("mllp_send"))
        .args(["--loose", "--port", &port.to_string(), "--file"])
        .arg(&file)
        .arg("127.0.0.1")
        .output()
        .expect("run mllp_send");
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success() && answer.contains("MSA|AA"), "not accepted: {answer:?} {output:?}");
}

/// The quickstart profile with `[patient_merge] published = "<policy>"`, in `dir` (its code set
/// beside it); returns its path.
fn profile_with(dir: &Path, policy: &str) -> String {
    let profiles = hie_e2e::workspace_root().join("profiles");
    let text = std::fs::read_to_string(profiles.join("ihe-default.toml")).expect("read the IHE default profile");
    let shipped = "published = \"registry\"";
    assert!(text.contains(shipped), "the IHE default profile names its merge policy");
    let text = text.replace(shipped, &format!("published = \"{policy}\""));
    std::fs::write(dir.join("profile.toml"), text).expect("write the profile");
    std::fs::copy(profiles.join("ihe-default-codes.xml"), dir.join("ihe-default-codes.xml")).expect("copy the codes");
    dir.join("profile.toml").display().to_string()
}

/// ITI-18 FindDocuments for `patient`, schema-checked; the DocumentEntries.
fn documents_of(registry: &Registry, patient: &Patient, what: &str) -> Vec<Value> {
    let found = registry.find_documents(&patient.ad_cx());
    found.assert_success();
    found.assert_schema_valid(what);
    found.documents()
}

fn by_unique_id(documents: &[Value], unique_id: &str) -> Value {
    documents
        .iter()
        .find(|document| external_id(document, DOCUMENT_UNIQUE_ID) == unique_id)
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {unique_id}: {documents:#?}"))
}

/// The RPLC associations whose source is `entry_uuid`.
fn replacements_of(registry: &Registry, entry_uuid: &str) -> Vec<Value> {
    let associations = registry.get_associations(entry_uuid);
    associations.assert_success();
    associations
        .associations()
        .into_iter()
        .filter(|association| association["associationType"] == ASSOCIATION_RPLC)
        .collect()
}

fn registry_policy(engine: Engine) {
    let orthanc = Orthanc::start();
    let broker = publishing_broker(engine, &orthanc, &[]);
    let registry = Registry::of(&broker);
    let dir = tempfile::tempdir().expect("temp dir");
    let (prior, survivor) = (Patient::new("PRIOR"), Patient::new("SURV"));
    send_adt(&broker, &prior.adt("A04", true));
    send_adt(&broker, &survivor.adt("A04", true));
    let accession = format!("ACC{}", &hie_e2e::unique_suffix()[..10]);
    let study = study_for(&prior, &accession, 3, None, &dir.path().join("v1"));
    let uid = study.study_instance_uid.clone();
    orthanc.upload_all(&study.paths());
    let rows = wait_submissions(&broker, &uid, "version 1 published", |rows| {
        rows.len() == 1 && text(&rows[0], "state") == "done"
    });
    let v1_unique_id = text(&rows[0], "document_unique_id");
    assert_eq!(documents_of(&registry, &prior, "FindDocuments for the prior patient").len(), 1);

    // The merge: the registry moves the prior patient's documents (the A40 feed does it).
    send_adt(&broker, &a40(&survivor, &prior));
    let moved = wait_until(
        SETTLE,
        || format!("the manifest under the survivor after the A40\nbroker log:\n{}", broker.stderr_tail(30)),
        || {
            let documents = registry.find_documents(&survivor.ad_cx()).documents();
            (documents.len() == 1).then_some(documents)
        },
    );
    let entry = &moved[0];
    assert_eq!(external_id(entry, DOCUMENT_UNIQUE_ID), v1_unique_id, "{entry:#}");
    assert_eq!(external_id(entry, DOCUMENT_PATIENT_ID), survivor.ad_cx(), "{entry:#}");
    assert_eq!(entry["status"], STATUS_APPROVED, "{entry:#}");
    let v1_entry_uuid = text(entry, "id");
    let under_prior = documents_of(&registry, &prior, "FindDocuments for the prior patient after the merge");
    assert!(under_prior.is_empty(), "nothing is left under the prior patient: {under_prior:#?}");
    // Nothing was resent: the study is where it was.
    let rows = broker.submissions_of(&uid);
    assert_eq!(rows.len(), 1, "{:#?}", rows.iter().map(without_exchange).collect::<Vec<_>>());

    // A new series: the next version replaces the moved one by RPLC under the survivor.
    let later = study_for(&prior, &accession, 2, Some(&uid), &dir.path().join("v2"));
    orthanc.upload_all(&later.paths());
    let rows = wait_submissions(&broker, &uid, "version 2 published", |rows| {
        rows.len() == 2 && matches!(text(&rows[1], "state").as_str(), "done" | "failed")
    });
    let v2 = &rows[1];
    assert_eq!(text(v2, "state"), "done", "{:#}", without_exchange(v2));
    assert_eq!(text(v2, "replaced_unique_id"), v1_unique_id, "{:#}", without_exchange(v2));
    let kos2 = manifest_bytes(&broker, &format!("/api/studies/{uid}/manifests/2"));
    assert_recorded_exchange_valid(v2, Some(&kos2), "ITI-41 of version 2");
    let v2_unique_id = text(v2, "document_unique_id");
    let documents = documents_of(&registry, &survivor, "FindDocuments for the survivor after version 2");
    assert_eq!(documents.len(), 2, "{documents:#?}");
    let (old, new) = (by_unique_id(&documents, &v1_unique_id), by_unique_id(&documents, &v2_unique_id));
    assert_eq!(old["status"], STATUS_DEPRECATED, "version 1 deprecated by the RPLC");
    assert_eq!(new["status"], STATUS_APPROVED);
    assert_eq!(external_id(&new, DOCUMENT_PATIENT_ID), survivor.ad_cx(), "{new:#}");
    let replacements = replacements_of(&registry, &text(&new, "id"));
    assert_eq!(replacements.len(), 1, "{replacements:#?}");
    assert_eq!(replacements[0]["targetObject"], v1_entry_uuid.as_str(), "RPLC targets the moved entry");
    assert!(documents_of(&registry, &prior, "FindDocuments for the prior patient at the end").is_empty());
}

/// The broker under test (`kind = "remote"`, no identity feed of its own, so no registry hears
/// of its merges) publishing to `registry`'s built-in registry directly, under `policy`.
struct MergeBlindRegistry {
    registry: BrokerProc,
    source: BrokerProc,
    _dirs: [tempfile::TempDir; 2],
}

impl MergeBlindRegistry {
    fn start(orthanc: &Orthanc, engine: Engine, policy: &str) -> MergeBlindRegistry {
        hie_e2e::init!();
        let empty_pacs = tempfile::tempdir().expect("temp dir");
        // The registry broker manifests nothing: an empty folder, never polled.
        let registry = BrokerProc::start_with(
            BrokerOptions::new(Engine::Sqlite)
                .env("HIE_EDGE__NODE__NAME", "registry")
                .env("HIE_EDGE__PACS__PATH", &empty_pacs.path().display().to_string())
                .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0"),
        );
        let profile_dir = tempfile::tempdir().expect("temp dir");
        let profile = profile_with(profile_dir.path(), policy);
        let pki = registry.pki_dir();
        let file = |name: &str| pki.join(name).display().to_string();
        let settings: Vec<(&str, String)> = vec![
            ("HIE_EDGE__NODE__NAME", "source".to_owned()),
            ("HIE_EDGE__AFFINITY_DOMAIN__PROFILE", profile),
            ("HIE_EDGE__REGISTRY__KIND", "remote".to_owned()),
            ("HIE_EDGE__REGISTRY__REGISTRY_URL", format!("https://{}/xds/registry", registry.https_addr)),
            ("HIE_EDGE__REGISTRY__REPOSITORY_URL", format!("https://{}/xds/repository", registry.https_addr)),
            // No feed: identity changes are acknowledged locally; the registry never merges.
            ("HIE_EDGE__REGISTRY__FEED", String::new()),
            ("HIE_EDGE__REGISTRY__CERTIFICATE", file("client.pem")),
            ("HIE_EDGE__REGISTRY__PRIVATE_KEY", file("client.key")),
            ("HIE_EDGE__REGISTRY__SERVER_CA", file("ca.pem")),
            ("HIE_EDGE__REGISTRY__TIMEOUT_SECS", "10".to_owned()),
        ];
        let settings: Vec<(&str, &str)> = settings.iter().map(|(key, value)| (*key, value.as_str())).collect();
        let source = publishing_broker(engine, orthanc, &settings);
        MergeBlindRegistry { registry, source, _dirs: [empty_pacs, profile_dir] }
    }

    /// Both patients known to the broker and to the registry (fed directly), a study for `prior`
    /// published under the prior's ID, then the A40 to the broker. Returns the study's UID, its
    /// accession and version 1's uniqueId.
    fn published_then_merged(
        &self,
        orthanc: &Orthanc,
        prior: &Patient,
        survivor: &Patient,
        dir: &Path,
    ) -> (String, String, String) {
        for patient in [prior, survivor] {
            send_adt(&self.source, &patient.adt("A04", true));
            send_mllp(self.registry.feed_addr.port(), &patient.adt("A04", true));
        }
        let accession = format!("ACC{}", &hie_e2e::unique_suffix()[..10]);
        let study = study_for(prior, &accession, 3, None, &dir.join("v1"));
        let uid = study.study_instance_uid.clone();
        orthanc.upload_all(&study.paths());
        let rows = wait_submissions(&self.source, &uid, "version 1 published", |rows| {
            rows.len() == 1 && text(&rows[0], "state") == "done"
        });
        let v1_unique_id = text(&rows[0], "document_unique_id");
        let registry = Registry::of(&self.registry);
        let documents = documents_of(&registry, prior, "FindDocuments for the prior patient");
        assert_eq!(documents.len(), 1, "{documents:#?}");
        send_adt(&self.source, &a40(survivor, prior));
        (uid, accession, v1_unique_id)
    }
}

fn republish_policy(engine: Engine) {
    let orthanc = Orthanc::start();
    let pair = MergeBlindRegistry::start(&orthanc, engine, "republish");
    let registry = Registry::of(&pair.registry);
    let dir = tempfile::tempdir().expect("temp dir");
    let (prior, survivor) = (Patient::new("PRIOR"), Patient::new("SURV"));
    let (uid, _, v1_unique_id) = pair.published_then_merged(&orthanc, &prior, &survivor, dir.path());

    // Nothing changed in the PACS: the merge alone makes version 2.
    let rows = wait_submissions(&pair.source, &uid, "version 2 published after the merge", |rows| {
        rows.len() == 2 && matches!(text(&rows[1], "state").as_str(), "done" | "failed")
    });
    let v2 = &rows[1];
    assert_eq!(text(v2, "state"), "done", "{:#}", without_exchange(v2));
    assert_eq!(v2["manifest_version"], 2, "{:#}", without_exchange(v2));
    let v2_unique_id = text(v2, "document_unique_id");
    assert_ne!(v2_unique_id, v1_unique_id, "a new KOS SOP Instance UID");
    assert_eq!(text(v2, "replaced_unique_id"), "", "no RPLC across patients: {:#}", without_exchange(v2));
    let note = text(v2, "note");
    assert!(
        note.contains(&v1_unique_id) && note.contains("registered under another patient") && note.contains("original"),
        "the note says what was done: {note:?}"
    );
    let kos2 = manifest_bytes(&pair.source, &format!("/api/studies/{uid}/manifests/2"));
    assert_eq!(sop_instance_uid(&kos2), v2_unique_id, "uniqueId = the new KOS SOP Instance UID");
    assert_recorded_exchange_valid(v2, Some(&kos2), "ITI-41 of version 2");
    let detail = pair.source.get_json(&format!("/api/studies/{uid}"));
    assert_eq!(detail["manifests"][1]["n_instances"], 3, "the same instances: {detail:#}");

    let under_prior = documents_of(&registry, &prior, "FindDocuments for the prior patient after the merge");
    assert_eq!(under_prior.len(), 1, "{under_prior:#?}");
    assert_eq!(external_id(&under_prior[0], DOCUMENT_UNIQUE_ID), v1_unique_id);
    assert_eq!(under_prior[0]["status"], STATUS_DEPRECATED, "the entry under the prior patient is deprecated");
    let under_survivor = documents_of(&registry, &survivor, "FindDocuments for the survivor after the merge");
    assert_eq!(under_survivor.len(), 1, "{under_survivor:#?}");
    let entry = &under_survivor[0];
    assert_eq!(external_id(entry, DOCUMENT_UNIQUE_ID), v2_unique_id, "{entry:#}");
    assert_eq!(entry["status"], STATUS_APPROVED, "{entry:#}");
    assert_eq!(external_id(entry, DOCUMENT_PATIENT_ID), survivor.ad_cx(), "{entry:#}");
    assert_eq!(slot(entry, "sourcePatientId"), vec![prior.local_cx()], "the images still name the prior MRN");
    assert!(replacements_of(&registry, &text(entry, "id")).is_empty(), "an original, not a replacement");

    // Settled: no further version is made for the merge.
    // The refresh makes the study pending at once (before it is answered); once it is current
    // again the scheduler has looked at it.
    studies_request(&pair.source, &uid);
    wait_until(
        SETTLE,
        || format!("the study rebuilt after the refresh\nbroker log:\n{}", pair.source.stderr_tail(30)),
        || (pair.source.get_json(&format!("/api/studies/{uid}"))["state"] == "current").then_some(()),
    );
    assert_eq!(pair.source.submissions_of(&uid).len(), 2, "one new version for one merge");
}

/// Under "registry" a registry that ignores merges refuses the replacement across patients.
fn registry_policy_against_a_merge_blind_registry(engine: Engine) {
    let orthanc = Orthanc::start();
    let pair = MergeBlindRegistry::start(&orthanc, engine, "registry");
    let registry = Registry::of(&pair.registry);
    let dir = tempfile::tempdir().expect("temp dir");
    let (prior, survivor) = (Patient::new("PRIOR"), Patient::new("SURV"));
    let (uid, accession, v1_unique_id) = pair.published_then_merged(&orthanc, &prior, &survivor, dir.path());
    let later = study_for(&prior, &accession, 2, Some(&uid), &dir.path().join("v2"));
    orthanc.upload_all(&later.paths());
    let rows = wait_submissions(&pair.source, &uid, "version 2 refused", |rows| {
        rows.len() == 2 && matches!(text(&rows[1], "state").as_str(), "done" | "failed")
    });
    let v2 = &rows[1];
    assert_eq!(text(v2, "state"), "failed", "{:#}", without_exchange(v2));
    let refused =
        v2["error_codes"].as_array().is_some_and(|codes| codes.iter().any(|code| code == "XDSPatientIdDoesNotMatch"));
    assert!(refused, "refused for the patient: {:#}", without_exchange(v2));
    let under_prior = documents_of(&registry, &prior, "FindDocuments for the prior patient");
    assert_eq!(under_prior.len(), 1, "{under_prior:#?}");
    assert_eq!(external_id(&under_prior[0], DOCUMENT_UNIQUE_ID), v1_unique_id);
    assert_eq!(under_prior[0]["status"], STATUS_APPROVED, "left as it was");
    assert!(documents_of(&registry, &survivor, "FindDocuments for the survivor").is_empty());
}

/// `POST /api/studies/{uid}/refresh`.
fn studies_request(broker: &BrokerProc, study: &str) {
    let (status, body) = broker.post(&format!("/api/studies/{study}/refresh"));
    assert!((200..300).contains(&status), "refresh: {status} {body}");
}

#[test]
fn registry_sqlite() {
    registry_policy(Engine::Sqlite);
}

#[test]
fn registry_postgres() {
    registry_policy(Engine::Postgres);
}

#[test]
fn republish_sqlite() {
    republish_policy(Engine::Sqlite);
}

#[test]
fn republish_postgres() {
    republish_policy(Engine::Postgres);
}

#[test]
fn registry_policy_refused_by_a_registry_that_ignores_merges() {
    registry_policy_against_a_merge_blind_registry(Engine::Sqlite);
}
