//! Round trips of every message type this crate writes: typed -> XML -> typed is the identity,
//! over plain SOAP and over MTOM, and every written message passes xmllint against
//! test_data/schema/IHE/XDSI.b_ImagingDocumentSource.xsd (Body child, XOP inlined).

mod support;

use hie_xds::messages::*;
use hie_xds::mtom::{self, MtomLimits, MtomWriter, Package};
use hie_xds::test_support::{imaging_document_source_schema, xmllint_validate};
use hie_xds::xml::{self, Limits};
use hie_xds::{Addressing, ReadLimits, XdsMessage, actions, soap};
use proptest::prelude::*;

fn request_addressing(action: &str) -> Addressing {
    Addressing::request(action, "urn:uuid:6f0c1d2e-3a4b-4c5d-8e9f-a0b1c2d3e4f5", "https://registry.example/xds")
}

/// Plain SOAP and MTOM: write, validate with xmllint, read back, compare.
fn check<M: XdsMessage + PartialEq + std::fmt::Debug>(message: &M, action: &str) {
    let addressing = request_addressing(action);
    let plain = hie_xds::write_soap(message, &addressing);
    let content_type = hie_xds::soap_content_type(action);
    xmllint_validate(&content_type, &plain, &imaging_document_source_schema())
        .unwrap_or_else(|report| panic!("{report}"));
    let received = hie_xds::read_request::<M>(&content_type, &plain, &ReadLimits::default(), &[action]).unwrap();
    assert_eq!(&received.message, message, "plain SOAP round trip");
    assert_eq!(received.envelope.addressing, addressing, "addressing round trip");

    let outgoing =
        hie_xds::write_mtom(message, &addressing, "MIMEBoundary_6f0c1d2e3a4b", "root.6f0c1d2e@hie-xds").unwrap();
    let body = outgoing.concat();
    xmllint_validate(&outgoing.content_type, &body, &imaging_document_source_schema())
        .unwrap_or_else(|report| panic!("{report}"));
    let received =
        hie_xds::read_request::<M>(&outgoing.content_type, &body, &ReadLimits::default(), &[action]).unwrap();
    assert_eq!(&received.message, message, "MTOM round trip");
}

#[test]
fn rad68_provide_and_register_round_trips() {
    let kos: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let message = support::kos_submission(kos);
    check(&message, actions::ITI41_REQUEST);
    let (_, attachments) = message.to_xop();
    assert_eq!(attachments.len(), 1, "the KOS travels as one attachment");
    assert_eq!(attachments[0].content_type, "application/dicom");
}

#[test]
fn iti42_register_round_trips() {
    check(&support::register_with_folder_and_replacement(), actions::ITI42_REQUEST);
}

#[test]
fn iti57_deprecation_round_trips() {
    check(&support::deprecation(), actions::ITI57_REQUEST);
}

#[test]
fn iti18_request_and_response_round_trip() {
    let request = support::find_documents();
    check(&request, actions::ITI18_REQUEST);
    assert_eq!(
        request.parameter_values(hie_xds::vocabulary::PARAM_DOCUMENT_ENTRY_PATIENT_ID),
        vec![support::PATIENT_ID.to_owned()]
    );
    let mut response = support::query_response();
    check(&response, actions::ITI18_RESPONSE);
    response.objects = vec![hie_xds::RegistryObject::ObjectRef {
        id: "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30".to_owned(),
        home: None,
    }];
    response.response.errors = support::failure_response().errors;
    response.response.status = ResponseStatus::PartialSuccess;
    check(&response, actions::ITI18_RESPONSE);
}

#[test]
fn registry_responses_round_trip() {
    check(&support::failure_response(), actions::ITI41_RESPONSE);
    check(&RegistryResponse::with_status(ResponseStatus::Success), actions::ITI42_RESPONSE);
}

#[test]
fn retrieve_requests_and_responses_round_trip() {
    check(&support::rad69_request(), actions::RAD69_REQUEST);
    check(&support::iti43_request(), actions::ITI43_REQUEST);
    check(&support::rad69_response(b"DICM instance bytes \x00\x01\xff".to_vec()), actions::RAD69_RESPONSE);
}

/// A server streaming documents writes the root with its own cids, then each part itself.
#[test]
fn streamed_retrieve_response_reads_back() {
    let instances: Vec<Vec<u8>> = vec![vec![7u8; 100_000], b"second".to_vec()];
    let mut response = support::rad69_response(Vec::new());
    response
        .documents
        .push(DocumentResponse { document_unique_id: "1.2.3.4.5.6.1.3".to_owned(), ..response.documents[0].clone() });
    let content_ids = ["i1@hie-xds", "i2@hie-xds"];
    let root_body = response.to_xml_with_includes(&content_ids);
    let addressing = Addressing::response(actions::RAD69_RESPONSE, "urn:uuid:9", Some("urn:uuid:1"));
    let root = soap::write_envelope(&addressing, &root_body);
    let writer = MtomWriter::new("b0undary", "root@hie-xds", actions::RAD69_RESPONSE).unwrap();
    let mut body = writer.head(&root);
    for (content_id, instance) in content_ids.iter().zip(&instances) {
        body.extend_from_slice(&writer.part_header(content_id, "application/dicom"));
        body.extend_from_slice(instance);
    }
    body.extend_from_slice(&writer.closing());
    xmllint_validate(&writer.content_type(), &body, &imaging_document_source_schema())
        .unwrap_or_else(|report| panic!("{report}"));
    let received =
        hie_xds::read_message::<RetrieveDocumentSetResponse>(&writer.content_type(), &body, &ReadLimits::default())
            .unwrap();
    assert_eq!(received.envelope.addressing.relates_to.as_deref(), Some("urn:uuid:1"));
    let documents: Vec<&Vec<u8>> = received.message.documents.iter().map(|document| &document.document).collect();
    assert_eq!(documents, instances.iter().collect::<Vec<_>>());
}

#[test]
fn faults_round_trip() {
    for error in [
        hie_xds::SoapError::MissingAddressingHeader { header: "Action" },
        hie_xds::SoapError::ActionNotSupported { action: "urn:nope".to_owned() },
        hie_xds::SoapError::VersionMismatch { namespace: hie_xds::vocabulary::NS_SOAP11.to_owned() },
        hie_xds::SoapError::MustUnderstand { header: soap::QualifiedName::new("urn:x", "Secret") },
    ] {
        let fault = error.to_fault();
        let written = soap::write_fault(&fault, &Addressing::response("", "urn:uuid:2", Some("urn:uuid:1")));
        match soap::parse_response(&written, &Limits::DEFAULT) {
            Err(hie_xds::SoapError::FaultReceived(read)) => {
                let mut expected = fault.clone();
                expected.not_understood.clear();
                assert_eq!(*read, expected, "{error}");
            }
            other => panic!("{error}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any XML character survives escaping in attributes, text and slot values, as long as it
    /// is not leading or trailing whitespace of an element's text (which readers trim).
    #[test]
    fn any_xml_string_survives_the_round_trip(value in "[\\PC\\t\\r\\n&<>\"']{0,40}", code in "[\\PC&&\\S]([\\PC]{0,10}[\\PC&&\\S])?") {
        let mut message = support::register_with_folder_and_replacement();
        if let hie_xds::RegistryObject::SubmissionSet(submission_set) = &mut message.objects[0] {
            submission_set.title = vec![hie_xds::ebrim::Localized::new(&value)];
            submission_set.extra_slots = vec![hie_xds::ebrim::Slot::new(&value, &[code.as_str()])];
            submission_set.content_type_code = Some(hie_xds::Code::new(&code, &code, &value));
        }
        let written = message.to_xml();
        let root = xml::parse(&written, &Limits::DEFAULT).unwrap();
        let read = SubmitObjectsRequest::read(root.root(), &mut Package::plain(b"")).unwrap();
        prop_assert_eq!(read, message);
    }

    /// Attachments of any content split back exactly, whatever bytes they hold.
    #[test]
    fn any_attachment_bytes_survive_mtom(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..5)) {
        let writer = MtomWriter::new("=_part_6f0c1d2e", "root@x", "urn:a").unwrap();
        let attachments: Vec<mtom::Attachment<'_>> = parts.iter().enumerate().map(|(index, bytes)| mtom::Attachment {
            content_id: format!("{index}@x"),
            content_type: "application/octet-stream".to_owned(),
            bytes,
        }).collect();
        let body = writer.chunks(b"<r/>", &attachments).concat();
        let mut package = mtom::read_message(&writer.content_type(), &body, &MtomLimits::DEFAULT).unwrap();
        prop_assert_eq!(package.root, b"<r/>");
        for (index, bytes) in parts.iter().enumerate() {
            prop_assert_eq!(package.resolve(&mtom::cid_href(&format!("{index}@x"))).unwrap(), bytes.as_slice());
        }
    }
}
