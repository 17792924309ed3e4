//! Issue 4's faults, through a fault proxy: two brokers, one with `[registry] kind = "builtin"`
//! acting as the registry (and its ITI-8 feed listener), the other, the broker under test, with
//! `kind = "remote"` publishing to the first through an HTTPS fault proxy (mutual TLS on both
//! sides: the remote broker trusts the registry's CA and presents a client certificate it
//! issued), its identity feed through a TCP fault proxy. This also exercises `remote` mode.
//!
//! - The registry down while five studies of three patients are queued: nothing is lost, all are
//!   published once it is back, each patient's in the order they were queued.
//! - The answer to an ITI-41 dropped after the registry committed: exactly one DocumentEntry, the
//!   submission done with the ITI-18 confirmation; the same for a replacement (RPLC).
//! - XDSUnknownPatientId: the study arrives before the ADT and the feed is down: the submission
//!   waits (queued, saying why), then goes through once the feed reaches the registry. And a
//!   patient known by MRN before the affinity domain's ID arrives (an A08 links it later).
//! - Metadata errors (a profile that maps the study's procedure to nothing): that submission
//!   fails naming the attribute; another patient's study, and the patient's other study, publish.
//!
//! Every exchange the proxy forwarded (requests exactly as the broker sent them, answers exactly
//! as the registry gave them) passes xmllint against the IHE schemas.

use std::path::Path;

use hie_e2e::proxy::{Fault, FaultProxy, HttpExchange, HttpsProxyKeys};
use hie_e2e::{BrokerOptions, BrokerProc, Engine, wait_until};
use hie_testkit::{Orthanc, StudyOverrides};
use serde_json::Value;

use crate::publishing::*;

/// The registry broker, the broker under test in remote mode, and the proxies between them.
struct Pair {
    registry: BrokerProc,
    https: FaultProxy,
    feed: FaultProxy,
    source: BrokerProc,
    _empty_pacs: tempfile::TempDir,
}

impl Pair {
    fn start(orthanc: &Orthanc, extra: &[(&str, &str)]) -> Pair {
        hie_e2e::init!();
        let empty_pacs = tempfile::tempdir().expect("temp dir");
        // The registry broker manifests nothing: an empty folder, never polled.
        let registry = BrokerProc::start_with(
            BrokerOptions::new(Engine::Sqlite)
                .env("HIE_EDGE__NODE__NAME", "registry")
                .env("HIE_EDGE__PACS__PATH", &empty_pacs.path().display().to_string())
                .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0"),
        );
        let pki = registry.pki_dir();
        let https = FaultProxy::start_https(registry.https_addr, &HttpsProxyKeys::of_dev_pki(&pki));
        let feed = FaultProxy::start(registry.feed_addr);
        let file = |name: &str| pki.join(name).display().to_string();
        let (registry_url, repository_url, feed_url) = (
            format!("https://{}/xds/registry", https.addr),
            format!("https://{}/xds/repository", https.addr),
            format!("mllp://{}", feed.addr),
        );
        let mut settings: Vec<(&str, String)> = vec![
            ("HIE_EDGE__NODE__NAME", "source".to_owned()),
            ("HIE_EDGE__REGISTRY__KIND", "remote".to_owned()),
            ("HIE_EDGE__REGISTRY__REGISTRY_URL", registry_url),
            ("HIE_EDGE__REGISTRY__REPOSITORY_URL", repository_url),
            ("HIE_EDGE__REGISTRY__FEED", feed_url),
            ("HIE_EDGE__REGISTRY__CERTIFICATE", file("client.pem")),
            ("HIE_EDGE__REGISTRY__PRIVATE_KEY", file("client.key")),
            ("HIE_EDGE__REGISTRY__SERVER_CA", file("ca.pem")),
            ("HIE_EDGE__REGISTRY__TIMEOUT_SECS", "10".to_owned()),
        ];
        settings.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
        let settings: Vec<(&str, &str)> = settings.iter().map(|(key, value)| (*key, value.as_str())).collect();
        let source = publishing_broker(Engine::Sqlite, orthanc, &settings);
        Pair { registry, https, feed, source, _empty_pacs: empty_pacs }
    }

    /// The ITI-41 exchanges the proxy saw, in order.
    fn provides(&self) -> Vec<HttpExchange> {
        self.https.exchanges().into_iter().filter(|exchange| exchange.action().contains("ProvideAndRegister")).collect()
    }

    /// Every exchange the proxy forwarded passes xmllint: the broker's requests as sent (MTOM with
    /// the KOS attached, or plain), the registry's answers as given.
    fn assert_wire_valid(&self) {
        let exchanges = self.https.exchanges();
        assert!(!exchanges.is_empty(), "nothing went through the proxy");
        for (index, exchange) in exchanges.iter().enumerate() {
            let action = exchange.action();
            if let Err(report) = validate(&exchange.request_content_type(), &exchange.request_body) {
                panic!("exchange {index} ({action}): the broker's request: {report}");
            }
            if let Err(report) = validate(&exchange.response_content_type(), &exchange.response_body) {
                panic!("exchange {index} ({action}): the registry's answer: {report}");
            }
        }
    }
}

/// A study for `patient` uploaded to Orthanc; returns its UID.
fn upload(orthanc: &Orthanc, patient: &Patient, n_instances: usize, dir: &Path) -> String {
    let accession = format!("ACC{}", &hie_e2e::unique_suffix()[..10]);
    let study = study_for(patient, &accession, n_instances, None, dir);
    orthanc.upload_all(&study.paths());
    study.study_instance_uid
}

fn one_submission(broker: &BrokerProc, study: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let rows = wait_submissions(broker, study, what, |rows| rows.len() == 1 && done(&rows[0]));
    rows.into_iter().next().unwrap_or_default()
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |row| text(row, "state") == state
}

#[test]
fn registry_down_queues_and_drains_in_each_patients_order() {
    let orthanc = Orthanc::start();
    let pair = Pair::start(&orthanc, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let patients = [Patient::new("DOWN1"), Patient::new("DOWN2"), Patient::new("DOWN3")];
    for patient in &patients {
        send_adt(&pair.source, &patient.adt("A04", true));
    }
    pair.https.set(Fault::Down);
    // Five studies: two for the first and second patients, one for the third, uploaded one
    // after the other so that each patient's are queued in a known order.
    let mut studies: Vec<(usize, String)> = Vec::new();
    for (index, patient_index) in [0, 1, 0, 2, 1].into_iter().enumerate() {
        let uid = upload(&orthanc, &patients[patient_index], 2, &dir.path().join(index.to_string()));
        one_submission(&pair.source, &uid, "queued while the registry is down", |row| text(row, "state") == "queued");
        studies.push((patient_index, uid));
    }
    // Each patient's first study is tried (and retried); the others wait behind it.
    for patient_index in 0..patients.len() {
        let Some((_, uid)) = studies.iter().find(|(index, _)| *index == patient_index) else { continue };
        let row = one_submission(&pair.source, uid, "retried while the registry is down", |row| {
            row["attempts"].as_i64().unwrap_or(0) >= 2
        });
        assert_eq!(text(&row, "state"), "queued", "patient {patient_index}: {:#}", without_exchange(&row));
        assert!(!text(&row, "last_error").is_empty(), "the last error says why: {:#}", without_exchange(&row));
    }
    assert!(pair.https.refused() >= 6, "the broker kept trying: {} connections refused", pair.https.refused());
    for (_, uid) in &studies {
        assert_eq!(text(&pair.source.submissions_of(uid)[0], "state"), "queued", "nothing settles while down");
    }

    pair.https.set(Fault::Pass);
    let mut submitted: Vec<(usize, i64, String)> = Vec::new();
    for (patient_index, uid) in &studies {
        let row = one_submission(&pair.source, uid, "published after the registry came back", state_is("done"));
        submitted.push((*patient_index, row["id"].as_i64().unwrap_or_default(), text(&row, "document_unique_id")));
    }
    // The registry registered each patient's manifests in the order they were queued.
    let registered: Vec<String> = pair
        .provides()
        .iter()
        .filter(|exchange| exchange.status() == 200 && exchange.response_body.windows(7).any(|w| w == b"Success"))
        .filter_map(|exchange| {
            submitted
                .iter()
                .find(|(_, _, unique_id)| {
                    exchange.request_body.windows(unique_id.len()).any(|w| w == unique_id.as_bytes())
                })
                .map(|(_, _, unique_id)| unique_id.clone())
        })
        .collect();
    assert_eq!(registered.len(), 5, "each manifest registered once: {registered:?}");
    for (patient_index, patient) in patients.iter().enumerate() {
        let mut queued: Vec<&(usize, i64, String)> =
            submitted.iter().filter(|(index, _, _)| *index == patient_index).collect();
        queued.sort_by_key(|(_, id, _)| *id);
        let queued: Vec<&String> = queued.iter().map(|(_, _, unique_id)| unique_id).collect();
        let order: Vec<&String> = registered.iter().filter(|unique_id| queued.contains(unique_id)).collect();
        assert_eq!(order, queued, "patient {patient_index}: registry order vs queue order");
        let found = Registry::of(&pair.registry).find_documents(&patient.ad_cx());
        found.assert_success();
        assert_eq!(found.documents().len(), queued.len(), "nothing lost, nothing twice: {:#}", found.summary);
    }
    pair.assert_wire_valid();
}

#[test]
fn an_answer_lost_after_the_registry_committed_registers_once() {
    let orthanc = Orthanc::start();
    let pair = Pair::start(&orthanc, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let patient = Patient::new("LOST");
    send_adt(&pair.source, &patient.adt("A04", true));
    let accession = format!("ACC{}", &hie_e2e::unique_suffix()[..10]);

    pair.https.drop_next_answers_to("ProvideAndRegister", 1);
    let study = study_for(&patient, &accession, 2, None, &dir.path().join("v1"));
    let uid = study.study_instance_uid.clone();
    orthanc.upload_all(&study.paths());
    let v1 = one_submission(&pair.source, &uid, "done after the lost answer", state_is("done"));
    assert_eq!(pair.https.dropped(), 1);
    assert_eq!(v1["attempts"], 2, "{:#}", without_exchange(&v1));
    let note = text(&v1, "note");
    assert!(note.contains("ITI-18") && note.contains("XDSDuplicateUniqueIdInRegistry"), "{note}");
    let provides = pair.provides();
    assert_eq!(provides.len(), 2, "the ITI-41 and its retry");
    assert!(
        provides[0].dropped
            && String::from_utf8_lossy(&provides[0].response_body).contains("ResponseStatusType:Success")
    );
    assert!(String::from_utf8_lossy(&provides[1].response_body).contains("XDSDuplicateUniqueIdInRegistry"));
    let registry = Registry::of(&pair.registry);
    let v1_unique_id = text(&v1, "document_unique_id");
    let found = registry.find_documents(&patient.ad_cx());
    assert_eq!(found.documents().len(), 1, "exactly one DocumentEntry: {:#}", found.summary);
    assert_eq!(registry.get_documents(&[&v1_unique_id]).documents().len(), 1);

    // The same for a replacement: the RPLC committed, its answer lost.
    pair.https.drop_next_answers_to("ProvideAndRegister", 1);
    let later = study_for(&patient, &accession, 1, Some(&uid), &dir.path().join("v2"));
    orthanc.upload_all(&later.paths());
    let rows = wait_submissions(&pair.source, &uid, "version 2 done after the lost answer", |rows| {
        rows.len() == 2 && text(&rows[1], "state") == "done"
    });
    assert_eq!(pair.https.dropped(), 2);
    let v2_unique_id = text(&rows[1], "document_unique_id");
    let found = registry.find_documents(&patient.ad_cx());
    let documents = found.documents();
    assert_eq!(documents.len(), 2, "version 1 and one version 2: {:#}", found.summary);
    for document in &documents {
        let expected =
            if external_id(document, DOCUMENT_UNIQUE_ID) == v1_unique_id { STATUS_DEPRECATED } else { STATUS_APPROVED };
        assert_eq!(document["status"], expected, "{document:#}");
    }
    assert_eq!(text(&rows[1], "replaced_unique_id"), v1_unique_id, "{:#}", without_exchange(&rows[1]));
    assert!(documents.iter().any(|document| external_id(document, DOCUMENT_UNIQUE_ID) == v2_unique_id));
    pair.assert_wire_valid();
}

#[test]
fn an_unknown_patient_waits_for_the_identity_feed() {
    let orthanc = Orthanc::start();
    // A parked submission asks again after a quarter of its wait, at most the longest backoff,
    // unless an item of its own key moves; this one is keyed by its study (queued before the ADT),
    // so the feed does not wake it.
    let pair = Pair::start(&orthanc, &[("HIE_EDGE__STORE__OUTBOX_BACKOFF_MAX_SECS", "4")]);
    let dir = tempfile::tempdir().expect("temp dir");
    let patient = Patient::new("UNKNOWN");
    pair.feed.set(Fault::Down);

    // The study arrives before any ADT: the broker can't name the patient to the registry yet.
    let uid = upload(&orthanc, &patient, 2, dir.path());
    let row = one_submission(&pair.source, &uid, "waiting for the ADT", |row| {
        text(row, "last_error").contains("affinity-domain ID")
    });
    assert_eq!(text(&row, "state"), "queued");
    assert!(pair.provides().is_empty(), "nothing sent without the affinity-domain ID");

    // The ADT links the patient, but the feed is down: the registry answers XDSUnknownPatientId.
    send_adt(&pair.source, &patient.adt("A04", true));
    let row = one_submission(&pair.source, &uid, "XDSUnknownPatientId from the registry", |row| {
        row["error_codes"].as_array().is_some_and(|codes| codes.iter().any(|code| code == "XDSUnknownPatientId"))
    });
    assert_eq!(text(&row, "state"), "queued", "it waits for the feed: {:#}", without_exchange(&row));
    assert!(text(&row, "last_error").contains("XDSUnknownPatientId"), "{:#}", without_exchange(&row));
    // Parked, not retried to exhaustion: its outbox item waits without using up attempts.
    let parked = wait_until(
        SETTLE,
        || format!("the submission's outbox item parked: {}", pair.source.get("/api/outbox?state=pending").1),
        || {
            let items = pair.source.get_json("/api/outbox?state=pending");
            let items = items.as_array()?.clone();
            items.into_iter().find(|item| item["topic"] == "xds.publish" && item["parked"] == true)
        },
    );
    std::thread::sleep(std::time::Duration::from_secs(10));
    let items = pair.source.get_json("/api/outbox?state=pending");
    let same = items.as_array().and_then(|items| items.iter().find(|item| item["id"] == parked["id"]).cloned());
    let same = same.expect("the parked item is still pending while the feed is down");
    // Two park delays or more have passed: a retried item would count an attempt for each; a
    // parked one counts only the attempt in flight, if any.
    for item in [&parked, &same] {
        assert!(item["attempts"].as_i64().is_some_and(|n| n <= 1), "parking uses up no attempt: {item:#}");
    }
    assert!(same["last_error"].as_str().unwrap_or_default().contains("XDSUnknownPatientId"), "{same:#}");

    pair.feed.set(Fault::Pass);
    let row = one_submission(&pair.source, &uid, "published after the feed", state_is("done"));
    let found = Registry::of(&pair.registry).find_documents(&patient.ad_cx());
    assert_eq!(found.documents().len(), 1, "{:#}", found.summary);
    let provides = pair.provides();
    let last = provides.last().expect("an ITI-41");
    assert!(String::from_utf8_lossy(&last.response_body).contains("ResponseStatusType:Success"));
    assert!(
        provides
            .iter()
            .any(|exchange| String::from_utf8_lossy(&exchange.response_body).contains("XDSUnknownPatientId")),
        "an earlier attempt was refused for the unknown patient"
    );
    assert!(row["attempts"].as_i64().unwrap_or(0) >= 3, "{:#}", without_exchange(&row));
    pair.assert_wire_valid();
}

/// A patient the hospital registered by MRN alone (A04) has a study before the affinity domain's ID
/// arrives (A08): the study's submission must not hold up the identity feed that lets it through.
#[test]
fn a_patient_linked_after_their_study_arrived_is_published() {
    let orthanc = Orthanc::start();
    let pair = Pair::start(&orthanc, &[("HIE_EDGE__STORE__OUTBOX_MAX_ATTEMPTS", "12")]);
    let dir = tempfile::tempdir().expect("temp dir");
    let patient = Patient::new("LATE");
    send_adt(&pair.source, &patient.adt("A04", false));
    let uid = upload(&orthanc, &patient, 2, dir.path());
    one_submission(&pair.source, &uid, "waiting for the affinity-domain ID", |row| {
        text(row, "last_error").contains("affinity-domain ID")
    });
    send_adt(&pair.source, &patient.adt("A08", true));
    one_submission(&pair.source, &uid, "published once linked", state_is("done"));
    let found = Registry::of(&pair.registry).find_documents(&patient.ad_cx());
    assert_eq!(found.documents().len(), 1, "{:#}", found.summary);
}

#[test]
fn a_metadata_error_stops_that_study_only() {
    let orthanc = Orthanc::start();
    let profile_dir = tempfile::tempdir().expect("temp dir");
    let profile = regional_profile(profile_dir.path());
    let broker = publishing_broker(Engine::Sqlite, &orthanc, &[("HIE_EDGE__AFFINITY_DOMAIN__PROFILE", &profile)]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (unmapped, other) = (Patient::new("UNMAPPED"), Patient::new("OTHER"));
    send_adt(&broker, &unmapped.adt("A04", true));
    send_adt(&broker, &other.adt("A04", true));

    // No procedure code, and the profile has no default typeCode.
    let bad = upload(&orthanc, &unmapped, 2, &dir.path().join("bad"));
    let failed = one_submission(&broker, &bad, "failed for its metadata", state_is("failed"));
    let error = text(&failed, "last_error");
    assert!(error.contains("metadata") && error.contains("typeCode"), "the unmapped attribute is named: {error}");
    assert_eq!(failed["attempts"], 1, "not retried: {:#}", without_exchange(&failed));

    // Another patient's study, with a mapped procedure code, flows.
    let good = upload_with_procedure(&orthanc, &other, &dir.path().join("good"));
    one_submission(&broker, &good, "the other patient's study published", state_is("done"));
    // So does the same patient's next study: the failure stops that study only.
    let next = upload_with_procedure(&orthanc, &unmapped, &dir.path().join("next"));
    one_submission(&broker, &next, "the patient's other study published", state_is("done"));
    let found = Registry::of(&broker).find_documents(&unmapped.ad_cx());
    assert_eq!(found.documents().len(), 1, "only the mapped study: {:#}", found.summary);

    // A retry by hand is sent again, and fails again for the same reason.
    let (status, body) = broker.post(&format!("/api/submissions/{}/retry", failed["id"]));
    assert_eq!(status, 200, "{body}");
    let again = one_submission(&broker, &bad, "failed again after the retry", |row| {
        text(row, "state") == "failed" && row["attempts"].as_i64() == Some(2)
    });
    assert!(text(&again, "last_error").contains("typeCode"));
}

/// profiles/example-regional.toml and its code set, copied with the quickstart's patient
/// authority; returns the profile's path. It has no `type_code_default`.
fn regional_profile(dir: &Path) -> String {
    let profiles = hie_e2e::workspace_root().join("profiles");
    let text = std::fs::read_to_string(profiles.join("example-regional.toml")).expect("the example profile");
    assert!(!text.contains("\ntype_code_default"), "the example must refuse unmapped procedures");
    let text =
        text.replace("patient_id_authority = \"1.2.840.99999.20.1\"", &format!("patient_id_authority = \"{AD_OID}\""));
    assert!(text.contains(AD_OID), "the example profile's authority line changed");
    let path = dir.join("regional.toml");
    std::fs::write(&path, text).expect("write the profile");
    std::fs::copy(profiles.join("example-regional-codes.xml"), dir.join("example-regional-codes.xml"))
        .expect("copy the codes");
    path.display().to_string()
}

/// A study whose Procedure Code Sequence says IMG^99SEH, which the regional profile maps.
fn upload_with_procedure(orthanc: &Orthanc, patient: &Patient, dir: &Path) -> String {
    let overrides = StudyOverrides {
        patient_id: Some(patient.mrn.clone()),
        patient_name: Some(patient.name.clone()),
        accession_number: Some(format!("ACC{}", &hie_e2e::unique_suffix()[..10])),
        procedure_code: Some(("IMG".to_owned(), "99SEH".to_owned(), "Imaging".to_owned())),
        ..StudyOverrides::default()
    };
    let template = &hie_testkit::fixtures::IDS_DEPT024_A.images()[0];
    let study = hie_testkit::generate_study_with(template, 2, 2, dir, &overrides);
    orthanc.upload_all(&study.paths());
    study.study_instance_uid
}
