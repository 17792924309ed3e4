//! Reload: replaced CRLs and server certificates apply to new handshakes without a restart, and a
//! corrupt replacement keeps the old configuration.

use std::time::{Duration, Instant};

use hie_tls::pki::test_pki::{LeafSpec, write_atomically};
use hie_tls::{
    ClientTlsSettings, HttpsLimits, RefusalCategory, ReloadableServerConfig, ServerTlsSettings, client_config,
};
use tokio::sync::watch;

use crate::support::{Pki, Server, init_tracing, rustls_get};

async fn wait_for_generation(tls: &ReloadableServerConfig, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.generation() < generation {
        assert!(Instant::now() < deadline, "no reload to generation {generation}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn replaced_crl_and_server_certificate_apply_to_new_handshakes_and_a_corrupt_file_keeps_the_old_config() {
    init_tracing();
    let pki = Pki::new();
    let crl_path = pki.path("clients.crl");
    write_atomically(&crl_path, pki.ca.current_crl(&[]).as_bytes(), 0o644);
    let settings = ServerTlsSettings { crls: vec![crl_path.clone()], ..pki.settings() };
    let tls = ReloadableServerConfig::load(settings).unwrap();
    let server = Server::start_with(tls.clone(), HttpsLimits::default(), axum::Router::new()).await;
    let (stop_watching, watching) = watch::channel(false);
    let watcher = tokio::spawn(tls.clone().watch(Duration::from_millis(20), watching));
    let client =
        || client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();

    let (chain, status, _) = rustls_get(server.addr, "localhost", client(), "/hello").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(chain[0], pki.server.certificate);

    // The watcher sees the new CRL, which revokes our client.
    write_atomically(&crl_path, pki.ca.current_crl(&[&pki.client]).as_bytes(), 0o644);
    wait_for_generation(&tls, 1).await;
    let refused = rustls_get(server.addr, "localhost", client(), "/hello").await;
    assert!(refused.is_err(), "a revoked client got {refused:?}");
    server.wait_for_refusals(RefusalCategory::Revoked, 1).await;

    // A new server certificate and key, and the CRL back to empty.
    let renewed = pki.ca.issue(&LeafSpec::server());
    write_atomically(&crl_path, pki.ca.current_crl(&[]).as_bytes(), 0o644);
    renewed.write(pki.dir.path(), "server");
    // Both files changed; the watcher may have picked one change or both by now.
    tls.reload().unwrap();
    let (chain, status, _) = rustls_get(server.addr, "localhost", client(), "/hello").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(chain[0], renewed.certificate, "new handshakes must present the renewed certificate");

    // A corrupt certificate file: the reload fails, the previous config keeps serving.
    let generation = tls.generation();
    write_atomically(
        &pki.server_certificate,
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        0o644,
    );
    let error = tls.reload().unwrap_err();
    assert!(error.to_string().contains("server.pem"), "{error}");
    assert!(!tls.reload_if_changed().unwrap(), "a failed change is reported once, not retried every poll");
    tokio::time::sleep(Duration::from_millis(100)).await; // several watcher polls
    assert_eq!(tls.generation(), generation);
    let (chain, status, _) = rustls_get(server.addr, "localhost", client(), "/hello").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(chain[0], renewed.certificate);

    // Fixing the file is picked up by the watcher.
    renewed.write(pki.dir.path(), "server");
    wait_for_generation(&tls, generation + 1).await;

    stop_watching.send(true).unwrap();
    watcher.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_is_refused_at_load() {
    let pki = Pki::new();
    let other = pki.ca.issue(&LeafSpec::server());
    let (_, other_key) = other.write(pki.dir.path(), "other");
    let settings = ServerTlsSettings { private_key: other_key, ..pki.settings() };
    let error = ReloadableServerConfig::load(settings).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("other.key") && message.contains("server.pem"), "{message}");
}

#[tokio::test]
async fn sessions_resume_with_the_client_identity_but_not_across_a_reload() {
    init_tracing();
    let pki = Pki::new();
    let tls = ReloadableServerConfig::load(pki.settings()).unwrap();
    let server = Server::start_with(tls.clone(), HttpsLimits::default(), axum::Router::new()).await;
    // One client config: its session cache is what resumes.
    let config =
        client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();
    for _ in 0..2 {
        let (_, status, body) = rustls_get(server.addr, "localhost", config.clone(), "/hello").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "hello CN=Partner Gateway,O=Partner Hospital"));
    }
    let resumed = || server.stats.handshakes_resumed.load(std::sync::atomic::Ordering::Relaxed);
    let full = || server.stats.handshakes_full.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((full(), resumed()), (1, 1));
    assert_eq!(server.callers.lock().unwrap()[1].subject(), "CN=Partner Gateway,O=Partner Hospital");

    // A reload (a new CRL, say) starts a new session cache: the next handshake is verified again.
    tls.reload().unwrap();
    rustls_get(server.addr, "localhost", config, "/hello").await.unwrap();
    assert_eq!((full(), resumed()), (2, 1));
    server.stop().await;
}
