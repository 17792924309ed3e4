//! Entry points for cargo-fuzz targets and the no-panic property tests: each parses arbitrary
//! bytes through one layer and must return, never panic. Where parsing succeeds, writing the
//! result and reading it back must give the same value (the round-trip oracle).

use crate::messages::{
    AdhocQueryRequest, AdhocQueryResponse, ProvideAndRegisterRequest, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse, RetrieveImagingDocumentSetRequest, SubmitObjectsRequest, XdsMessage,
};
use crate::mtom::{self, MtomLimits, Package};
use crate::xml::{self, Limits};
use crate::{ReadLimits, soap};

/// Limits small enough that a fuzzer explores them.
const FUZZ_LIMITS: Limits = Limits {
    max_input_bytes: 1 << 20,
    max_depth: 32,
    max_attributes: 16,
    max_namespace_declarations: 8,
    max_attribute_bytes: 4096,
    max_text_bytes: 1 << 20,
    max_name_bytes: 256,
    max_elements: 10_000,
};

/// Parses `bytes` as a SOAP envelope and as a request.
pub fn parse_soap(bytes: &[u8]) {
    if let Err(error) = soap::parse_request(bytes, &FUZZ_LIMITS, &[crate::actions::ITI41_REQUEST]) {
        let fault = error.to_fault();
        let written = soap::write_fault(&fault, &soap::Addressing::default());
        let reparsed = soap::parse_response(&written, &Limits::DEFAULT);
        assert!(
            matches!(reparsed, Err(soap::SoapError::FaultReceived(_))),
            "a written fault must read back as a fault"
        );
    }
}

/// Splits `bytes` as an MTOM body with `content_type` and resolves every attachment once.
pub fn parse_mtom(content_type: &str, bytes: &[u8]) {
    let limits = MtomLimits { max_body_bytes: 1 << 20, max_parts: 16, max_header_bytes: 1024, max_headers: 16 };
    if let Ok(mut package) = mtom::read_message(content_type, bytes, &limits) {
        let ids: Vec<String> = package.attachments.iter().filter_map(|part| part.content_id.clone()).collect();
        for id in ids {
            let _ = package.resolve(&mtom::cid_href(&id));
        }
    }
}

/// Parses `bytes` as the body of every message type, and checks the round trip of any success.
pub fn parse_messages(bytes: &[u8]) {
    let Ok(root) = xml::parse(bytes, &FUZZ_LIMITS) else {
        return;
    };
    round_trip::<SubmitObjectsRequest>(&root);
    round_trip::<ProvideAndRegisterRequest>(&root);
    round_trip::<AdhocQueryRequest>(&root);
    round_trip::<AdhocQueryResponse>(&root);
    round_trip::<RegistryResponse>(&root);
    round_trip::<RetrieveDocumentSetRequest>(&root);
    round_trip::<RetrieveDocumentSetResponse>(&root);
    round_trip::<RetrieveImagingDocumentSetRequest>(&root);
}

/// Reads a whole HTTP message (plain or MTOM) as each request type.
pub fn parse_http(content_type: &str, bytes: &[u8]) {
    let limits = ReadLimits::SMALL_REQUEST;
    let _ = crate::read_message::<ProvideAndRegisterRequest>(content_type, bytes, &limits);
    let _ = crate::read_message::<RetrieveImagingDocumentSetRequest>(content_type, bytes, &limits);
    let _ = crate::read_message::<AdhocQueryResponse>(content_type, bytes, &limits);
}

fn round_trip<M: XdsMessage + PartialEq + std::fmt::Debug>(root: &xml::Element<'_>) {
    let Ok(message) = M::read(root, &mut Package::plain(b"")) else {
        return;
    };
    let written = message.to_xml();
    let again = xml::parse(&written, &Limits::DEFAULT).expect("written XML must parse");
    let reread = M::read(&again, &mut Package::plain(b"")).expect("written message must read back");
    assert_eq!(reread, message, "round trip changed the message");
}
