//! Clients the endpoint refuses (reliability-security S2), each by curl: no certificate, an
//! untrusted CA, expired, not yet valid, revoked, serverAuth only, valid but mapped to no partner,
//! TLS 1.1, a non-AEAD suite. None reaches the PACS. sslscan sees only TLS 1.2 and 1.3 with
//! ECDHE+AEAD suites (S1).

use std::process::Command;

use hie_testkit::generate_study;
use hie_tls::pki::test_pki::{Duration, ExtendedKeyUsagePurpose, LeafSpec, OffsetDateTime, TestCa};
use hie_xds::messages::ResponseStatus;

use crate::support::*;

/// What a refused client sees: curl fails, or (unmapped partner) a 403 SOAP fault.
fn refused(exchange: &Exchange) -> bool {
    !exchange.curl_ok() || exchange.status() == 0
}

#[tokio::test]
async fn every_refused_client_reaches_no_pacs() {
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&template(), 2, 2, &dir.path().join("a"));
    let now = OffsetDateTime::now_utc();
    let mut negatives: Vec<(&str, std::path::PathBuf, std::path::PathBuf)> = Vec::new();
    let endpoint = Endpoint::start_full(
        folder(dir.path()),
        |_| {},
        |pki| {
            let mut issue = |stem: &'static str, spec: LeafSpec| {
                let leaf = pki.ca.issue(&spec);
                let (certificate, key) = leaf.write(pki.dir.path(), stem);
                negatives.push((stem, certificate, key));
                leaf
            };
            issue(
                "expired",
                LeafSpec::client("Imaging Gateway B").valid(now - Duration::days(30), now - Duration::days(1)),
            );
            issue(
                "not-yet-valid",
                LeafSpec::client("Imaging Gateway B").valid(now + Duration::days(1), now + Duration::days(30)),
            );
            issue(
                "server-auth-only",
                LeafSpec::client("Imaging Gateway B")
                    .with_extended_key_usages(vec![ExtendedKeyUsagePurpose::ServerAuth]),
            );
            let revoked = issue("revoked", LeafSpec::client("Imaging Gateway B"));
            let stranger = TestCa::new("Stranger CA").issue(&LeafSpec::client("Imaging Gateway B"));
            let (certificate, key) = stranger.write(pki.dir.path(), "untrusted-ca");
            negatives.push(("untrusted-ca", certificate, key));
            let crl = pki.dir.path().join("ca.crl.pem");
            std::fs::write(&crl, pki.ca.current_crl(&[&revoked])).unwrap();
            let mut settings = pki.settings();
            settings.crls = vec![crl];
            settings
        },
    )
    .await;
    let store = &endpoint.store;
    register(store, &study.study_instance_uid, 1, &referenced(&study), b"KOS").await;
    let body = envelope(hie_xds::actions::RAD69_REQUEST, &rad69_body(&wanted_of(&study), &[EXPLICIT_LE]));
    let content_type = soap_content_type(hie_xds::actions::RAD69_REQUEST);

    // The registered partner gets its images: the setup is right.
    let served = endpoint.post(Some(&endpoint.pki.partner), &content_type, body.as_bytes(), &[]).await.response();
    assert_eq!(served.response.status, ResponseStatus::Success);
    let baseline = endpoint.pacs.counts();

    // No client certificate.
    let exchange = endpoint.post(None, &content_type, body.as_bytes(), &[]).await;
    assert!(refused(&exchange), "no certificate: {exchange:?}");
    for (case, certificate, key) in &negatives {
        let client =
            Client { leaf: endpoint.pki.partner.leaf.clone(), certificate: certificate.clone(), key: key.clone() };
        let exchange = endpoint.post(Some(&client), &content_type, body.as_bytes(), &[]).await;
        assert!(refused(&exchange), "{case}: {exchange:?}");
    }
    // TLS 1.1, even with a valid certificate (SECLEVEL=0 lets curl's OpenSSL offer it).
    let exchange = endpoint
        .post(
            Some(&endpoint.pki.partner),
            &content_type,
            body.as_bytes(),
            &["--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0"],
        )
        .await;
    assert!(refused(&exchange), "TLS 1.1: {exchange:?}");
    // TLS 1.2 with CBC (non-AEAD) suites only.
    let exchange = endpoint
        .post(
            Some(&endpoint.pki.partner),
            &content_type,
            body.as_bytes(),
            &[
                "--tls-max",
                "1.2",
                "--ciphers",
                "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA256:AES128-SHA",
            ],
        )
        .await;
    assert!(refused(&exchange), "non-AEAD suite: {exchange:?}");
    eventually("every refused handshake counted", || endpoint.https.refusals_total() >= 8).await;

    // A certificate of our CA that maps to no partner: a SOAP Sender fault, nothing else.
    let exchange = endpoint.post(Some(&endpoint.pki.unmapped), &content_type, body.as_bytes(), &[]).await;
    assert!(exchange.curl_ok(), "{}", exchange.stderr());
    let (status, reason) = exchange.fault();
    assert_eq!(status, 403);
    assert!(reason.contains("not that of a known partner"), "{reason}");
    assert!(String::from_utf8_lossy(&exchange.body).contains("env:Sender"));

    assert_eq!(endpoint.pacs.counts(), baseline, "no refused client reached the PACS");
}

/// The values of `attribute` in every `<element .../>` of sslscan's XML.
fn elements<'a>(xml: &'a str, element: &str) -> Vec<&'a str> {
    let open = format!("<{element} ");
    xml.match_indices(&open).filter_map(|(start, _)| xml[start..].split_once("/>").map(|(tag, _)| tag)).collect()
}

fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = tag.find(&key).unwrap_or_else(|| panic!("no {name} in {tag}")) + key.len();
    let end = tag[start..].find('"').unwrap() + start;
    &tag[start..end]
}

#[tokio::test]
async fn sslscan_sees_tls12_and_tls13_with_aead_suites_only() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(folder(dir.path())).await;
    let target = format!("127.0.0.1:{}", endpoint.addr.port());
    let certs = format!("--certs={}", endpoint.pki.partner.certificate.display());
    let key = format!("--pk={}", endpoint.pki.partner.key.display());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sslscan").args(["--no-colour", &certs, &key, "--xml=-", &target]).output()
    })
    .await
    .unwrap()
    .expect("sslscan must be installed (apt-get install sslscan)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let xml = String::from_utf8(output.stdout).unwrap();
    let mut enabled: Vec<String> = elements(&xml, "protocol")
        .into_iter()
        .filter(|tag| attribute(tag, "enabled") == "1")
        .map(|tag| format!("{} {}", attribute(tag, "type"), attribute(tag, "version")))
        .collect();
    enabled.sort();
    assert_eq!(enabled, ["tls 1.2", "tls 1.3"], "{xml}");
    let ciphers = elements(&xml, "cipher");
    assert!(!ciphers.is_empty(), "{xml}");
    for tag in &ciphers {
        let name = attribute(tag, "cipher");
        match attribute(tag, "sslversion") {
            "TLSv1.3" => assert!(name.starts_with("TLS_"), "{name}"),
            "TLSv1.2" => {
                assert!(name.starts_with("ECDHE-"), "TLS 1.2 suite without ECDHE: {name}");
                assert!(name.contains("-GCM-") || name.ends_with("CHACHA20-POLY1305"), "not AEAD: {name}");
            }
            other => panic!("a suite of {other}: {name}"),
        }
    }
    assert_eq!(endpoint.pacs.counts(), (0, 0, 0));
}
