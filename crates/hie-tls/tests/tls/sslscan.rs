//! The offered TLS surface (reliability-security S1), seen by sslscan (Debian), by openssl
//! s_client, and by hand-written ClientHellos for what neither can probe here.

use std::io::{Read, Write};
use std::process::Command;

use hie_tls::RefusalCategory;

use crate::support::{Pki, Server, init_tracing};

/// The values of `attribute` in every `<element ...>` of sslscan's XML.
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
async fn sslscan_sees_only_tls12_and_tls13_with_ecdhe_aead_suites_and_no_renegotiation() {
    init_tracing();
    let pki = Pki::new();
    let server = Server::start(pki.settings()).await;
    let target = format!("127.0.0.1:{}", server.addr.port());
    // With our client certificate: against a listener that requires one, OpenSSL's TLS 1.2
    // handshakes fail without it and sslscan would list no TLS 1.2 suite.
    let certs = format!("--certs={}", pki.client_certificate.display());
    let key = format!("--pk={}", pki.client_key.display());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sslscan").args(["--no-colour", "--show-client-cas", &certs, &key, "--xml=-", &target]).output()
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
    assert_eq!(elements(&xml, "protocol").len(), 6, "sslscan should report SSLv2, SSLv3 and TLS 1.0-1.3: {xml}");

    let ciphers = elements(&xml, "cipher");
    let mut versions: Vec<&str> = ciphers.iter().map(|tag| attribute(tag, "sslversion")).collect();
    versions.dedup();
    assert_eq!(versions, ["TLSv1.3", "TLSv1.2"], "{xml}");
    for tag in &ciphers {
        let name = attribute(tag, "cipher");
        match attribute(tag, "sslversion") {
            "TLSv1.3" => assert!(name.starts_with("TLS_"), "{name}"),
            "TLSv1.2" => {
                assert!(name.starts_with("ECDHE-"), "TLS 1.2 suite without ECDHE: {name}");
                assert!(
                    name.contains("-GCM-") || name.ends_with("CHACHA20-POLY1305"),
                    "TLS 1.2 suite without AEAD: {name}"
                );
                assert!(!name.contains("CBC") && !name.ends_with("-SHA"), "CBC suite: {name}");
            }
            other => panic!("cipher for {other}: {name}"),
        }
    }
    // Our test server certificate is ECDSA, so only the ECDSA half of the TLS 1.2 list applies.
    let tls12: Vec<&str> = ciphers
        .iter()
        .filter(|tag| attribute(tag, "sslversion") == "TLSv1.2")
        .map(|tag| attribute(tag, "cipher"))
        .collect();
    assert_eq!(
        tls12,
        ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]
    );

    let renegotiation = elements(&xml, "renegotiation");
    assert_eq!(renegotiation.len(), 1, "{xml}");
    assert_eq!(attribute(renegotiation[0], "supported"), "0", "{xml}");
    for tag in elements(&xml, "heartbleed") {
        assert_eq!(attribute(tag, "vulnerable"), "0");
    }
    // S1: the CertificateRequest names the client CAs, so peers can pick a certificate.
    assert!(xml.contains("<ca>") && xml.contains("CN=Test Root CA"), "{xml}");
    assert_eq!(server.stats.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    server.stop().await;
}

#[tokio::test]
async fn sha1_signatures_are_refused() {
    init_tracing();
    let pki = Pki::new();
    let server = Server::start(pki.settings()).await;
    let connect = format!("127.0.0.1:{}", server.addr.port());
    let (certificate, key, ca) = (pki.client_certificate.clone(), pki.client_key.clone(), pki.ca_path.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &connect, "-tls1_2", "-sigalgs", "ECDSA+SHA1:RSA+SHA1"])
            .args(["-cipher", "DEFAULT@SECLEVEL=0", "-cert"])
            .arg(certificate)
            .arg("-key")
            .arg(key)
            .arg("-CAfile")
            .arg(ca)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .unwrap()
    .expect("openssl must be installed (apt-get install openssl)");
    assert!(!output.status.success(), "a SHA-1-only client completed a handshake");
    server.wait_for_refusals(RefusalCategory::NoSharedCipher, 1).await;
    server.stop().await;
}

/// A TLS 1.2 ClientHello (RFC 5246 7.4.1.2) offering `compression_methods`, one ECDHE-ECDSA-GCM
/// suite, and the extensions a TLS 1.2 server needs.
fn client_hello(compression_methods: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&TLS12_VERSION);
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session_id: empty
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2b]); // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    body.push(compression_methods.len() as u8);
    body.extend_from_slice(compression_methods);
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1 (RFC 8422 5.1.1)
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms: ecdsa_secp256r1_sha256
        0x00, 0x17, 0x00, 0x00, // extended_master_secret (RFC 7627)
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends a ClientHello and returns the first record the server answers with.
fn first_record(port: u16, hello: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(hello).unwrap();
    let mut header = [0_u8; 5];
    stream.read_exact(&mut header).unwrap();
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut record = header.to_vec();
    record.resize(5 + len, 0);
    stream.read_exact(&mut record[5..]).unwrap();
    record
}

#[tokio::test]
async fn compression_is_never_negotiated() {
    init_tracing();
    let pki = Pki::new();
    let server = Server::start(pki.settings()).await;
    let port = server.addr.port();

    // Offering DEFLATE (RFC 3749) and null: the ServerHello picks null.
    let record = tokio::task::spawn_blocking(move || {
        first_record(port, &client_hello(&[COMPRESSION_DEFLATE, COMPRESSION_NULL]))
    })
    .await
    .unwrap();
    assert_eq!(record[0], CONTENT_HANDSHAKE, "{record:02x?}");
    assert_eq!(record[5], HANDSHAKE_SERVER_HELLO);
    let session_id_len = record[5 + 4 + 2 + 32] as usize;
    let compression = record[5 + 4 + 2 + 32 + 1 + session_id_len + 2];
    assert_eq!(compression, COMPRESSION_NULL);

    // Offering DEFLATE only: refused with an alert.
    let record =
        tokio::task::spawn_blocking(move || first_record(port, &client_hello(&[COMPRESSION_DEFLATE]))).await.unwrap();
    assert_eq!(record[0], CONTENT_ALERT, "{record:02x?}");
    server.wait_for_refusals(RefusalCategory::Other, 1).await;
    server.stop().await;
}

/// RFC 5246 6.2.1 ContentType.
const CONTENT_ALERT: u8 = 0x15;
const CONTENT_HANDSHAKE: u8 = 0x16;
/// RFC 5246 7.4 HandshakeType.
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const HANDSHAKE_SERVER_HELLO: u8 = 0x02;
const TLS12_VERSION: [u8; 2] = [0x03, 0x03];
/// RFC 3749 2 CompressionMethod.
const COMPRESSION_NULL: u8 = 0x00;
const COMPRESSION_DEFLATE: u8 = 0x01;
