//! The accept loop's limits: handshake timeout, header read timeout, connection cap, graceful
//! shutdown with a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use hie_tls::{ClientTlsSettings, HttpsLimits, RefusalCategory, ReloadableServerConfig, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::support::{Pki, Server, init_tracing, rustls_get};

/// Reads until EOF or error (bounded): the server closed the connection.
async fn closed_by_server(stream: &mut (impl AsyncReadExt + Unpin)) {
    let mut buffer = [0_u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_timeout_and_the_cap_closes_extra_connections() {
    init_tracing();
    let pki = Pki::new();
    let limits =
        HttpsLimits { handshake_timeout: Duration::from_millis(300), max_connections: 2, ..HttpsLimits::default() };
    let server =
        Server::start_with(ReloadableServerConfig::load(pki.settings()).unwrap(), limits, axum::Router::new()).await;

    let mut first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    wait_until("two accepted connections", || server.stats.connections_accepted.load(Ordering::Relaxed) == 2).await;
    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut third).await;
    assert_eq!(server.stats.connections_over_cap.load(Ordering::Relaxed), 1);

    // The silent connections are dropped at the handshake timeout, which frees their slots.
    closed_by_server(&mut first).await;
    server.wait_for_refusals(RefusalCategory::Timeout, 2).await;
    let config =
        client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();
    let (_, status, _) = rustls_get(server.addr, "localhost", config, "/hello").await.unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped_at_the_header_read_timeout() {
    init_tracing();
    let pki = Pki::new();
    let limits = HttpsLimits { header_read_timeout: Duration::from_millis(300), ..HttpsLimits::default() };
    let server =
        Server::start_with(ReloadableServerConfig::load(pki.settings()).unwrap(), limits, axum::Router::new()).await;
    let mut config =
        client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    closed_by_server(&mut tls).await;
    assert_eq!(server.calls.load(Ordering::SeqCst), 0);

    // An idle keep-alive connection is closed by the same timer once its request is answered.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    closed_by_server(&mut tls).await;
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_lets_in_flight_requests_finish_and_drops_them_after_the_grace_period() {
    init_tracing();
    let pki = Pki::new();
    let entered = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let routes = {
        let entered = Arc::clone(&entered);
        let release = Arc::clone(&release);
        axum::Router::new()
            .route(
                "/slow",
                get(move || {
                    let entered = Arc::clone(&entered);
                    let release = Arc::clone(&release);
                    async move {
                        entered.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        "finished"
                    }
                }),
            )
            .route("/never", get(std::future::pending::<&'static str>))
    };
    let config =
        client_config(&ClientTlsSettings::new(&pki.client_certificate, &pki.client_key, &pki.ca_path)).unwrap();

    // In-flight requests finish after shutdown is requested.
    let tls = ReloadableServerConfig::load(pki.settings()).unwrap();
    let server = Server::start_with(tls.clone(), HttpsLimits::default(), routes.clone()).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(rustls_get(addr, "localhost", config.clone(), "/slow"));
    wait_until("the slow handler to start", || entered.load(Ordering::SeqCst) == 1).await;
    server.begin_shutdown();
    // The listener closes: a new connection is refused or closed without a handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rustls_get(addr, "localhost", config.clone(), "/hello").await.is_ok() {
        assert!(Instant::now() < deadline, "the listener kept accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_one();
    let (_, status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "finished"));
    server.join().await;

    // A request that never finishes is dropped at the grace deadline, and serve_https returns.
    let limits = HttpsLimits { shutdown_grace: Duration::from_millis(200), ..HttpsLimits::default() };
    let server = Server::start_with(tls, limits, routes).await;
    let stuck = tokio::spawn(rustls_get(server.addr, "localhost", config, "/never"));
    wait_until("the stuck request to reach the router", || server.stats.requests.load(Ordering::Relaxed) == 1).await;
    server.begin_shutdown();
    server.join().await;
    assert!(stuck.await.unwrap().is_err(), "the stuck request cannot have been answered");
}
