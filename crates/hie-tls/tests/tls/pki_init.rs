//! `pki::init` output: file modes, refusal to overwrite, and curl and openssl using the files
//! against `serve_https`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hie_tls::pki::{self, Overwrite, PkiError};
use hie_tls::{HttpsLimits, ReloadableServerConfig, ServerTlsSettings};

use crate::support::{Server, curl, init_tracing, with_client};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn init_writes_a_pki_that_curl_and_openssl_accept_and_never_overwrites_by_default() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let files = pki::init(&out, Overwrite::Refuse).unwrap();
    for key in [&files.ca_key, &files.server_key, &files.client_key] {
        assert_eq!(mode(key), 0o600, "{}", key.display());
        assert!(std::fs::read_to_string(key).unwrap().starts_with("TEST ONLY"), "{}", key.display());
    }
    for certificate in [&files.ca_certificate, &files.server_certificate, &files.client_certificate] {
        assert_eq!(mode(certificate), 0o644, "{}", certificate.display());
    }

    // openssl agrees on the purposes (EKU) of the certificates.
    for (purpose, certificate) in [("sslserver", &files.server_certificate), ("sslclient", &files.client_certificate)] {
        let output = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(&files.ca_certificate)
            .arg(certificate)
            .output()
            .expect("openssl must be installed (apt-get install openssl)");
        assert!(output.status.success(), "{purpose}: {}", String::from_utf8_lossy(&output.stdout));
    }
    let output = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&files.ca_certificate)
        .arg(&files.server_certificate)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server certificate must not be a client certificate");

    let settings = ServerTlsSettings::new(&files.server_certificate, &files.server_key, &files.ca_certificate);
    let server = Server::start_with(
        ReloadableServerConfig::load(settings).unwrap(),
        HttpsLimits::default(),
        axum::Router::new(),
    )
    .await;
    for host in ["localhost", "127.0.0.1"] {
        let mut args = with_client(&files.client_certificate, &files.client_key);
        args.push(format!("https://{host}:{}/hello", server.addr.port()));
        let response = curl(&files.ca_certificate, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(response.ok(), "{host}: {}", response.stderr());
        assert_eq!(response.stdout(), "hello CN=hie-edge development client,O=hie-edge development PKI");
    }
    server.stop().await;

    let ca_before = std::fs::read(&files.ca_certificate).unwrap();
    let error = pki::init(&out, Overwrite::Refuse).unwrap_err();
    assert!(matches!(error, PkiError::Exists { .. }), "{error}");
    assert!(error.to_string().contains("ca.pem"), "{error}");
    assert_eq!(std::fs::read(&files.ca_certificate).unwrap(), ca_before);

    // Only one file present still blocks a new init, and nothing is written.
    let partial = dir.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("client.key"), b"keep me").unwrap();
    assert!(matches!(pki::init(&partial, Overwrite::Refuse), Err(PkiError::Exists { .. })));
    assert!(!partial.join("ca.pem").exists());

    let replaced = pki::init(&out, Overwrite::Replace).unwrap();
    assert_ne!(std::fs::read(&replaced.ca_certificate).unwrap(), ca_before);
    assert_eq!(mode(&replaced.ca_key), 0o600);
}
