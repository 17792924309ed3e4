//! The journaled ADT writer on SQLite (`hie_store::journal`): what it answers is in the store
//! the moment the answer goes out, and what the journal still holds at start is applied again,
//! in order, each message once.

mod common;
use common::{adt_message, adt_text, domain};
#[path = "../../hie-store/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hie_broker::adt::AdtConfig;
use hie_broker::commit::AdtWriter;
use hie_core::profile::PatientMergePolicy;
use hie_store::Store;
use hie_store::journal::{AdtJournal, JournalEntry};
use sqlx::Connection as _;

const LOCAL: &str = "uid:1.2.840.99999.1.1";

fn config() -> Arc<AdtConfig> {
    Arc::new(AdtConfig {
        domain: domain(),
        application: "HIE_EDGE".to_owned(),
        facility: "HIE_EDGE".to_owned(),
        answer_never_ack: true,
        max_batch: 8,
        patient_merge: PatientMergePolicy::Registry,
    })
}

async fn start(store: &Store, journal_url: &str) -> (AdtWriter, tokio::task::JoinHandle<()>) {
    let journal = AdtJournal::open(journal_url, Duration::from_secs(5)).await.unwrap();
    AdtWriter::spawn_journaled(store.clone(), journal, config(), Arc::new(tokio::sync::Notify::new())).await.unwrap()
}

async fn send(writer: &AdtWriter, event: &str, control_id: &str, pid3: &str) -> String {
    let text = adt_text(event, control_id, pid3, None);
    let frames = writer.submit_received(adt_message(event, control_id, pid3, None), text).await.unwrap();
    assert_eq!(frames.len(), 1);
    frames.into_iter().next().unwrap()
}

#[tokio::test]
async fn answers_come_from_the_store_and_a_restart_applies_what_only_the_journal_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("hie.db").display());
    let journal_url = format!("sqlite://{}", dir.path().join("hie-adt-journal.db").display());
    let store = Store::connect(&support::options(store_url, 4)).await.unwrap();

    // Concurrent senders share batches; each answer means the patient is readable already.
    let (writer, task) = start(&store, &journal_url).await;
    let mut sends = Vec::new();
    for n in 0..40 {
        let (writer, store) = (writer.clone(), store.clone());
        sends.push(tokio::spawn(async move {
            let ack = send(&writer, "A04", &format!("C{n}"), &format!("P{n}^^^HOSP")).await;
            assert!(ack.contains(&format!("\rMSA|AA|C{n}")), "{ack}");
            assert!(store.patient_by_identifier(LOCAL, &format!("P{n}")).await.unwrap().is_some());
        }));
    }
    for send in sends {
        send.await.unwrap();
    }
    drop(writer);
    task.await.unwrap();
    assert_eq!(store.patient_counts().await.unwrap().0, 40);

    // What a crash of the machine leaves when the store lost its last unsynchronised commits:
    // journal rows the store never saw (Q1, and an update of P3), beside one it did (C0 again).
    let journal = AdtJournal::open(&journal_url, Duration::from_secs(5)).await.unwrap();
    let last = journal.last_seq().await.unwrap();
    assert!(last >= 40, "every message taken was journaled ({last})");
    let lost_create = adt_text("A04", "X1", "Q1^^^HOSP", None);
    let lost_update = adt_text("A08", "X2", "P3^^^HOSP", None).replace("Doe^Ann", "Roe^Ann");
    let kept = adt_text("A04", "C0", "P0^^^HOSP", None);
    let at = hie_store::now_micros();
    let entries = [
        JournalEntry { seq: last + 1, received_at: at, message: &lost_create },
        JournalEntry { seq: last + 2, received_at: at, message: &kept },
        JournalEntry { seq: last + 3, received_at: at + 1, message: &lost_update },
    ];
    journal.append(&entries, 0).await.unwrap();
    journal.close().await;

    let (writer, task) = start(&store, &journal_url).await;
    assert_eq!(writer.stats_handle().replayed.load(Ordering::Relaxed), 2, "X1 and X2; C0 and the others are repeats");
    let q1 = store.patient_by_identifier(LOCAL, "Q1").await.unwrap().expect("the lost create is applied");
    assert_eq!(q1.history.len(), 1);
    let p3 = store.patient_by_identifier(LOCAL, "P3").await.unwrap().unwrap();
    assert_eq!(p3.patient.demographics.family_name, "Roe", "the lost update is applied");
    assert_eq!(p3.history.len(), 2);
    let p0 = store.patient_by_identifier(LOCAL, "P0").await.unwrap().unwrap();
    assert_eq!(p0.history.len(), 1, "C0 was not applied twice");
    // A repeat of a replayed message is answered as the replay decided.
    assert!(send(&writer, "A04", "X1", "Q1^^^HOSP").await.contains("\rMSA|AA|X1"));
    drop(writer);
    task.await.unwrap();
    assert_eq!(store.patient_counts().await.unwrap().0, 41);

    // The replay was committed with its fsync: the next append pruned every row before it.
    let journal = AdtJournal::open(&journal_url, Duration::from_secs(5)).await.unwrap();
    let seqs: Vec<i64> = journal.rows().await.unwrap().iter().map(|row| row.seq).collect();
    assert_eq!(seqs, [last + 4], "only the message taken after the restart");
}

#[tokio::test]
async fn a_batch_the_journal_refuses_is_answered_not_stored_and_its_resend_waits_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("hie.db").display());
    let journal_url = format!("sqlite://{}", dir.path().join("hie-adt-journal.db").display());
    let store = Store::connect(&support::options(store_url, 4)).await.unwrap();
    let (writer, task) = start(&store, &journal_url).await;
    assert!(send(&writer, "A04", "J1", "J1^^^HOSP").await.contains("\rMSA|AA|J1"));

    // Another connection makes the journal refuse every row, as a full or failing disk would.
    let mut other = sqlx::SqliteConnection::connect(&journal_url).await.unwrap();
    sqlx::query("CREATE TRIGGER refuse BEFORE INSERT ON adt_journal BEGIN SELECT RAISE(ABORT, 'refused'); END")
        .execute(&mut other)
        .await
        .unwrap();
    let refused = send(&writer, "A04", "J2", "J2^^^HOSP").await;
    assert!(refused.contains("\rMSA|AE|J2") && refused.contains("207"), "{refused}");
    assert_eq!(writer.stats_handle().failed_commits.load(Ordering::Relaxed), 1);
    // Its store changes committed beside the journal and stand, with the ACK they recorded,
    // in the WAL only...
    assert!(store.patient_by_identifier(LOCAL, "J2").await.unwrap().is_some());
    assert_eq!(in_database_file(dir.path(), "J2").await, 0, "not checkpointed yet");
    sqlx::query("DROP TRIGGER refuse").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    // ...so the resend is a repeat, answered once they are on disk (checkpointed into the
    // database file, the WAL synced first), and applied once.
    assert!(send(&writer, "A04", "J2", "J2^^^HOSP").await.contains("\rMSA|AA|J2"));
    assert_eq!(in_database_file(dir.path(), "J2").await, 1, "the store was made durable before the answer");
    assert_eq!(store.patient_by_identifier(LOCAL, "J2").await.unwrap().unwrap().history.len(), 1);
    assert!(send(&writer, "A04", "J3", "J3^^^HOSP").await.contains("\rMSA|AA|J3"), "the journal takes rows again");
    drop(writer);
    task.await.unwrap();
}

/// How many identifiers `id_value` the store's database file holds without its WAL: what a
/// checkpoint has copied there. Read from a copy of the file alone.
async fn in_database_file(dir: &std::path::Path, id_value: &str) -> i64 {
    let copy = dir.join(format!("file-only-{id_value}-{}.db", hie_store::now_micros()));
    std::fs::copy(dir.join("hie.db"), &copy).unwrap();
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.display())).await.unwrap();
    // Before the first checkpoint even the schema is only in the WAL.
    let count = match sqlx::query_scalar("SELECT count(*) FROM patient_identifiers WHERE id_value = $1")
        .bind(id_value)
        .fetch_one(&mut connection)
        .await
    {
        Ok(count) => count,
        Err(error) if error.to_string().contains("no such table") => 0,
        Err(error) => panic!("reading the copy: {error}"),
    };
    connection.close().await.unwrap();
    count
}
