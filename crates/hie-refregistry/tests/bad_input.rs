//! Bad input through the HTTP endpoints (reliability-security section 6 and S4/S5): XML bombs,
//! envelope and addressing faults, MTOM structure errors and oversized bodies get a SOAP fault or
//! HTTP 413, never a panic; the registry answers normally afterwards and stored nothing.

mod common;
mod support;

use common::*;
use hie_core::Oid;
use hie_refregistry::{REGISTRY_PATH, REPOSITORY_PATH, RefRegistryConfig};
use hie_xds::soap::FaultCode;
use hie_xds::vocabulary::{NS_SOAP11, NS_SOAP12, NS_WSA};
use hie_xds::{actions, soap_content_type};
use support::{Engine, Harness};

const DOMAIN: &str = "1.3.6.1.4.1.21367.13.20.1000";
const SOAP: &str = "application/soap+xml; charset=UTF-8";

fn envelope(headers: &str, body: &str) -> String {
    format!(
        r#"<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header>{headers}</env:Header><env:Body>{body}</env:Body></env:Envelope>"#
    )
}

fn addressing(action: &str) -> String {
    format!(
        r#"<wsa:Action env:mustUnderstand="1">{action}</wsa:Action><wsa:MessageID>urn:uuid:0b6f5a1e-0000-4000-8000-000000000009</wsa:MessageID>"#
    )
}

const QUERY_BODY: &str = r#"<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><query:ResponseOption returnType="ObjectRef"/><rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"/></query:AdhocQueryRequest>"#;

async fn sender_fault(
    harness: &Harness,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    what: &str,
) -> hie_xds::soap::Fault {
    let answer = harness.post(path, content_type, body).await;
    assert_eq!(answer.status, 400, "{what}: {}", answer.text());
    let fault = answer.fault();
    assert_eq!(fault.code, FaultCode::Sender, "{what}: {fault:?}");
    fault
}

#[tokio::test]
async fn xml_bombs_are_sender_faults() {
    let harness = Harness::start(Engine::Sqlite, DOMAIN).await;
    let headers = addressing(actions::ITI18_REQUEST);
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    let long_attribute = format!(r#"<a x="{}"/>"#, "y".repeat(200_000));
    let many_attributes =
        format!("<a {}/>", (0..100_000).map(|index| format!("a{index}=\"1\"")).collect::<Vec<_>>().join(" "));
    let long_name = format!("<{0}/>", "n".repeat(100_000));
    let cases: Vec<(&str, String)> = vec![
        (
            "billion laughs",
            format!(
                r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>{}"#,
                envelope(&headers, "<lolz>&lol2;</lolz>")
            ),
        ),
        (
            "external entity",
            format!(
                r#"<!DOCTYPE a [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/canary">]>{}"#,
                envelope(&headers, "<a>&xxe;</a>")
            ),
        ),
        (
            "parameter entity",
            format!(
                r#"<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>{}"#,
                envelope(&headers, QUERY_BODY)
            ),
        ),
        ("deep nesting", envelope(&headers, &deep)),
        ("long attribute", envelope(&headers, &long_attribute)),
        ("many attributes", envelope(&headers, &many_attributes)),
        ("long name", envelope(&headers, &long_name)),
        ("UTF-16", format!("<?xml version=\"1.0\" encoding=\"UTF-16\"?>{}", envelope(&headers, QUERY_BODY))),
        ("not XML", "this is not XML".to_owned()),
        ("empty", String::new()),
    ];
    for (what, body) in cases {
        sender_fault(&harness, REGISTRY_PATH, SOAP, body.into_bytes(), what).await;
    }
    // Still answering.
    let answer = harness
        .post(REGISTRY_PATH, &soap_content_type(actions::ITI18_REQUEST), envelope(&headers, QUERY_BODY).into_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn envelope_and_addressing_problems_get_their_faults() {
    let harness = Harness::start(Engine::Sqlite, DOMAIN).await;
    // SOAP 1.1, as SOAP 1.1 clients send it (text/xml): VersionMismatch, HTTP 500.
    let soap11 = format!(r#"<s:Envelope xmlns:s="{NS_SOAP11}"><s:Body>{QUERY_BODY}</s:Body></s:Envelope>"#);
    let answer = harness.post(REGISTRY_PATH, "text/xml; charset=UTF-8", soap11.into_bytes()).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.fault().code, FaultCode::VersionMismatch);

    let fault = sender_fault(&harness, REGISTRY_PATH, SOAP, envelope("", QUERY_BODY).into_bytes(), "no Action").await;
    assert_eq!(fault.subcodes[0].local, "MessageAddressingHeaderRequired");
    let no_id = format!(r#"<wsa:Action>{}</wsa:Action>"#, actions::ITI18_REQUEST);
    let fault =
        sender_fault(&harness, REGISTRY_PATH, SOAP, envelope(&no_id, QUERY_BODY).into_bytes(), "no MessageID").await;
    assert_eq!(fault.subcodes[0].local, "MessageAddressingHeaderRequired");
    // An action of the other endpoint, and an unknown one.
    for action in [actions::ITI43_REQUEST, "urn:example:nothing"] {
        let answer = harness.post(REGISTRY_PATH, SOAP, envelope(&addressing(action), QUERY_BODY).into_bytes()).await;
        let fault = answer.fault();
        assert_eq!(fault.subcodes[0].local, "ActionNotSupported", "{action}");
        assert_eq!(answer.addressing().relates_to.as_deref(), Some("urn:uuid:0b6f5a1e-0000-4000-8000-000000000009"));
    }
    let unknown_header =
        format!(r#"{}<x:Secret xmlns:x="urn:example" env:mustUnderstand="true"/>"#, addressing(actions::ITI18_REQUEST));
    let answer = harness.post(REGISTRY_PATH, SOAP, envelope(&unknown_header, QUERY_BODY).into_bytes()).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.fault().code, FaultCode::MustUnderstand);
    // A body that is not the action's message.
    let wrong_body = envelope(&addressing(actions::ITI42_REQUEST), QUERY_BODY);
    sender_fault(&harness, REGISTRY_PATH, SOAP, wrong_body.into_bytes(), "query body for ITI-42").await;
    // No Content-Type, an unsupported one.
    sender_fault(
        &harness,
        REGISTRY_PATH,
        "",
        envelope(&addressing(actions::ITI18_REQUEST), QUERY_BODY).into_bytes(),
        "no type",
    )
    .await;
    sender_fault(&harness, REGISTRY_PATH, "application/json", b"{}".to_vec(), "json").await;
}

fn part(content_id: &str, headers: &str, body: &str) -> String {
    format!("--B\r\nContent-ID: <{content_id}>\r\n{headers}\r\n{body}\r\n")
}

fn pnr_with(document: &str) -> String {
    let body = format!(
        r#"<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"/></lcm:SubmitObjectsRequest><xdsb:Document id="D">{document}</xdsb:Document></xdsb:ProvideAndRegisterDocumentSetRequest>"#
    );
    envelope(&addressing(actions::ITI41_REQUEST), &body)
}

const ROOT_HEADERS: &str = "Content-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n";
const MTOM: &str = "multipart/related; boundary=B; type=\"application/xop+xml\"; start=\"<root@x>\"; start-info=\"application/soap+xml\"";

#[tokio::test]
async fn mtom_structure_problems_are_sender_faults() {
    let harness = Harness::start(Engine::Sqlite, DOMAIN).await;
    let include =
        |cid: &str| format!(r#"<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:{cid}"/>"#);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "dangling cid",
            MTOM.to_owned(),
            format!("{}--B--\r\n", part("root@x", ROOT_HEADERS, &pnr_with(&include("nowhere@x")))),
        ),
        (
            "start part missing",
            MTOM.to_owned(),
            format!("{}--B--\r\n", part("other@x", ROOT_HEADERS, &pnr_with("AAAA"))),
        ),
        (
            "duplicate Content-ID",
            MTOM.to_owned(),
            format!("{}{}--B--\r\n", part("root@x", ROOT_HEADERS, &pnr_with(&include("d@x"))), part("root@x", "", "x")),
        ),
        ("unterminated", MTOM.to_owned(), part("root@x", ROOT_HEADERS, &pnr_with("AAAA"))),
        ("no boundary", "multipart/related; type=\"application/xop+xml\"".to_owned(), String::new()),
        (
            "nested multipart",
            MTOM.to_owned(),
            format!(
                "{}{}--B--\r\n",
                part("root@x", ROOT_HEADERS, &pnr_with(&include("d@x"))),
                part("d@x", "Content-Type: multipart/mixed; boundary=C\r\n", "x")
            ),
        ),
        (
            "base64 and XOP together",
            MTOM.to_owned(),
            format!(
                "{}{}--B--\r\n",
                part("root@x", ROOT_HEADERS, &pnr_with(&format!("QUJD{}", include("d@x")))),
                part("d@x", "", "x")
            ),
        ),
        ("not base64", MTOM.to_owned(), format!("{}--B--\r\n", part("root@x", ROOT_HEADERS, &pnr_with("!!!")))),
        (
            "too many parts",
            MTOM.to_owned(),
            format!(
                "{}{}--B--\r\n",
                part("root@x", ROOT_HEADERS, &pnr_with("AAAA")),
                (0..100).map(|index| part(&format!("{index}@x"), "", "x")).collect::<String>()
            ),
        ),
        (
            "huge part headers",
            MTOM.to_owned(),
            format!(
                "{}--B--\r\n",
                part("root@x", &format!("{ROOT_HEADERS}X-Pad: {}\r\n", "p".repeat(20_000)), &pnr_with("AAAA"))
            ),
        ),
    ];
    for (what, content_type, body) in cases {
        sender_fault(&harness, REPOSITORY_PATH, &content_type, body.into_bytes(), what).await;
    }
    assert_eq!(harness.counts().await, Default::default());
}

#[tokio::test]
async fn a_body_over_the_cap_is_413_and_random_bytes_never_break_the_server() {
    let mut config = RefRegistryConfig::new(Oid::parse(support::REPOSITORY).unwrap(), Oid::parse(DOMAIN).unwrap());
    config.max_request_bytes = 64 * 1024;
    let harness = Harness::start_with(Engine::Sqlite, config).await;
    harness.feed("P1").await;
    let big = vec![b' '; 65 * 1024];
    let answer = harness.post(REPOSITORY_PATH, SOAP, big).await;
    assert_eq!(answer.status, 413);

    // Mutated valid requests and random bytes: each is answered (fault or XDS error), none kills
    // the server.
    let p1 = harness.patient("P1");
    let valid = hie_xds::write_soap(
        &submission("1.9.1", &p1, vec![entry("D", "1.2.1", &p1)]),
        &support::request_addressing(actions::ITI42_REQUEST, "x"),
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let mut body = valid.clone();
        if round % 4 == 0 {
            body = (0..(next() % 2048)).map(|_| (next() & 0xff) as u8).collect();
        } else {
            for _ in 0..(1 + next() % 8) {
                let at = (next() as usize) % body.len();
                body[at] = (next() & 0xff) as u8;
            }
        }
        let answer = harness.post(REGISTRY_PATH, SOAP, body).await;
        assert!(matches!(answer.status, 200 | 400 | 500), "round {round}: HTTP {}", answer.status);
    }
    assert_success(&register(&harness, &submission("1.9.9", &p1, vec![entry("D", "1.2.99", &p1)])).await);
}
