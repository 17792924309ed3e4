//! Every registry and repository rule over the wire, on SQLite and PostgreSQL: each refusal gets
//! its TF error code (ITI TF-3 Table 4.2.4.1-2) and leaves the registry exactly as it was.

mod common;
mod support;

use common::*;
use hie_refregistry::REPOSITORY_PATH;
use hie_xds::messages::{
    DocumentRequest, ResponseStatus, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse, SubmitObjectsRequest,
};
use hie_xds::vocabulary::*;
use hie_xds::{Association, ErrorCode, RegistryObject, actions};
use support::{ENGINES, Harness, REPOSITORY};

const DOMAIN: &str = "1.3.6.1.4.1.21367.13.20.1000";

async fn harness_with_patients(engine: support::Engine, ids: &[&str]) -> Harness {
    let harness = Harness::start(engine, DOMAIN).await;
    for id in ids {
        harness.feed(id).await;
    }
    harness
}

/// Registers `request`, expects `code`, and checks nothing was stored.
async fn refused(harness: &Harness, request: &SubmitObjectsRequest, code: ErrorCode) -> String {
    let before = harness.counts().await;
    let response = register(harness, request).await;
    let context = assert_refused(&response, code);
    assert_eq!(harness.counts().await, before, "{:?}: a refused submission leaves nothing behind", harness.engine);
    context
}

#[tokio::test]
async fn required_metadata_is_named_when_missing() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let patient = harness.patient("P1");
        let mut broken = entry("Doc", "1.2.1", &patient);
        broken.class_code = None;
        broken.creation_time = Some("2024-01-02".to_owned());
        let context =
            refused(&harness, &submission("1.9.1", &patient, vec![broken]), ErrorCode::XdsRegistryMetadataError).await;
        assert!(context.contains("classCode"), "{context}");
        let mut set = submission("1.9.1", &patient, vec![entry("Doc", "1.2.1", &patient)]);
        if let RegistryObject::SubmissionSet(submission_set) = &mut set.objects[0] {
            submission_set.source_id = None;
        }
        let context = refused(&harness, &set, ErrorCode::XdsRegistryMetadataError).await;
        assert!(context.contains("sourceId"), "{context}");
        // Not a member of the SubmissionSet.
        let mut orphan = submission("1.9.1", &patient, vec![entry("Doc", "1.2.1", &patient)]);
        orphan.objects.retain(|object| !matches!(object, RegistryObject::Association(_)));
        let context = refused(&harness, &orphan, ErrorCode::XdsRegistryMetadataError).await;
        assert!(context.contains("member"), "{context}");
    }
}

#[tokio::test]
async fn the_patient_must_be_known_unmerged_and_the_same_throughout() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1", "P2"]).await;
        let (p1, p2) = (harness.patient("P1"), harness.patient("P2"));
        let unknown = harness.patient("NOBODY");
        refused(
            &harness,
            &submission("1.9.1", &unknown, vec![entry("Doc", "1.2.1", &unknown)]),
            ErrorCode::XdsUnknownPatientId,
        )
        .await;
        let other_domain = "P1^^^&1.2.3.4.99&ISO";
        refused(
            &harness,
            &submission("1.9.1", other_domain, vec![entry("Doc", "1.2.1", other_domain)]),
            ErrorCode::XdsUnknownPatientId,
        )
        .await;
        refused(
            &harness,
            &submission("1.9.1", &p1, vec![entry("Doc", "1.2.1", &p2)]),
            ErrorCode::XdsPatientIdDoesNotMatch,
        )
        .await;

        // After an A40 (P2 into P1) a submission for P2 is refused, and P1's is accepted.
        let ack = harness.mllp_send(&support::adt_a40(&p1, &p2, "MERGE1")).await;
        assert_eq!(support::msa_code(&ack), "AA", "{ack}");
        let context = refused(
            &harness,
            &submission("1.9.1", &p2, vec![entry("Doc", "1.2.1", &p2)]),
            ErrorCode::XdsUnknownPatientId,
        )
        .await;
        assert!(context.contains("merged"), "{context}");
        assert_success(&register(&harness, &submission("1.9.1", &p1, vec![entry("Doc", "1.2.1", &p1)])).await);
    }
}

#[tokio::test]
async fn unique_ids_are_unique_in_the_message_and_in_the_registry() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1", "P2"]).await;
        let (p1, p2) = (harness.patient("P1"), harness.patient("P2"));
        let twice = submission("1.9.1", &p1, vec![entry("D1", "1.2.1", &p1), entry("D2", "1.2.1", &p1)]);
        refused(&harness, &twice, ErrorCode::XdsRegistryDuplicateUniqueIdInMessage).await;
        let set_as_document = submission("1.2.1", &p1, vec![entry("D1", "1.2.1", &p1)]);
        refused(&harness, &set_as_document, ErrorCode::XdsRegistryDuplicateUniqueIdInMessage).await;

        assert_success(&register(&harness, &submission("1.9.1", &p1, vec![entry("D1", "1.2.1", &p1)])).await);
        // The same SubmissionSet uniqueId: XDSDuplicateUniqueIdInRegistry (what a lost-answer retry meets).
        refused(
            &harness,
            &submission("1.9.1", &p1, vec![entry("D1", "1.2.2", &p1)]),
            ErrorCode::XdsDuplicateUniqueIdInRegistry,
        )
        .await;
        let mut other_hash = entry("D1", "1.2.1", &p1);
        other_hash.hash = Some(hie_refregistry::sha1_hex(b"something else"));
        refused(&harness, &submission("1.9.2", &p1, vec![other_hash]), ErrorCode::XdsNonIdenticalHash).await;
        let mut other_size = entry("D1", "1.2.1", &p1);
        other_size.size = Some("99".to_owned());
        refused(&harness, &submission("1.9.2", &p1, vec![other_size]), ErrorCode::XdsNonIdenticalSize).await;
        // Another patient's document with the same uniqueId.
        refused(
            &harness,
            &submission("1.9.2", &p2, vec![entry("D1", "1.2.1", &p2)]),
            ErrorCode::XdsDuplicateUniqueIdInRegistry,
        )
        .await;
        // Same hash and size in a new SubmissionSet: a resubmission, a second entry.
        assert_success(&register(&harness, &submission("1.9.2", &p1, vec![entry("D1", "1.2.1", &p1)])).await);
        assert_eq!(harness.counts().await.documents, 2);
    }
}

#[tokio::test]
async fn symbolic_ids_get_uuids_and_given_uuids_are_kept() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        let given = "urn:uuid:94F30DF9-D945-485E-9DBE-E61A63270C30";
        let request = submission("1.9.1", &p1, vec![entry(given, "1.2.1", &p1), entry("Symbolic", "1.2.2", &p1)]);
        assert_success(&register(&harness, &request).await);
        let kept = harness.store.reg_documents_by_unique_id(&["1.2.1".to_owned()]).await.unwrap();
        assert_eq!(kept[0].entry_uuid, given.to_ascii_lowercase(), "a given UUID is kept (in canonical case)");
        let mapped = harness.store.reg_documents_by_unique_id(&["1.2.2".to_owned()]).await.unwrap();
        assert!(
            mapped[0].entry_uuid.starts_with("urn:uuid:") && mapped[0].entry_uuid.len() == 45,
            "{}",
            mapped[0].entry_uuid
        );
        assert!(mapped[0].ebrim.contains(&mapped[0].entry_uuid), "the stored ebRIM carries the new id");
        // The same UUID again is refused: an entryUUID names one object.
        let again = submission("1.9.2", &p1, vec![entry(given, "1.2.3", &p1)]);
        let context = refused(&harness, &again, ErrorCode::XdsRegistryMetadataError).await;
        assert!(context.contains("entryUUID"), "{context}");
        let broken = submission("1.9.2", &p1, vec![entry("urn:uuid:not-a-uuid", "1.2.3", &p1)]);
        refused(&harness, &broken, ErrorCode::XdsRegistryMetadataError).await;
        // A reference to nothing (symbolic, not in the submission).
        let mut dangling = submission("1.9.2", &p1, vec![entry("D", "1.2.3", &p1)]);
        dangling.objects.push(RegistryObject::Association(Association::has_member("HMX", "SS", "Nowhere")));
        refused(&harness, &dangling, ErrorCode::UnresolvedReferenceException).await;
    }
}

/// A replacement of `target` (entryUUID) by a new entry `Doc2` with uniqueId `unique_id`.
fn replacement(set_unique_id: &str, patient: &str, unique_id: &str, target: &str) -> SubmitObjectsRequest {
    let mut request = submission(set_unique_id, patient, vec![entry("Doc2", unique_id, patient)]);
    request.objects.push(RegistryObject::Association(association("R", ASSOCIATION_RPLC, "Doc2", target)));
    request
}

#[tokio::test]
async fn a_replacement_needs_an_approved_document_of_the_patient_and_deprecates_it() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1", "P2"]).await;
        let (p1, p2) = (harness.patient("P1"), harness.patient("P2"));
        let original = "urn:uuid:11111111-2222-4333-8444-555555555555";
        let mut first = submission("1.9.1", &p1, vec![entry(original, "1.2.1", &p1)]);
        first.objects.push(RegistryObject::Folder(folder("F", "1.8.1", &p1)));
        first.objects.push(RegistryObject::Association(Association::has_member("HMF", "SS", "F")));
        first.objects.push(RegistryObject::Association(association("FM", ASSOCIATION_HAS_MEMBER, "F", original)));
        first.objects.push(RegistryObject::Association(Association {
            submission_set_status: None,
            ..Association::has_member("HMFM", "SS", "FM")
        }));
        assert_success(&register(&harness, &first).await);
        let other = "urn:uuid:11111111-2222-4333-8444-666666666666";
        assert_success(&register(&harness, &submission("1.9.9", &p2, vec![entry(other, "1.2.9", &p2)])).await);

        let unknown = "urn:uuid:99999999-2222-4333-8444-555555555555";
        refused(&harness, &replacement("1.9.2", &p1, "1.2.2", unknown), ErrorCode::UnresolvedReferenceException).await;
        refused(&harness, &replacement("1.9.2", &p1, "1.2.2", other), ErrorCode::XdsPatientIdDoesNotMatch).await;

        assert_success(&register(&harness, &replacement("1.9.2", &p1, "1.2.2", original)).await);
        let rows = harness.store.reg_documents_by_uuid(&[original.to_owned()]).await.unwrap();
        assert_eq!(rows[0].status, STATUS_DEPRECATED, "{engine:?}: replaced in the same transaction");
        // The replacement joined the original's folder (ITI TF-3 4.2.2.2.1).
        let replacement_uuid =
            harness.store.reg_documents_by_unique_id(&["1.2.2".to_owned()]).await.unwrap()[0].entry_uuid.clone();
        let memberships = harness
            .store
            .reg_associations(
                &[replacement_uuid],
                hie_store::refregistry::AssociationEnd::Target,
                &[ASSOCIATION_HAS_MEMBER.to_owned()],
                10,
            )
            .await
            .unwrap();
        assert_eq!(memberships.len(), 2, "{engine:?}: from its SubmissionSet and from the folder");
        // Replacing the now Deprecated original again.
        refused(&harness, &replacement("1.9.3", &p1, "1.2.3", original), ErrorCode::XdsRegistryDeprecatedDocumentError)
            .await;
        // An addendum to it too.
        let mut addendum = submission("1.9.3", &p1, vec![entry("Doc3", "1.2.3", &p1)]);
        addendum.objects.push(RegistryObject::Association(association("A", ASSOCIATION_APND, "Doc3", original)));
        refused(&harness, &addendum, ErrorCode::XdsRegistryDeprecatedDocumentError).await;
    }
}

#[tokio::test]
async fn a_failed_submission_registers_nothing_even_when_most_of_it_is_fine() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        assert_success(&register(&harness, &submission("1.9.1", &p1, vec![entry("D", "1.2.1", &p1)])).await);
        let mut clash = entry("D3", "1.2.1", &p1);
        clash.hash = Some(hie_refregistry::sha1_hex(b"other"));
        let mixed = submission("1.9.2", &p1, vec![entry("D2", "1.2.2", &p1), clash, entry("D4", "1.2.4", &p1)]);
        refused(&harness, &mixed, ErrorCode::XdsNonIdenticalHash).await;
        assert!(harness.store.reg_documents_by_unique_id(&["1.2.2".to_owned()]).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_repository_checks_documents_and_stores_them_with_the_registration() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        let before = harness.counts().await;

        let mut wrong_hash = provide(submission("1.9.1", &p1, vec![entry("D", "1.2.1", &p1)]));
        wrong_hash.documents[0].content = b"not the hashed bytes".to_vec();
        let response = provide_and_register(&harness, &wrong_hash).await;
        let context = assert_refused(&response, ErrorCode::XdsRepositoryMetadataError);
        assert!(context.contains("hash"), "{context}");

        let mut missing = provide(submission("1.9.1", &p1, vec![entry("D", "1.2.1", &p1)]));
        missing.documents.clear();
        assert_refused(&provide_and_register(&harness, &missing).await, ErrorCode::XdsMissingDocument);

        let mut extra = provide(submission("1.9.1", &p1, vec![entry("D", "1.2.1", &p1)]));
        extra.documents.push(hie_xds::messages::Document {
            id: "Stray".into(),
            content: b"x".to_vec(),
            mime_type: "text/plain".into(),
        });
        assert_refused(&provide_and_register(&harness, &extra).await, ErrorCode::XdsMissingDocumentMetadata);

        let twice = provide(submission("1.9.1", &p1, vec![entry("D1", "1.2.1", &p1), entry("D2", "1.2.1", &p1)]));
        assert_refused(
            &provide_and_register(&harness, &twice).await,
            ErrorCode::XdsRepositoryDuplicateUniqueIdInMessage,
        );

        // A registry refusal stores no bytes either (one transaction).
        let unknown = harness.patient("NOBODY");
        let unknown_patient = provide(submission("1.9.1", &unknown, vec![entry("D", "1.2.1", &unknown)]));
        assert_refused(&provide_and_register(&harness, &unknown_patient).await, ErrorCode::XdsUnknownPatientId);
        assert_eq!(harness.counts().await, before, "{engine:?}");

        // Without hash and size, the repository computes them and sets its repositoryUniqueId.
        let mut bare = entry("D", "1.2.1", &p1);
        bare.hash = None;
        bare.size = None;
        bare.repository_unique_id = Some("9.9.9".to_owned());
        assert_success(&provide_and_register(&harness, &provide(submission("1.9.1", &p1, vec![bare]))).await);
        let row = &harness.store.reg_documents_by_unique_id(&["1.2.1".to_owned()]).await.unwrap()[0];
        assert_eq!(row.hash.as_deref(), Some(hie_refregistry::sha1_hex(b"1.2.1").as_str()));
        assert_eq!((row.size, row.repository_unique_id.as_deref()), (Some(5), Some(REPOSITORY)));
        // Other bytes under a stored uniqueId.
        let mut conflict = provide(submission("1.9.2", &p1, vec![entry("D", "1.2.1", &p1)]));
        conflict.documents[0].content = b"other".to_vec();
        if let RegistryObject::DocumentEntry(entry) = &mut conflict.submission.objects[2] {
            entry.hash = None;
            entry.size = None;
        }
        let before = harness.counts().await;
        assert_refused(&provide_and_register(&harness, &conflict).await, ErrorCode::XdsNonIdenticalHash);
        assert_eq!(harness.counts().await, before);
    }
}

fn retrieve_request(documents: &[(&str, &str)]) -> RetrieveDocumentSetRequest {
    RetrieveDocumentSetRequest {
        documents: documents
            .iter()
            .map(|(repository, document)| DocumentRequest {
                home_community_id: None,
                repository_unique_id: (*repository).to_owned(),
                document_unique_id: (*document).to_owned(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn retrieve_answers_documents_over_mtom_and_names_each_missing_one() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        let request = provide(submission("1.9.1", &p1, vec![entry("D1", "1.2.1", &p1), entry("D2", "1.2.22", &p1)]));
        assert_success(&provide_and_register(&harness, &request).await);

        let answer = harness
            .soap(
                REPOSITORY_PATH,
                actions::ITI43_REQUEST,
                &retrieve_request(&[(REPOSITORY, "1.2.1"), (REPOSITORY, "1.2.22")]),
            )
            .await;
        assert!(answer.is_mtom(), "ITI-43 answers are MTOM even to a plain request");
        assert_eq!(answer.addressing().action, actions::ITI43_RESPONSE);
        let response: RetrieveDocumentSetResponse = answer.xds();
        assert_eq!(response.response.status, ResponseStatus::Success);
        let documents: Vec<(&str, &[u8])> = response
            .documents
            .iter()
            .map(|document| (document.document_unique_id.as_str(), document.document.as_slice()))
            .collect();
        assert_eq!(documents, [("1.2.1", b"1.2.1".as_slice()), ("1.2.22", b"1.2.22".as_slice())]);
        assert_eq!(response.documents[0].mime_type, "application/dicom");

        let partial = harness
            .mtom(
                REPOSITORY_PATH,
                actions::ITI43_REQUEST,
                &retrieve_request(&[(REPOSITORY, "1.2.1"), (REPOSITORY, "7.7.7"), ("1.2.3.4", "1.2.22")]),
            )
            .await;
        let response: RetrieveDocumentSetResponse = partial.xds();
        assert_eq!(response.response.status, ResponseStatus::PartialSuccess);
        assert_eq!(response.documents.len(), 1);
        let errors: Vec<(ErrorCode, Option<&str>)> =
            response.response.errors.iter().map(|error| (error.code.clone(), error.location.as_deref())).collect();
        assert_eq!(
            errors,
            [(ErrorCode::XdsUnknownRepositoryId, Some("1.2.22")), (ErrorCode::XdsDocumentUniqueIdError, Some("7.7.7"))]
        );
        let none =
            harness.soap(REPOSITORY_PATH, actions::ITI43_REQUEST, &retrieve_request(&[(REPOSITORY, "7.7.7")])).await;
        let response: RetrieveDocumentSetResponse = none.xds();
        assert_eq!(response.response.status, ResponseStatus::Failure);
        assert!(response.documents.is_empty());
    }
}

/// An ITI-57 availability status change of `target` from `original` to `new`.
fn status_update(set_unique_id: &str, patient: &str, target: &str, original: &str, new: &str) -> SubmitObjectsRequest {
    SubmitObjectsRequest {
        request_slots: vec![],
        objects: vec![
            RegistryObject::SubmissionSet(submission_set("SS", set_unique_id, patient)),
            RegistryObject::Association(Association {
                original_status: Some(original.to_owned()),
                new_status: Some(new.to_owned()),
                ..association("U", ASSOCIATION_UPDATE_AVAILABILITY_STATUS, "SS", target)
            }),
        ],
    }
}

#[tokio::test]
async fn availability_status_updates_and_their_refusals() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1", "P2"]).await;
        let (p1, p2) = (harness.patient("P1"), harness.patient("P2"));
        let document = "urn:uuid:11111111-2222-4333-8444-555555555555";
        assert_success(&register(&harness, &submission("1.9.1", &p1, vec![entry(document, "1.2.1", &p1)])).await);
        let status =
            async || harness.store.reg_documents_by_uuid(&[document.to_owned()]).await.unwrap()[0].status.clone();

        // Not in ITI-42.
        refused(
            &harness,
            &status_update("1.9.2", &p1, document, STATUS_APPROVED, STATUS_DEPRECATED),
            ErrorCode::XdsRegistryMetadataError,
        )
        .await;
        let before = harness.counts().await;
        let wrong_original =
            update(&harness, &status_update("1.9.2", &p1, document, STATUS_DEPRECATED, STATUS_APPROVED)).await;
        assert_refused(&wrong_original, ErrorCode::XdsMetadataUpdateError);
        let unknown = "urn:uuid:99999999-2222-4333-8444-555555555555";
        let missing = update(&harness, &status_update("1.9.2", &p1, unknown, STATUS_APPROVED, STATUS_DEPRECATED)).await;
        assert_refused(&missing, ErrorCode::UnresolvedReferenceException);
        let other_patient =
            update(&harness, &status_update("1.9.2", &p2, document, STATUS_APPROVED, STATUS_DEPRECATED)).await;
        assert_refused(&other_patient, ErrorCode::XdsPatientIdDoesNotMatch);
        assert_eq!(harness.counts().await, before);
        assert_eq!(status().await, STATUS_APPROVED);

        assert_success(
            &update(&harness, &status_update("1.9.2", &p1, document, STATUS_APPROVED, STATUS_DEPRECATED)).await,
        );
        assert_eq!(status().await, STATUS_DEPRECATED);
        assert_success(
            &update(&harness, &status_update("1.9.3", &p1, document, STATUS_DEPRECATED, STATUS_APPROVED)).await,
        );
        assert_eq!(status().await, STATUS_APPROVED);
        // The update associations are kept for audit.
        assert_eq!(harness.counts().await.associations, before.associations + 2);
    }
}

#[tokio::test]
async fn new_versions_need_the_latest_version_as_previous() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        let lid = "urn:uuid:11111111-2222-4333-8444-555555555555";
        assert_success(&register(&harness, &submission("1.9.1", &p1, vec![entry(lid, "1.2.1", &p1)])).await);
        let new_version = |set: &str, previous: &str, unique_id: &str| {
            let mut version = entry("V2", unique_id, &p1);
            version.lid = Some(lid.to_owned());
            version.title = vec![hie_xds::ebrim::Localized::new("corrected title")];
            let mut request = submission(set, &p1, vec![version]);
            if let RegistryObject::Association(has_member) = &mut request.objects[1] {
                has_member.previous_version = Some(previous.to_owned());
            }
            request
        };
        let before = harness.counts().await;
        assert_refused(
            &register(&harness, &new_version("1.9.2", "1", "1.2.1")).await,
            ErrorCode::XdsRegistryMetadataError,
        );
        assert_refused(
            &update(&harness, &new_version("1.9.2", "2", "1.2.1")).await,
            ErrorCode::XdsMetadataVersionError,
        );
        assert_refused(&update(&harness, &new_version("1.9.2", "1", "1.2.9")).await, ErrorCode::XdsMetadataUpdateError);
        assert_eq!(harness.counts().await, before);
        assert_success(&update(&harness, &new_version("1.9.2", "1", "1.2.1")).await);
        let versions = harness.store.reg_documents_by_unique_id(&["1.2.1".to_owned()]).await.unwrap();
        let summary: Vec<(i64, &str)> = versions.iter().map(|row| (row.version, row.status.as_str())).collect();
        assert_eq!(summary, [(1, STATUS_DEPRECATED), (2, STATUS_APPROVED)], "{engine:?}");
        assert_refused(
            &update(&harness, &new_version("1.9.3", "1", "1.2.1")).await,
            ErrorCode::XdsMetadataVersionError,
        );
    }
}

#[tokio::test]
async fn concurrent_submissions_of_one_unique_id_or_one_replacement_are_decided_one_at_a_time() {
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        // Eight clients register uniqueId 1.2.1 at once, each with other bytes: one wins.
        let attempts = (0..8).map(|client| {
            let mut contender = entry("D", "1.2.1", &p1);
            contender.hash = Some(hie_refregistry::sha1_hex(format!("bytes of client {client}").as_bytes()));
            let request = submission(&format!("1.9.{client}"), &p1, vec![contender]);
            let harness = &harness;
            async move { register(harness, &request).await }
        });
        let responses = futures::future::join_all(attempts).await;
        let successes = responses.iter().filter(|response| response.status == ResponseStatus::Success).count();
        assert_eq!(successes, 1, "{engine:?}: {responses:#?}");
        for response in responses.iter().filter(|response| response.status != ResponseStatus::Success) {
            assert_refused(response, ErrorCode::XdsNonIdenticalHash);
        }
        // Eight replacements of one original at once: one deprecates it, the others find it Deprecated.
        let original =
            harness.store.reg_documents_by_unique_id(&["1.2.1".to_owned()]).await.unwrap()[0].entry_uuid.clone();
        let attempts = (0..8).map(|client| {
            let request =
                replacement(&format!("1.9.{}", 100 + client), &p1, &format!("1.2.{}", 100 + client), &original);
            let harness = &harness;
            async move { register(harness, &request).await }
        });
        let responses = futures::future::join_all(attempts).await;
        let successes = responses.iter().filter(|response| response.status == ResponseStatus::Success).count();
        assert_eq!(successes, 1, "{engine:?}: {responses:#?}");
        for response in responses.iter().filter(|response| response.status != ResponseStatus::Success) {
            assert_refused(response, ErrorCode::XdsRegistryDeprecatedDocumentError);
        }
        assert_eq!(harness.counts().await.documents, 2, "{engine:?}: the first entry and one replacement");
    }
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_is_a_duplicate_that_a_query_resolves() {
    // reliability-security R5: the submission was registered, its answer lost; the retry reuses
    // the uniqueIds, gets XDSDuplicateUniqueIdInRegistry, and ITI-18 shows the first one landed.
    for engine in ENGINES {
        let harness = harness_with_patients(engine, &["P1"]).await;
        let p1 = harness.patient("P1");
        let request = provide(submission("1.9.1", &p1, vec![entry("D", "1.2.1", &p1)]));
        assert_success(&provide_and_register(&harness, &request).await);
        let before = harness.counts().await;
        let retry = provide_and_register(&harness, &request).await;
        assert_refused(&retry, ErrorCode::XdsDuplicateUniqueIdInRegistry);
        assert_eq!(ErrorCode::XdsDuplicateUniqueIdInRegistry.retry_class(), hie_xds::RetryClass::VerifyByQuery);
        assert_eq!(harness.counts().await, before, "{engine:?}: exactly one SubmissionSet");
        let contents = query(
            &harness,
            &stored_query(
                QUERY_GET_SUBMISSION_SET_AND_CONTENTS,
                hie_xds::messages::ReturnType::ObjectRef,
                &[("$XDSSubmissionSetUniqueId", "'1.9.1'")],
            ),
        )
        .await;
        assert_eq!(contents.objects.len(), 3, "{engine:?}: the set, its entry and their HasMember");
    }
}
