//! Interop of our answers with zeep 4.3.3, a SOAP client nobody here wrote: zeep loads the IHE
//! XDS.b_DocumentRegistry.wsdl offline (test_data/wsdl, importing test_data/schema) and
//! deserializes envelopes this crate wrote as the output of the WSDL's operations
//! (`tests/zeep_parse.py`). The Python comes from the test venv: `$HIE_TEST_VENV`, else the
//! workspace's `.venv` (scripts/test.sh creates it; it needs `pip install zeep==4.3.3`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hie_xds::messages::{AdhocQueryResponse, RegistryResponse, ResponseStatus};
use hie_xds::{Addressing, RegistryObject, actions};
use serde_json::Value;

fn python() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("HIE_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| workspace.join(".venv"));
    let python = venv.join("bin/python");
    let has_zeep =
        Command::new(&python).args(["-c", "import zeep, lxml"]).output().is_ok_and(|output| output.status.success());
    assert!(
        has_zeep,
        "{} cannot import zeep: install the Python test peers (`python3 -m venv .venv && .venv/bin/pip install zeep==4.3.3`, \
         or set HIE_TEST_VENV to a venv that has zeep 4.3.3)",
        python.display()
    );
    python
}

/// Runs zeep over (operation, envelope) pairs and returns one JSON summary per envelope.
fn zeep_read(cases: &[(&str, Vec<u8>)]) -> Vec<Value> {
    let directory = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(python());
    command.arg(manifest.join("tests/zeep_parse.py")).arg(manifest.join("test_data/wsdl/XDS.b_DocumentRegistry.wsdl"));
    for (index, (operation, envelope)) in cases.iter().enumerate() {
        let path = directory.path().join(format!("{index}.xml"));
        std::fs::write(&path, envelope).unwrap();
        command.arg(operation).arg(path);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "zeep refused our XML:\n{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn response_addressing(action: &str) -> Addressing {
    Addressing::response(
        action,
        "urn:uuid:0b6f5a1e-0000-4000-8000-000000000001",
        Some("urn:uuid:0b6f5a1e-0000-4000-8000-000000000000"),
    )
}

#[test]
fn zeep_reads_our_stored_query_and_registry_responses() {
    let leaf_class = support::query_response();
    let object_ref = AdhocQueryResponse {
        response: RegistryResponse { status: ResponseStatus::PartialSuccess, ..support::failure_response() },
        total_result_count: None,
        objects: vec![RegistryObject::ObjectRef {
            id: "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30".to_owned(),
            home: None,
        }],
    };
    let failure = support::failure_response();
    let success = RegistryResponse::with_status(ResponseStatus::Success);
    let summaries = zeep_read(&[
        (
            "DocumentRegistry_RegistryStoredQuery",
            hie_xds::write_soap(&leaf_class, &response_addressing(actions::ITI18_RESPONSE)),
        ),
        (
            "DocumentRegistry_RegistryStoredQuery",
            hie_xds::write_soap(&object_ref, &response_addressing(actions::ITI18_RESPONSE)),
        ),
        (
            "DocumentRegistry_RegisterDocumentSet-b",
            hie_xds::write_soap(&failure, &response_addressing(actions::ITI42_RESPONSE)),
        ),
        (
            "DocumentRegistry_RegisterDocumentSet-b",
            hie_xds::write_soap(&success, &response_addressing(actions::ITI42_RESPONSE)),
        ),
    ]);
    assert_eq!(summaries.len(), 4);

    let leaf = &summaries[0];
    assert_eq!(leaf["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success");
    let objects = leaf["objects"].as_array().unwrap();
    let elements: Vec<&str> = objects.iter().map(|object| object["element"].as_str().unwrap()).collect();
    assert_eq!(elements, ["RegistryPackage", "ExtrinsicObject", "Association"], "{leaf}");
    let entry = &objects[1];
    assert_eq!(entry["id"], "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30");
    assert_eq!(entry["mimeType"], "application/dicom");
    assert_eq!(entry["status"], hie_xds::vocabulary::STATUS_APPROVED);
    assert_eq!(entry["slots"]["creationTime"], serde_json::json!(["20240102030405"]));
    assert_eq!(entry["slots"]["sourcePatientInfo"].as_array().unwrap().len(), 4);
    let classifications = entry["classifications"].as_array().unwrap();
    let format =
        classifications.iter().find(|c| c["scheme"] == hie_xds::vocabulary::DE_FORMAT_CODE).expect("formatCode");
    assert_eq!(format["node"], "1.2.840.10008.5.1.4.1.1.88.59");
    assert_eq!(format["slots"]["codingScheme"], serde_json::json!(["1.2.840.10008.2.6.1"]));
    let events: Vec<&Value> = classifications
        .iter()
        .filter(|c| c["scheme"] == hie_xds::vocabulary::DE_EVENT_CODE)
        .map(|c| &c["node"])
        .collect();
    assert_eq!(events, [&Value::from("CT"), &Value::from("MR")]);
    let author = classifications.iter().find(|c| c["scheme"] == hie_xds::vocabulary::DE_AUTHOR).expect("author");
    assert_eq!(author["slots"]["authorRole"], serde_json::json!(["Radiologist"]));
    let identifiers: Vec<&str> =
        entry["external_identifiers"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(identifiers, [support::PATIENT_ID, "1.2.3.4.5.6.7.8"]);
    let submission_set_classifications = objects[0]["classifications"].as_array().unwrap();
    assert!(submission_set_classifications.iter().any(|c| c["node"] == hie_xds::vocabulary::SUBMISSION_SET_NODE));
    assert_eq!(objects[2]["associationType"], hie_xds::vocabulary::ASSOCIATION_HAS_MEMBER);

    let references = &summaries[1];
    assert_eq!(references["status"], "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess");
    assert_eq!(references["objects"][0]["element"], "ObjectRef");
    assert_eq!(references["errors"].as_array().unwrap().len(), 2);

    let refused = &summaries[2];
    assert_eq!(refused["status"], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure");
    assert_eq!(refused["errors"][0]["errorCode"], "XDSUnknownPatientId");
    assert_eq!(refused["errors"][0]["severity"], "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error");
    assert_eq!(refused["errors"][0]["location"], "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30");
    assert_eq!(refused["errors"][1]["severity"], "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning");
    assert_eq!(summaries[3]["errors"], serde_json::json!([]));
}
