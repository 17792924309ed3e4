//! Hostile and malformed requests from a mapped partner (reliability-security 6, S4, S5): each is
//! answered with a SOAP fault or HTTP 413, never a panic, and none reaches the store's images or
//! the PACS. The endpoint keeps serving afterwards.

use hie_testkit::generate_study;
use hie_xds::actions::{ITI18_REQUEST, RAD69_REQUEST};
use hie_xds::messages::ResponseStatus;

use crate::support::*;

fn rad69_envelope_with(body: &str) -> String {
    envelope(RAD69_REQUEST, body)
}

#[tokio::test]
async fn hostile_requests_get_faults_or_413_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&template(), 1, 1, &dir.path().join("a"));
    let endpoint = Endpoint::start(folder(dir.path())).await;
    register(&endpoint.store, &study.study_instance_uid, 1, &referenced(&study), b"KOS").await;
    let good = rad69_body(&wanted_of(&study), &[EXPLICIT_LE]);
    let soap = soap_content_type(RAD69_REQUEST);

    let billion_laughs = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>{}"#,
        rad69_envelope_with("<x>&lol2;</x>").trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
    );
    let external_entity = format!(
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/canary">]>{}"#,
        rad69_envelope_with("<x>&xxe;</x>").trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
    );
    let deep = rad69_envelope_with(&format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)));
    let huge_attribute = rad69_envelope_with(&format!(r#"<x a="{}"/>"#, "a".repeat(600_000)));
    let many_attributes = rad69_envelope_with(&format!(
        "<x {}/>",
        (0..20_000).map(|n| format!("a{n}=\"1\"")).collect::<Vec<_>>().join(" ")
    ));
    let wrong_action = envelope(ITI18_REQUEST, &good);
    let soap11 = format!(
        r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>{good}</soap:Body></soap:Envelope>"#
    );
    let not_xml = "this is not XML at all".to_owned();
    let mtom_body = format!("--b1\r\nContent-Type: application/xop+xml\r\n\r\n{}", rad69_envelope_with(&good));
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("DOCTYPE with entities (billion laughs)", soap.clone(), billion_laughs.into_bytes(), 400),
        ("external entity", soap.clone(), external_entity.into_bytes(), 400),
        ("100,000-deep nesting", soap.clone(), deep.into_bytes(), 400),
        ("600 KB attribute", soap.clone(), huge_attribute.into_bytes(), 400),
        ("20,000 attributes", soap.clone(), many_attributes.into_bytes(), 400),
        ("an action not served here", soap_content_type(ITI18_REQUEST), wrong_action.into_bytes(), 400),
        ("SOAP 1.1", "text/xml; charset=UTF-8".to_owned(), soap11.into_bytes(), 400),
        ("not XML", soap.clone(), not_xml.into_bytes(), 400),
        (
            "multipart without its boundary",
            r#"multipart/related; type="application/xop+xml"; boundary="other""#.to_owned(),
            mtom_body.clone().into_bytes(),
            400,
        ),
        (
            "multipart cut before its close delimiter",
            r#"multipart/related; type="application/xop+xml"; boundary="b1"; start-info="application/soap+xml""#
                .to_owned(),
            mtom_body.into_bytes(),
            400,
        ),
        ("a body over 1 MiB", soap.clone(), vec![b' '; 2 * 1024 * 1024], 413),
    ];
    for (case, content_type, body, expected) in cases {
        let exchange = endpoint.post(Some(&endpoint.pki.partner), &content_type, &body, &[]).await;
        assert!(exchange.curl_ok(), "{case}: curl {}", exchange.stderr());
        let (status, reason) = exchange.fault();
        assert!(
            status == expected || (expected == 400 && status == 500 && case == "SOAP 1.1"),
            "{case}: HTTP {status}: {reason}"
        );
        assert!(!reason.is_empty(), "{case}: a reason is given");
    }
    // A body announced larger than the limit is refused before it is read.
    let exchange = endpoint
        .post(
            Some(&endpoint.pki.partner),
            &soap,
            good.as_bytes(),
            &["--http1.1", "-H", "Content-Length: 10485760", "--max-time", "10"],
        )
        .await;
    assert_eq!(exchange.status(), 413, "{}", exchange.stderr());
    assert_eq!(endpoint.pacs.counts(), (0, 0, 0), "no malformed request reached the PACS");

    // Still serving.
    let response = endpoint.rad69(&good).await.response();
    assert_eq!(response.response.status, ResponseStatus::Success);
}

#[tokio::test]
async fn a_request_body_that_dribbles_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start_with(folder(dir.path()), |settings| {
        settings.request_body_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let soap = soap_content_type(RAD69_REQUEST);
    // curl sends the headers, then the body at 100 bytes a second.
    let body = vec![b' '; 1_000];
    let exchange = endpoint.post(Some(&endpoint.pki.partner), &soap, &body, &["--limit-rate", "100"]).await;
    assert_eq!(exchange.status(), 408, "{}", exchange.stderr());
    assert_eq!(endpoint.pacs.counts(), (0, 0, 0));
}
