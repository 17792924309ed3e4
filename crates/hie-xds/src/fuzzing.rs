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
    let Ok(document) = xml::parse(bytes, &FUZZ_LIMITS) else {
        return;
    };
    let root = document.root();
    round_trip::<SubmitObjectsRequest>(root);
    round_trip::<ProvideAndRegisterRequest>(root);
    round_trip::<AdhocQueryRequest>(root);
    round_trip::<AdhocQueryResponse>(root);
    round_trip::<RegistryResponse>(root);
    round_trip::<RetrieveDocumentSetRequest>(root);
    round_trip::<RetrieveDocumentSetResponse>(root);
    round_trip::<RetrieveImagingDocumentSetRequest>(root);
}

/// Reads a whole HTTP message (plain or MTOM) as each request type.
pub fn parse_http(content_type: &str, bytes: &[u8]) {
    let limits = ReadLimits::SMALL_REQUEST;
    let _ = crate::read_message::<ProvideAndRegisterRequest>(content_type, bytes, &limits);
    let _ = crate::read_message::<RetrieveImagingDocumentSetRequest>(content_type, bytes, &limits);
    let _ = crate::read_message::<AdhocQueryResponse>(content_type, bytes, &limits);
}

fn round_trip<M: XdsMessage + PartialEq + std::fmt::Debug>(root: xml::Element<'_>) {
    let Ok(message) = M::read(root, &mut Package::plain(b"")) else {
        return;
    };
    let written = message.to_xml();
    let again = xml::parse(&written, &Limits::DEFAULT).expect("written XML must parse");
    let reread = M::read(again.root(), &mut Package::plain(b"")).expect("written message must read back");
    assert_eq!(reread, message, "round trip changed the message");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Seeds: real messages of each kind, and an MTOM capture with its Content-Type.
    const SEEDS: &[&[u8]] = &[
        include_bytes!("../test_data/messages/iti41/nist-pnr-limited-metadata.xml"),
        include_bytes!("../test_data/messages/iti41/nist-soap-pnr.xml"),
        include_bytes!("../test_data/messages/iti42/dcm4chee-CreateFolder.xml"),
        include_bytes!("../test_data/messages/iti18/nist-sq-req.xml"),
        include_bytes!("../test_data/messages/iti18/nist-sq-resp-objectref.xml"),
        include_bytes!("../test_data/messages/iti43/nist-soap-ret-resp.xml"),
        include_bytes!("../test_data/messages/rad69/iig_5408.request.xml"),
        include_bytes!("../test_data/messages/responses/nist-regresp-success-with-errorlist.xml"),
    ];
    const MTOM_SEED: &[u8] = include_bytes!("../test_data/messages/iti41/nist-pnrxop-encodedurl.mime");
    const MTOM_CONTENT_TYPE: &str = r#"multipart/related; boundary="MIMEBoundary_95b57d7287e4fa4b528a8f050c41f8ad829c20332f23b48d"; type="application/xop+xml"; start-info="application/soap+xml""#;

    /// A seed with a few bytes replaced, inserted or removed.
    fn mutated(seed: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
            let mut bytes = seed.to_vec();
            for (index, byte, kind) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let at = index.index(bytes.len());
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            bytes
        })
    }

    fn any_seed() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(SEEDS).prop_flat_map(mutated)
    }

    #[test]
    fn seeds_parse_unmutated() {
        for seed in SEEDS {
            parse_soap(seed);
            parse_messages(seed);
        }
        parse_mtom(MTOM_CONTENT_TYPE, MTOM_SEED);
        parse_http(MTOM_CONTENT_TYPE, MTOM_SEED);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            parse_soap(&bytes);
            parse_messages(&bytes);
            parse_mtom(MTOM_CONTENT_TYPE, &bytes);
            parse_http("application/soap+xml", &bytes);
        }

        #[test]
        fn mutated_messages_never_panic_and_round_trip(bytes in any_seed()) {
            parse_soap(&bytes);
            parse_messages(&bytes);
            parse_http("application/soap+xml", &bytes);
        }

        #[test]
        fn mutated_mtom_never_panics(bytes in mutated(MTOM_SEED), content_type in "[ -~]{0,200}") {
            parse_mtom(MTOM_CONTENT_TYPE, &bytes);
            parse_http(MTOM_CONTENT_TYPE, &bytes);
            parse_mtom(&content_type, &bytes);
            parse_mtom(&format!("multipart/related; {content_type}"), &bytes);
        }
    }
}
