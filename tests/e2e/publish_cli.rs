//! `hie-edge publish --study` and `hie-edge backfill --since` through the binary, next to a running
//! broker that does not poll its PACS (Orthanc), so only the commands make studies known: their
//! exit codes, what they print, and what reaches the built-in registry.

use std::process::Output;

use hie_e2e::{BrokerProc, Engine};
use hie_testkit::Orthanc;

use crate::publishing::*;

fn run(broker: &BrokerProc, args: &[&str]) -> Output {
    let config = hie_e2e::quickstart_config().display().to_string();
    let mut full = vec![args[0], "--config", &config];
    full.extend_from_slice(&args[1..]);
    broker.command(&full).output().expect("run hie-edge")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn not_polling(orthanc: &Orthanc) -> BrokerProc {
    publishing_broker(Engine::Sqlite, orthanc, &[("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0")])
}

#[test]
fn publish_queues_one_study_and_the_broker_publishes_it() {
    let orthanc = Orthanc::start();
    let broker = not_polling(&orthanc);
    let dir = tempfile::tempdir().expect("temp dir");
    let patient = Patient::new("CLI");
    send_adt(&broker, &patient.adt("A04", true));
    let study = study_for(&patient, "ACCCLI1", 2, None, dir.path());
    orthanc.upload_all(&study.paths());
    let uid = study.study_instance_uid.clone();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(broker.submissions_of(&uid).is_empty(), "nothing happens without polling or a request");

    let output = run(&broker, &["publish", "--study", &uid]);
    assert!(output.status.success(), "{} {}", stdout(&output), stderr(&output));
    assert_eq!(stdout(&output).trim(), format!("study {uid}: queued; the broker builds its manifest now"));
    let rows = wait_submissions(&broker, &uid, "published on request", |rows| {
        rows.len() == 1 && text(&rows[0], "state") == "done"
    });
    assert_eq!(text(&rows[0], "kind"), "publish");
    assert_eq!(Registry::of(&broker).find_documents(&patient.ad_cx()).documents().len(), 1);

    // Asking again: the version is unchanged and registered, nothing more is sent.
    let output = run(&broker, &["publish", "--study", &uid]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(broker.submissions_of(&uid).len(), 1, "no second submission for the same version");

    let output = run(&broker, &["publish", "--study", "not-a-uid"]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    let off = broker
        .command(&["publish", "--config", &hie_e2e::quickstart_config().display().to_string(), "--study", &uid])
        .env("HIE_EDGE__REGISTRY__KIND", "")
        .output()
        .expect("run hie-edge");
    assert_eq!(off.status.code(), Some(64), "publishing off is a configuration error");
    assert!(stderr(&off).contains("registry.kind: publishing is off"), "{}", stderr(&off));
}

#[test]
fn backfill_publishes_the_pacs_studies_and_reports_each_outcome() {
    let orthanc = Orthanc::start();
    let mut broker = not_polling(&orthanc);
    let dir = tempfile::tempdir().expect("temp dir");
    let patients = [Patient::new("BF1"), Patient::new("BF2")];
    let mut uids = Vec::new();
    for (index, patient) in patients.iter().enumerate() {
        send_adt(&broker, &patient.adt("A04", true));
        for n in 0..2 {
            let study =
                study_for(patient, &format!("ACCBF{index}{n}"), 1, None, &dir.path().join(format!("{index}-{n}")));
            orthanc.upload_all(&study.paths());
            uids.push(study.study_instance_uid);
        }
    }

    let output = run(&broker, &["backfill", "--since", "2015-01-01", "--stall-timeout", "60"]);
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(output.status.success(), "exit {:?}: {out} {err}", output.status);
    assert!(out.contains("backfill: 4 studies dated 20150101 or later queued"), "{out}");
    assert_eq!(out.lines().last(), Some("backfill: 4 published, 0 failed, 0 gone, 0 not settled"), "{out}");
    for uid in &uids {
        assert_eq!(text(&broker.submissions_of(uid)[0], "state"), "done", "{uid}");
    }
    let registry = Registry::of(&broker);
    for patient in &patients {
        assert_eq!(registry.find_documents(&patient.ad_cx()).documents().len(), 2);
    }

    // Nothing dated on or after the date: nothing to do.
    let output = run(&broker, &["backfill", "--since", "20300101"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("backfill: 0 studies dated 20300101 or later queued"), "{}", stdout(&output));

    let output = run(&broker, &["backfill", "--since", "last tuesday"]);
    assert_eq!(output.status.code(), Some(64), "a bad date is a usage error: {}", stderr(&output));

    // With the broker down nothing moves: every requested study stays pending.
    let stranger = Patient::new("BFX");
    let study = study_for(&stranger, "ACCBFX", 1, None, &dir.path().join("stranger"));
    orthanc.upload_all(&study.paths());
    broker.kill9();
    let output = run(&broker, &["backfill", "--since", "20150101", "--stall-timeout", "3"]);
    assert_eq!(output.status.code(), Some(1), "{} {}", stdout(&output), stderr(&output));
    assert_eq!(stdout(&output).lines().last(), Some("backfill: 0 published, 0 failed, 0 gone, 5 not settled"));
    assert!(stderr(&output).contains("is the broker (hie-edge serve) running?"), "{}", stderr(&output));

    // Back up: the four publish again (unchanged, registered); the study whose patient no ADT
    // linked waits, and says why.
    broker.restart();
    let output = run(&broker, &["backfill", "--since", "20150101", "--stall-timeout", "10"]);
    assert_eq!(output.status.code(), Some(1), "{} {}", stdout(&output), stderr(&output));
    assert_eq!(stdout(&output).lines().last(), Some("backfill: 4 published, 0 failed, 0 gone, 1 not settled"));
    assert!(stderr(&output).contains("/api/submissions"), "{}", stderr(&output));
    let waiting = broker.submissions_of(&study.study_instance_uid);
    assert!(text(&waiting[0], "last_error").contains("affinity-domain ID"), "{:#}", without_exchange(&waiting[0]));
    for patient in &patients {
        assert_eq!(registry.find_documents(&patient.ad_cx()).documents().len(), 2, "nothing registered twice");
    }
}
