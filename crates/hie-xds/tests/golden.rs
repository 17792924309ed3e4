//! Golden tests over the shared XDS fixtures (copied into test_data/messages): every
//! schema-valid message parses into the typed model and matches its canonical dump in
//! test_data/expected; typed -> XML -> typed is the identity; what this crate writes back passes
//! xmllint against the IHE schema; the refused fixtures are refused for the reason the fixtures
//! README gives; the MTOM captures resolve their xop:Include.

use std::path::{Path, PathBuf};

use hie_xds::ebrim::EbrimErrorKind;
use hie_xds::messages::{
    AdhocQueryRequest, AdhocQueryResponse, ProvideAndRegisterRequest, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse, RetrieveImagingDocumentSetRequest, SubmitObjectsRequest, XdsMessage,
};
use hie_xds::mtom::Package;
use hie_xds::test_support::{imaging_document_source_schema, xmllint_validate};
use hie_xds::vocabulary::*;
use hie_xds::xml::{self, Limits, XmlErrorKind};
use hie_xds::{RegistryObject, SoapError, XdsError, soap};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data").join(path)
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(data(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Runs `read` on the message's body element: the Body child of an envelope, or the root of a
/// bare body.
fn with_body<R>(bytes: &[u8], read: impl FnOnce(xml::Element<'_>) -> R) -> R {
    let document = xml::parse(bytes, &Limits::DEFAULT).unwrap();
    if document.root().is(NS_SOAP12, "Envelope") {
        let envelope = soap::envelope_from_document(document).unwrap();
        read(envelope.body())
    } else {
        read(document.root())
    }
}

/// Compares `dump` with test_data/expected/NAME.expected (UPDATE_EXPECT=1 rewrites it).
fn check_expect(name: &str, dump: &str) {
    let path = data(&format!("expected/{name}.expected"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, dump).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run with UPDATE_EXPECT=1 and review it", path.display()));
    assert_eq!(dump, expected, "{name}: the typed model differs from {}", path.display());
}

/// Reads the body as `M`, checks the dump, the round trip and xmllint on what we write.
fn golden<M: XdsMessage + PartialEq + std::fmt::Debug + Clone>(path: &str, dump: impl Fn(&M) -> String) -> M {
    let bytes = read(path);
    let message = with_body(&bytes, |body| M::read(body, &mut Package::plain(b"")))
        .unwrap_or_else(|error| panic!("{path}: {error}"));
    let name = path.trim_start_matches("messages/").replace('/', "__");
    check_expect(&name, &dump(&message));
    round_trip_and_validate(path, &message);
    message
}

fn round_trip_and_validate<M: XdsMessage + PartialEq + std::fmt::Debug>(what: &str, message: &M) {
    let written = message.to_xml();
    let again = xml::parse(&written, &Limits::DEFAULT).unwrap();
    let reread =
        M::read(again.root(), &mut Package::plain(b"")).unwrap_or_else(|error| panic!("{what} rewritten: {error}"));
    assert_eq!(&reread, message, "{what}: typed -> XML -> typed changed the message");
    let envelope = hie_xds::write_soap(message, &hie_xds::Addressing::request("urn:test", "urn:uuid:1", "http://x"));
    xmllint_validate("application/soap+xml", &envelope, &imaging_document_source_schema())
        .unwrap_or_else(|report| panic!("{what}: what we wrote is not schema-valid: {report}"));
}

fn debug_dump<M: std::fmt::Debug>(message: &M) -> String {
    format!("{message:#?}\n")
}

/// Document bytes are summarised so dumps stay readable.
fn pnr_dump(message: &ProvideAndRegisterRequest) -> String {
    let mut summary = message.clone();
    let mut lines = String::new();
    for document in &mut summary.documents {
        lines.push_str(&format!(
            "document {}: {} bytes, starts {:?}\n",
            document.id,
            document.content.len(),
            starts(&document.content)
        ));
        document.content.clear();
    }
    format!("{summary:#?}\n{lines}")
}

fn retrieve_dump(message: &RetrieveDocumentSetResponse) -> String {
    let mut summary = message.clone();
    let mut lines = String::new();
    for document in &mut summary.documents {
        lines.push_str(&format!("document {}: {} bytes\n", document.document_unique_id, document.document.len()));
        document.document.clear();
    }
    format!("{summary:#?}\n{lines}")
}

fn starts(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(24)]).into_owned()
}

fn files(folder: &str, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data(folder))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .map(|name| format!("{folder}/{name}"))
        .collect();
    names.sort();
    names
}

#[test]
fn iti41_provide_and_register_fixtures_parse() {
    for path in [
        "messages/iti41/nist-soap-pnr.xml",
        "messages/iti41/nist-pnr-body.xml",
        "messages/iti41/nist-pnr-limited-metadata.xml",
    ] {
        let message = golden::<ProvideAndRegisterRequest>(path, pnr_dump);
        assert!(!message.submission.objects.is_empty(), "{path}: no metadata");
        for document in &message.documents {
            let entry = message
                .submission
                .objects
                .iter()
                .any(|object| matches!(object, RegistryObject::DocumentEntry(entry) if entry.id == document.id));
            assert!(entry, "{path}: Document {} has no DocumentEntry", document.id);
        }
    }
}

#[test]
fn rad68_imaging_fixtures_parse_as_kos_entries() {
    for path in files("messages/rad68", ".xml") {
        let objects = if path.contains("submitobjects") {
            golden::<SubmitObjectsRequest>(&path, debug_dump).objects
        } else {
            golden::<ProvideAndRegisterRequest>(&path, pnr_dump).submission.objects
        };
        let entries: Vec<_> = objects
            .iter()
            .filter_map(|object| match object {
                RegistryObject::DocumentEntry(entry) => Some(entry),
                _ => None,
            })
            .collect();
        assert!(!entries.is_empty(), "{path}: no DocumentEntry");
        for entry in entries {
            assert_eq!(entry.mime_type, "application/dicom", "{path}");
            let format = entry.format_code.as_ref().unwrap_or_else(|| panic!("{path}: no formatCode"));
            assert_eq!(format.code, "1.2.840.10008.5.1.4.1.1.88.59", "{path}");
            assert_eq!(format.scheme, "1.2.840.10008.2.6.1", "{path}");
            assert!(entry.patient_id.is_some() && entry.unique_id.is_some(), "{path}: patientId/uniqueId");
        }
        assert!(
            objects.iter().any(|object| matches!(object, RegistryObject::SubmissionSet(_))),
            "{path}: no SubmissionSet"
        );
    }
}

#[test]
fn iti42_register_fixtures_parse() {
    for path in files("messages/iti42", ".xml") {
        let message = golden::<SubmitObjectsRequest>(&path, debug_dump);
        assert!(!message.objects.is_empty(), "{path}: no objects");
        if path.contains("CreateFolder") {
            assert!(
                message.objects.iter().any(|object| matches!(object, RegistryObject::Folder(_))),
                "{path}: no Folder"
            );
        }
        if path.contains("update") {
            assert!(
                message.objects.iter().any(|object| matches!(object, RegistryObject::Association(association)
                    if association.previous_version.is_some() || association.association_type == ASSOCIATION_UPDATE_AVAILABILITY_STATUS)),
                "{path}: no metadata-update association"
            );
        }
    }
}

#[test]
fn iti18_query_fixtures_parse() {
    for path in files("messages/iti18", ".xml") {
        let bytes = read(&path);
        if with_body(&bytes, |body| body.local() == "AdhocQueryRequest") {
            let request = golden::<AdhocQueryRequest>(&path, debug_dump);
            assert!(
                request.query_id.starts_with("urn:uuid:") || request.query_id.starts_with('$'),
                "{path}: {}",
                request.query_id
            );
        } else {
            golden::<AdhocQueryResponse>(&path, debug_dump);
        }
    }
    let request = golden::<AdhocQueryRequest>("messages/iti18/nist-sq-req.xml", debug_dump);
    assert_eq!(request.query_id, QUERY_FIND_DOCUMENTS);
    assert_eq!(request.parameter_values(PARAM_DOCUMENT_ENTRY_STATUS), vec![STATUS_APPROVED.to_owned()]);
    assert_eq!(
        request.parameter_values(PARAM_DOCUMENT_ENTRY_PATIENT_ID),
        vec!["c4d77e21d0dd487^^^&1.3.6.1.4.1.21367.2005.3.7&ISO".to_owned()]
    );
    let objectref = golden::<AdhocQueryResponse>("messages/iti18/nist-sq-resp-objectref.xml", debug_dump);
    assert!(objectref.objects.iter().all(|object| matches!(object, RegistryObject::ObjectRef { .. })));
}

#[test]
fn iti43_retrieve_fixtures_parse() {
    let request = golden::<RetrieveDocumentSetRequest>("messages/iti43/nist-soap-ret-req.xml", debug_dump);
    assert!(request.documents.iter().all(|document| document.home_community_id.is_none()));
    let request = golden::<RetrieveDocumentSetRequest>("messages/iti43/nist-soap-xcr-req.xml", debug_dump);
    assert!(request.documents.iter().all(|document| document.home_community_id.is_some()));
    for path in [
        "messages/iti43/nist-soap-ret-resp.xml",
        "messages/iti43/nist-soap-xret-resp.xml",
        "messages/iti43/nist-soap-xret-resp-homeless.xml",
    ] {
        let response = golden::<RetrieveDocumentSetResponse>(path, retrieve_dump);
        assert!(response.documents.iter().all(|document| !document.document.is_empty()), "{path}");
    }
}

#[test]
fn rad69_request_fixtures_parse() {
    for path in files("messages/rad69", ".request.xml") {
        let request = golden::<RetrieveImagingDocumentSetRequest>(&path, debug_dump);
        assert!(!request.studies.is_empty(), "{path}");
        assert!(
            request.studies.iter().all(|study| study.series.iter().all(|series| !series.documents.is_empty())),
            "{path}"
        );
    }
    let with =
        golden::<RetrieveImagingDocumentSetRequest>("messages/rad69/ids_4820_case-1_with_hcid.request.xml", debug_dump);
    assert!(with.studies[0].series[0].documents[0].home_community_id.is_some());
    let empty = golden::<RetrieveImagingDocumentSetRequest>(
        "messages/rad69/ids_4812_case-5_Empty_Study_Instance_UID.request.xml",
        debug_dump,
    );
    assert_eq!(empty.studies[0].study_instance_uid, "", "an empty UID is the registry's to refuse, not the codec's");
}

#[test]
fn rad69_expected_responses_parse_once_the_placeholder_is_base64() {
    for path in files("messages/rad69", ".expected-response.xml") {
        let bytes = read(&path);
        let text = String::from_utf8(bytes).unwrap();
        if text.contains(">...<") {
            let error =
                with_body(text.as_bytes(), |body| RetrieveDocumentSetResponse::read(body, &mut Package::plain(b"")))
                    .unwrap_err();
            assert!(matches!(error.kind, EbrimErrorKind::InvalidBase64 { .. }), "{path}: {error}");
        }
        let fixed = text.replace(">...<", ">UExBQ0VIT0xERVI=<");
        let response =
            with_body(fixed.as_bytes(), |body| RetrieveDocumentSetResponse::read(body, &mut Package::plain(b"")))
                .unwrap_or_else(|error| panic!("{path}: {error}"));
        let name = path.trim_start_matches("messages/").replace('/', "__");
        check_expect(&name, &retrieve_dump(&response));
        round_trip_and_validate(&path, &response);
        if path.contains("partial") {
            assert_eq!(response.response.status, hie_xds::messages::ResponseStatus::PartialSuccess);
            assert_eq!(response.response.errors[0].code, hie_xds::ErrorCode::XdsDocumentUniqueIdError);
        }
        if path.contains("failure") {
            assert_eq!(response.response.status, hie_xds::messages::ResponseStatus::Failure);
        }
    }
}

#[test]
fn registry_response_fixtures_parse() {
    for path in files("messages/responses", ".xml") {
        golden::<RegistryResponse>(&path, debug_dump);
    }
    let response = golden::<RegistryResponse>("messages/responses/nist-regresp-success-with-errorlist.xml", debug_dump);
    assert_eq!(response.errors[0].code, hie_xds::ErrorCode::XdsUnknownPatientId);
    assert_eq!(response.errors[0].code.retry_class(), hie_xds::RetryClass::ParkUntilIdentityFeed);
}

#[test]
fn refused_fixtures_are_refused_for_their_reason() {
    let bytes = read("messages/iti41/nist-pnr-element-order.xml");
    let error = with_body(&bytes, |body| ProvideAndRegisterRequest::read(body, &mut Package::plain(b""))).unwrap_err();
    assert!(matches!(&error.kind, EbrimErrorKind::OutOfOrder { element, .. } if element.ends_with("}Slot")), "{error}");

    let bytes = read("messages/iti41/nist-xml-parse-error.xml");
    let error = xml::parse(&bytes, &Limits::DEFAULT).unwrap_err();
    assert!(matches!(error.kind, XmlErrorKind::Syntax(_)), "{error}");
    assert_eq!(error.position.line, 9, "{error}");

    let bytes = read("messages/iti41/nist-soap-pnr-soap-order.xml");
    let error = soap::parse_envelope(&bytes, &Limits::DEFAULT).unwrap_err();
    assert!(matches!(error, SoapError::Structure { problem, .. } if problem.contains("before Body")), "{error}");

    let bytes = read("messages/iti41/nist-soap-pnr.xml");
    let error = hie_xds::read_request::<ProvideAndRegisterRequest>(
        "application/soap+xml",
        &bytes,
        &Default::default(),
        &[hie_xds::actions::ITI41_REQUEST],
    )
    .unwrap_err();
    assert_eq!(error, XdsError::Soap(SoapError::MissingAddressingHeader { header: "MessageID" }));
}

/// The HTTP Content-Type of a `.mime` capture, from the `<Headers>` of its testplan.
fn testplan_content_type(path: &str) -> String {
    let plan = String::from_utf8(read(path)).unwrap();
    let line = plan.lines().find(|line| line.trim_start().starts_with("Content-Type:")).unwrap();
    line.trim().trim_start_matches("Content-Type:").trim().to_owned()
}

#[test]
fn mtom_captures_resolve_their_includes() {
    let cases = [
        ("nist-pnrxop-xop", Some("This is my document.")),
        ("nist-pnrxop-encodedurl", Some("This is my document.")),
        ("nist-pnrnoxop-submit", None),
        ("nist-pnrxop-noxop", None),
    ];
    for (name, attachment_text) in cases {
        let content_type = testplan_content_type(&format!("messages/iti41/{name}.testplan.xml"));
        let body = read(&format!("messages/iti41/{name}.mime"));
        let received = hie_xds::read_message::<ProvideAndRegisterRequest>(&content_type, &body, &Default::default())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(received.envelope.addressing.action, hie_xds::actions::ITI41_REQUEST, "{name}");
        let document = &received.message.documents[0];
        if let Some(text) = attachment_text {
            assert!(document.content.starts_with(text.as_bytes()), "{name}: {:?}", starts(&document.content));
        }
        assert!(!document.content.is_empty(), "{name}");
        check_expect(&format!("iti41__{name}.mime"), &pnr_dump(&received.message));
        xmllint_validate(&content_type, &body, &imaging_document_source_schema())
            .unwrap_or_else(|report| panic!("{name} once XOP is inlined: {report}"));
    }

    let capture = read("messages/iti41/nist-http-mtom-pnr.txt");
    // The capture's lines end in " \n" (its CRs became spaces), so the blank line is "\n\n".
    let header_end = capture.windows(2).position(|window| window == b"\n\n").expect("header/body separator") + 2;
    let headers = String::from_utf8_lossy(&capture[..header_end]).into_owned();
    let content_type = headers
        .lines()
        .find_map(|line| line.strip_prefix("Content-Type:"))
        .map(|value| value.trim().to_owned())
        .unwrap();
    let body = &capture[header_end..];
    let received =
        hie_xds::read_message::<ProvideAndRegisterRequest>(&content_type, body, &Default::default()).unwrap();
    assert!(received.message.documents[0].content.starts_with(b"Four score"), "nist-http-mtom-pnr");
}
