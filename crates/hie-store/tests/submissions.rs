//! Registry submission contract tests, run on SQLite and PostgreSQL: what supersedes a submission,
//! the key a study's submissions share while one is queued, and an operator's retry (the outbox
//! item put back when it ran out of attempts, a new one at the end of the key when the failed
//! submission had released it).

mod support;

use std::time::Duration;

use hie_store::outbox::{self, NewItem, OutboxPolicy};
use hie_store::submissions::{self, Ended, NewSubmission, PUBLISH_TOPIC, SubmissionKind, SubmissionRow};
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
