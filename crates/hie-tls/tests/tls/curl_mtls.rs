//! curl (OpenSSL) with client certificates against `serve_https`: the valid client, every
//! negative case of reliability-security S2, and HTTP/2 and HTTP/1.1 keep-alive.

use std::process::Command;
use std::sync::atomic::Ordering;

use hie_tls::pki::test_pki::{Duration, ExtendedKeyUsagePurpose, LeafSpec, OffsetDateTime, TestCa, write_atomically};
use hie_tls::{RefusalCategory, ServerTlsSettings};
use rustls_pki_types::pem::PemObject as _;

use crate::support::{Pki, Server, curl, init_tracing, with_client};

/// openssl's view of a certificate field (`-subject`, `-serial`, ...), without the `name=` prefix.
fn openssl_field(certificate: &std::path::Path, field: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-nameopt", "RFC2253"])
        .args(field)
        .arg("-in")
        .arg(certificate)
        .output()
        .expect("openssl must be installed (apt-get install openssl)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    text.trim().split_once('=').map(|(_, value)| value.to_owned()).unwrap()
}

#[tokio::test]
async fn a_valid_client_gets_200_and_the_handler_sees_its_identity_as_openssl_does() {
    init_tracing();
    let pki = Pki::new();
    let server = Server::start(pki.settings()).await;
    let mut args = with_client(&pki.client_certificate, &pki.client_key);
    args.extend(["--write-out".into(), " %{http_code}".into(), server.url("/hello")]);
    let response = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(response.ok(), "{}", response.stderr());
    assert_eq!(response.stdout(), "hello CN=Partner Gateway,O=Partner Hospital 200");

    let callers = server.callers.lock().unwrap().clone();
    assert_eq!(callers.len(), 1);
    let peer = &callers[0];
    assert_eq!(peer.addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    // OpenSSL completes the chain from its trust store, so the CA may follow the end entity.
    assert!(!peer.certificate_chain.is_empty());
    assert_eq!(peer.end_entity(), Some(&pki.client.certificate));
    let fingerprint = openssl_field(&pki.client_certificate, &["-fingerprint", "-sha256"]);
    assert_eq!(peer.fingerprint().to_string(), fingerprint);
    assert_eq!(peer.subject(), openssl_field(&pki.client_certificate, &["-subject"]));
    assert_eq!(peer.certificate.issuer, openssl_field(&pki.client_certificate, &["-issuer"]));
    assert_eq!(peer.certificate.serial, openssl_field(&pki.client_certificate, &["-serial"]));
    assert_eq!(server.stats.handshakes_full.load(Ordering::Relaxed), 1);
    assert_eq!(server.stats.refusals_total(), 0);
    server.stop().await;
}

#[tokio::test]
async fn every_negative_client_is_refused_before_the_router_and_classified() {
    init_tracing();
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let (revoked, revoked_certificate, revoked_key) = pki.client_leaf("revoked", &LeafSpec::client("Revoked Gateway"));
    let (_, expired_certificate, expired_key) = pki.client_leaf(
        "expired",
        &LeafSpec::client("Expired Gateway").valid(now - Duration::days(30), now - Duration::days(1)),
    );
    let (_, future_certificate, future_key) = pki.client_leaf(
        "future",
        &LeafSpec::client("Future Gateway").valid(now + Duration::days(1), now + Duration::days(30)),
    );
    let (_, server_auth_certificate, server_auth_key) = pki.client_leaf(
        "server-auth-only",
        &LeafSpec::client("Server Auth Gateway").with_extended_key_usages(vec![ExtendedKeyUsagePurpose::ServerAuth]),
    );
    let stranger_ca = TestCa::new("Stranger CA");
    let (stranger_certificate, stranger_key) =
        stranger_ca.issue(&LeafSpec::client("Partner Gateway")).write(pki.dir.path(), "stranger");

    // Chains through intermediates: one the root revoked, one no CRL covers.
    let revoked_intermediate = pki.ca.intermediate("Revoked Intermediate");
    let (revoked_chain_certificate, revoked_chain_key) = revoked_intermediate
        .issue(&LeafSpec::client("Behind Revoked Intermediate"))
        .write(pki.dir.path(), "behind-revoked");
    let uncovered_intermediate = pki.ca.intermediate("Intermediate Without CRL");
    let (uncovered_certificate, uncovered_key) = uncovered_intermediate
        .issue(&LeafSpec::client("Behind Uncovered Intermediate"))
        .write(pki.dir.path(), "uncovered");

    let now = OffsetDateTime::now_utc();
    let root_crl = pki.ca.crl_of_serials(
        &[revoked.serial.clone(), revoked_intermediate.serial()],
        now - Duration::hours(1),
        now + Duration::days(1),
    );
    let root_crl_path = pki.path("root.crl");
    write_atomically(&root_crl_path, root_crl.as_bytes(), 0o644);
    // In DER, to load both encodings.
    let intermediate_crl_path = pki.path("revoked-intermediate.crl.der");
    let intermediate_crl = revoked_intermediate.current_crl(&[]);
    let intermediate_crl =
        rustls_pki_types::CertificateRevocationListDer::from_pem_slice(intermediate_crl.as_bytes()).unwrap();
    write_atomically(&intermediate_crl_path, intermediate_crl.as_ref(), 0o644);
    let settings = ServerTlsSettings { crls: vec![root_crl_path, intermediate_crl_path], ..pki.settings() };
    let server = Server::start(settings).await;
    let url = server.url("/hello");

    let client = |certificate: &std::path::Path, key: &std::path::Path| with_client(certificate, key);
    let cases: Vec<(&str, Vec<String>, RefusalCategory)> = vec![
        ("no client certificate (TLS 1.3)", vec![], RefusalCategory::NoClientCertificate),
        (
            "no client certificate (TLS 1.2)",
            vec!["--tls-max".into(), "1.2".into()],
            RefusalCategory::NoClientCertificate,
        ),
        ("untrusted CA", client(&stranger_certificate, &stranger_key), RefusalCategory::UnknownCa),
        ("expired", client(&expired_certificate, &expired_key), RefusalCategory::Expired),
        ("not yet valid", client(&future_certificate, &future_key), RefusalCategory::NotYetValid),
        ("revoked by the root's CRL", client(&revoked_certificate, &revoked_key), RefusalCategory::Revoked),
        (
            "behind a revoked intermediate",
            client(&revoked_chain_certificate, &revoked_chain_key),
            RefusalCategory::Revoked,
        ),
        (
            "behind an intermediate no CRL covers",
            client(&uncovered_certificate, &uncovered_key),
            RefusalCategory::RevocationStatusUnknown,
        ),
        ("serverAuth EKU only", client(&server_auth_certificate, &server_auth_key), RefusalCategory::BadKeyUsage),
        (
            "TLS 1.1",
            // OpenSSL 3 allows TLS 1.1 only at security level 0.
            [
                vec![
                    "--tlsv1.1".into(),
                    "--tls-max".into(),
                    "1.1".into(),
                    "--ciphers".into(),
                    "DEFAULT@SECLEVEL=0".into(),
                ],
                client(&pki.client_certificate, &pki.client_key),
            ]
            .concat(),
            RefusalCategory::ProtocolVersion,
        ),
        (
            "a CBC suite",
            [
                vec![
                    "--tls-max".into(),
                    "1.2".into(),
                    "--ciphers".into(),
                    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES256-SHA".into(),
                ],
                client(&pki.client_certificate, &pki.client_key),
            ]
            .concat(),
            RefusalCategory::NoSharedCipher,
        ),
        (
            "static RSA key exchange",
            [
                vec!["--tls-max".into(), "1.2".into(), "--ciphers".into(), "AES128-GCM-SHA256".into()],
                client(&pki.client_certificate, &pki.client_key),
            ]
            .concat(),
            RefusalCategory::NoSharedCipher,
        ),
    ];
    for (name, mut args, category) in cases {
        let before = server.stats.refusals(category);
        args.push(url.clone());
        let response = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(!response.ok(), "{name}: curl succeeded: {}", response.stdout());
        assert!(response.stdout().is_empty(), "{name}: got a response body: {}", response.stdout());
        server.wait_for_refusals(category, before + 1).await;
    }
    assert_eq!(server.calls.load(Ordering::SeqCst), 0, "a refused client reached a handler");
    assert_eq!(server.stats.requests.load(Ordering::Relaxed), 0, "a refused client reached the router");
    assert_eq!(server.stats.refusals(RefusalCategory::Other), 0, "{:?}", server.stats);

    // The same server still serves a valid client: the CRLs do not cover it.
    let mut args = with_client(&pki.client_certificate, &pki.client_key);
    args.push(url.clone());
    let response = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(response.ok(), "{}", response.stderr());
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_crl_fails_closed_unless_the_danger_override_is_set() {
    init_tracing();
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let crl_path = pki.path("expired.crl");
    write_atomically(&crl_path, pki.ca.crl(&[], now - Duration::days(8), now - Duration::days(1)).as_bytes(), 0o644);
    let strict = Server::start(ServerTlsSettings { crls: vec![crl_path.clone()], ..pki.settings() }).await;
    let lenient =
        Server::start(ServerTlsSettings { crls: vec![crl_path], danger_allow_expired_crl: true, ..pki.settings() })
            .await;

    let mut args = with_client(&pki.client_certificate, &pki.client_key);
    args.push(strict.url("/hello"));
    let refused = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(!refused.ok(), "an expired CRL let a client in: {}", refused.stdout());
    strict.wait_for_refusals(RefusalCategory::RevocationStatusUnknown, 1).await;
    assert_eq!(strict.calls.load(Ordering::SeqCst), 0);

    *args.last_mut().unwrap() = lenient.url("/hello");
    let accepted = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(accepted.ok(), "{}", accepted.stderr());
    assert_eq!(lenient.calls.load(Ordering::SeqCst), 1);
    strict.stop().await;
    lenient.stop().await;
}

#[tokio::test]
async fn http2_and_http1_keep_alive_both_work() {
    init_tracing();
    let pki = Pki::new();
    let server = Server::start(pki.settings()).await;
    let url = server.url("/hello");
    let client = with_client(&pki.client_certificate, &pki.client_key);

    // HTTP/2 by ALPN, two requests multiplexed on one connection.
    let mut args = client.clone();
    args.extend([
        "--http2".into(),
        "--write-out".into(),
        " %{http_version} %{num_connects}\n".into(),
        url.clone(),
        url.clone(),
    ]);
    let response = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(response.ok(), "{}", response.stderr());
    let subject = "hello CN=Partner Gateway,O=Partner Hospital";
    assert_eq!(response.stdout(), format!("{subject} 2 1\n{subject} 2 0\n"));
    assert_eq!(server.stats.connections_accepted.load(Ordering::Relaxed), 1);

    // HTTP/1.1 keep-alive: the second request reuses the connection (0 new connects).
    let mut args = client.clone();
    args.extend([
        "--http1.1".into(),
        "--write-out".into(),
        " %{http_version} %{num_connects}\n".into(),
        url.clone(),
        url,
    ]);
    let response = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(response.ok(), "{}", response.stderr());
    assert_eq!(response.stdout(), format!("{subject} 1.1 1\n{subject} 1.1 0\n"));
    assert_eq!(server.stats.connections_accepted.load(Ordering::Relaxed), 2);
    assert_eq!(server.calls.load(Ordering::SeqCst), 4);
    server.stop().await;
}
