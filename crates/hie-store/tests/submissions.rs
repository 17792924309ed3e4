//! Registry submission contract tests, run on SQLite and PostgreSQL: what supersedes a submission,
//! the key a study's submissions share while one is queued, and an operator's retry (the outbox
//! item put back when it ran out of attempts, a new one at the end of the key when the failed
//! submission had released it), the studies registered under a patient, and a batch that makes
//! them due (a merge under the profile's republish policy).

mod support;

use std::time::Duration;

use hie_store::batch::{self, Changes};
use hie_store::outbox::{self, NewItem, OutboxPolicy};
use hie_store::studies::{self, ChangeSource, Finish, StudyChange, StudyRow};
use hie_store::submissions::{self, Attempt, Ended, NewSubmission, PUBLISH_TOPIC, SubmissionKind, SubmissionRow};
use hie_store::{Store, now_micros};

const LEASE: Duration = Duration::from_secs(30);

async fn queue(store: &Store, study: &str, version: i64, kind: SubmissionKind, key: &str, now: i64) -> SubmissionRow {
    let submission_set_unique_id = format!("1.2.3.{}.{version}.{}", study.len(), rand::random::<u32>());
    let document_unique_id = format!("1.2.9.{version}");
    let submission = NewSubmission {
        study_instance_uid: study,
        manifest_version: version,
        kind,
        document_unique_id: &document_unique_id,
        document_entry_uuid: "urn:uuid:00000000-0000-4000-8000-000000000001",
        submission_set_unique_id: &submission_set_unique_id,
        submission_set_uuid: "urn:uuid:00000000-0000-4000-8000-000000000002",
        key,
    };
    let mut tx = store.begin().await.unwrap();
    let id = submissions::enqueue(&mut tx, &submission, now).await.unwrap();
    tx.commit().await.unwrap();
    store.submission(id).await.unwrap().unwrap()
}

async fn claim_all(store: &Store, now: i64) -> Vec<outbox::Claimed> {
    store.outbox_claim(&[PUBLISH_TOPIC, "iti8"], "w", 100, LEASE, now).await.unwrap()
}

#[tokio::test]
async fn a_later_queued_or_done_submission_supersedes_an_earlier_one() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let v1 = queue(&store, "1.1", 1, SubmissionKind::Publish, "patient:1", now).await;
        assert!(!store.submission_superseded(&v1).await.unwrap(), "{engine:?}: alone");
        let v2 = queue(&store, "1.1", 2, SubmissionKind::Publish, "patient:1", now).await;
        assert!(store.submission_superseded(&v1).await.unwrap(), "{engine:?}: v2 queued");
        let done = Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None };
        store.submission_finished(v2.id, done, now).await.unwrap();
        // An older version sent after a newer one was published would replace it.
        assert!(store.submission_superseded(&v1).await.unwrap(), "{engine:?}: v2 done");
        let v3 = queue(&store, "1.1", 3, SubmissionKind::Publish, "patient:1", now).await;
        store.submission_finished(v3.id, Ended::Failed, now).await.unwrap();
        assert!(!store.submission_superseded(&v3).await.unwrap(), "{engine:?}: nothing after v3");
        let other = queue(&store, "1.2", 1, SubmissionKind::Publish, "patient:1", now).await;
        assert!(!store.submission_superseded(&other).await.unwrap(), "{engine:?}: another study");
    }
}

#[tokio::test]
async fn a_study_keeps_the_key_of_its_queued_submission() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        assert_eq!(store.study_queue_key("2.1").await.unwrap(), None, "{engine:?}");
        let v1 = queue(&store, "2.1", 1, SubmissionKind::Publish, "study:2.1", now).await;
        assert_eq!(v1.outbox_key.as_deref(), Some("study:2.1"), "{engine:?}");
        assert_eq!(store.study_queue_key("2.1").await.unwrap().as_deref(), Some("study:2.1"), "{engine:?}");
        let done = Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None };
        store.submission_finished(v1.id, done, now).await.unwrap();
        assert_eq!(store.study_queue_key("2.1").await.unwrap(), None, "{engine:?}: nothing queued any more");
    }
}

#[tokio::test]
async fn a_retry_puts_back_an_exhausted_item_or_queues_a_new_one_at_the_end_of_the_key() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let policy = OutboxPolicy { max_attempts: 1, ..OutboxPolicy::default() };

        // Attempts ran out: the item is failed and holds its key; the retry puts it back.
        let exhausted = queue(&store, "3.1", 1, SubmissionKind::Publish, "patient:3", now).await;
        let claimed = claim_all(&store, now).await;
        assert_eq!(claimed.len(), 1, "{engine:?}");
        assert!(store.outbox_retry_later(&claimed[0], "down", now, &policy).await.unwrap());
        store.submission_finished(exhausted.id, Ended::Failed, now).await.unwrap();
        assert!(store.submission_requeue(exhausted.id, now).await.unwrap(), "{engine:?}");
        let again = claim_all(&store, now + 1).await;
        assert_eq!(again.iter().map(|item| item.id).collect::<Vec<_>>(), [claimed[0].id], "{engine:?}: the same item");
        assert!(store.outbox_complete(&again[0], now).await.unwrap());
        assert!(!store.submission_requeue(exhausted.id, now).await.unwrap(), "{engine:?}: not failed");

        // Refused for good: the item was completed (the key went on); the retry queues a new item
        // at the end of the key the submission was queued under, behind what came since.
        let refused = queue(&store, "3.2", 1, SubmissionKind::Publish, "patient:3", now).await;
        let claimed = claim_all(&store, now + 2).await;
        assert_eq!(claimed.len(), 1, "{engine:?}");
        assert!(store.outbox_complete(&claimed[0], now).await.unwrap());
        store.submission_finished(refused.id, Ended::Failed, now).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let feed = NewItem { topic: "iti8", key: "patient:3", payload: "event=A08;patient=3", idempotency_key: None };
        let feed_id = outbox::enqueue(&mut tx, &feed, now).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        assert!(store.submission_requeue(refused.id, now).await.unwrap(), "{engine:?}");
        assert_eq!(store.submission(refused.id).await.unwrap().unwrap().state, "queued", "{engine:?}");
        let heads = claim_all(&store, now + 3).await;
        assert_eq!(heads.iter().map(|item| item.id).collect::<Vec<_>>(), [feed_id], "{engine:?}: the feed first");
        assert!(store.outbox_complete(&heads[0], now).await.unwrap());
        let next = claim_all(&store, now + 4).await;
        assert_eq!(next.len(), 1, "{engine:?}");
        assert_eq!(next[0].payload, format!("submission={}", refused.id), "{engine:?}");
        assert_eq!(next[0].key, "patient:3", "{engine:?}");
        assert!(!store.submission_requeue(refused.id, now).await.unwrap(), "{engine:?}: queued once");
    }
}

/// A submission delivered: one attempt that went under `affinity`, then done.
async fn sent_and_done(store: &Store, submission: &SubmissionRow, affinity: &str, now: i64) {
    let attempt = Attempt {
        request: Some("<request/>"),
        response: Some("<response/>"),
        error: None,
        error_codes: None,
        affinity_patient_id: Some(affinity),
    };
    store.submission_attempted(submission.id, &attempt, now).await.unwrap();
    let done = Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None };
    store.submission_finished(submission.id, done, now).await.unwrap();
}

const PRIOR: &str = "PRIOR^^^&1.3.6.1.4.1.21367.13.20.1000&ISO";
const OTHER: &str = "OTHER^^^&1.3.6.1.4.1.21367.13.20.1000&ISO";
const SURVIVOR: &str = "SURV^^^&1.3.6.1.4.1.21367.13.20.1000&ISO";

/// Studies for `registered_under` and the merge trigger: 9.1 and 9.5 registered under PRIOR, 9.2
/// under OTHER, 9.3 deprecated after its registration under PRIOR, 9.4 replaced by a version
/// under SURVIVOR, 9.6 queued (never sent) and 9.7 failed, both for PRIOR.
async fn registrations(store: &Store, now: i64) {
    for (study, under) in [("9.1", PRIOR), ("9.2", OTHER), ("9.3", PRIOR), ("9.4", PRIOR), ("9.5", PRIOR)] {
        let v1 = queue(store, study, 1, SubmissionKind::Publish, "patient:9", now).await;
        sent_and_done(store, &v1, under, now).await;
    }
    let deprecation = queue(store, "9.3", 1, SubmissionKind::Deprecate, "patient:9", now).await;
    sent_and_done(store, &deprecation, PRIOR, now).await;
    let v2 = queue(store, "9.4", 2, SubmissionKind::Publish, "patient:9", now).await;
    sent_and_done(store, &v2, SURVIVOR, now).await;
    queue(store, "9.6", 1, SubmissionKind::Publish, "patient:9", now).await;
    let failed = queue(store, "9.7", 1, SubmissionKind::Publish, "patient:9", now).await;
    let attempt = Attempt {
        request: None,
        response: None,
        error: Some("refused"),
        error_codes: None,
        affinity_patient_id: Some(PRIOR),
    };
    store.submission_attempted(failed.id, &attempt, now).await.unwrap();
    store.submission_finished(failed.id, Ended::Failed, now).await.unwrap();
}

fn studies_of(rows: &[SubmissionRow]) -> Vec<(&str, i64)> {
    rows.iter().map(|row| (row.study_instance_uid.as_str(), row.manifest_version)).collect()
}

#[tokio::test]
async fn the_studies_registered_under_a_patient_are_their_current_done_publications() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        registrations(&store, now).await;
        let under_prior = store.registered_under(&[PRIOR]).await.unwrap();
        assert_eq!(studies_of(&under_prior), [("9.1", 1), ("9.5", 1)], "{engine:?}");
        assert!(under_prior.iter().all(|row| row.affinity_patient_id.as_deref() == Some(PRIOR)), "{engine:?}");
        let both = store.registered_under(&[PRIOR, OTHER]).await.unwrap();
        assert_eq!(studies_of(&both), [("9.1", 1), ("9.2", 1), ("9.5", 1)], "{engine:?}");
        assert_eq!(studies_of(&store.registered_under(&[SURVIVOR]).await.unwrap()), [("9.4", 2)], "{engine:?}");
        assert!(store.registered_under(&[]).await.unwrap().is_empty(), "{engine:?}");
        assert!(store.registered_under(&["NOBODY^^^&1.2&ISO"]).await.unwrap().is_empty(), "{engine:?}");
        // An attempt that records no patient keeps the one recorded before.
        let row = store.submissions_of("9.7").await.unwrap().remove(0);
        let attempt = Attempt {
            request: None,
            response: None,
            error: Some("again"),
            error_codes: None,
            affinity_patient_id: None,
        };
        store.submission_attempted(row.id, &attempt, now).await.unwrap();
        assert_eq!(store.submission(row.id).await.unwrap().unwrap().affinity_patient_id.as_deref(), Some(PRIOR));
    }
}

#[tokio::test]
async fn a_batch_makes_the_studies_registered_under_merged_patients_due() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        registrations(&store, t0).await;
        // Every study manifested and current (nothing due) before the merge.
        for study in ["9.1", "9.2", "9.3", "9.4", "9.5", "9.6", "9.7"] {
            let mut tx = store.begin().await.unwrap();
            let change =
                StudyChange { study_instance_uid: study, source: ChangeSource::Poll, due_at: t0, pacs_instances: None };
            studies::note_change(&mut tx, &change, t0).await.unwrap();
            tx.commit().await.unwrap();
        }
        for claim in store.studies_claim_due("w", 10, LEASE, t0).await.unwrap() {
            let mut tx = store.begin().await.unwrap();
            let finish = Finish::Current { manifest_version: 1, study_date: None };
            assert!(studies::finish_claim(&mut tx, &claim, finish, t0).await.unwrap());
            tx.commit().await.unwrap();
        }
        let before: Vec<StudyRow> = store.studies_list(None, 100).await.unwrap();
        assert!(
            before.iter().all(|study| study.state == "current" && study.due_at.is_none()),
            "{engine:?}: {before:#?}"
        );

        // The group-commit writer's path, then the single-message one (inside a transaction).
        let t1 = t0 + 1_000_000;
        let changes = Changes { studies_registered_under: vec![PRIOR.to_owned()], ..Changes::default() };
        assert!(!changes.is_empty());
        store.write_session().await.unwrap().commit(&changes, t1).await.unwrap();
        let mut due: Vec<String> = store
            .studies_claim_due("w", 10, LEASE, t1)
            .await
            .unwrap()
            .into_iter()
            .map(|claim| claim.study_instance_uid)
            .collect();
        due.sort();
        assert_eq!(due, ["9.1", "9.5"], "{engine:?}");
        let study = store.study("9.1").await.unwrap().unwrap();
        assert_eq!((study.source.as_str(), study.due_at), ("merge", Some(t1)), "{engine:?}: {study:#?}");
        let untouched = store.study("9.2").await.unwrap().unwrap();
        assert_eq!((untouched.state.as_str(), untouched.due_at), ("current", None), "{engine:?}");

        let t2 = t1 + 1_000_000;
        let changes =
            Changes { studies_registered_under: vec![OTHER.to_owned(), SURVIVOR.to_owned()], ..Changes::default() };
        let mut tx = store.begin().await.unwrap();
        batch::write_changes(&mut tx, &changes, t2).await.unwrap();
        tx.commit().await.unwrap();
        let after_leases = t2 + i64::try_from(LEASE.as_micros()).unwrap();
        let mut due: Vec<String> = store
            .studies_claim_due("w2", 10, LEASE, after_leases)
            .await
            .unwrap()
            .into_iter()
            .map(|claim| claim.study_instance_uid)
            .collect();
        due.sort();
        // 9.1 and 9.5 again, their earlier claims' leases having run out, with 9.2 and 9.4.
        assert_eq!(due, ["9.1", "9.2", "9.4", "9.5"], "{engine:?}");
    }
}
