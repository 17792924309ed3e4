//! Contract tests of the reference registry's tables, run on SQLite and PostgreSQL: patients and
//! merges (metadata follows the surviving patient), the feed log, DocumentEntries found by every
//! FindDocuments filter, SubmissionSets, associations by either end, repository documents, and a
//! rolled-back registration that leaves nothing behind.

mod support;

use hie_store::refregistry::{
    self, AssociationEnd, AssociationRow, CodeMatch, DocumentCode, DocumentFilter, DocumentRow, FolderRow, ObjectKind,
    PutDocument, RecordedFeedAck, RegCounts, RepositoryDocumentRow, SubmissionSetFilter, SubmissionSetRow, TimeRange,
};
use hie_store::{Store, Tx, now_micros};

const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
const DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";
const HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";
const RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";
const STABLE: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
const P1: &str = "P1^^^&1.2.3&ISO";
const P2: &str = "P2^^^&1.2.3&ISO";

fn document(uuid: &str, unique_id: &str, patient_id: &str, created_at: i64) -> DocumentRow {
    DocumentRow {
        entry_uuid: uuid.to_owned(),
        unique_id: unique_id.to_owned(),
        lid: uuid.to_owned(),
        version: 1,
        status: APPROVED.to_owned(),
        patient_id: patient_id.to_owned(),
        object_type: STABLE.to_owned(),
        mime_type: "application/dicom".to_owned(),
        hash: Some("da39a3ee5e6b4b0d3255bfef95601890afd80709".to_owned()),
        size: Some(0),
        repository_unique_id: Some("1.2.3.4".to_owned()),
        creation_time: Some("20240102030405".to_owned()),
        service_start_time: Some("20240101000000".to_owned()),
        service_stop_time: None,
        class_code: Some("IMAGES".to_owned()),
        class_scheme: Some("1.3.6.1.4.1.19376.1.2.6.1".to_owned()),
        type_code: Some("18748-4".to_owned()),
        type_scheme: Some("2.16.840.1.113883.6.1".to_owned()),
        format_code: Some("1.2.840.10008.5.1.4.1.1.88.59".to_owned()),
        format_scheme: Some("1.2.840.10008.2.6.1".to_owned()),
        facility_code: Some("22232009".to_owned()),
        facility_scheme: Some("2.16.840.1.113883.6.96".to_owned()),
        practice_code: Some("394914008".to_owned()),
        practice_scheme: Some("2.16.840.1.113883.6.96".to_owned()),
        submission_set_uuid: "urn:uuid:ss".to_owned(),
        ebrim: format!("<rim:ExtrinsicObject id=\"{uuid}\"/>"),
        created_at,
    }
}

fn code(kind: &'static str, code: &str, scheme: &str) -> DocumentCode {
    DocumentCode { kind, code: code.to_owned(), scheme: scheme.to_owned() }
}

fn submission_set(uuid: &str, unique_id: &str, patient_id: &str, created_at: i64) -> SubmissionSetRow {
    SubmissionSetRow {
        entry_uuid: uuid.to_owned(),
        unique_id: unique_id.to_owned(),
        source_id: "1.2.3.9".to_owned(),
        patient_id: patient_id.to_owned(),
        status: APPROVED.to_owned(),
        submission_time: Some("20240102030405".to_owned()),
        content_type_code: Some("IMAGES".to_owned()),
        content_type_scheme: Some("scheme".to_owned()),
        author_person: Some("^Welby^Marcus".to_owned()),
        ebrim: String::new(),
        created_at,
    }
}

fn association(uuid: &str, kind: &str, source: &str, target: &str, created_at: i64) -> AssociationRow {
    AssociationRow {
        entry_uuid: uuid.to_owned(),
        association_type: kind.to_owned(),
        source_uuid: source.to_owned(),
        target_uuid: target.to_owned(),
        status: APPROVED.to_owned(),
        ebrim: String::new(),
        created_at,
    }
}

fn code_match(code: &str, scheme: Option<&str>) -> CodeMatch {
    CodeMatch { code: code.to_owned(), scheme: scheme.map(str::to_owned) }
}

async fn commit_with(store: &Store, work: impl AsyncFnOnce(&mut Tx<'static>)) {
    let mut tx = store.begin().await.unwrap();
    work(&mut tx).await;
    tx.commit().await.unwrap();
}

/// Two patients; documents d1 (P1, event CT+MR, confidentiality N), d2 (P1, event CT, later,
/// deprecated), d3 (P2).
async fn seed(store: &Store, t0: i64) {
    commit_with(store, async |tx| {
        for patient in [P1, P2] {
            assert!(refregistry::register_patient(tx, patient, t0).await.unwrap());
        }
        let mut d1 = document("urn:uuid:d1", "1.1", P1, t0);
        d1.creation_time = Some("20240102030405".to_owned());
        let codes = [
            code(refregistry::CODE_EVENT, "CT", "DCM"),
            code(refregistry::CODE_EVENT, "MR", "DCM"),
            code(refregistry::CODE_CONFIDENTIALITY, "N", "2.16.840.1.113883.5.25"),
            code(refregistry::CODE_AUTHOR_PERSON, "^Welby^Marcus^^^Dr", ""),
        ];
        refregistry::insert_document(tx, &d1, &codes).await.unwrap();
        let mut d2 = document("urn:uuid:d2", "1.2", P1, t0 + 1);
        d2.creation_time = Some("20240301000000".to_owned());
        d2.class_code = Some("REPORTS".to_owned());
        d2.status = DEPRECATED.to_owned();
        refregistry::insert_document(tx, &d2, &[code(refregistry::CODE_EVENT, "CT", "DCM")]).await.unwrap();
        refregistry::insert_document(tx, &document("urn:uuid:d3", "1.3", P2, t0 + 2), &[]).await.unwrap();
        refregistry::insert_submission_set(tx, &submission_set("urn:uuid:ss", "9.1", P1, t0)).await.unwrap();
        refregistry::insert_associations(
            tx,
            &[
                association("urn:uuid:a1", HAS_MEMBER, "urn:uuid:ss", "urn:uuid:d1", t0),
                association("urn:uuid:a2", HAS_MEMBER, "urn:uuid:ss", "urn:uuid:d2", t0 + 1),
                association("urn:uuid:a3", RPLC, "urn:uuid:d2", "urn:uuid:d1", t0 + 2),
            ],
        )
        .await
        .unwrap();
    })
    .await;
}

fn uuids(rows: &[DocumentRow]) -> Vec<&str> {
    rows.iter().map(|row| row.entry_uuid.as_str()).collect()
}

fn approved_of(patient_id: &str) -> DocumentFilter {
    DocumentFilter {
        patient_id: patient_id.to_owned(),
        statuses: vec![APPROVED.to_owned()],
        ..DocumentFilter::default()
    }
}

#[tokio::test]
async fn find_documents_applies_every_filter() {
    for (engine, store) in support::each_engine().await {
        seed(&store, now_micros()).await;
        let all = DocumentFilter { statuses: vec![APPROVED.to_owned(), DEPRECATED.to_owned()], ..approved_of(P1) };
        assert_eq!(
            uuids(&store.reg_find_documents(&all, 10).await.unwrap()),
            ["urn:uuid:d1", "urn:uuid:d2"],
            "{engine:?}"
        );
        assert_eq!(
            uuids(&store.reg_find_documents(&approved_of(P1), 10).await.unwrap()),
            ["urn:uuid:d1"],
            "{engine:?}"
        );
        assert_eq!(uuids(&store.reg_find_documents(&all, 1).await.unwrap()), ["urn:uuid:d1"], "{engine:?}: limit");

        let class = DocumentFilter {
            class_codes: vec![code_match("REPORTS", Some("1.3.6.1.4.1.19376.1.2.6.1"))],
            ..all.clone()
        };
        assert_eq!(uuids(&store.reg_find_documents(&class, 10).await.unwrap()), ["urn:uuid:d2"], "{engine:?}");
        let wrong_scheme = DocumentFilter { class_codes: vec![code_match("REPORTS", Some("other"))], ..all.clone() };
        assert!(store.reg_find_documents(&wrong_scheme, 10).await.unwrap().is_empty(), "{engine:?}");
        let any_scheme =
            DocumentFilter { class_codes: vec![code_match("IMAGES", None), code_match("X", None)], ..all.clone() };
        assert_eq!(uuids(&store.reg_find_documents(&any_scheme, 10).await.unwrap()), ["urn:uuid:d1"], "{engine:?}");

        // Event codes: inner lists OR-ed, lists AND-ed.
        let ct_and_mr = DocumentFilter {
            event_codes: vec![vec![code_match("CT", Some("DCM"))], vec![code_match("MR", Some("DCM"))]],
            ..all.clone()
        };
        assert_eq!(uuids(&store.reg_find_documents(&ct_and_mr, 10).await.unwrap()), ["urn:uuid:d1"], "{engine:?}");
        let ct_or_mr = DocumentFilter {
            event_codes: vec![vec![code_match("CT", Some("DCM")), code_match("MR", Some("DCM"))]],
            ..all.clone()
        };
        assert_eq!(uuids(&store.reg_find_documents(&ct_or_mr, 10).await.unwrap()).len(), 2, "{engine:?}");
        let confidentiality = DocumentFilter {
            confidentiality_codes: vec![vec![code_match("N", Some("2.16.840.1.113883.5.25"))]],
            ..all.clone()
        };
        assert_eq!(
            uuids(&store.reg_find_documents(&confidentiality, 10).await.unwrap()),
            ["urn:uuid:d1"],
            "{engine:?}"
        );
        let author = DocumentFilter { author_persons: vec!["%Welby%".to_owned()], ..all.clone() };
        assert_eq!(uuids(&store.reg_find_documents(&author, 10).await.unwrap()), ["urn:uuid:d1"], "{engine:?}");

        let from_march = DocumentFilter {
            creation_time: TimeRange { from: Some("20240301000000".to_owned()), to: None },
            ..all.clone()
        };
        assert_eq!(uuids(&store.reg_find_documents(&from_march, 10).await.unwrap()), ["urn:uuid:d2"], "{engine:?}");
        let before_march = DocumentFilter {
            creation_time: TimeRange { from: None, to: Some("20240301000000".to_owned()) },
            ..all.clone()
        };
        assert_eq!(uuids(&store.reg_find_documents(&before_march, 10).await.unwrap()), ["urn:uuid:d1"], "{engine:?}");
        let service = DocumentFilter {
            service_start_time: TimeRange {
                from: Some("20240101000000".to_owned()),
                to: Some("20240102000000".to_owned()),
            },
            ..all.clone()
        };
        assert_eq!(uuids(&store.reg_find_documents(&service, 10).await.unwrap()).len(), 2, "{engine:?}");
        let on_demand = DocumentFilter { object_types: vec!["urn:uuid:on-demand".to_owned()], ..all.clone() };
        assert!(store.reg_find_documents(&on_demand, 10).await.unwrap().is_empty(), "{engine:?}");
        // Values are bound, never spliced: a quote in a value is just a character.
        let injection = DocumentFilter { patient_id: format!("{P1}' OR '1'='1"), ..all.clone() };
        assert!(store.reg_find_documents(&injection, 10).await.unwrap().is_empty(), "{engine:?}");
    }
}

#[tokio::test]
async fn lookups_by_uuid_unique_id_and_association_end() {
    for (engine, store) in support::each_engine().await {
        seed(&store, now_micros()).await;
        let by_unique = store.reg_documents_by_unique_id(&["1.2".to_owned(), "1.3".to_owned()]).await.unwrap();
        assert_eq!(uuids(&by_unique), ["urn:uuid:d2", "urn:uuid:d3"], "{engine:?}");
        let by_uuid =
            store.reg_documents_by_uuid(&["urn:uuid:d1".to_owned(), "urn:uuid:nope".to_owned()]).await.unwrap();
        assert_eq!(uuids(&by_uuid), ["urn:uuid:d1"], "{engine:?}");
        assert_eq!(by_uuid[0].hash.as_deref(), Some("da39a3ee5e6b4b0d3255bfef95601890afd80709"), "{engine:?}");

        let d1 = ["urn:uuid:d1".to_owned()];
        let either = store.reg_associations(&d1, AssociationEnd::Either, &[], 10).await.unwrap();
        assert_eq!(either.iter().map(|a| a.entry_uuid.as_str()).collect::<Vec<_>>(), ["urn:uuid:a1", "urn:uuid:a3"]);
        let rplc = store.reg_associations(&d1, AssociationEnd::Target, &[RPLC.to_owned()], 10).await.unwrap();
        assert_eq!(rplc[0].source_uuid, "urn:uuid:d2", "{engine:?}");
        assert!(store.reg_associations(&d1, AssociationEnd::Source, &[], 10).await.unwrap().is_empty());
        let members = store
            .reg_associations(&["urn:uuid:ss".to_owned()], AssociationEnd::Source, &[HAS_MEMBER.to_owned()], 10)
            .await;
        assert_eq!(members.unwrap().len(), 2, "{engine:?}");

        let sets = store.reg_submission_sets_by_unique_id(&["9.1".to_owned()]).await.unwrap();
        assert_eq!(sets[0].entry_uuid, "urn:uuid:ss", "{engine:?}");
        let filter = SubmissionSetFilter {
            patient_id: P1.to_owned(),
            statuses: vec![APPROVED.to_owned()],
            source_ids: vec!["1.2.3.9".to_owned()],
            content_type_codes: vec![code_match("IMAGES", Some("scheme"))],
            author_persons: vec!["%Welby%".to_owned()],
            submission_time: TimeRange { from: Some("20240101".to_owned()), to: Some("20250101".to_owned()) },
        };
        assert_eq!(store.reg_find_submission_sets(&filter, 10).await.unwrap().len(), 1, "{engine:?}");
        let other_source = SubmissionSetFilter { source_ids: vec!["9.9".to_owned()], ..filter };
        assert!(store.reg_find_submission_sets(&other_source, 10).await.unwrap().is_empty(), "{engine:?}");

        let mut tx = store.begin().await.unwrap();
        let objects =
            refregistry::existing_objects(&mut tx, &["urn:uuid:d1", "urn:uuid:ss", "urn:uuid:a3", "urn:uuid:x"]).await;
        let mut kinds: Vec<(String, ObjectKind)> =
            objects.unwrap().into_iter().map(|object| (object.entry_uuid, object.kind)).collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kinds,
            [
                ("urn:uuid:a3".to_owned(), ObjectKind::Association),
                ("urn:uuid:d1".to_owned(), ObjectKind::DocumentEntry),
                ("urn:uuid:ss".to_owned(), ObjectKind::SubmissionSet),
            ],
            "{engine:?}"
        );
        let in_use = refregistry::package_unique_ids_in_use(&mut tx, &["9.1", "9.2"]).await.unwrap();
        assert_eq!(in_use, ["9.1"], "{engine:?}");
        let duplicates = refregistry::documents_with_unique_ids(&mut tx, &["1.1"]).await.unwrap();
        assert_eq!(uuids(&duplicates), ["urn:uuid:d1"], "{engine:?}");
        assert_eq!(refregistry::set_document_status(&mut tx, "urn:uuid:d1", DEPRECATED).await.unwrap(), 1);
        assert_eq!(refregistry::set_document_status(&mut tx, "urn:uuid:nope", DEPRECATED).await.unwrap(), 0);
        tx.commit().await.unwrap();
        assert!(store.reg_find_documents(&approved_of(P1), 10).await.unwrap().is_empty(), "{engine:?}");
    }
}

#[tokio::test]
async fn a_merge_moves_the_metadata_to_the_surviving_patient() {
    for (engine, store) in support::each_engine().await {
        let t0 = now_micros();
        seed(&store, t0).await;
        commit_with(&store, async |tx| {
            refregistry::insert_folder(
                tx,
                &FolderRow {
                    entry_uuid: "urn:uuid:f1".to_owned(),
                    unique_id: "8.1".to_owned(),
                    lid: "urn:uuid:f1".to_owned(),
                    version: 1,
                    patient_id: P2.to_owned(),
                    status: APPROVED.to_owned(),
                    last_update_time: "20240101000000".to_owned(),
                    ebrim: String::new(),
                    created_at: t0,
                },
            )
            .await
            .unwrap();
            // P3 was merged into P2 earlier; now P2 goes into P1: P3 must follow to P1.
            refregistry::merge_patient(tx, "P3^^^&1.2.3&ISO", P2, t0).await.unwrap();
            let moved = refregistry::merge_patient(tx, P2, P1, t0).await.unwrap();
            assert_eq!(moved, 2, "{engine:?}: d3 and f1");
        })
        .await;
        assert_eq!(store.reg_patient(P2).await.unwrap().unwrap().merged_into.as_deref(), Some(P1), "{engine:?}");
        assert_eq!(store.reg_patient("P3^^^&1.2.3&ISO").await.unwrap().unwrap().merged_into.as_deref(), Some(P1));
        assert_eq!(store.reg_patient(P1).await.unwrap().unwrap().merged_into, None, "{engine:?}");
        let found = store.reg_find_documents(&approved_of(P1), 10).await.unwrap();
        assert_eq!(uuids(&found), ["urn:uuid:d1", "urn:uuid:d3"], "{engine:?}");
        assert!(store.reg_find_documents(&approved_of(P2), 10).await.unwrap().is_empty(), "{engine:?}");
        assert_eq!(store.reg_folders_by_uuid(&["urn:uuid:f1".to_owned()]).await.unwrap()[0].patient_id, P1);
        // Registering a merged patient again does not revive it.
        commit_with(&store, async |tx| assert!(!refregistry::register_patient(tx, P2, t0).await.unwrap())).await;
        assert_eq!(store.reg_patient(P2).await.unwrap().unwrap().merged_into.as_deref(), Some(P1), "{engine:?}");
    }
}

#[tokio::test]
async fn feed_messages_and_repository_documents_are_recorded_once() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let ack = RecordedFeedAck { ack_code: "AA".to_owned(), ack: "MSH|...".to_owned() };
        commit_with(&store, async |tx| {
            assert_eq!(refregistry::feed_message(tx, "APP|FAC", "1").await.unwrap(), None);
            refregistry::record_feed_message(tx, "APP|FAC", "1", &ack, now).await.unwrap();
            refregistry::record_feed_message(
                tx,
                "APP|FAC",
                "1",
                &RecordedFeedAck { ack_code: "AE".into(), ..ack.clone() },
                now,
            )
            .await
            .unwrap();
        })
        .await;
        let mut tx = store.begin().await.unwrap();
        assert_eq!(refregistry::feed_message(&mut tx, "APP|FAC", "1").await.unwrap(), Some(ack.clone()), "{engine:?}");
        assert_eq!(refregistry::feed_message(&mut tx, "OTHER|FAC", "1").await.unwrap(), None, "{engine:?}");
        let row = RepositoryDocumentRow {
            unique_id: "1.1".to_owned(),
            mime_type: "text/plain".to_owned(),
            hash: "A9993E364706816ABA3E25717850C26C9CD0D89D".to_owned(),
            size: 3,
            content: b"abc".to_vec(),
            created_at: now,
        };
        assert_eq!(refregistry::put_repository_document(&mut tx, &row).await.unwrap(), PutDocument::Stored);
        let same_lower = RepositoryDocumentRow { hash: row.hash.to_ascii_lowercase(), ..row.clone() };
        assert_eq!(
            refregistry::put_repository_document(&mut tx, &same_lower).await.unwrap(),
            PutDocument::AlreadyStored
        );
        let other = RepositoryDocumentRow { hash: "00".to_owned(), size: 4, content: b"abcd".to_vec(), ..row.clone() };
        assert_eq!(
            refregistry::put_repository_document(&mut tx, &other).await.unwrap(),
            PutDocument::Conflict { hash: row.hash.clone(), size: 3 },
            "{engine:?}"
        );
        tx.commit().await.unwrap();
        let stored = store.reg_repository_documents(&["1.1".to_owned(), "9.9".to_owned()]).await.unwrap();
        assert_eq!(stored.len(), 1, "{engine:?}");
        assert_eq!(stored[0].content, b"abc", "{engine:?}");
    }
}

#[tokio::test]
async fn a_rolled_back_registration_leaves_nothing_and_locks_are_per_transaction() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        let mut tx = store.begin().await.unwrap();
        let keys = vec!["uid:1.1".to_owned(), "uid:1.1".to_owned(), "obj:urn:uuid:d1".to_owned()];
        refregistry::lock_keys(&mut tx, &keys).await.unwrap();
        refregistry::register_patient(&mut tx, P1, now).await.unwrap();
        refregistry::insert_document(&mut tx, &document("urn:uuid:d1", "1.1", P1, now), &[code("event", "CT", "DCM")])
            .await
            .unwrap();
        refregistry::insert_submission_set(&mut tx, &submission_set("urn:uuid:ss", "9.1", P1, now)).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(store.reg_counts().await.unwrap(), RegCounts::default(), "{engine:?}");
        // The locks went with the transaction: a new one takes them at once.
        let mut tx = store.begin().await.unwrap();
        refregistry::lock_keys(&mut tx, &keys).await.unwrap();
        tx.commit().await.unwrap();
        // The SubmissionSet uniqueId is unique even if a caller skipped the check.
        commit_with(&store, async |tx| {
            refregistry::insert_submission_set(tx, &submission_set("urn:uuid:s1", "9.1", P1, now)).await.unwrap();
        })
        .await;
        let mut tx = store.begin().await.unwrap();
        let duplicate =
            refregistry::insert_submission_set(&mut tx, &submission_set("urn:uuid:s2", "9.1", P1, now)).await;
        assert!(duplicate.is_err(), "{engine:?}");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn the_latest_version_and_folders_holding_a_document() {
    for (engine, store) in support::each_engine().await {
        let now = now_micros();
        commit_with(&store, async |tx| {
            let v1 = DocumentRow { lid: "urn:uuid:lid".to_owned(), ..document("urn:uuid:v1", "1.1", P1, now) };
            let v2 = DocumentRow { version: 2, ..DocumentRow { entry_uuid: "urn:uuid:v2".to_owned(), ..v1.clone() } };
            refregistry::insert_document(tx, &v1, &[]).await.unwrap();
            refregistry::insert_document(tx, &v2, &[]).await.unwrap();
            let folder = FolderRow {
                entry_uuid: "urn:uuid:f".to_owned(),
                unique_id: "8.1".to_owned(),
                lid: "urn:uuid:f".to_owned(),
                version: 1,
                patient_id: P1.to_owned(),
                status: APPROVED.to_owned(),
                last_update_time: "20240101000000".to_owned(),
                ebrim: String::new(),
                created_at: now,
            };
            refregistry::insert_folder(tx, &folder).await.unwrap();
            refregistry::insert_associations(
                tx,
                &[association("urn:uuid:fa", HAS_MEMBER, "urn:uuid:f", "urn:uuid:v1", now)],
            )
            .await
            .unwrap();
            refregistry::touch_folder(tx, "urn:uuid:f", "20250101000000").await.unwrap();
            assert_eq!(refregistry::set_folder_status(tx, "urn:uuid:f", DEPRECATED).await.unwrap(), 1);
        })
        .await;
        let mut tx = store.begin().await.unwrap();
        let latest = refregistry::latest_document_version(&mut tx, "urn:uuid:lid").await.unwrap().unwrap();
        assert_eq!((latest.entry_uuid.as_str(), latest.version), ("urn:uuid:v2", 2), "{engine:?}");
        assert_eq!(refregistry::folders_holding(&mut tx, "urn:uuid:v1", HAS_MEMBER).await.unwrap(), ["urn:uuid:f"]);
        assert!(refregistry::folders_holding(&mut tx, "urn:uuid:v2", HAS_MEMBER).await.unwrap().is_empty());
        tx.rollback().await.unwrap();
        let folder = &store.reg_folders_by_uuid(&["urn:uuid:f".to_owned()]).await.unwrap()[0];
        assert_eq!((folder.last_update_time.as_str(), folder.status.as_str()), ("20250101000000", DEPRECATED));
    }
}
