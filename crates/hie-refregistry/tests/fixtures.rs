//! The shared fixture submissions of ITI-41, RAD-68 and ITI-42 (test_data/, see its README) sent
//! to the registry over HTTP after their patient was fed over MLLP by python-hl7's `mllp_send`,
//! then queried back by ITI-18. Each fixture runs on a registry of its own: several share
//! uniqueIds (test-kit templates).
//!
//! Expectations come from the TF, not from what the registry answers:
//! - every submission that is valid XDS metadata is accepted: the four NIST MTOM captures as
//!   they are (curl, with the testplan's Content-Type, and the raw HTTP capture), the NIST and
//!   RAD-68 Provide and Register bodies with their Documents attached (the fixtures carry
//!   metadata only: a repository refuses a DocumentEntry without its Document,
//!   XDSMissingDocument), the dcm4chee ITI-42 bodies;
//! - the invalid ones get the right error or fault: a body out of schema order
//!   XDSRegistryMetadataError, Limited Metadata XDSRegistryMetadataError (ITI TF-3 4.1.1), the
//!   not-well-formed file and the envelope with Header after Body a Sender fault, an envelope
//!   without MessageID wsa:MessageAddressingHeaderRequired, dcm4chee's template with its
//!   UUIDPREFIX/MYPATIENTID placeholders XDSRegistryMetadataError (accepted once filled in),
//!   IPF's ebrs30 samples XDSRegistryMetadataError (their patientId and uniqueId schemes hold a
//!   space, so those attributes are absent, and they carry On-Demand IsSnapshotOf), IPF's
//!   update samples sent as ITI-42 XDSRegistryMetadataError (lid differs from id: ITI-57 content);
//! - `ipf-SubmitObjectsRequest_ebrs30_update.xml` sent as ITI-57 to a registry holding what it
//!   updates is accepted and applied; its `_sameLid` variant is refused.

mod support;

use base64::Engine as _;
use hie_refregistry::{REGISTRY_PATH, REPOSITORY_PATH};
use hie_xds::messages::{
    AdhocQueryRequest, AdhocQueryResponse, ProvideAndRegisterRequest, RegistryResponse, ResponseStatus, ReturnType,
    SubmitObjectsRequest, XdsMessage, quote_query_list, quote_query_value,
};
use hie_xds::mtom::Package;
use hie_xds::vocabulary::*;
use hie_xds::xml::{self, Limits};
use hie_xds::{ErrorCode, RegistryObject, actions};
use support::{Engine, Harness, HttpAnswer, read, testplan_content_type};

/// What a fixture submits, read with hie-xds.
struct Contents {
    patient_id: String,
    submission_set_unique_id: String,
    document_unique_ids: Vec<String>,
    n_folders: usize,
}

fn contents(objects: &[RegistryObject]) -> Contents {
    let mut contents = Contents {
        patient_id: String::new(),
        submission_set_unique_id: String::new(),
        document_unique_ids: vec![],
        n_folders: 0,
    };
    for object in objects {
        match object {
            RegistryObject::SubmissionSet(set) => {
                contents.patient_id = set.patient_id.clone().unwrap_or_default();
                contents.submission_set_unique_id = set.unique_id.clone().unwrap_or_default();
            }
            RegistryObject::DocumentEntry(entry) => contents.document_unique_ids.push(entry.unique_id.clone().unwrap()),
            RegistryObject::Folder(_) => contents.n_folders += 1,
            _ => {}
        }
    }
    contents
}

fn body_of<M: XdsMessage>(bytes: &[u8]) -> M {
    let document = xml::parse(bytes, &Limits::DEFAULT).unwrap();
    M::read(document.root(), &mut Package::plain(b"")).unwrap()
}

/// The CX-1 and assigning authority OID of a patientId `id^^^&oid&ISO`.
fn split_patient(patient_id: &str) -> (String, String) {
    let (id, rest) = patient_id.split_once("^^^&").unwrap();
    (id.to_owned(), rest.split('&').next().unwrap().to_owned())
}

/// A registry for the fixture's affinity domain, with its patient fed.
async fn registry_for(patient_id: &str) -> Harness {
    let (id, authority) = split_patient(patient_id);
    let harness = Harness::start(Engine::Sqlite, &authority).await;
    harness.feed(&id).await;
    harness
}

/// Documents to attach: (DocumentEntry id, bytes).
type Documents<'a> = Vec<(&'a str, &'a [u8])>;

/// A Provide and Register body with inline base64 Documents appended (the fixtures carry none).
fn with_documents(body: &[u8], documents: &[(&str, &[u8])]) -> Vec<u8> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let closing = "</xdsb:ProvideAndRegisterDocumentSetRequest>";
    let at = text.rfind(closing).expect("a ProvideAndRegisterDocumentSetRequest body");
    let mut out = text[..at].to_owned();
    for (id, bytes) in documents {
        let base64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        out.push_str(&format!("<xdsb:Document id=\"{id}\">{base64}</xdsb:Document>"));
    }
    out.push_str(&text[at..]);
    out.into_bytes()
}

fn assert_success(answer: &HttpAnswer, what: &str) -> RegistryResponse {
    let response: RegistryResponse = answer.xds();
    assert_eq!(response.status, ResponseStatus::Success, "{what}: {:#?}", response.errors);
    assert!(response.errors.is_empty(), "{what}: {:#?}", response.errors);
    response
}

fn assert_failure(answer: &HttpAnswer, what: &str, code: ErrorCode) -> RegistryResponse {
    let response: RegistryResponse = answer.xds();
    assert_eq!(response.status, ResponseStatus::Failure, "{what}");
    assert!(
        response.errors.iter().any(|error| error.code == code),
        "{what}: expected {code}, got {:#?}",
        response.errors
    );
    response
}

fn query(id: &str, return_type: ReturnType, parameters: &[(&str, String)]) -> AdhocQueryRequest {
    AdhocQueryRequest {
        query_id: id.to_owned(),
        home: None,
        return_type,
        return_composed_objects: true,
        parameters: parameters.iter().map(|(name, value)| hie_xds::ebrim::Slot::new(name, &[value.as_str()])).collect(),
    }
}

/// ITI-18 back: FindDocuments finds the fixture's entries, with the hash of what was stored when
/// given, and GetSubmissionSetAndContents its SubmissionSet, entries and folders.
async fn queried_back(harness: &Harness, contents: &Contents, stored: &[&[u8]], what: &str) {
    let find = query(
        QUERY_FIND_DOCUMENTS,
        ReturnType::LeafClass,
        &[
            ("$XDSDocumentEntryPatientId", quote_query_value(&contents.patient_id)),
            ("$XDSDocumentEntryStatus", quote_query_list(&[STATUS_APPROVED])),
        ],
    );
    let answer: AdhocQueryResponse = harness.soap(REGISTRY_PATH, actions::ITI18_REQUEST, &find).await.xds();
    assert_eq!(answer.response.status, ResponseStatus::Success, "{what}: {:#?}", answer.response.errors);
    let mut found: Vec<String> = answer
        .objects
        .iter()
        .map(|object| match object {
            RegistryObject::DocumentEntry(entry) => {
                assert_eq!(entry.status.as_deref(), Some(STATUS_APPROVED), "{what}");
                assert_eq!(entry.patient_id.as_deref(), Some(contents.patient_id.as_str()), "{what}");
                assert!(entry.id.starts_with("urn:uuid:"), "{what}: symbolic ids become UUIDs");
                entry.unique_id.clone().unwrap()
            }
            other => panic!("{what}: FindDocuments returned {other:?}"),
        })
        .collect();
    found.sort();
    let mut expected = contents.document_unique_ids.clone();
    expected.sort();
    assert_eq!(found, expected, "{what}");
    let hashes: Vec<String> = answer
        .objects
        .iter()
        .filter_map(|object| match object {
            RegistryObject::DocumentEntry(entry) => entry.hash.clone(),
            _ => None,
        })
        .collect();
    for bytes in stored {
        let hash = hie_refregistry::sha1_hex(bytes);
        assert!(hashes.contains(&hash), "{what}: no entry with the stored document's hash {hash}");
    }

    let contents_query = query(
        QUERY_GET_SUBMISSION_SET_AND_CONTENTS,
        ReturnType::LeafClass,
        &[("$XDSSubmissionSetUniqueId", quote_query_value(&contents.submission_set_unique_id))],
    );
    let answer: AdhocQueryResponse = harness.soap(REGISTRY_PATH, actions::ITI18_REQUEST, &contents_query).await.xds();
    let n_sets = answer.objects.iter().filter(|object| matches!(object, RegistryObject::SubmissionSet(_))).count();
    let n_entries = answer.objects.iter().filter(|object| matches!(object, RegistryObject::DocumentEntry(_))).count();
    let n_folders = answer.objects.iter().filter(|object| matches!(object, RegistryObject::Folder(_))).count();
    assert_eq!((n_sets, n_entries, n_folders), (1, contents.document_unique_ids.len(), contents.n_folders), "{what}");
}

/// Runs curl (a client nobody here wrote) and returns the answer.
async fn curl(url: &str, content_type: &str, body: &std::path::Path) -> HttpAnswer {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("answer");
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-X", "POST", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}\n%{content_type}"])
        .arg(url)
        .output()
        .await
        .expect("curl is required (apt-get install curl)");
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let written = String::from_utf8(output.stdout).unwrap();
    let (status, content_type) = written.split_once('\n').unwrap();
    HttpAnswer {
        status: status.parse().unwrap(),
        content_type: content_type.to_owned(),
        body: std::fs::read(out).unwrap(),
    }
}

#[tokio::test]
async fn the_nist_mtom_captures_are_accepted_as_curl_sends_them() {
    for name in ["nist-pnrxop-xop", "nist-pnrxop-encodedurl", "nist-pnrxop-noxop", "nist-pnrnoxop-submit"] {
        let content_type = testplan_content_type(&format!("iti41/{name}.testplan.xml"));
        let body = read(&format!("iti41/{name}.mime"));
        let received =
            hie_xds::read_message::<ProvideAndRegisterRequest>(&content_type, &body, &Default::default()).unwrap();
        let request = received.message;
        let contents = contents(&request.submission.objects);
        let harness = registry_for(&contents.patient_id).await;
        let answer =
            curl(&harness.url(REPOSITORY_PATH), &content_type, &support::test_data(&format!("iti41/{name}.mime")))
                .await;
        assert!(answer.is_mtom(), "{name}: an MTOM request is answered with MTOM");
        assert_success(&answer, name);
        let addressing = answer.addressing();
        assert_eq!(addressing.action, actions::ITI41_RESPONSE, "{name}");
        assert_eq!(addressing.relates_to, received.envelope.addressing.message_id, "{name}");
        let stored: Vec<&[u8]> = request.documents.iter().map(|document| document.content.as_slice()).collect();
        queried_back(&harness, &contents, &stored, name).await;
        assert_eq!(harness.counts().await.repository_documents, 1, "{name}");
    }
}

#[tokio::test]
async fn the_raw_http_capture_is_accepted() {
    let capture = read("iti41/nist-http-mtom-pnr.txt");
    // The capture's lines end in " \n" (its CRs became spaces), so the blank line is "\n\n".
    let header_end = capture.windows(2).position(|window| window == b"\n\n").unwrap() + 2;
    let headers = String::from_utf8_lossy(&capture[..header_end]).into_owned();
    let content_type = headers.lines().find_map(|line| line.strip_prefix("Content-Type:")).unwrap().trim().to_owned();
    let body = capture[header_end..].to_vec();
    let request =
        hie_xds::read_message::<ProvideAndRegisterRequest>(&content_type, &body, &Default::default()).unwrap().message;
    let contents = contents(&request.submission.objects);
    let harness = registry_for(&contents.patient_id).await;
    let answer = harness.post(REPOSITORY_PATH, &content_type, body).await;
    assert_success(&answer, "nist-http-mtom-pnr");
    queried_back(&harness, &contents, &[&request.documents[0].content], "nist-http-mtom-pnr").await;
}

#[tokio::test]
async fn provide_and_register_bodies_are_accepted_with_their_documents() {
    let kos = read("dicom/nist-ids_4801-kos.dcm");
    let text_document = b"Four score and seven years ago".to_vec();
    let xml_document = b"<note>an XML document</note>".to_vec();
    let cases: [(&str, Documents<'_>); 4] = [
        ("iti41/nist-pnr-body.xml", vec![("Document01", &text_document), ("Document02", &xml_document)]),
        ("rad68/nist-ids_4801-pnr-kos.xml", vec![("urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30", &kos)]),
        ("rad68/nist-ids_2018-4801a-pnr-kos.xml", vec![]),
        ("rad68/nist-ids_2018-4801c-pnr-kos.xml", vec![]),
    ];
    for (path, documents) in cases {
        let bytes = read(path);
        let parsed: ProvideAndRegisterRequest = body_of(&bytes);
        let contents = contents(&parsed.submission.objects);
        // The RAD-68 bodies get the KOS for each of their entries (ids differ per fixture).
        let entry_ids: Vec<String> = parsed
            .submission
            .objects
            .iter()
            .filter_map(|object| match object {
                RegistryObject::DocumentEntry(entry) => Some(entry.id.clone()),
                _ => None,
            })
            .collect();
        let documents: Vec<(&str, &[u8])> = if documents.is_empty() {
            entry_ids.iter().map(|id| (id.as_str(), kos.as_slice())).collect()
        } else {
            documents
        };
        let harness = registry_for(&contents.patient_id).await;

        // As the fixture is (no Document): a repository refuses it, and stores nothing.
        let bare = harness.soap_body(REPOSITORY_PATH, actions::ITI41_REQUEST, &bytes).await;
        assert_failure(&bare, path, ErrorCode::XdsMissingDocument);
        assert_eq!(harness.counts().await.documents, 0, "{path}");

        let body = with_documents(&bytes, &documents);
        let answer = harness.soap_body(REPOSITORY_PATH, actions::ITI41_REQUEST, &body).await;
        assert!(!answer.is_mtom(), "{path}: a plain request is answered plainly");
        assert_success(&answer, path);
        let stored: Vec<&[u8]> = documents.iter().map(|(_, bytes)| *bytes).collect();
        queried_back(&harness, &contents, &stored, path).await;
        if path.starts_with("rad68") {
            let entry = harness.store.reg_documents_by_unique_id(&contents.document_unique_ids).await.unwrap();
            assert_eq!(entry[0].mime_type, "application/dicom", "{path}");
            assert_eq!(entry[0].format_code.as_deref(), Some("1.2.840.10008.5.1.4.1.1.88.59"), "{path}");
        }
    }
}

#[tokio::test]
async fn the_rad68_submit_objects_request_is_accepted_as_the_metadata_of_a_provide_and_register() {
    // ids_4801 SelftestPnR: this SubmitObjectsRequest is what the test kit sends with the KOS.
    let metadata = read("rad68/nist-ids_4801-submitobjects-kos.xml");
    let submission: SubmitObjectsRequest = body_of(&metadata);
    let contents = contents(&submission.objects);
    let harness = registry_for(&contents.patient_id).await;
    // As an ITI-42 it lacks what a repository adds (hash, size, repositoryUniqueId).
    let as_register = harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &metadata).await;
    let response = assert_failure(&as_register, "as ITI-42", ErrorCode::XdsRegistryMetadataError);
    assert!(response.errors.iter().any(|error| error.context.contains("hash")), "{:#?}", response.errors);

    let kos = read("dicom/nist-ids_4801-kos.dcm");
    let entry_id = submission
        .objects
        .iter()
        .find_map(|object| match object {
            RegistryObject::DocumentEntry(entry) => Some(entry.id.clone()),
            _ => None,
        })
        .unwrap();
    let request = ProvideAndRegisterRequest {
        submission,
        documents: vec![hie_xds::messages::Document {
            id: entry_id,
            content: kos.clone(),
            mime_type: "application/dicom".into(),
        }],
    };
    let answer = harness.mtom(REPOSITORY_PATH, actions::ITI41_REQUEST, &request).await;
    assert!(answer.is_mtom());
    assert_success(&answer, "ids_4801 SelftestPnR");
    queried_back(&harness, &contents, &[&kos], "ids_4801 SelftestPnR").await;
}

#[tokio::test]
async fn the_dcm4chee_register_bodies_are_accepted() {
    for name in [
        "dcm4chee-RegisterOneDocument",
        "dcm4chee-RegisterTwoDocuments",
        "dcm4chee-CreateFolder",
        "dcm4chee-CreateFolderWithDocument",
        "dcm4chee-RegisterAssocBeforeDoc",
        "dcm4chee-ResubmitInitialDoc",
    ] {
        let bytes = read(&format!("iti42/{name}.xml"));
        let contents = contents(&body_of::<SubmitObjectsRequest>(&bytes).objects);
        let harness = registry_for(&contents.patient_id).await;
        let answer = harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &bytes).await;
        assert_success(&answer, name);
        queried_back(&harness, &contents, &[], name).await;
    }
}

#[tokio::test]
async fn a_resubmission_with_the_same_hash_is_a_second_entry_and_a_repeat_is_a_duplicate() {
    let first = read("iti42/dcm4chee-RegisterOneDocument.xml");
    let resubmission = read("iti42/dcm4chee-ResubmitInitialDoc.xml");
    let contents = contents(&body_of::<SubmitObjectsRequest>(&first).objects);
    let harness = registry_for(&contents.patient_id).await;
    assert_success(&harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &first).await, "first");
    // NIST test 12004 resubmit_doc: same uniqueId, same hash, new SubmissionSet: accepted.
    assert_success(&harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &resubmission).await, "resubmission");
    let find = query(
        QUERY_GET_DOCUMENTS,
        ReturnType::ObjectRef,
        &[("$XDSDocumentEntryUniqueId", quote_query_list(&[contents.document_unique_ids[0].as_str()]))],
    );
    let answer: AdhocQueryResponse = harness.soap(REGISTRY_PATH, actions::ITI18_REQUEST, &find).await.xds();
    assert_eq!(answer.objects.len(), 2, "12004/eval: the original and the resubmission");
    // The same message again (a retry after a lost answer): its SubmissionSet is registered.
    let before = harness.counts().await;
    let repeat = harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &first).await;
    assert_failure(&repeat, "repeat", ErrorCode::XdsDuplicateUniqueIdInRegistry);
    assert_eq!(harness.counts().await, before, "a refused submission registers nothing");
    // NIST 12004 resubmit_doc_diff_hash: another hash is XDSNonIdenticalHash.
    let other_hash = String::from_utf8(resubmission.clone())
        .unwrap()
        .replace("e543712c0e10501972de13a5bfcbe826c49feb75", "0000000000000000000000000000000000000000")
        .replace("1.42.20120430135820.37.0.1", "1.42.20120430135820.37.0.2")
        .replace("aaaa-df4873be85", "bbbb-df4873be85");
    let refused = harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, other_hash.as_bytes()).await;
    assert_failure(&refused, "different hash", ErrorCode::XdsNonIdenticalHash);
    assert_eq!(harness.counts().await, before);
}

#[tokio::test]
async fn invalid_fixtures_get_the_right_error_or_fault() {
    let harness = Harness::start(Engine::Sqlite, "1.3.6.1.4.1.21367.2005.3.7").await;
    harness.feed("53ff11cb404344e").await;
    let before = harness.counts().await;

    let element_order = read("iti41/nist-pnr-element-order.xml");
    let answer = harness
        .soap_body(REPOSITORY_PATH, actions::ITI41_REQUEST, &with_documents(&element_order, &[("Document01", b"x")]))
        .await;
    assert_failure(&answer, "nist-pnr-element-order", ErrorCode::XdsRegistryMetadataError);

    let limited = with_documents(&read("iti41/nist-pnr-limited-metadata.xml"), &[("Document01", b"x")]);
    let answer = harness.soap_body(REPOSITORY_PATH, actions::ITI41_REQUEST, &limited).await;
    let response = assert_failure(&answer, "limited metadata", ErrorCode::XdsRegistryMetadataError);
    assert!(response.errors.iter().any(|error| error.context.contains("Limited Metadata")), "{:#?}", response.errors);

    let parse_error =
        harness.post(REPOSITORY_PATH, "application/soap+xml", read("iti41/nist-xml-parse-error.xml")).await;
    assert_eq!(parse_error.status, 400);
    assert_eq!(parse_error.fault().code, hie_xds::soap::FaultCode::Sender);

    let soap_order =
        harness.post(REPOSITORY_PATH, "application/soap+xml", read("iti41/nist-soap-pnr-soap-order.xml")).await;
    assert_eq!(soap_order.fault().code, hie_xds::soap::FaultCode::Sender);

    let no_message_id = harness.post(REPOSITORY_PATH, "application/soap+xml", read("iti41/nist-soap-pnr.xml")).await;
    let fault = no_message_id.fault();
    assert_eq!(fault.subcodes[0].local, "MessageAddressingHeaderRequired", "{fault:?}");

    let harness_dcm = Harness::start(Engine::Sqlite, "1.2.3.45.4.3.2.1").await;
    harness_dcm.feed("test1234_1").await;
    let template = read("iti42/dcm4chee-RegisterGenericDocument.xml");
    let answer = harness_dcm.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &template).await;
    let response = assert_failure(&answer, "template", ErrorCode::XdsRegistryMetadataError);
    assert!(
        response.errors.iter().all(|error| error.code == ErrorCode::XdsRegistryMetadataError),
        "{:#?}",
        response.errors
    );
    let filled = String::from_utf8(template)
        .unwrap()
        .replace("UUIDPREFIX", "424e-8c96")
        .replace("MYPATIENTID", "test1234_1^^^&amp;1.2.3.45.4.3.2.1&amp;ISO")
        .replace("DOCUMENTENTRYUID", "1.2.3.45.1")
        .replace("SUBMISSIONSETUID", "1.2.3.45.2");
    assert_success(
        &harness_dcm.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, filled.as_bytes()).await,
        "filled template",
    );

    for name in ["ipf-SubmitObjectsRequest_ebrs30", "ipf-SubmitObjectsRequest_ebrs30_2"] {
        let harness_ipf = Harness::start(Engine::Sqlite, "1.3.6.1.4.1.21367.2005.3.7").await;
        harness_ipf.feed("SELF-5").await;
        let answer =
            harness_ipf.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &read(&format!("iti42/{name}.xml"))).await;
        let response = assert_failure(&answer, name, ErrorCode::XdsRegistryMetadataError);
        let contexts: Vec<&str> = response.errors.iter().map(|error| error.context.as_str()).collect();
        assert!(contexts.iter().any(|context| context.contains("XDSSubmissionSet.patientId")), "{name}: {contexts:#?}");
        assert!(contexts.iter().any(|context| context.contains("IsSnapshotOf")), "{name}: {contexts:#?}");
        assert_eq!(harness_ipf.counts().await.submission_sets, 0);
    }
    for name in ["ipf-SubmitObjectsRequest_ebrs30_update", "ipf-SubmitObjectsRequest_ebrs30_update_sameLid"] {
        let answer =
            harness.soap_body(REGISTRY_PATH, actions::ITI42_REQUEST, &read(&format!("iti42/{name}.xml"))).await;
        let response = assert_failure(&answer, name, ErrorCode::XdsRegistryMetadataError);
        assert!(response.errors.iter().any(|error| error.context.contains("ITI-57")), "{name}: {:#?}", response.errors);
    }
    assert_eq!(harness.counts().await, before, "refusals register nothing");
}

/// A DocumentEntry for the update fixtures' prerequisites: entryUUID `uuid` (also its lid).
fn registered_entry(uuid: &str, unique_id: &str, patient_id: &str, hash: &str, size: &str) -> hie_xds::DocumentEntry {
    let code = |code: &str| hie_xds::Code::new(code, "Connect-a-thon", code);
    hie_xds::DocumentEntry {
        id: uuid.to_owned(),
        object_type: OBJECT_TYPE_STABLE_DOCUMENT.to_owned(),
        mime_type: "text/plain".to_owned(),
        creation_time: Some("20061224".to_owned()),
        language_code: Some("en-us".to_owned()),
        source_patient_id: Some("89765a87b^^^&3.4.5&ISO".to_owned()),
        hash: Some(hash.to_owned()),
        size: Some(size.to_owned()),
        repository_unique_id: Some("1.19.6.24.109.42.1.5".to_owned()),
        class_code: Some(code("Evaluation and management")),
        confidentiality_codes: vec![code("1.3.6.1.4.1.21367.2006.7.101")],
        format_code: Some(code("CDAR2/IHE 1.0")),
        healthcare_facility_type_code: Some(code("Outpatient")),
        practice_setting_code: Some(code("Dialysis")),
        type_code: Some(code("34108-1")),
        patient_id: Some(patient_id.to_owned()),
        unique_id: Some(unique_id.to_owned()),
        ..hie_xds::DocumentEntry::default()
    }
}

#[tokio::test]
async fn the_ipf_update_is_applied_as_iti57() {
    let patient_id = "714f4004f80540c^^^&1.3.6.1.4.1.21367.2005.3.7&ISO";
    let harness = registry_for(patient_id).await;
    let lid = "urn:uuid:20744602-ba65-44e9-87ee-a52303a5183e";
    let other = "urn:uuid:e0985823-dc50-45a5-a6c8-a11a829893bd";
    let submission_set = hie_xds::SubmissionSet {
        id: "SubmissionSet".to_owned(),
        submission_time: Some("20100709101812".to_owned()),
        content_type_code: Some(hie_xds::Code::new("History and Physical", "Connect-a-thon", "History and Physical")),
        patient_id: Some(patient_id.to_owned()),
        source_id: Some("1.3.6.1.4.1.21367.2010.1.2.900".to_owned()),
        unique_id: Some("1.42.20100709101812.1".to_owned()),
        ..hie_xds::SubmissionSet::default()
    };
    let prerequisites = SubmitObjectsRequest {
        request_slots: vec![],
        objects: vec![
            RegistryObject::SubmissionSet(submission_set),
            RegistryObject::DocumentEntry(registered_entry(
                lid,
                "1.42.20100709101812.2",
                patient_id,
                "31e311402a7e717d1bede88df6b42c0b8e91ea91",
                "1459",
            )),
            RegistryObject::DocumentEntry(registered_entry(
                other,
                "1.42.20100709101812.9",
                patient_id,
                "31e311402a7e717d1bede88df6b42c0b8e91ea91",
                "1459",
            )),
            RegistryObject::Association(hie_xds::Association::has_member("a1", "SubmissionSet", lid)),
            RegistryObject::Association(hie_xds::Association::has_member("a2", "SubmissionSet", other)),
        ],
    };
    assert_success(&harness.soap(REGISTRY_PATH, actions::ITI42_REQUEST, &prerequisites).await, "prerequisites");

    let update = read("iti42/ipf-SubmitObjectsRequest_ebrs30_update.xml");
    let answer = harness.soap_body(REGISTRY_PATH, actions::ITI57_REQUEST, &update).await;
    assert_eq!(answer.addressing().action, actions::ITI57_RESPONSE);
    assert_success(&answer, "ITI-57 update");
    let versions = harness.store.reg_documents_by_unique_id(&["1.42.20100709101812.2".to_owned()]).await.unwrap();
    let summary: Vec<(i64, &str, &str)> =
        versions.iter().map(|row| (row.version, row.status.as_str(), row.lid.as_str())).collect();
    assert_eq!(summary, [(1, STATUS_DEPRECATED, lid), (2, STATUS_APPROVED, lid)]);
    let other_row = harness.store.reg_documents_by_uuid(&[other.to_owned()]).await.unwrap();
    assert_eq!(other_row[0].status, STATUS_DEPRECATED, "UpdateAvailabilityStatus applied");

    // The same update again: version 1 is no longer the latest.
    let before = harness.counts().await;
    let again = harness.soap_body(REGISTRY_PATH, actions::ITI57_REQUEST, &update).await;
    let response: RegistryResponse = again.xds();
    assert_eq!(response.status, ResponseStatus::Failure);
    let codes: Vec<&ErrorCode> = response.errors.iter().map(|error| &error.code).collect();
    assert!(codes.contains(&&ErrorCode::XdsMetadataVersionError), "{codes:?}");
    assert!(codes.contains(&&ErrorCode::XdsMetadataUpdateError), "the other's status is no longer Approved: {codes:?}");
    assert_eq!(harness.counts().await, before);

    let same_lid = harness
        .soap_body(
            REGISTRY_PATH,
            actions::ITI57_REQUEST,
            &read("iti42/ipf-SubmitObjectsRequest_ebrs30_update_sameLid.xml"),
        )
        .await;
    let response: RegistryResponse = same_lid.xds();
    assert_eq!(response.status, ResponseStatus::Failure, "two versions of one lid in one submission");
    assert_eq!(harness.counts().await, before);
}
