//! Identity rules applied to real stores on both engines: creation, linking to the affinity
//! domain, merges and their refusals, identifier changes, idempotent repeats, group commit.

mod common;
use common::{AFFINITY_OID, domain};
#[path = "../../hie-store/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use hie_broker::adt::AdtConfig;
use hie_broker::commit::AdtWriter;
use hie_broker::patients::ApplyError;
use hie_core::profile::PatientMergePolicy;
use hie_hl7::adt::{AdtMessage, ErrorCode, parse_adt};
use hie_store::Store;

fn adt(event: &str, control_id: &str, pid3: &str, mrg1: Option<&str>) -> AdtMessage {
    common::adt_message(event, control_id, pid3, mrg1)
}

async fn apply(store: &Store, message: &AdtMessage) -> Result<(), ApplyError> {
    common::apply(store, PatientMergePolicy::Registry, message).await
}

fn refusal(result: Result<(), ApplyError>) -> (ErrorCode, String) {
    match result {
        Err(ApplyError::Rejected(error)) => (error.code, error.location.to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn patient_id(store: &Store, key: &str, id: &str) -> Option<i64> {
    store.patient_by_identifier(key, id).await.unwrap().map(|record| record.patient.id)
}

async fn merged_into(store: &Store, key: &str, id: &str) -> Option<i64> {
    store.patient_by_identifier(key, id).await.unwrap().and_then(|record| record.patient.merged_into)
}

const LOCAL: &str = "uid:1.2.840.99999.1.1";

#[tokio::test]
async fn a_new_patient_keeps_every_identifier_and_links_to_the_affinity_domain() {
    for (engine, store) in support::each_engine().await {
        let message = adt("A04", "M1", &format!("123^^^HOSP~AD9^^^&{AFFINITY_OID}&ISO~X7^^^OTHER"), None);
        apply(&store, &message).await.unwrap();
        let record = store.patient_by_identifier(LOCAL, "123").await.unwrap().expect("found by MRN");
        assert_eq!(record.identifiers.len(), 3, "{engine:?}");
        let by_affinity = patient_id(&store, &format!("uid:{AFFINITY_OID}"), "AD9").await;
        assert_eq!(by_affinity, Some(record.patient.id), "{engine:?}");
        assert_eq!(patient_id(&store, "ns:OTHER", "X7").await, Some(record.patient.id));
        // An identifier without authority is the local MRN.
        apply(&store, &adt("A08", "M2", "123", None)).await.unwrap();
        assert_eq!(store.patient_counts().await.unwrap().0, 1, "{engine:?}");
        let outbox = store.outbox_counts().await.unwrap();
        assert_eq!(outbox.pending, 2, "one identity feed per change of a linked patient ({engine:?})");
    }
}

#[tokio::test]
async fn identifiers_of_two_patients_in_one_message_are_refused() {
    for (engine, store) in support::each_engine().await {
        apply(&store, &adt("A04", "M1", "1^^^HOSP", None)).await.unwrap();
        apply(&store, &adt("A04", "M2", "2^^^HOSP~B^^^OTHER", None)).await.unwrap();
        let (code, location) = refusal(apply(&store, &adt("A08", "M3", "1^^^HOSP~B^^^OTHER", None)).await);
        assert_eq!((code, location.as_str()), (ErrorCode::DuplicateKey, "PID^1^3"), "{engine:?}");
        let (code, _) = refusal(apply(&store, &adt("A08", "M4", "1^^^HOSP~3^^^HOSP", None)).await);
        assert_eq!(code, ErrorCode::DuplicateKey, "two local MRNs in one PID-3 ({engine:?})");
    }
}

#[tokio::test]
async fn a_merge_links_prior_to_survivor_and_keeps_both() {
    for (engine, store) in support::each_engine().await {
        apply(&store, &adt("A04", "M1", "OLD^^^HOSP", None)).await.unwrap();
        apply(&store, &adt("A04", "M2", "NEW^^^HOSP", None)).await.unwrap();
        apply(&store, &adt("A40", "M3", "NEW^^^HOSP", Some("OLD^^^HOSP"))).await.unwrap();
        let survivor = patient_id(&store, LOCAL, "NEW").await.unwrap();
        assert_eq!(merged_into(&store, LOCAL, "OLD").await, Some(survivor), "{engine:?}");
        let prior = store.patient_by_identifier(LOCAL, "OLD").await.unwrap().unwrap();
        assert!(prior.history.iter().any(|entry| entry.event == "A40" && entry.detail.contains("merged into")));
        // Repeat and inverse duplicate: accepted, nothing changes.
        apply(&store, &adt("A40", "M4", "NEW^^^HOSP", Some("OLD^^^HOSP"))).await.unwrap();
        apply(&store, &adt("A40", "M5", "OLD^^^HOSP", Some("NEW^^^HOSP"))).await.unwrap();
        assert_eq!(merged_into(&store, LOCAL, "OLD").await, Some(survivor), "{engine:?}");
        assert_eq!(merged_into(&store, LOCAL, "NEW").await, None, "{engine:?}");
        // The merged patient's record is closed to updates.
        let (code, location) = refusal(apply(&store, &adt("A08", "M6", "OLD^^^HOSP", None)).await);
        assert_eq!((code, location.as_str()), (ErrorCode::RecordLocked, "PID^1^3"), "{engine:?}");
    }
}

#[tokio::test]
async fn wrong_merges_are_refused_with_the_reason() {
    for (engine, store) in support::each_engine().await {
        let (code, location) = refusal(apply(&store, &adt("A40", "M1", "A^^^HOSP", Some("A^^^HOSP"))).await);
        assert_eq!((code, location.as_str()), (ErrorCode::DuplicateKey, "MRG^1^1^1"), "{engine:?}");

        apply(&store, &adt("A04", "M2", "A^^^HOSP~A2^^^OTHER", None)).await.unwrap();
        let (code, _) = refusal(apply(&store, &adt("A40", "M3", "A^^^HOSP", Some("A2^^^OTHER"))).await);
        assert_eq!(code, ErrorCode::DuplicateKey, "merge into itself ({engine:?})");

        apply(&store, &adt("A04", "M4", "B^^^HOSP", None)).await.unwrap();
        apply(&store, &adt("A04", "M5", "C^^^HOSP", None)).await.unwrap();
        apply(&store, &adt("A40", "M6", "B^^^HOSP", Some("A^^^HOSP"))).await.unwrap();
        apply(&store, &adt("A40", "M7", "C^^^HOSP", Some("B^^^HOSP"))).await.unwrap();
        let (code, location) = refusal(apply(&store, &adt("A40", "M8", "A^^^HOSP", Some("C^^^HOSP"))).await);
        assert_eq!((code, location.as_str()), (ErrorCode::DuplicateKey, "MRG^1^1^1"), "cycle ({engine:?})");
        assert_eq!(merged_into(&store, LOCAL, "C").await, None, "the cycle was not written ({engine:?})");

        // A refusal writes nothing, even where the merge would have created patients.
        let before = store.patient_counts().await.unwrap();
        let (code, _) = refusal(apply(&store, &adt("A40", "M9", "NEWSURVIVOR^^^HOSP", Some("A^^^HOSP"))).await);
        assert_eq!(code, ErrorCode::RecordLocked, "A was merged into B already ({engine:?})");
        assert_eq!(store.patient_counts().await.unwrap(), before, "{engine:?}");
        assert_eq!(patient_id(&store, LOCAL, "NEWSURVIVOR").await, None, "{engine:?}");
    }
}

#[tokio::test]
async fn a_merge_before_the_prior_is_known_remembers_the_prior() {
    for (engine, store) in support::each_engine().await {
        apply(&store, &adt("A40", "M1", "S^^^HOSP", Some("P^^^HOSP"))).await.unwrap();
        let survivor = patient_id(&store, LOCAL, "S").await.unwrap();
        assert_eq!(merged_into(&store, LOCAL, "P").await, Some(survivor), "{engine:?}");
        let (code, _) = refusal(apply(&store, &adt("A04", "M2", "P^^^HOSP", None)).await);
        assert_eq!(code, ErrorCode::RecordLocked, "a late A04 under the merged ID ({engine:?})");
    }
}

#[tokio::test]
async fn a_change_of_identifier_retires_the_old_one() {
    for (engine, store) in support::each_engine().await {
        apply(&store, &adt("A04", "M1", "WRONG^^^HOSP~Z^^^OTHER", None)).await.unwrap();
        let patient = patient_id(&store, LOCAL, "WRONG").await.unwrap();
        apply(&store, &adt("A47", "M2", "RIGHT^^^HOSP", Some("WRONG^^^HOSP"))).await.unwrap();
        assert_eq!(patient_id(&store, LOCAL, "RIGHT").await, Some(patient), "{engine:?}");
        assert_eq!(patient_id(&store, LOCAL, "WRONG").await, None, "{engine:?}");
        assert_eq!(patient_id(&store, "ns:OTHER", "Z").await, Some(patient), "{engine:?}");
        // Sent again under another MSH-10: already done, accepted.
        apply(&store, &adt("A47", "M3", "RIGHT^^^HOSP", Some("WRONG^^^HOSP"))).await.unwrap();
        let (code, _) = refusal(apply(&store, &adt("A47", "M4", "NEW^^^HOSP", Some("NOBODY^^^HOSP"))).await);
        assert_eq!(code, ErrorCode::UnknownKey, "{engine:?}");
        apply(&store, &adt("A04", "M5", "TAKEN^^^HOSP", None)).await.unwrap();
        let (code, location) = refusal(apply(&store, &adt("A47", "M6", "TAKEN^^^HOSP", Some("RIGHT^^^HOSP"))).await);
        assert_eq!((code, location.as_str()), (ErrorCode::DuplicateKey, "PID^1^3"), "{engine:?}");
    }
}

#[tokio::test]
async fn the_writer_applies_each_message_once_and_answers_repeats_alike() {
    for (engine, store) in support::each_engine().await {
        let config = Arc::new(AdtConfig {
            domain: domain(),
            application: "HIE_EDGE".to_owned(),
            facility: "HIE_EDGE".to_owned(),
            answer_never_ack: true,
            max_batch: 64,
            patient_merge: PatientMergePolicy::Registry,
        });
        let (writer, _task) = AdtWriter::spawn(store.clone(), config, Arc::new(tokio::sync::Notify::new()));
        // Many senders at once: they share commits, and every message is answered.
        let mut sends = Vec::new();
        for n in 0..200 {
            let writer = writer.clone();
            let message = adt("A04", &format!("C{n}"), &format!("P{n}^^^HOSP"), None);
            sends.push(tokio::spawn(async move { writer.submit(message).await.unwrap() }));
        }
        for send in sends {
            let frames = send.await.unwrap();
            assert_eq!(frames.len(), 1);
            assert!(frames[0].contains("\rMSA|AA|C"), "{engine:?}: {}", frames[0]);
        }
        let stats = writer.stats_handle();
        let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..=200).contains(&commits), "{engine:?}");
        assert_eq!(store.patient_counts().await.unwrap(), (200, 0, 200), "{engine:?}");

        let first = writer.submit(adt("A40", "R1", "P1^^^HOSP", Some("P1^^^HOSP"))).await.unwrap();
        let again = writer.submit(adt("A40", "R1", "P1^^^HOSP", Some("P1^^^HOSP"))).await.unwrap();
        assert!(first[0].contains("MSA|AR|R1"), "{engine:?}: {}", first[0]);
        assert_eq!(first, again, "a repeat gets the recorded ACK, byte for byte ({engine:?})");
        let repeat_apply = writer.submit(adt("A08", "C5", "P5^^^HOSP", None)).await.unwrap();
        assert!(repeat_apply[0].contains("MSA|AA|C5"));
        let history = store.patient_by_identifier(LOCAL, "P5").await.unwrap().unwrap().history;
        assert_eq!(history.len(), 1, "the repeated C5 was not applied again ({engine:?})");
    }
}

#[tokio::test]
async fn enhanced_mode_sends_the_accept_ack_then_the_application_ack() {
    let store = support::sqlite_store().await;
    let config = Arc::new(AdtConfig {
        domain: domain(),
        application: "HIE_EDGE".to_owned(),
        facility: "HIE_EDGE".to_owned(),
        answer_never_ack: false,
        max_batch: 8,
        patient_merge: PatientMergePolicy::Registry,
    });
    let (writer, _task) = AdtWriter::spawn(store, config, Arc::new(tokio::sync::Notify::new()));
    let enhanced = |control_id: &str, accept: &str, application: &str| {
        parse_adt(&format!(
            "MSH|^~\\&|ADT|HOSP|HIE|HIE|20261128120000||ADT^A04|{control_id}|P|2.5|||{accept}|{application}\r\
             PID|1||E{control_id}^^^HOSP||Doe^Ann\r"
        ))
        .unwrap()
    };
    let frames = writer.submit(enhanced("E1", "AL", "AL")).await.unwrap();
    assert_eq!(frames.len(), 2);
    assert!(frames[0].contains("MSA|CA|E1") && frames[1].contains("MSA|AA|E1"), "{frames:?}");
    let frames = writer.submit(enhanced("E2", "AL", "ER")).await.unwrap();
    assert_eq!(frames.len(), 1, "no application ACK on success when MSH-16 is ER: {frames:?}");
    let frames = writer.submit(enhanced("E3", "NE", "NE")).await.unwrap();
    assert!(frames.is_empty(), "strict mode: NE/NE gets nothing: {frames:?}");
}

#[tokio::test]
async fn a_refused_group_undoes_the_whole_message_but_not_its_neighbours() {
    for (engine, store) in support::each_engine().await {
        let config = Arc::new(AdtConfig {
            domain: domain(),
            application: "HIE_EDGE".to_owned(),
            facility: "HIE_EDGE".to_owned(),
            answer_never_ack: false,
            max_batch: 64,
            patient_merge: PatientMergePolicy::Registry,
        });
        let (writer, _task) = AdtWriter::spawn(store.clone(), config, Arc::new(tokio::sync::Notify::new()));
        for (control_id, mrn) in [("G1", "S1"), ("G2", "P1"), ("G3", "S2")] {
            writer.submit(adt("A04", control_id, &format!("{mrn}^^^HOSP"), None)).await.unwrap();
        }
        // Two groups: P1 into S1 (fine), then S2 into S2 (refused): neither may be applied.
        let two_groups = parse_adt(
            "MSH|^~\\&|ADT|HOSP|HIE|HIE|20261128120000||ADT^A40|G4|P|2.5\rEVN|A40|20261128120000\r\
             PID|1||S1^^^HOSP\rMRG|P1^^^HOSP\rPID|2||S2^^^HOSP\rMRG|S2^^^HOSP\r",
        )
        .unwrap();
        // Sent together with a good neighbour so they share a batch as often as not.
        let neighbour = adt("A08", "G5", "S1^^^HOSP", None);
        let (refused, accepted) = tokio::join!(writer.submit(two_groups), writer.submit(neighbour));
        let refused = refused.unwrap();
        assert!(refused[0].contains("MSA|AR|G4") && refused[0].contains("MRG^2^1"), "{engine:?}: {refused:?}");
        assert!(accepted.unwrap()[0].contains("MSA|AA|G5"), "{engine:?}");
        assert_eq!(merged_into(&store, LOCAL, "P1").await, None, "group 1 was rolled back ({engine:?})");
        let history = store.patient_by_identifier(LOCAL, "S1").await.unwrap().unwrap().history;
        assert_eq!(history.len(), 2, "S1: A04 and the neighbour's A08 ({engine:?})");
    }
}

/// Applied before the batch: a merge chain K -> L -> M, whose middle the batch never names, so
/// following it needs reads the batch did not prefetch.
fn setup_corpus() -> Vec<AdtMessage> {
    vec![
        adt("A04", "S1", "K^^^HOSP", None),
        adt("A04", "S2", "L^^^HOSP", None),
        adt("A04", "S3", "M^^^HOSP", None),
        adt("A40", "S4", "L^^^HOSP", Some("K^^^HOSP")),
        adt("A40", "S5", "M^^^HOSP", Some("L^^^HOSP")),
    ]
}

/// A corpus where later messages depend on earlier ones: creations, updates of patients created
/// just before, merges (known and unknown priors, repeats, inverse duplicates, a cycle, a prior
/// merged elsewhere), an identifier change and its repeat, a retired identifier issued again,
/// refusals (closed record, two MRNs in one PID-3, a refused second group) and a repeated MSH-10.
fn dependent_corpus() -> Vec<AdtMessage> {
    let two_groups = parse_adt(
        "MSH|^~\\&|ADT|HOSP|HIE|HIE|20261128120000||ADT^A40|D14|P|2.5\rEVN|A40|20261128120000\r\
         PID|1||S9^^^HOSP\rMRG|P9^^^HOSP\rPID|2||B^^^HOSP\rMRG|B^^^HOSP\r",
    )
    .unwrap();
    vec![
        adt("A04", "D1", &format!("A^^^HOSP~ADA^^^&{AFFINITY_OID}&ISO"), None),
        adt("A08", "D2", "A^^^HOSP~X^^^OTHER", None),
        adt("A04", "D3", "B^^^HOSP", None),
        adt("A40", "D4", "B^^^HOSP", Some("A^^^HOSP")),
        adt("A08", "D5", "A^^^HOSP", None),
        adt("A40", "D6", "B^^^HOSP", Some("A^^^HOSP")),
        adt("A40", "D7", "A^^^HOSP", Some("B^^^HOSP")),
        adt("A40", "D8", "C^^^HOSP", Some("NEVERSEEN^^^HOSP")),
        adt("A40", "D9", "A^^^HOSP", Some("C^^^HOSP")),
        adt("A04", "D10", &format!("E^^^HOSP~ADE^^^&{AFFINITY_OID}&ISO"), None),
        adt("A47", "D11", "E2^^^HOSP", Some("E^^^HOSP")),
        adt("A47", "D12", "E2^^^HOSP", Some("E^^^HOSP")),
        adt("A08", "D13", "E2^^^HOSP~C^^^HOSP", None),
        two_groups,
        adt("A04", "D15", "S9^^^HOSP", None),
        adt("A08", "D2", "A^^^HOSP~Y^^^OTHER", None),
        adt("A04", "D16", "E^^^HOSP", None),
        adt("A08", "D17", &format!("E^^^HOSP~ADE2^^^&{AFFINITY_OID}&ISO"), None),
        // K -> L -> M: M into K would close a cycle; X absorbing K finds K merged into L.
        adt("A40", "D18", "K^^^HOSP", Some("M^^^HOSP")),
        adt("A40", "D19", "X^^^HOSP", Some("K^^^HOSP")),
    ]
}

/// Everything the store holds about patients and feeds, with row ids replaced by the patient's
/// identifiers, so two stores that applied the same messages compare equal.
async fn canonical_dump(store: &Store) -> Vec<String> {
    let mut records = Vec::new();
    for id in 1..=200 {
        if let Some(record) = store.patient_record(id).await.unwrap() {
            records.push(record);
        }
    }
    let name_of = |id: i64| -> String {
        records
            .iter()
            .find(|record| record.patient.id == id)
            .map(|record| {
                let mut ids: Vec<String> =
                    record.identifiers.iter().map(|row| format!("{}={}", row.authority_key, row.id_value)).collect();
                ids.sort();
                format!("[{}]", ids.join(","))
            })
            .unwrap_or_else(|| format!("#{id}"))
    };
    let mut dump = Vec::new();
    for record in &records {
        let identifiers: Vec<String> = record
            .identifiers
            .iter()
            .map(|row| format!("{}={} active={}", row.authority_key, row.id_value, row.active))
            .collect();
        let history: Vec<String> = record
            .history
            .iter()
            .map(|entry| format!("{} {} {}", entry.event, entry.message_control_id, entry.detail))
            .collect();
        dump.push(format!(
            "patient {} {:?} merged_into={:?} identifiers={identifiers:?} history={history:?}",
            name_of(record.patient.id),
            record.patient.demographics,
            record.patient.merged_into.map(name_of)
        ));
    }
    for item in store.outbox_list(None, 1000).await.unwrap() {
        let patient = |text: &str| text.rsplit(['=', ':']).next().and_then(|id| id.parse().ok()).map(name_of);
        dump.push(format!(
            "outbox {} key={:?} payload={} {:?}",
            item.topic,
            patient(&item.key),
            item.payload.split(';').next().unwrap_or_default(),
            patient(&item.payload)
        ));
    }
    dump.sort();
    dump
}

/// Holds the writer back, so everything submitted meanwhile queues up for one batch: SQLite by
/// taking its one writer connection, PostgreSQL by locking a table the writer reads.
async fn hold_writer(store: &Store) -> hie_store::Tx<'static> {
    let mut tx = store.begin().await.unwrap();
    if let hie_store::Tx::Postgres(transaction) = &mut tx {
        sqlx::query("LOCK TABLE hl7_inbound IN ACCESS EXCLUSIVE MODE").execute(&mut **transaction).await.unwrap();
    }
    tx
}

#[tokio::test]
async fn messages_sharing_a_batch_see_each_other_as_if_committed_one_by_one() {
    for (engine, one_by_one) in support::each_engine().await {
        let config = Arc::new(AdtConfig {
            domain: domain(),
            application: "HIE_EDGE".to_owned(),
            facility: "HIE_EDGE".to_owned(),
            answer_never_ack: false,
            max_batch: 64,
            patient_merge: PatientMergePolicy::Registry,
        });
        let corpus = dependent_corpus();
        let (writer, _task) =
            AdtWriter::spawn(one_by_one.clone(), Arc::clone(&config), Arc::new(tokio::sync::Notify::new()));
        for message in setup_corpus() {
            writer.submit(message).await.unwrap();
        }
        let mut expected_acks = Vec::new();
        for message in &corpus {
            let frames = writer.submit(message.clone()).await.unwrap();
            expected_acks.push(frames.into_iter().map(|frame| ack_line(&frame)).collect::<Vec<_>>());
        }
        let commits = writer.stats_handle().commits.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(commits, (setup_corpus().len() + corpus.len()) as u64, "one by one ({engine:?})");

        let batched = match engine {
            hie_store::Engine::Sqlite => support::sqlite_store().await,
            hie_store::Engine::Postgres => support::pg_store().await,
        };
        let (writer, _task) =
            AdtWriter::spawn(batched.clone(), Arc::clone(&config), Arc::new(tokio::sync::Notify::new()));
        for message in setup_corpus() {
            writer.submit(message).await.unwrap();
        }
        let hold = hold_writer(&batched).await;
        let mut answers = Vec::new();
        for message in corpus.clone() {
            let writer = writer.clone();
            answers.push(tokio::spawn(async move { writer.submit(message).await.unwrap() }));
            // Each submission reaches the queue before the next one starts: arrival order is
            // corpus order.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        hold.rollback().await.unwrap();
        let mut acks = Vec::new();
        for answer in answers {
            acks.push(answer.await.unwrap().into_iter().map(|frame| ack_line(&frame)).collect::<Vec<_>>());
        }
        let commits = writer.stats_handle().commits.load(std::sync::atomic::Ordering::Relaxed);
        let setup = setup_corpus().len() as u64;
        assert!(commits <= setup + 2, "the corpus shared a batch ({engine:?}: {} commits)", commits - setup);
        assert_eq!(acks, expected_acks, "same answers ({engine:?})");
        assert_eq!(canonical_dump(&batched).await, canonical_dump(&one_by_one).await, "same state ({engine:?})");
    }
}

/// MSA and ERR of an ACK: what it says, without its own MSH (time, control id).
fn ack_line(frame: &str) -> String {
    frame.split('\r').filter(|segment| !segment.starts_with("MSH")).collect::<Vec<_>>().join("|")
}
