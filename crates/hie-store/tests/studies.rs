//! Study readiness contract tests, run on SQLite and PostgreSQL: the quiet period (later changes
//! push the due time back), leased claims with fencing and takeover, a change during a build
//! keeping the study pending, retries and failures, manifest versions, and received headers.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use hie_store::studies::{self, ChangeSource, ClaimedStudy, Finish, NewManifest, ReceivedInstance, StudyChange};
use hie_store::{Store, now_micros};

const LEASE: Duration = Duration::from_secs(30);
const SECOND: i64 = 1_000_000;

async fn change(store: &Store, uid: &str, source: ChangeSource, due_at: i64, now: i64) {
    let mut tx = store.begin().await.unwrap();
    let change = StudyChange { study_instance_uid: uid, source, due_at, pacs_instances: None };
    studies::note_change(&mut tx, &change, now).await.unwrap();
    tx.commit().await.unwrap();
}

async fn finish(store: &Store, claim: &ClaimedStudy, finish: Finish<'_>, now: i64) -> bool {
    let mut tx = store.begin().await.unwrap();
    let recorded = studies::finish_claim(&mut tx, claim, finish, now).await.unwrap();
    tx.commit().await.unwrap();
    recorded
}

async fn claim(store: &Store, owner: &str, now: i64) -> Vec<ClaimedStudy> {
    store.studies_claim_due(owner, 10, LEASE, now).await.unwrap()
}

fn uids(claims: &[ClaimedStudy]) -> Vec<&str> {
    claims.iter().map(|claim| claim.study_instance_uid.as_str()).collect()
}

#[tokio::test]
async fn a_study_is_due_after_the_quiet_period_and_later_changes_push_it_back() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        change(&store, "1.2.3", ChangeSource::CStore, t0 + 10 * SECOND, t0).await;
        assert!(claim(&store, "s1", t0 + 5 * SECOND).await.is_empty(), "{engine:?}: not quiet yet");
        // Another arrival at t0+8 s: due at t0+18 s now.
        change(&store, "1.2.3", ChangeSource::CStore, t0 + 18 * SECOND, t0 + 8 * SECOND).await;
        assert!(claim(&store, "s1", t0 + 12 * SECOND).await.is_empty(), "{engine:?}: pushed back");
        assert_eq!(store.studies_next_due().await.unwrap(), Some(t0 + 18 * SECOND), "{engine:?}");
        let claimed = claim(&store, "s1", t0 + 18 * SECOND).await;
        assert_eq!(uids(&claimed), ["1.2.3"], "{engine:?}");
        assert_eq!(claimed[0].attempts, 1, "{engine:?}");
        assert_eq!(claimed[0].manifest_version, 0, "{engine:?}");
        // Leased: nobody else gets it.
        assert!(claim(&store, "s2", t0 + 19 * SECOND).await.is_empty(), "{engine:?}");

        assert!(
            finish(
                &store,
                &claimed[0],
                Finish::Current { manifest_version: 1, study_date: Some("20240101") },
                t0 + 20 * SECOND
            )
            .await
        );
        let row = store.study("1.2.3").await.unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.due_at, row.manifest_version, row.attempts),
            ("current", None, 1, 0),
            "{engine:?}"
        );
        assert_eq!(row.study_date.as_deref(), Some("20240101"), "{engine:?}");
        assert_eq!(row.source, "c-store", "{engine:?}");
        assert_eq!(store.studies_next_due().await.unwrap(), None, "{engine:?}");
    }
}

#[tokio::test]
async fn a_change_during_a_build_keeps_the_study_pending() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        change(&store, "1.2.4", ChangeSource::Poll, t0, t0).await;
        let claimed = claim(&store, "s1", t0).await;
        assert_eq!(uids(&claimed), ["1.2.4"], "{engine:?}");
        // An instance arrives while the manifest is being built from an older view of the PACS.
        change(&store, "1.2.4", ChangeSource::CStore, t0 + 30 * SECOND, t0 + SECOND).await;
        assert!(
            finish(&store, &claimed[0], Finish::Current { manifest_version: 1, study_date: None }, t0 + 2 * SECOND)
                .await
        );
        let row = store.study("1.2.4").await.unwrap().unwrap();
        assert_eq!(row.state, "pending", "{engine:?}: the later change is not lost");
        assert_eq!(row.due_at, Some(t0 + 30 * SECOND), "{engine:?}");
        assert_eq!(row.manifest_version, 1, "{engine:?}: the version built is still recorded");
        assert!(row.lease_owner.is_none(), "{engine:?}");
        assert_eq!(uids(&claim(&store, "s1", t0 + 30 * SECOND).await), ["1.2.4"], "{engine:?}");
    }
}

#[tokio::test]
async fn a_lost_lease_is_taken_over_and_the_old_holder_is_fenced() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        change(&store, "1.2.5", ChangeSource::Request, t0, t0).await;
        let first = claim(&store, "crashed", t0).await;
        assert_eq!(first.len(), 1, "{engine:?}");
        let lease_micros = i64::try_from(LEASE.as_micros()).unwrap();
        let second = claim(&store, "s2", t0 + lease_micros + SECOND).await;
        assert_eq!(uids(&second), ["1.2.5"], "{engine:?}: taken over after the lease");
        assert_eq!(second[0].attempts, 2, "{engine:?}");
        assert!(!finish(&store, &first[0], Finish::Gone, t0 + lease_micros + 2 * SECOND).await, "{engine:?}: fenced");
        assert!(
            finish(
                &store,
                &second[0],
                Finish::Current { manifest_version: 0, study_date: None },
                t0 + lease_micros + 2 * SECOND
            )
            .await
        );
        assert_eq!(store.study("1.2.5").await.unwrap().unwrap().state, "current", "{engine:?}");
    }
}

#[tokio::test]
async fn retries_wait_failures_stay_visible_and_a_request_revives_them() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        change(&store, "1.2.6", ChangeSource::CStore, t0, t0).await;
        let claimed = claim(&store, "s1", t0).await;
        assert!(
            finish(&store, &claimed[0], Finish::RetryAt { error: "PACS unreachable", at: t0 + 5 * SECOND }, t0).await
        );
        let row = store.study("1.2.6").await.unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.due_at, row.attempts), ("pending", Some(t0 + 5 * SECOND), 1), "{engine:?}");
        assert_eq!(row.last_error.as_deref(), Some("PACS unreachable"), "{engine:?}");
        assert!(claim(&store, "s1", t0 + 4 * SECOND).await.is_empty(), "{engine:?}");
        let again = claim(&store, "s1", t0 + 5 * SECOND).await;
        assert_eq!(again[0].attempts, 2, "{engine:?}");
        let long_error = "x".repeat(10_000);
        assert!(finish(&store, &again[0], Finish::Failed { error: &long_error }, t0 + 6 * SECOND).await);
        let row = store.study("1.2.6").await.unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.due_at), ("failed", None), "{engine:?}");
        assert!(row.last_error.unwrap().len() < 10_000, "{engine:?}: errors are truncated");
        assert!(claim(&store, "s1", t0 + 100 * SECOND).await.is_empty(), "{engine:?}: failed stays put");
        assert_eq!(store.studies_list(Some("failed"), 10).await.unwrap().len(), 1, "{engine:?}");

        change(&store, "1.2.6", ChangeSource::Request, t0 + 101 * SECOND, t0 + 101 * SECOND).await;
        let revived = claim(&store, "s1", t0 + 101 * SECOND).await;
        assert_eq!(uids(&revived), ["1.2.6"], "{engine:?}");
        assert_eq!(revived[0].attempts, 1, "{engine:?}: a request resets the attempts");
        assert!(store.study("1.2.6").await.unwrap().unwrap().last_error.is_none(), "{engine:?}");
    }
}

#[tokio::test]
async fn manifests_are_versioned_with_their_bytes() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        change(&store, "1.2.7", ChangeSource::Request, t0, t0).await;
        for version in 1..=2_i64 {
            let claimed = claim(&store, "s1", t0 + version * SECOND).await;
            assert_eq!(claimed[0].manifest_version, version - 1, "{engine:?}");
            let sop = format!("1.2.7.9.{version}");
            let kos = vec![u8::try_from(version).unwrap(); 300];
            let manifest = NewManifest {
                study_instance_uid: "1.2.7",
                version,
                sop_instance_uid: &sop,
                series_instance_uid: "1.2.7.8",
                n_series: 1,
                n_instances: 10 + version,
                fingerprint: "abc",
                kos: &kos,
                modalities: "CT\\PT",
                body_parts: "",
                instances: &[],
            };
            let mut tx = store.begin().await.unwrap();
            studies::record_manifest(&mut tx, &manifest, t0).await.unwrap();
            assert!(
                studies::finish_claim(
                    &mut tx,
                    &claimed[0],
                    Finish::Current { manifest_version: version, study_date: None },
                    t0
                )
                .await
                .unwrap()
            );
            tx.commit().await.unwrap();
            change(&store, "1.2.7", ChangeSource::Poll, t0 + (version + 1) * SECOND, t0).await;
        }
        let versions = store.manifests("1.2.7").await.unwrap();
        assert_eq!(versions.iter().map(|row| row.version).collect::<Vec<_>>(), [1, 2], "{engine:?}");
        assert_eq!(versions[1].n_instances, 12, "{engine:?}");
        assert_eq!(versions[1].modalities, "CT\\PT", "{engine:?}");
        let (latest, kos) = store.latest_manifest("1.2.7").await.unwrap().unwrap();
        assert_eq!((latest.version, kos), (2, vec![2; 300]), "{engine:?}");
        assert_eq!(store.manifest_kos("1.2.7", 1).await.unwrap(), Some(vec![1; 300]), "{engine:?}");
        assert_eq!(store.manifest_kos("1.2.7", 3).await.unwrap(), None, "{engine:?}");
        assert!(store.latest_manifest("9.9").await.unwrap().is_none(), "{engine:?}");

        // The same SOP Instance UID can't name two manifests (it is the XDS uniqueId).
        let claimed = claim(&store, "s1", t0 + 10 * SECOND).await;
        let duplicate = NewManifest {
            study_instance_uid: "1.2.7",
            version: 3,
            sop_instance_uid: "1.2.7.9.2",
            series_instance_uid: "1.2.7.8",
            n_series: 1,
            n_instances: 1,
            fingerprint: "def",
            kos: &[0],
            modalities: "",
            body_parts: "",
            instances: &[],
        };
        let mut tx = store.begin().await.unwrap();
        assert!(studies::record_manifest(&mut tx, &duplicate, t0).await.is_err(), "{engine:?}");
        drop(tx);
        assert_eq!(claimed.len(), 1, "{engine:?}");
    }
}

#[tokio::test]
async fn received_headers_are_kept_per_study_and_replaced_on_resend() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let instance = |sop: &str, study: &str, header: &[u8]| ReceivedInstance {
            sop_instance_uid: sop.to_owned(),
            study_instance_uid: study.to_owned(),
            series_instance_uid: format!("{study}.1"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".to_owned(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".to_owned(),
            calling_ae_title: "MODALITY".to_owned(),
            header: header.to_vec(),
            received_at: now,
        };
        let mut tx = store.begin().await.unwrap();
        for (sop, study) in [("1.9.2", "1.9"), ("1.9.1", "1.9"), ("1.8.1", "1.8")] {
            studies::put_received_instance(&mut tx, &instance(sop, study, b"first")).await.unwrap();
        }
        studies::put_received_instance(&mut tx, &instance("1.9.1", "1.9", b"again")).await.unwrap();
        tx.commit().await.unwrap();
        let received = store.received_instances("1.9").await.unwrap();
        assert_eq!(
            received.iter().map(|row| row.sop_instance_uid.as_str()).collect::<Vec<_>>(),
            ["1.9.1", "1.9.2"],
            "{engine:?}"
        );
        assert_eq!(received[0].header, b"again", "{engine:?}");
        assert!(!format!("{:?}", received[0]).contains("again"), "{engine:?}: Debug leaves the header out");
    }
}

#[tokio::test]
async fn a_poll_sees_recent_and_unbuilt_studies() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        for uid in ["1.3.1", "1.3.2", "1.3.3"] {
            change(&store, uid, ChangeSource::Poll, t0, t0).await;
        }
        let claims = claim(&store, "s1", t0).await;
        for claimed in &claims {
            let date = if claimed.study_instance_uid == "1.3.1" { "20200101" } else { "20261101" };
            if claimed.study_instance_uid != "1.3.3" {
                assert!(
                    finish(&store, claimed, Finish::Current { manifest_version: 1, study_date: Some(date) }, t0).await
                );
            } else {
                assert!(finish(&store, claimed, Finish::RetryAt { error: "later", at: t0 + SECOND }, t0).await);
            }
        }
        let seen: HashSet<String> = store
            .studies_for_poll("20261001")
            .await
            .unwrap()
            .into_iter()
            .map(|study| study.study_instance_uid)
            .collect();
        assert_eq!(seen, HashSet::from(["1.3.2".to_owned(), "1.3.3".to_owned()]), "{engine:?}");
        let counts = store.study_counts().await.unwrap();
        assert_eq!(counts, [("current".to_owned(), 2), ("pending".to_owned(), 1)], "{engine:?}");
    }
}

#[tokio::test]
async fn several_schedulers_never_claim_the_same_study() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        for n in 0..40 {
            change(&store, &format!("1.4.{n}"), ChangeSource::Poll, t0, t0).await;
        }
        let mut tasks = Vec::new();
        for owner in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = store.studies_claim_due(&format!("s{owner}"), 3, LEASE, t0).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|claim| claim.study_instance_uid));
                }
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!((all.len(), distinct.len()), (40, 40), "{engine:?}: each study claimed exactly once");
    }
}
