//! The outbound client config against `serve_https`: our client certificate is accepted, and a
//! server with a wrong name, an expired certificate or an untrusted CA is refused.

use hie_tls::pki::test_pki::{Duration, LeafSpec, OffsetDateTime, TestCa};
use hie_tls::{ClientTlsSettings, RefusalCategory, ServerTlsSettings, client_config};

use crate::support::{Pki, Server, init_tracing, rustls_get};

#[tokio::test]
async fn the_client_config_presents_our_certificate() {
    init_tracing();
    let pki = Pki::new();
    let server = Server::start(pki.settings()).await;
    let config =
        client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();
    let (_, status, body) = rustls_get(server.addr, "localhost", config.clone(), "/hello").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "hello CN=Partner Gateway,O=Partner Hospital"));
    // The IP SAN works too.
    let (_, status, _) = rustls_get(server.addr, "127.0.0.1", config, "/hello").await.unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn servers_with_a_wrong_name_an_expired_certificate_or_an_untrusted_ca_are_refused() {
    init_tracing();
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let stranger = TestCa::new("Stranger CA");
    let cases = [
        (
            "wrong SAN",
            pki.ca.issue(&LeafSpec::server().with_subject_alt_names(&["registry.example.org"])),
            RefusalCategory::NameMismatch,
        ),
        (
            "expired",
            pki.ca.issue(&LeafSpec::server().valid(now - Duration::days(30), now - Duration::days(1))),
            RefusalCategory::Expired,
        ),
        ("untrusted CA", stranger.issue(&LeafSpec::server()), RefusalCategory::UnknownCa),
    ];
    let config =
        client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();
    for (index, (name, leaf, category)) in cases.into_iter().enumerate() {
        let (certificate, key) = leaf.write(pki.dir.path(), &format!("bad-server-{index}"));
        let server = Server::start(ServerTlsSettings::new(certificate, key, &pki.ca_path)).await;
        let error = rustls_get(server.addr, "localhost", config.clone(), "/hello").await.unwrap_err();
        assert_eq!(RefusalCategory::of_io(&error), category, "{name}: {error}");
        assert_eq!(server.stats.requests.load(std::sync::atomic::Ordering::Relaxed), 0, "{name}");
        server.stop().await;
    }
}
