//! ITI-18 stored queries over the wire (ITI TF-2a 3.18.4.1.2.3.7): every query this registry
//! runs, LeafClass and ObjectRef, the parameter errors, the result cap; every answer validated by
//! xmllint, and LeafClass and ObjectRef answers deserialized by zeep 4.3.3 with the IHE registry
//! WSDL (a SOAP client nobody here wrote).

mod common;
mod support;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use hie_core::Oid;
use hie_refregistry::{REGISTRY_PATH, RefRegistryConfig};
use hie_xds::messages::{AdhocQueryResponse, ResponseStatus, ReturnType, quote_query_list, quote_query_value};
use hie_xds::vocabulary::*;
use hie_xds::{Association, ErrorCode, RegistryObject, actions};
use support::{Engine, Harness, HttpAnswer};

const DOMAIN: &str = "1.3.6.1.4.1.21367.13.20.1000";
const D1: &str = "urn:uuid:d1d1d1d1-0000-4000-8000-000000000001";
const D2: &str = "urn:uuid:d2d2d2d2-0000-4000-8000-000000000002";
const D3: &str = "urn:uuid:d3d3d3d3-0000-4000-8000-000000000003";
const D4: &str = "urn:uuid:d4d4d4d4-0000-4000-8000-000000000004";

/// P1: D1 (CT, replaced by D4), D2 (REPORTS, MR, March, in folder F); P2: D3.
async fn populated(engine: Engine, config: Option<RefRegistryConfig>) -> Harness {
    let harness = match config {
        Some(config) => Harness::start_with(engine, config).await,
        None => Harness::start(engine, DOMAIN).await,
    };
    harness.feed("P1").await;
    harness.feed("P2").await;
    let (p1, p2) = (harness.patient("P1"), harness.patient("P2"));
    assert_success(&register(&harness, &submission("1.9.1", &p1, vec![entry(D1, "1.2.1", &p1)])).await);
    let mut d2 = entry(D2, "1.2.2", &p1);
    d2.class_code = Some(hie_xds::Code::new("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1", "Reports"));
    d2.event_codes = vec![hie_xds::Code::new("MR", "1.2.840.10008.2.16.4", "MR")];
    d2.creation_time = Some("20240301".to_owned());
    let mut with_folder = submission("1.9.2", &p1, vec![d2]);
    with_folder.objects.push(RegistryObject::Folder(folder("F", "1.8.1", &p1)));
    with_folder.objects.push(RegistryObject::Association(Association::has_member("HMF", "SS", "F")));
    with_folder.objects.push(RegistryObject::Association(association("FM", ASSOCIATION_HAS_MEMBER, "F", D2)));
    with_folder.objects.push(RegistryObject::Association(Association {
        submission_set_status: None,
        ..Association::has_member("HMFM", "SS", "FM")
    }));
    assert_success(&register(&harness, &with_folder).await);
    assert_success(&register(&harness, &submission("1.9.3", &p2, vec![entry(D3, "1.2.3", &p2)])).await);
    let mut replacement = submission("1.9.4", &p1, vec![entry(D4, "1.2.4", &p1)]);
    replacement.objects.push(RegistryObject::Association(association("R", ASSOCIATION_RPLC, D4, D1)));
    assert_success(&register(&harness, &replacement).await);
    harness
}

async fn ask(
    harness: &Harness,
    id: &str,
    return_type: ReturnType,
    parameters: &[(&str, &str)],
) -> (HttpAnswer, AdhocQueryResponse) {
    let answer = harness.soap(REGISTRY_PATH, actions::ITI18_REQUEST, &stored_query(id, return_type, parameters)).await;
    let response = answer.xds::<AdhocQueryResponse>();
    (answer, response)
}

fn ids(response: &AdhocQueryResponse) -> Vec<String> {
    assert_eq!(response.response.status, ResponseStatus::Success, "{:#?}", response.response.errors);
    response
        .objects
        .iter()
        .map(|object| match object {
            RegistryObject::DocumentEntry(entry) => entry.id.clone(),
            RegistryObject::SubmissionSet(set) => set.id.clone(),
            RegistryObject::Folder(folder) => folder.id.clone(),
            RegistryObject::Association(association) => association.id.clone(),
            RegistryObject::ObjectRef { id, .. } => id.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn entries(response: &AdhocQueryResponse) -> Vec<&str> {
    response
        .objects
        .iter()
        .filter_map(|object| match object {
            RegistryObject::DocumentEntry(entry) => Some(entry.id.as_str()),
            _ => None,
        })
        .collect()
}

#[track_caller]
fn refused(response: &AdhocQueryResponse, code: ErrorCode) -> String {
    assert_eq!(response.response.status, ResponseStatus::Failure, "expected {code}");
    assert!(response.objects.is_empty());
    response
        .response
        .errors
        .iter()
        .find(|error| error.code == code)
        .unwrap_or_else(|| panic!("expected {code}: {:#?}", response.response.errors))
        .context
        .clone()
}

#[tokio::test]
async fn find_documents_filters_and_answers_leaf_class_or_object_ref() {
    for engine in support::ENGINES {
        let harness = populated(engine, None).await;
        let patient = quote_query_value(&harness.patient("P1"));
        let approved = quote_query_list(&[STATUS_APPROVED]);
        let both = quote_query_list(&[STATUS_APPROVED, STATUS_DEPRECATED]);
        let base = [("$XDSDocumentEntryPatientId", patient.as_str()), ("$XDSDocumentEntryStatus", approved.as_str())];

        let (_, response) = ask(&harness, QUERY_FIND_DOCUMENTS, ReturnType::LeafClass, &base).await;
        assert_eq!(entries(&response), [D2, D4], "{engine:?}: D1 was replaced");
        let RegistryObject::DocumentEntry(d2) = &response.objects[0] else { panic!() };
        assert_eq!(
            (d2.version.as_deref(), d2.lid.as_deref(), d2.status.as_deref()),
            (Some("1"), Some(D2), Some(STATUS_APPROVED))
        );
        let (_, response) = ask(&harness, QUERY_FIND_DOCUMENTS, ReturnType::ObjectRef, &base).await;
        assert_eq!(ids(&response), [D2, D4]);
        assert!(response.objects.iter().all(|object| matches!(object, RegistryObject::ObjectRef { .. })));

        let all = [base[0], ("$XDSDocumentEntryStatus", both.as_str())];
        let (_, response) = ask(&harness, QUERY_FIND_DOCUMENTS, ReturnType::ObjectRef, &all).await;
        assert_eq!(ids(&response), [D1, D2, D4]);

        let class = quote_query_list(&["REPORTS^^1.3.6.1.4.1.19376.1.2.6.1"]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryClassCode", &class)],
        )
        .await;
        assert_eq!(ids(&response), [D2]);
        let ct = quote_query_list(&["CT^^1.2.840.10008.2.16.4"]);
        let mr = quote_query_list(&["MR^^1.2.840.10008.2.16.4"]);
        let ct_or_mr = quote_query_list(&["CT^^1.2.840.10008.2.16.4", "MR^^1.2.840.10008.2.16.4"]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryEventCodeList", &ct_or_mr)],
        )
        .await;
        assert_eq!(ids(&response), [D1, D2, D4], "values of one slot are OR-ed");
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryEventCodeList", &ct), ("$XDSDocumentEntryEventCodeList", &mr)],
        )
        .await;
        assert!(ids(&response).is_empty(), "slots are AND-ed");
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryCreationTimeFrom", "20240201")],
        )
        .await;
        assert_eq!(ids(&response), [D2]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryCreationTimeTo", "'20240201'")],
        )
        .await;
        assert_eq!(ids(&response), [D1, D4]);
        let stable = quote_query_list(&[OBJECT_TYPE_ON_DEMAND_DOCUMENT]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryType", &stable)],
        )
        .await;
        assert!(ids(&response).is_empty());
        let author = quote_query_list(&["%Welby%"]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::ObjectRef,
            &[all[0], all[1], ("$XDSDocumentEntryAuthorPerson", &author)],
        )
        .await;
        assert!(ids(&response).is_empty(), "no entry has an author");

        // Another affinity domain matches nothing.
        let elsewhere = quote_query_value("P1^^^&1.2.3.99&ISO");
        let (_, response) = ask(
            &harness,
            QUERY_FIND_DOCUMENTS,
            ReturnType::LeafClass,
            &[("$XDSDocumentEntryPatientId", &elsewhere), base[1]],
        )
        .await;
        assert!(ids(&response).is_empty());
    }
}

#[tokio::test]
async fn parameter_errors_get_their_codes() {
    let harness = populated(Engine::Sqlite, None).await;
    let before = harness.counts().await;
    let patient = quote_query_value(&harness.patient("P1"));
    let approved = quote_query_list(&[STATUS_APPROVED]);
    let (_, response) =
        ask(&harness, QUERY_FIND_DOCUMENTS, ReturnType::LeafClass, &[("$XDSDocumentEntryPatientId", &patient)]).await;
    assert!(refused(&response, ErrorCode::XdsStoredQueryMissingParam).contains("$XDSDocumentEntryStatus"));
    let two = quote_query_list(&[&harness.patient("P1"), &harness.patient("P2")]);
    let (_, response) = ask(
        &harness,
        QUERY_FIND_DOCUMENTS,
        ReturnType::LeafClass,
        &[("$XDSDocumentEntryPatientId", &two), ("$XDSDocumentEntryStatus", &approved)],
    )
    .await;
    refused(&response, ErrorCode::XdsStoredQueryParamNumber);
    let (_, response) = ask(
        &harness,
        QUERY_FIND_DOCUMENTS,
        ReturnType::LeafClass,
        &[
            ("$XDSDocumentEntryPatientId", &patient),
            ("$XDSDocumentEntryStatus", &approved),
            ("$XDSDocumentEntryColour", "'blue'"),
        ],
    )
    .await;
    assert!(refused(&response, ErrorCode::XdsRegistryError).contains("$XDSDocumentEntryColour"));
    let (_, response) = ask(
        &harness,
        QUERY_FIND_DOCUMENTS,
        ReturnType::LeafClass,
        &[
            ("$XDSDocumentEntryPatientId", &patient),
            ("$XDSDocumentEntryStatus", &approved),
            ("$XDSDocumentEntryCreationTimeFrom", "'yesterday'"),
        ],
    )
    .await;
    refused(&response, ErrorCode::XdsRegistryError);
    let (_, response) =
        ask(&harness, "urn:uuid:00000000-0000-4000-8000-000000000000", ReturnType::LeafClass, &[]).await;
    refused(&response, ErrorCode::XdsUnknownStoredQuery);
    let (_, response) = ask(&harness, QUERY_FIND_FOLDERS, ReturnType::LeafClass, &[]).await;
    refused(&response, ErrorCode::XdsUnknownStoredQuery);
    let (_, response) = ask(&harness, QUERY_GET_DOCUMENTS, ReturnType::LeafClass, &[]).await;
    refused(&response, ErrorCode::XdsStoredQueryMissingParam);
    let uuids = quote_query_list(&[D1]);
    let unique_ids = quote_query_list(&["1.2.1"]);
    let (_, response) = ask(
        &harness,
        QUERY_GET_DOCUMENTS,
        ReturnType::LeafClass,
        &[("$XDSDocumentEntryEntryUUID", &uuids), ("$XDSDocumentEntryUniqueId", &unique_ids)],
    )
    .await;
    refused(&response, ErrorCode::XdsStoredQueryParamNumber);
    let two_patients = quote_query_list(&[D1, D3]);
    let (_, response) =
        ask(&harness, QUERY_GET_DOCUMENTS, ReturnType::ObjectRef, &[("$XDSDocumentEntryEntryUUID", &two_patients)])
            .await;
    refused(&response, ErrorCode::XdsResultNotSinglePatient);
    let (_, response) =
        ask(&harness, QUERY_GET_DOCUMENTS, ReturnType::RegistryObject, &[("$XDSDocumentEntryEntryUUID", &uuids)]).await;
    assert!(refused(&response, ErrorCode::XdsRegistryError).contains("returnType"));

    // The fixtures: a missing status, a coded value without its scheme, an injection attempt.
    for (path, code) in [
        ("iti18/nist-sq-req-missing-stat.xml", ErrorCode::XdsStoredQueryMissingParam),
        ("iti18/nist-sq-req-bad-code.xml", ErrorCode::XdsRegistryError),
        ("iti18/ipf-iti18request.xml", ErrorCode::XdsRegistryError),
    ] {
        let answer = harness.soap_body(REGISTRY_PATH, actions::ITI18_REQUEST, &support::read(path)).await;
        refused(&answer.xds::<AdhocQueryResponse>(), code);
    }
    // A valid query of another domain's patient: Success, nothing found.
    let answer =
        harness.soap_body(REGISTRY_PATH, actions::ITI18_REQUEST, &support::read("iti18/nist-sq-req.xml")).await;
    assert!(ids(&answer.xds::<AdhocQueryResponse>()).is_empty());
    assert_eq!(harness.counts().await, before, "queries write nothing");
}

#[tokio::test]
async fn too_many_results_is_an_error() {
    let mut config = RefRegistryConfig::new(Oid::parse(support::REPOSITORY).unwrap(), Oid::parse(DOMAIN).unwrap());
    config.max_results = 2;
    let harness = populated(Engine::Sqlite, Some(config)).await;
    let patient = quote_query_value(&harness.patient("P1"));
    let both = quote_query_list(&[STATUS_APPROVED, STATUS_DEPRECATED]);
    let (_, response) = ask(
        &harness,
        QUERY_FIND_DOCUMENTS,
        ReturnType::ObjectRef,
        &[("$XDSDocumentEntryPatientId", &patient), ("$XDSDocumentEntryStatus", &both)],
    )
    .await;
    assert!(refused(&response, ErrorCode::XdsTooManyResults).contains('2'));
    let approved = quote_query_list(&[STATUS_APPROVED]);
    let (_, response) = ask(
        &harness,
        QUERY_FIND_DOCUMENTS,
        ReturnType::ObjectRef,
        &[("$XDSDocumentEntryPatientId", &patient), ("$XDSDocumentEntryStatus", &approved)],
    )
    .await;
    assert_eq!(ids(&response).len(), 2, "exactly the cap is fine");
}

#[tokio::test]
async fn the_other_stored_queries() {
    for engine in support::ENGINES {
        let harness = populated(engine, None).await;
        let patient = quote_query_value(&harness.patient("P1"));
        let approved = quote_query_list(&[STATUS_APPROVED]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_SUBMISSION_SETS,
            ReturnType::LeafClass,
            &[("$XDSSubmissionSetPatientId", &patient), ("$XDSSubmissionSetStatus", &approved)],
        )
        .await;
        let unique_ids: Vec<String> = response
            .objects
            .iter()
            .map(|object| match object {
                RegistryObject::SubmissionSet(set) => set.unique_id.clone().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(unique_ids, ["1.9.1", "1.9.2", "1.9.4"], "{engine:?}");
        let source = quote_query_list(&["9.9.9"]);
        let (_, response) = ask(
            &harness,
            QUERY_FIND_SUBMISSION_SETS,
            ReturnType::ObjectRef,
            &[
                ("$XDSSubmissionSetPatientId", &patient),
                ("$XDSSubmissionSetStatus", &approved),
                ("$XDSSubmissionSetSourceId", &source),
            ],
        )
        .await;
        assert!(ids(&response).is_empty());

        let by_unique_id = quote_query_list(&["1.2.4", "1.2.1"]);
        let (_, response) =
            ask(&harness, QUERY_GET_DOCUMENTS, ReturnType::LeafClass, &[("$XDSDocumentEntryUniqueId", &by_unique_id)])
                .await;
        assert_eq!(entries(&response), [D1, D4]);
        let by_uuid = quote_query_list(&[&D2.to_ascii_uppercase().replace("URN:UUID:", "urn:uuid:")]);
        let (_, response) =
            ask(&harness, QUERY_GET_DOCUMENTS, ReturnType::LeafClass, &[("$XDSDocumentEntryEntryUUID", &by_uuid)])
                .await;
        assert_eq!(entries(&response), [D2], "UUIDs match in any case");

        let d1 = quote_query_list(&[D1]);
        let (_, response) = ask(&harness, QUERY_GET_ASSOCIATIONS, ReturnType::LeafClass, &[("$uuid", &d1)]).await;
        let kinds: Vec<&str> = response
            .objects
            .iter()
            .map(|object| match object {
                RegistryObject::Association(association) => association.association_type.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, [ASSOCIATION_HAS_MEMBER, ASSOCIATION_RPLC]);

        let set = quote_query_value("1.9.2");
        let (_, response) = ask(
            &harness,
            QUERY_GET_SUBMISSION_SET_AND_CONTENTS,
            ReturnType::LeafClass,
            &[("$XDSSubmissionSetUniqueId", &set)],
        )
        .await;
        let summary: Vec<&str> = response
            .objects
            .iter()
            .map(|object| match object {
                RegistryObject::SubmissionSet(_) => "set",
                RegistryObject::DocumentEntry(_) => "entry",
                RegistryObject::Folder(_) => "folder",
                RegistryObject::Association(_) => "association",
                _ => "other",
            })
            .collect();
        assert_eq!(
            summary,
            ["set", "entry", "folder", "association", "association", "association", "association"],
            "{engine:?}"
        );
        let other_format = quote_query_list(&["other^^1.2.840.10008.2.6.1"]);
        let (_, response) = ask(
            &harness,
            QUERY_GET_SUBMISSION_SET_AND_CONTENTS,
            ReturnType::ObjectRef,
            &[("$XDSSubmissionSetUniqueId", &set), ("$XDSDocumentEntryFormatCode", &other_format)],
        )
        .await;
        assert_eq!(
            ids(&response).len(),
            4,
            "the entry and its two HasMember are left out: set, folder, 2 associations"
        );
        let (_, response) = ask(
            &harness,
            QUERY_GET_SUBMISSION_SET_AND_CONTENTS,
            ReturnType::ObjectRef,
            &[("$XDSSubmissionSetUniqueId", "'7.7.7'")],
        )
        .await;
        assert!(ids(&response).is_empty());

        let d4 = quote_query_value("1.2.4");
        let rplc = quote_query_list(&[ASSOCIATION_RPLC]);
        let (_, response) = ask(
            &harness,
            QUERY_GET_RELATED_DOCUMENTS,
            ReturnType::LeafClass,
            &[("$XDSDocumentEntryUniqueId", &d4), ("$AssociationTypes", &rplc)],
        )
        .await;
        assert_eq!(entries(&response), [D4, D1]);
        assert_eq!(response.objects.len(), 3, "both entries and the RPLC");
        let apnd = quote_query_list(&[ASSOCIATION_APND]);
        let (_, response) = ask(
            &harness,
            QUERY_GET_RELATED_DOCUMENTS,
            ReturnType::LeafClass,
            &[("$XDSDocumentEntryUniqueId", &d4), ("$AssociationTypes", &apnd)],
        )
        .await;
        assert!(ids(&response).is_empty(), "no related documents: an empty answer");
        let (_, response) =
            ask(&harness, QUERY_GET_RELATED_DOCUMENTS, ReturnType::LeafClass, &[("$XDSDocumentEntryUniqueId", &d4)])
                .await;
        refused(&response, ErrorCode::XdsStoredQueryMissingParam);

        // NIST's PnrNoXop eval query, its $ssuid$ placeholder filled in.
        let eval =
            String::from_utf8(support::read("iti18/nist-pnrnoxop-eval-query.xml")).unwrap().replace("$ssuid$", "1.9.4");
        let answer = harness.soap_body(REGISTRY_PATH, actions::ITI18_REQUEST, eval.as_bytes()).await;
        assert_eq!(entries(&answer.xds::<AdhocQueryResponse>()), [D4]);
    }
}

#[tokio::test]
async fn a_home_community_id_is_set_on_every_object() {
    let mut config = RefRegistryConfig::new(Oid::parse(support::REPOSITORY).unwrap(), Oid::parse(DOMAIN).unwrap());
    config.home_community_id = Some(Oid::parse("1.2.3.4.5.6.7").unwrap());
    let harness = populated(Engine::Sqlite, Some(config)).await;
    let set = quote_query_value("1.9.2");
    for return_type in [ReturnType::LeafClass, ReturnType::ObjectRef] {
        let (_, response) =
            ask(&harness, QUERY_GET_SUBMISSION_SET_AND_CONTENTS, return_type, &[("$XDSSubmissionSetUniqueId", &set)])
                .await;
        for object in &response.objects {
            let home = match object {
                RegistryObject::SubmissionSet(set) => set.home.as_deref(),
                RegistryObject::DocumentEntry(entry) => entry.home.as_deref(),
                RegistryObject::Folder(folder) => folder.home.as_deref(),
                RegistryObject::Association(association) => association.home.as_deref(),
                RegistryObject::ObjectRef { home, .. } => home.as_deref(),
                _ => None,
            };
            assert_eq!(home, Some("urn:oid:1.2.3.4.5.6.7"), "{object:?}");
        }
    }
}

fn zeep_python() -> PathBuf {
    let python = support::venv_bin("python");
    let ok =
        Command::new(&python).args(["-c", "import zeep, lxml"]).output().is_ok_and(|output| output.status.success());
    assert!(ok, "{} cannot import zeep: `pip install zeep==4.3.3` in the test venv", python.display());
    python
}

#[tokio::test]
async fn zeep_reads_our_answers_with_the_ihe_registry_wsdl() {
    let harness = populated(Engine::Sqlite, None).await;
    let patient = quote_query_value(&harness.patient("P1"));
    let both = quote_query_list(&[STATUS_APPROVED, STATUS_DEPRECATED]);
    let find = [("$XDSDocumentEntryPatientId", patient.as_str()), ("$XDSDocumentEntryStatus", both.as_str())];
    let set = quote_query_value("1.9.2");
    let (leaf, _) = ask(&harness, QUERY_FIND_DOCUMENTS, ReturnType::LeafClass, &find).await;
    let (object_ref, _) = ask(&harness, QUERY_FIND_DOCUMENTS, ReturnType::ObjectRef, &find).await;
    let (contents, _) = ask(
        &harness,
        QUERY_GET_SUBMISSION_SET_AND_CONTENTS,
        ReturnType::LeafClass,
        &[("$XDSSubmissionSetUniqueId", &set)],
    )
    .await;
    let (failure, _) = ask(&harness, QUERY_GET_DOCUMENTS, ReturnType::LeafClass, &[]).await;
    let p1 = harness.patient("P1");
    let registered = harness
        .soap(REGISTRY_PATH, actions::ITI42_REQUEST, &submission("1.9.9", &p1, vec![entry("X", "1.2.9", &p1)]))
        .await;
    let refused = harness
        .soap(REGISTRY_PATH, actions::ITI42_REQUEST, &submission("1.9.9", &p1, vec![entry("X", "1.2.10", &p1)]))
        .await;

    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(zeep_python());
    command.arg(hie_xds::test_support::zeep_parse_script()).arg(hie_xds::test_support::registry_wsdl());
    let cases = [
        ("DocumentRegistry_RegistryStoredQuery", &leaf),
        ("DocumentRegistry_RegistryStoredQuery", &object_ref),
        ("DocumentRegistry_RegistryStoredQuery", &contents),
        ("DocumentRegistry_RegistryStoredQuery", &failure),
        ("DocumentRegistry_RegisterDocumentSet-b", &registered),
        ("DocumentRegistry_RegisterDocumentSet-b", &refused),
    ];
    for (index, (operation, answer)) in cases.iter().enumerate() {
        assert!(!answer.is_mtom(), "plain SOAP requests get plain answers");
        let path = directory.path().join(format!("{index}.xml"));
        std::fs::write(&path, &answer.body).unwrap();
        command.arg(operation).arg(path);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "zeep refused our answers:\n{}", String::from_utf8_lossy(&output.stderr));
    let summaries: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(summaries.len(), cases.len());

    let leaf = &summaries[0];
    assert_eq!(leaf["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success");
    let objects = leaf["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 3);
    let ids: Vec<&str> = objects.iter().map(|object| object["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [D1, D2, D4]);
    assert_eq!(objects[0]["element"], "ExtrinsicObject");
    assert_eq!(objects[0]["status"], STATUS_DEPRECATED);
    assert_eq!(objects[1]["status"], STATUS_APPROVED);
    assert_eq!(objects[1]["mimeType"], "application/dicom");
    assert_eq!(objects[1]["slots"]["repositoryUniqueId"], serde_json::json!([support::REPOSITORY]));
    let identifiers: Vec<&str> =
        objects[1]["external_identifiers"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(identifiers, [harness.patient("P1").as_str(), "1.2.2"]);
    let classes = objects[1]["classifications"].as_array().unwrap();
    assert!(classes.iter().any(|c| c["scheme"] == DE_CLASS_CODE && c["node"] == "REPORTS"), "{classes:?}");

    let references = &summaries[1];
    let refs: Vec<&str> =
        references["objects"].as_array().unwrap().iter().map(|object| object["id"].as_str().unwrap()).collect();
    assert_eq!(refs, [D1, D2, D4]);
    assert!(references["objects"].as_array().unwrap().iter().all(|object| object["element"] == "ObjectRef"));

    let elements: Vec<&str> =
        summaries[2]["objects"].as_array().unwrap().iter().map(|object| object["element"].as_str().unwrap()).collect();
    assert_eq!(
        elements,
        [
            "RegistryPackage",
            "ExtrinsicObject",
            "RegistryPackage",
            "Association",
            "Association",
            "Association",
            "Association"
        ]
    );

    assert_eq!(summaries[3]["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure");
    assert_eq!(summaries[3]["errors"][0]["errorCode"], "XDSStoredQueryMissingParam");
    assert_eq!(summaries[4]["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success");
    assert_eq!(summaries[5]["errors"][0]["errorCode"], "XDSDuplicateUniqueIdInRegistry");
    assert_eq!(summaries[5]["errors"][0]["location"], "1.9.9");
}
