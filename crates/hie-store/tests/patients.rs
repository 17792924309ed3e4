//! Store contract for patients, identifiers, history and the inbound-message log: the same
//! assertions on SQLite and PostgreSQL.

mod support;

use hie_store::patients::{self, Demographics, IdentifierRow, RecordedAck};
use hie_store::{Store, now_micros};

fn identifier(patient_id: i64, authority_key: &str, id_value: &str) -> IdentifierRow {
    IdentifierRow {
        authority_key: authority_key.to_owned(),
        id_value: id_value.to_owned(),
        patient_id,
        namespace_id: "HOSP".to_owned(),
        universal_id: String::new(),
        universal_id_type: String::new(),
        id_type_code: "MR".to_owned(),
        active: true,
    }
}

fn demographics(family_name: &str) -> Demographics {
    Demographics { family_name: family_name.to_owned(), given_name: "Ann".to_owned(), ..Demographics::default() }
}

async fn new_patient(store: &Store, mrn: &str) -> i64 {
    let now = now_micros();
    let mut tx = store.begin().await.unwrap();
    let id = patients::create_patient(&mut tx, &demographics("Doe"), now).await.unwrap();
    patients::attach_identifier(&mut tx, &identifier(id, "ns:HOSP", mrn), 0).await.unwrap();
    patients::add_history(&mut tx, id, "A01", "MSG1", "created", now).await.unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn committed_patients_are_found_by_identifier_with_history() {
    for (engine, store) in support::each_engine().await {
        let id = new_patient(&store, "123").await;
        let record = store.patient_by_identifier("ns:HOSP", "123").await.unwrap().expect("found");
        assert_eq!(record.patient.id, id, "{engine:?}");
        assert_eq!(record.patient.demographics.family_name, "Doe");
        assert_eq!(record.identifiers.len(), 1);
        assert_eq!(record.history.len(), 1);
        assert_eq!(record.history[0].event, "A01");
        assert!(store.patient_by_identifier("ns:HOSP", "999").await.unwrap().is_none(), "{engine:?}");
        assert!(store.patient_by_identifier("ns:OTHER", "123").await.unwrap().is_none(), "{engine:?}");
    }
}

#[tokio::test]
async fn rolled_back_changes_leave_nothing() {
    for (engine, store) in support::each_engine().await {
        let mut tx = store.begin().await.unwrap();
        let id = patients::create_patient(&mut tx, &demographics("Gone"), now_micros()).await.unwrap();
        patients::attach_identifier(&mut tx, &identifier(id, "ns:HOSP", "R1"), 0).await.unwrap();
        tx.rollback().await.unwrap();
        assert!(store.patient_by_identifier("ns:HOSP", "R1").await.unwrap().is_none(), "{engine:?}");
        assert_eq!(store.patient_counts().await.unwrap().0, 0, "{engine:?}");
    }
}

#[tokio::test]
async fn a_savepoint_rolls_back_alone() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let mut tx = store.begin().await.unwrap();
        let kept = patients::create_patient(&mut tx, &demographics("Kept"), now).await.unwrap();
        patients::attach_identifier(&mut tx, &identifier(kept, "ns:HOSP", "K1"), 0).await.unwrap();
        {
            let mut savepoint = tx.savepoint().await.unwrap();
            let dropped = patients::create_patient(&mut savepoint, &demographics("Dropped"), now).await.unwrap();
            patients::attach_identifier(&mut savepoint, &identifier(dropped, "ns:HOSP", "D1"), 0).await.unwrap();
            savepoint.rollback().await.unwrap();
        }
        tx.commit().await.unwrap();
        assert!(store.patient_by_identifier("ns:HOSP", "K1").await.unwrap().is_some(), "{engine:?}");
        assert!(store.patient_by_identifier("ns:HOSP", "D1").await.unwrap().is_none(), "{engine:?}");
    }
}

#[tokio::test]
async fn an_identifier_names_one_patient_and_a_retired_one_can_be_reissued() {
    for (engine, store) in support::each_engine().await {
        let first = new_patient(&store, "X1").await;
        let second = new_patient(&store, "X2").await;
        let mut tx = store.begin().await.unwrap();
        patients::retire_identifier(&mut tx, "ns:HOSP", "X1").await.unwrap();
        let row = patients::find_identifier(&mut tx, "ns:HOSP", "X1").await.unwrap().unwrap();
        assert!(!row.active, "{engine:?}");
        // Re-issued to the second patient: the row moves, it is not duplicated.
        patients::attach_identifier(&mut tx, &identifier(second, "ns:HOSP", "X1"), 1).await.unwrap();
        tx.commit().await.unwrap();
        let record = store.patient_by_identifier("ns:HOSP", "X1").await.unwrap().unwrap();
        assert_eq!(record.patient.id, second, "{engine:?}");
        assert_ne!(record.patient.id, first);
        assert_eq!(record.identifiers.len(), 2);
    }
}

#[tokio::test]
async fn merge_link_and_demographics_update_persist() {
    for (engine, store) in support::each_engine().await {
        let prior = new_patient(&store, "P1").await;
        let survivor = new_patient(&store, "S1").await;
        let mut tx = store.begin().await.unwrap();
        patients::set_merged_into(&mut tx, prior, survivor, now_micros()).await.unwrap();
        patients::update_demographics(&mut tx, survivor, &demographics("Smith"), now_micros()).await.unwrap();
        tx.commit().await.unwrap();
        let prior_record = store.patient_by_identifier("ns:HOSP", "P1").await.unwrap().unwrap();
        assert_eq!(prior_record.patient.merged_into, Some(survivor), "{engine:?}");
        let survivor_record = store.patient_record(survivor).await.unwrap().unwrap();
        assert_eq!(survivor_record.patient.demographics.family_name, "Smith");
        assert_eq!(store.patient_counts().await.unwrap(), (2, 1, 0), "{engine:?}");
    }
}

#[tokio::test]
async fn a_patients_identity_is_its_record_without_the_history() {
    for (engine, store) in support::each_engine().await {
        let patient = new_patient(&store, "H1").await;
        let mut tx = store.begin().await.unwrap();
        patients::add_history(&mut tx, patient, "A08", "M1", "updated", now_micros()).await.unwrap();
        tx.commit().await.unwrap();
        let record = store.patient_record(patient).await.unwrap().unwrap();
        assert!(!record.history.is_empty(), "{engine:?}");
        let identity = store.patient_identity(patient).await.unwrap().unwrap();
        assert!(identity.history.is_empty());
        assert_eq!((identity.patient, identity.identifiers), (record.patient, record.identifiers), "{engine:?}");
        assert!(store.patient_identity(patient + 1_000).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn the_first_recorded_ack_for_a_message_stays() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let mut tx = store.begin().await.unwrap();
        assert!(patients::recorded_ack(&mut tx, "APP|FAC", "MSG1").await.unwrap().is_none());
        let first = RecordedAck { ack_code: "AA".to_owned(), ack: "MSH|first".to_owned() };
        patients::record_ack(&mut tx, "APP|FAC", "MSG1", &first, now).await.unwrap();
        let second = RecordedAck { ack_code: "AR".to_owned(), ack: "MSH|second".to_owned() };
        patients::record_ack(&mut tx, "APP|FAC", "MSG1", &second, now).await.unwrap();
        // Same control ID from another sender is another message.
        patients::record_ack(&mut tx, "OTHER|FAC", "MSG1", &second, now).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert_eq!(patients::recorded_ack(&mut tx, "APP|FAC", "MSG1").await.unwrap(), Some(first), "{engine:?}");
        assert_eq!(patients::recorded_ack(&mut tx, "OTHER|FAC", "MSG1").await.unwrap(), Some(second));
        tx.rollback().await.unwrap();
        assert_eq!(store.patient_counts().await.unwrap().2, 2, "{engine:?}");
    }
}

#[tokio::test]
async fn recorded_acks_older_than_the_window_are_purged() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let mut tx = store.begin().await.unwrap();
        let recorded = RecordedAck { ack_code: "AA".to_owned(), ack: "MSH|x".to_owned() };
        patients::record_ack(&mut tx, "APP|FAC", "OLD", &recorded, now - 1_000).await.unwrap();
        patients::record_ack(&mut tx, "APP|FAC", "NEW", &recorded, now).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.purge_recorded_acks(now - 500).await.unwrap(), 1, "{engine:?}");
        let mut tx = store.begin().await.unwrap();
        assert!(patients::recorded_ack(&mut tx, "APP|FAC", "OLD").await.unwrap().is_none());
        assert!(patients::recorded_ack(&mut tx, "APP|FAC", "NEW").await.unwrap().is_some(), "{engine:?}");
        tx.rollback().await.unwrap();
    }
}
