//! Bad input from reliability-security.md section 6 (XML/SOAP and MTOM/multipart): each case
//! gets its own specific error, and the SOAP layer's fault says what a peer must be told.

use hie_xds::messages::{ProvideAndRegisterRequest, XdsMessage};
use hie_xds::mtom::{self, MtomError, MtomLimits, MtomWriter, Package};
use hie_xds::soap::{self, FaultCode};
use hie_xds::vocabulary::{NS_SOAP12, NS_WSA};
use hie_xds::xml::{self, Limits, XmlErrorKind};
use hie_xds::{ReadLimits, SoapError, XdsError, actions};

fn xml_error(input: &[u8], limits: &Limits) -> XmlErrorKind {
    xml::parse(input, limits).expect_err("must be refused").kind
}

#[test]
fn any_doctype_is_refused() {
    let cases: [&[u8]; 5] = [
        b"<!DOCTYPE a><a/>",
        br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>"#,
        br#"<!DOCTYPE a [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/canary">]><a>&xxe;</a>"#,
        br#"<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]><a/>"#,
        br#"<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>"#,
    ];
    for input in cases {
        assert_eq!(
            xml_error(input, &Limits::DEFAULT),
            XmlErrorKind::DoctypeRefused,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn undeclared_entities_and_processing_instructions_are_refused() {
    assert_eq!(xml_error(b"<a>&lol;</a>", &Limits::DEFAULT), XmlErrorKind::UnknownEntity { name: "lol".to_owned() });
    assert_eq!(
        xml_error(b"<?xml-stylesheet href='x'?><a/>", &Limits::DEFAULT),
        XmlErrorKind::ProcessingInstructionRefused { target: "xml-stylesheet".to_owned() }
    );
    assert_eq!(xml_error(b"<a>&#x1;</a>", &Limits::DEFAULT), XmlErrorKind::InvalidCharacter(1));
    assert_eq!(xml_error(b"<a>\x07</a>", &Limits::DEFAULT), XmlErrorKind::InvalidCharacter(7));
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let depth = 100_000;
    let mut input = "<a>".repeat(depth);
    input.push_str(&"</a>".repeat(depth));
    assert_eq!(xml_error(input.as_bytes(), &Limits::DEFAULT), XmlErrorKind::TooDeep { limit: 64 });
    // Without our depth limit quick-xml's own nesting cap (u16::MAX) still refuses 100,000.
    let limits = Limits { max_depth: usize::MAX, ..Limits::DEFAULT };
    assert_eq!(xml_error(input.as_bytes(), &limits), XmlErrorKind::TooDeep { limit: usize::from(u16::MAX) });
    // Below it, the tree is built, cloned, compared and dropped without recursion (an arena),
    // so depth costs no stack.
    let depth = 60_000;
    let input = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let document = xml::parse(input.as_bytes(), &limits).expect("a deep but well-formed document");
    let mut depth_seen = 1;
    let mut current = document.root();
    while let Some(child) = current.children().next() {
        current = child;
        depth_seen += 1;
    }
    assert_eq!(depth_seen, depth);
    assert_eq!(document.clone(), document);
    assert_eq!(
        xml::write_element(document.root()).len(),
        input.len() - "<a></a>".len() + "<a/>".len() + r#"<?xml version="1.0" encoding="UTF-8"?>"#.len()
    );
}

#[test]
fn huge_attribute_is_refused_by_its_own_limit() {
    let mut input = b"<a v=\"".to_vec();
    input.extend(std::iter::repeat_n(b'x', 50 << 20));
    input.extend_from_slice(b"\"/>");
    let limits = Limits::DEFAULT.with_max_input(64 << 20);
    assert_eq!(xml_error(&input, &limits), XmlErrorKind::AttributeTooLong { limit: 64 << 10 });
    assert_eq!(
        xml_error(&input, &Limits::SMALL_REQUEST),
        XmlErrorKind::InputTooLarge { size: input.len(), limit: 1 << 20 }
    );
}

#[test]
fn too_many_attributes_or_namespace_declarations_are_refused() {
    let attributes: String = (0..100_000).map(|index| format!(" a{index}=\"1\"")).collect();
    let input = format!("<a{attributes}/>");
    assert_eq!(xml_error(input.as_bytes(), &Limits::DEFAULT), XmlErrorKind::TooManyAttributes { limit: 64 });
    let declarations: String = (0..100_000).map(|index| format!(" xmlns:p{index}=\"urn:{index}\"")).collect();
    let input = format!("<a{declarations}/>");
    assert_eq!(xml_error(input.as_bytes(), &Limits::DEFAULT), XmlErrorKind::TooManyNamespaceDeclarations { limit: 32 });
    let few: String = (0..40).map(|index| format!(" xmlns:p{index}=\"urn:{index}\"")).collect();
    let input = format!("<a{few}/>");
    assert_eq!(xml_error(input.as_bytes(), &Limits::DEFAULT), XmlErrorKind::TooManyNamespaceDeclarations { limit: 32 });
}

#[test]
fn huge_element_name_is_refused() {
    let name = "n".repeat(10 << 20);
    let input = format!("<{name}/>");
    let limits = Limits::DEFAULT.with_max_input(64 << 20);
    assert_eq!(xml_error(input.as_bytes(), &limits), XmlErrorKind::NameTooLong { limit: 1024 });
}

#[test]
fn other_encodings_are_refused() {
    assert_eq!(
        xml_error(br#"<?xml version="1.0" encoding="UTF-16"?><a/>"#, &Limits::DEFAULT),
        XmlErrorKind::EncodingRefused { encoding: "UTF-16".to_owned() }
    );
    assert_eq!(
        xml_error(br#"<?xml version="1.0" encoding="ISO-8859-1"?><a/>"#, &Limits::DEFAULT),
        XmlErrorKind::EncodingRefused { encoding: "ISO-8859-1".to_owned() }
    );
    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain("<a/>".encode_utf16().flat_map(u16::to_le_bytes)).collect();
    assert_eq!(xml_error(&utf16, &Limits::DEFAULT), XmlErrorKind::EncodingRefused { encoding: "UTF-16LE".to_owned() });
    assert_eq!(xml_error(b"<a>\xC3\x28</a>", &Limits::DEFAULT), XmlErrorKind::InvalidUtf8);
    assert!(xml::parse(b"\xEF\xBB\xBF<a/>", &Limits::DEFAULT).is_ok(), "a UTF-8 BOM is fine");
}

#[test]
fn errors_say_where() {
    let error = xml::parse(b"<a>\n<b>\n\n<c x='1' x='2'/></b></a>", &Limits::DEFAULT).unwrap_err();
    assert_eq!(error.kind, XmlErrorKind::DuplicateAttribute { name: "x".to_owned() });
    assert_eq!(error.position.line, 4, "{error}");
    // The same attribute under two prefixes bound to one namespace is a duplicate too.
    let error = xml::parse(br#"<a xmlns:p="urn:x" xmlns:q="urn:x" p:k="1" q:k="2"/>"#, &Limits::DEFAULT).unwrap_err();
    assert_eq!(error.kind, XmlErrorKind::DuplicateAttribute { name: "q:k".to_owned() });
    let error = xml::parse(b"<a>\n<p:b/></a>", &Limits::DEFAULT).unwrap_err();
    assert_eq!(error.kind, XmlErrorKind::UnboundPrefix { prefix: "p".to_owned() });
    assert_eq!(error.position.line, 2);
}

const ENVELOPE_11: &str =
    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>"#;

fn envelope(headers: &str) -> String {
    format!(
        r#"<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header>{headers}</env:Header><env:Body><x xmlns="urn:x"/></env:Body></env:Envelope>"#
    )
}

#[test]
fn soap11_gets_version_mismatch_with_upgrade() {
    let error = soap::parse_request(ENVELOPE_11.as_bytes(), &Limits::DEFAULT, &[actions::ITI41_REQUEST]).unwrap_err();
    assert_eq!(error, SoapError::VersionMismatch { namespace: hie_xds::vocabulary::NS_SOAP11.to_owned() });
    let fault = error.to_fault();
    assert_eq!(fault.code, FaultCode::VersionMismatch);
    let written = String::from_utf8(soap::write_fault(&fault, &Default::default())).unwrap();
    assert!(
        written.contains("<env:Upgrade><env:SupportedEnvelope qname=\"env:Envelope\"/></env:Upgrade>"),
        "{written}"
    );
}

#[test]
fn missing_action_or_message_id_gets_the_wsa_fault() {
    let action = format!(r#"<wsa:Action env:mustUnderstand="1">{}</wsa:Action>"#, actions::ITI41_REQUEST);
    let message_id = "<wsa:MessageID>urn:uuid:1</wsa:MessageID>";
    for (headers, missing) in [(message_id.to_owned(), "Action"), (action.clone(), "MessageID")] {
        let input = envelope(&headers);
        let error = soap::parse_request(input.as_bytes(), &Limits::DEFAULT, &[actions::ITI41_REQUEST]).unwrap_err();
        assert_eq!(error, SoapError::MissingAddressingHeader { header: missing });
        let fault = error.to_fault();
        assert_eq!(fault.code, FaultCode::Sender);
        assert_eq!(fault.subcodes, vec![soap::QualifiedName::new(NS_WSA, "MessageAddressingHeaderRequired")]);
        assert_eq!(fault.detail[0].text, format!("wsa:{missing}"));
    }
    let input = envelope(&format!("{action}{message_id}"));
    assert!(soap::parse_request(input.as_bytes(), &Limits::DEFAULT, &[actions::ITI41_REQUEST]).is_ok());
    let error = soap::parse_request(input.as_bytes(), &Limits::DEFAULT, &[actions::ITI18_REQUEST]).unwrap_err();
    assert_eq!(error, SoapError::ActionNotSupported { action: actions::ITI41_REQUEST.to_owned() });
    assert_eq!(error.to_fault().subcodes[0].local, "ActionNotSupported");
    let twice = envelope(&format!("{action}{action}{message_id}"));
    let error = soap::parse_request(twice.as_bytes(), &Limits::DEFAULT, &[actions::ITI41_REQUEST]).unwrap_err();
    assert_eq!(error, SoapError::InvalidAddressingHeader { header: "Action", problem: "appears twice" });
}

#[test]
fn unknown_must_understand_header_gets_must_understand() {
    let base =
        format!(r#"<wsa:Action>{}</wsa:Action><wsa:MessageID>urn:uuid:1</wsa:MessageID>"#, actions::ITI41_REQUEST);
    for flag in ["1", "true"] {
        let input = envelope(&format!(r#"{base}<s:Secret xmlns:s="urn:secret" env:mustUnderstand="{flag}"/>"#));
        let error = soap::parse_request(input.as_bytes(), &Limits::DEFAULT, &[actions::ITI41_REQUEST]).unwrap_err();
        assert_eq!(error, SoapError::MustUnderstand { header: soap::QualifiedName::new("urn:secret", "Secret") });
        let written = String::from_utf8(soap::write_fault(&error.to_fault(), &Default::default())).unwrap();
        assert!(written.contains(r#"<env:NotUnderstood qname="q1:Secret" xmlns:q1="urn:secret"/>"#), "{written}");
    }
    // Not mustUnderstand, or addressed to the "none" role: ignored and kept.
    let input = envelope(&format!(
        r#"{base}<s:Info xmlns:s="urn:secret" env:mustUnderstand="false"/><s:Other xmlns:s="urn:secret" env:mustUnderstand="1" env:role="http://www.w3.org/2003/05/soap-envelope/role/none"/>"#
    ));
    let parsed = soap::parse_request(input.as_bytes(), &Limits::DEFAULT, &[actions::ITI41_REQUEST]).unwrap();
    assert_eq!(parsed.other_headers().count(), 2);
}

fn mime_error(content_type: &str, body: &[u8]) -> MtomError {
    mtom::read_message(content_type, body, &MtomLimits::DEFAULT).expect_err("must be refused")
}

const CT: &str = r#"multipart/related; type="application/xop+xml"; boundary="b"; start="<root>""#;

fn part(content_id: &str, headers: &str, body: &str) -> String {
    format!(
        "--b\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\nContent-ID: <{content_id}>\r\n{headers}\r\n{body}\r\n"
    )
}

#[test]
fn mtom_structure_errors_are_specific() {
    let root = part("root", "", "<a/>");
    let body: String = std::iter::repeat_n(part("x", "", "y").replace("<x>", "<x-N>"), 1)
        .chain((0..70).map(|index| part(&format!("p{index}"), "", "z")))
        .collect::<String>();
    let many = format!("{root}{body}--b--\r\n");
    assert_eq!(mime_error(CT, many.as_bytes()), MtomError::TooManyParts { limit: 64 });

    let big_header = format!("X-Big: {}\r\n", "h".repeat(17 * 1024));
    let input = format!("{}--b--\r\n", part("root", &big_header, "<a/>"));
    assert_eq!(mime_error(CT, input.as_bytes()), MtomError::HeadersTooLarge { part: 1, limit: 16 * 1024 });

    let headers: String = (0..130).map(|index| format!("X-H{index}: 1\r\n")).collect();
    let input = format!("{}--b--\r\n", part("root", &headers, "<a/>"));
    assert_eq!(mime_error(CT, input.as_bytes()), MtomError::TooManyHeaders { part: 1, limit: 128 });

    let input = format!("{root}--b--\r\n");
    assert_eq!(
        mime_error("multipart/related; type=\"application/xop+xml\"", input.as_bytes()),
        MtomError::MissingBoundary
    );
    assert_eq!(
        mime_error(r#"multipart/related; boundary="b"; start="<other>""#, input.as_bytes()),
        MtomError::StartPartNotFound { start: "other".to_owned() }
    );
    let input = format!("{root}{}--b--\r\n", part("root", "", "again"));
    assert_eq!(mime_error(CT, input.as_bytes()), MtomError::DuplicateContentId { cid: "root".to_owned() });
    assert_eq!(mime_error(CT, root.as_bytes()), MtomError::Unterminated { part: 1 });
    assert_eq!(mime_error(CT, b"no delimiter here"), MtomError::NoParts);
    let nested = format!("{root}--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c--\r\n--b--\r\n");
    assert_eq!(mime_error(CT, nested.as_bytes()), MtomError::NestedMultipart { part: 2 });
    let encoded = format!("{root}--b\r\nContent-ID: <d>\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n");
    assert_eq!(
        mime_error(CT, encoded.as_bytes()),
        MtomError::UnsupportedTransferEncoding { part: 2, encoding: "base64".to_owned() }
    );
    assert_eq!(mime_error("text/html", b"x"), MtomError::UnsupportedMediaType { found: "text/html".to_owned() });
}

/// An ITI-41 request whose Document element is `document`, in an MTOM package with one
/// attachment `cid:d1@x`.
fn pnr_with_document(document: &str) -> (String, Vec<u8>) {
    let root = format!(
        r#"<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header><wsa:Action>{}</wsa:Action><wsa:MessageID>urn:uuid:1</wsa:MessageID></env:Header><env:Body><xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007" xmlns:xop="http://www.w3.org/2004/08/xop/include"><lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"/></lcm:SubmitObjectsRequest>{document}</xdsb:ProvideAndRegisterDocumentSetRequest></env:Body></env:Envelope>"#,
        actions::ITI41_REQUEST
    );
    let writer = MtomWriter::new("b", "root@x", actions::ITI41_REQUEST).unwrap();
    let attachments =
        [mtom::Attachment { content_id: "d1@x".to_owned(), content_type: "text/plain".to_owned(), bytes: b"hello" }];
    (writer.content_type(), writer.chunks(root.as_bytes(), &attachments).concat())
}

fn pnr_error(document: &str) -> XdsError {
    let (content_type, body) = pnr_with_document(document);
    hie_xds::read_message::<ProvideAndRegisterRequest>(&content_type, &body, &ReadLimits::default()).unwrap_err()
}

#[test]
fn xop_include_errors_are_specific() {
    let ok = pnr_with_document(r#"<xdsb:Document id="D1"><xop:Include href="cid:d1@x"/></xdsb:Document>"#);
    let read = hie_xds::read_message::<ProvideAndRegisterRequest>(&ok.0, &ok.1, &ReadLimits::default()).unwrap();
    assert_eq!(read.message.documents[0].content, b"hello");

    let kind = |error: XdsError| match error {
        XdsError::Metadata(error) => error.kind,
        other => panic!("expected a metadata error, got {other}"),
    };
    use hie_xds::ebrim::EbrimErrorKind;
    assert_eq!(
        kind(pnr_error(r#"<xdsb:Document id="D1"><xop:Include href="cid:nope@x"/></xdsb:Document>"#)),
        EbrimErrorKind::Mtom(MtomError::DanglingInclude { cid: "nope@x".to_owned() })
    );
    assert_eq!(
        kind(pnr_error(
            r#"<xdsb:Document id="D1"><xop:Include href="cid:d1@x"/></xdsb:Document><xdsb:Document id="D2"><xop:Include href="cid:d1%40x"/></xdsb:Document>"#
        )),
        EbrimErrorKind::Mtom(MtomError::IncludeUsedTwice { cid: "d1@x".to_owned() })
    );
    assert_eq!(
        kind(pnr_error(r#"<xdsb:Document id="D1">aGVsbG8=<xop:Include href="cid:d1@x"/></xdsb:Document>"#)),
        EbrimErrorKind::InlineAndInclude { id: "D1".to_owned() }
    );
    assert_eq!(
        kind(pnr_error(r#"<xdsb:Document id="D1"><xop:Include href="http://127.0.0.1/x"/></xdsb:Document>"#)),
        EbrimErrorKind::Mtom(MtomError::NotCidHref { href: "http://127.0.0.1/x".to_owned() })
    );
    assert_eq!(
        kind(pnr_error(r#"<xdsb:Document id="D1"><xop:Include href="cid:root@x"/></xdsb:Document>"#)),
        EbrimErrorKind::Mtom(MtomError::IncludesRoot)
    );
    assert_eq!(
        kind(pnr_error(r#"<xdsb:Document id="D1">not base64!</xdsb:Document>"#)),
        EbrimErrorKind::InvalidBase64 { element: "xdsb:Document" }
    );
    // Plain SOAP: an Include has nothing to point at.
    let (_, body) = pnr_with_document(r#"<xdsb:Document id="D1"><xop:Include href="cid:d1@x"/></xdsb:Document>"#);
    let root_start = body.windows(5).position(|window| window == b"<env:").unwrap();
    let root_end = body.windows(15).position(|window| window == b"</env:Envelope>").unwrap() + 15;
    let root = &body[root_start..root_end];
    let envelope = soap::parse_envelope(root, &Limits::DEFAULT).unwrap();
    let error = ProvideAndRegisterRequest::read(envelope.body(), &mut Package::plain(root)).unwrap_err();
    assert_eq!(error.kind, EbrimErrorKind::Mtom(MtomError::DanglingInclude { cid: "d1@x".to_owned() }));
}
