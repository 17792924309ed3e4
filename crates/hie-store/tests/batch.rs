//! Store contract for set-based batch state (`hie_store::batch`): what one read loads, what one
//! write stores, and what a write session leaves behind when it fails or is dropped, on both
//! engines.

mod support;

use hie_store::batch::{
    self, Changes, NewAck, NewHistory, NewOutboxItem, NewPatient, PatientUpdate, StateRequest, StoredIdentifier,
};
use hie_store::patients::{Demographics, IdentifierRow, RecordedAck};
use hie_store::{Store, now_micros};
use sqlx::Connection;

fn identifier(patient_id: i64, authority_key: &str, id_value: &str, position: i64) -> StoredIdentifier {
    StoredIdentifier {
        row: IdentifierRow {
            authority_key: authority_key.to_owned(),
            id_value: id_value.to_owned(),
            patient_id,
            namespace_id: "HOSP".to_owned(),
            universal_id: "1.2.3".to_owned(),
            universal_id_type: "ISO".to_owned(),
            id_type_code: "MR".to_owned(),
            active: true,
        },
        position,
    }
}

fn demographics(family_name: &str) -> Demographics {
    Demographics {
        family_name: family_name.to_owned(),
        given_name: "Ann \"Q\" \\ é\r".to_owned(),
        birth_date: "19800101".to_owned(),
        sex: "F".to_owned(),
    }
}

fn ack(sender: &str, control_id: &str) -> NewAck {
    NewAck {
        sender: sender.to_owned(),
        control_id: control_id.to_owned(),
        recorded: RecordedAck { ack_code: "AA".to_owned(), ack: format!("MSH|^~\\&|X\rMSA|AA|{control_id}\r") },
    }
}

/// Two new patients (the second merged into the first), their identifiers, history, a feed and
/// an ACK record, written in one session.
async fn write_two_patients(store: &Store, control_id: &str) -> (i64, i64) {
    let mut session = store.write_session().await.unwrap();
    let state = session.read_state(&StateRequest { new_ids: 2, ..StateRequest::default() }).await.unwrap();
    assert_eq!(state.new_ids.len(), 2);
    let (first, second) = (state.new_ids[0], state.new_ids[1]);
    assert!(first < second);
    let changes = Changes {
        new_patients: vec![
            NewPatient { id: first, merged_into: None, demographics: demographics("Doe") },
            NewPatient { id: second, merged_into: Some(first), demographics: Demographics::default() },
        ],
        identifiers: vec![
            identifier(first, "ns:HOSP", "A", 0),
            identifier(first, "ns:OTHER", "B", 1),
            identifier(second, "ns:HOSP", "OLD", 0),
        ],
        history: vec![NewHistory {
            patient_id: first,
            event: "A04".to_owned(),
            message_control_id: "M1".to_owned(),
            detail: "created".to_owned(),
        }],
        outbox: vec![NewOutboxItem {
            topic: "iti8".to_owned(),
            key: format!("patient:{first}"),
            payload: "event=A04".to_owned(),
        }],
        acks: vec![ack("APP|FAC", control_id)],
        ..Changes::default()
    };
    session.commit(&changes, now_micros()).await.unwrap();
    (first, second)
}

#[tokio::test]
async fn one_write_stores_every_table_and_one_read_finds_it() {
    for (engine, store) in support::each_engine().await {
        let (first, second) = write_two_patients(&store, "M1").await;
        let record = store.patient_by_identifier("ns:HOSP", "A").await.unwrap().expect("stored");
        assert_eq!(record.patient.id, first, "{engine:?}");
        assert_eq!(record.patient.demographics, demographics("Doe"), "text survives the JSON trip ({engine:?})");
        assert_eq!(record.identifiers.len(), 2, "{engine:?}");
        assert_eq!(record.history.len(), 1, "{engine:?}");
        assert_eq!(store.outbox_counts().await.unwrap().pending, 1, "{engine:?}");
        let prior = store.patient_record(second).await.unwrap().expect("prior stored");
        assert_eq!(prior.patient.merged_into, Some(first), "{engine:?}");

        let mut session = store.write_session().await.unwrap();
        let acks = [("APP|FAC", "M1"), ("APP|FAC", "M2")];
        let keys = [("ns:OTHER", "B"), ("ns:NONE", "X")];
        let request =
            StateRequest { acks: &acks, identifiers: &keys, patients: &[second], new_ids: 3, ids_handed_out: 0 };
        let state = session.read_state(&request).await.unwrap();
        assert_eq!(state.acks.len(), 1, "{engine:?}");
        assert_eq!(state.acks[0].2, ack("APP|FAC", "M1").recorded, "{engine:?}");
        let mut patient_ids: Vec<i64> = state.patients.iter().map(|patient| patient.id).collect();
        patient_ids.sort_unstable();
        assert_eq!(patient_ids, vec![first, second], "by identifier and by id ({engine:?})");
        assert_eq!(state.identifiers.len(), 3, "all identifiers of both patients ({engine:?})");
        assert!(state.new_ids.iter().all(|id| *id > second), "{engine:?}: {:?}", state.new_ids);
        // A second read in the same session hands out other ids.
        let handed_out = state.new_ids.iter().copied().max().unwrap_or(0);
        let again = session
            .read_state(&StateRequest { new_ids: 2, ids_handed_out: handed_out, ..StateRequest::default() })
            .await
            .unwrap();
        assert!(again.new_ids.iter().all(|id| *id > handed_out), "{engine:?}: {:?}", again.new_ids);
        session.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn updates_change_only_what_they_name() {
    for (engine, store) in support::each_engine().await {
        let (first, second) = write_two_patients(&store, "M1").await;
        let mut retired_then_reissued = identifier(second, "ns:OTHER", "B", 1);
        retired_then_reissued.row.active = false;
        let changes = Changes {
            patient_updates: vec![
                PatientUpdate { id: first, demographics: None, merged_into: None },
                PatientUpdate { id: second, demographics: Some(demographics("Roe")), merged_into: None },
            ],
            identifiers: vec![retired_then_reissued],
            retired: vec![("ns:HOSP".to_owned(), "A".to_owned())],
            ..Changes::default()
        };
        store.write_session().await.unwrap().commit(&changes, now_micros()).await.unwrap();
        let first_record = store.patient_record(first).await.unwrap().unwrap();
        assert_eq!(first_record.patient.demographics, demographics("Doe"), "untouched ({engine:?})");
        let second_record = store.patient_record(second).await.unwrap().unwrap();
        assert_eq!(second_record.patient.demographics.family_name, "Roe", "{engine:?}");
        assert_eq!(second_record.patient.merged_into, Some(first), "a merge stays ({engine:?})");
        assert!(store.patient_by_identifier("ns:HOSP", "A").await.unwrap().is_none(), "retired ({engine:?})");
        let moved = second_record.identifiers.iter().find(|row| row.id_value == "B").expect("moved to second");
        assert!(!moved.active, "{engine:?}");
    }
}

#[tokio::test]
async fn a_failed_write_stores_nothing_and_the_store_goes_on() {
    for (engine, store) in support::each_engine().await {
        write_two_patients(&store, "M1").await;
        let before = store.patient_counts().await.unwrap();
        let mut session = store.write_session().await.unwrap();
        let state = session.read_state(&StateRequest { new_ids: 1, ..StateRequest::default() }).await.unwrap();
        let changes = Changes {
            new_patients: vec![NewPatient { id: state.new_ids[0], merged_into: None, demographics: demographics("X") }],
            // Recorded already: the unique key refuses the whole batch.
            acks: vec![ack("APP|FAC", "M1")],
            ..Changes::default()
        };
        assert!(session.commit(&changes, now_micros()).await.is_err(), "{engine:?}");
        assert_eq!(store.patient_counts().await.unwrap(), before, "{engine:?}");

        // A session dropped half-way (a cancelled writer) leaves nothing either.
        let mut session = store.write_session().await.unwrap();
        session.read_state(&StateRequest { new_ids: 1, ..StateRequest::default() }).await.unwrap();
        drop(session);
        let mut tx = store.begin().await.expect("the writer connection is usable again");
        let state = batch::read_state(&mut tx, &StateRequest::default()).await.unwrap();
        assert!(state.patients.is_empty());
        tx.rollback().await.unwrap();
        write_two_patients(&store, "M2").await;
        assert_eq!(store.patient_counts().await.unwrap().0, before.0 + 2, "{engine:?}");
    }
}

#[tokio::test]
async fn any_text_survives_the_batch_statements_on_sqlite() {
    // PostgreSQL refuses NUL in text outright (as it did row by row); SQLite must keep every
    // character through the JSON arrays exactly as a bound parameter would.
    let store = support::sqlite_store().await;
    let odd = "a\u{0}b\"c\\d\u{1f}e\u{2028}f\u{10ffff}g\r\n";
    let mut session = store.write_session().await.unwrap();
    let state = session.read_state(&StateRequest { new_ids: 1, ..StateRequest::default() }).await.unwrap();
    let id = state.new_ids[0];
    let changes = Changes {
        new_patients: vec![NewPatient { id, merged_into: None, demographics: demographics(odd) }],
        identifiers: vec![identifier(id, odd, odd, 0)],
        acks: vec![ack(odd, odd)],
        ..Changes::default()
    };
    session.commit(&changes, now_micros()).await.unwrap();
    let record = store.patient_by_identifier(odd, odd).await.unwrap().expect("found by the odd identifier");
    assert_eq!(record.patient.demographics.family_name, odd);
    let mut session = store.write_session().await.unwrap();
    let state = session
        .read_state(&StateRequest { acks: &[(odd, odd)], identifiers: &[(odd, odd)], ..StateRequest::default() })
        .await
        .unwrap();
    assert_eq!(state.acks.len(), 1, "the recorded ACK is found by the odd MSH-10");
    assert_eq!(state.identifiers[0].row.id_value, odd);
    session.rollback().await.unwrap();
}

#[tokio::test]
async fn the_postgres_writer_looks_rows_up_by_key_on_a_new_database_too() {
    // The writer's connection plans its statements once (generic plans). Planned on empty
    // tables, PostgreSQL would keep seq scans that cost 19 ms per batch at 30,000 rows; the
    // connection must never seq-scan, whatever the tables held when it planned.
    let url = support::pg_database().await;
    let store = Store::connect(&support::options(url.clone(), 4)).await.unwrap();
    for round in 0..20 {
        let (first, _) = write_two_patients(&store, &format!("M{round}")).await;
        let mut session = store.write_session().await.unwrap();
        let acks = [("APP|FAC", "M0")];
        let keys = [("ns:HOSP", "A"), ("ns:OTHER", "B")];
        let request =
            StateRequest { acks: &acks, identifiers: &keys, patients: &[first], new_ids: 1, ids_handed_out: 0 };
        let state = session.read_state(&request).await.unwrap();
        assert_eq!(state.acks.len(), 1);
        let changes = Changes {
            patient_updates: vec![PatientUpdate {
                id: first,
                demographics: Some(demographics("Roe")),
                merged_into: None,
            }],
            retired: vec![("ns:OTHER".to_owned(), "B".to_owned())],
            ..Changes::default()
        };
        session.commit(&changes, now_micros()).await.unwrap();
    }
    // A backend reports its counters when it ends.
    store.close().await;
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut scans: Vec<(String, i64, i64)> = Vec::new();
    for _ in 0..100 {
        // Building an index scans its table once (the migrations): those scans are expected.
        scans = sqlx::query_as(
            "SELECT relname::text, seq_scan - (SELECT count(*) FROM pg_indexes i WHERE i.tablename = t.relname), \
             n_tup_ins FROM pg_stat_user_tables t \
             WHERE relname IN ('patients', 'patient_identifiers', 'patient_history', 'hl7_inbound') ORDER BY relname",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if scans.iter().any(|(relname, _, inserted)| relname == "hl7_inbound" && *inserted >= 20) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut admin).await.unwrap();
    }
    assert!(scans.iter().any(|(relname, _, inserted)| relname == "hl7_inbound" && *inserted >= 20), "{scans:?}");
    assert!(scans.iter().all(|(_, seq_scans, _)| *seq_scans == 0), "seq scans beyond index builds: {scans:?}");
}
