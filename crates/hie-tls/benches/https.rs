//! HTTPS benchmark over loopback: mutual-TLS handshakes per second (full and resumed) and bulk
//! MB/s for a 64 MiB body over one connection through `serve_https`, with curl (OpenSSL) against
//! the same server beside rustls. Prints figures; there are no goals to meet.
//!
//! Run with `cargo bench -p hie-tls --bench https` (requires curl). `HIE_TLS_BENCH_HANDSHAKES`
//! sets the number of handshakes per figure (default 300).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use hie_tls::pki::test_pki::{LeafSpec, TestCa};
use hie_tls::{ClientTlsSettings, HttpsLimits, HttpsStats, ReloadableServerConfig, ServerTlsSettings, client_config};
use http_body_util::BodyExt as _;
use rustls::client::Resumption;
use tokio::sync::watch;

const BODY_BYTES: usize = 64 * 1024 * 1024;
const CHUNK_BYTES: usize = 256 * 1024;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let handshakes: usize =
        std::env::var("HIE_TLS_BENCH_HANDSHAKES").ok().and_then(|text| text.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Bench CA");
    let ca_path = ca.write_certificate(dir.path(), "ca");
    let (server_certificate, server_key) = ca.issue(&LeafSpec::server()).write(dir.path(), "server");
    let (client_certificate, client_key) = ca.issue(&LeafSpec::client("Bench Client")).write(dir.path(), "client");

    let chunk = Bytes::from(vec![0x5a_u8; CHUNK_BYTES]);
    let router = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/big",
            get(move || {
                let chunk = chunk.clone();
                async move {
                    let chunks = (0..BODY_BYTES / CHUNK_BYTES).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
                    Body::from_stream(futures::stream::iter(chunks))
                }
            }),
        )
        .route(
            "/sink",
            post(|body: Body| async move {
                let mut body = body;
                let mut total = 0_usize;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.unwrap().into_data() {
                        total += data.len();
                    }
                }
                total.to_string()
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(HttpsStats::new());
    let tls = ReloadableServerConfig::load(ServerTlsSettings::new(&server_certificate, &server_key, &ca_path)).unwrap();
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let server = tokio::spawn(hie_tls::serve_https(
        listener,
        tls,
        router,
        Arc::clone(&stats),
        shutdown_receiver,
        HttpsLimits::default(),
    ));

    let settings = ClientTlsSettings::new(&client_certificate, &client_key, &ca_path);
    println!(
        "hie-tls HTTPS benchmark, loopback 127.0.0.1, mutual TLS (ECDSA P-256 certificates), {handshakes} handshakes per figure"
    );
    println!();

    // rustls client, full handshakes: no session cache.
    let mut full = client_config(&settings).unwrap();
    full.resumption = Resumption::disabled();
    let full = Arc::new(full);
    let before = stats.handshakes_full.load(Ordering::Relaxed);
    let seconds = timed(|| async {
        for _ in 0..handshakes {
            get_once(addr, &full, "/hello").await;
        }
    })
    .await;
    let counted = stats.handshakes_full.load(Ordering::Relaxed) - before;
    println!(
        "rustls  full handshake + GET, TLS 1.3     {:>8.0} handshakes/s  ({counted} full handshakes counted by the server)",
        handshakes as f64 / seconds
    );

    // rustls client, resumed handshakes: the default in-memory session cache, warmed once.
    let resumed = Arc::new(client_config(&settings).unwrap());
    get_once(addr, &resumed, "/hello").await;
    let before = stats.handshakes_resumed.load(Ordering::Relaxed);
    let seconds = timed(|| async {
        for _ in 0..handshakes {
            get_once(addr, &resumed, "/hello").await;
        }
    })
    .await;
    let counted = stats.handshakes_resumed.load(Ordering::Relaxed) - before;
    println!(
        "rustls  resumed handshake + GET, TLS 1.3  {:>8.0} handshakes/s  ({counted} resumed handshakes counted by the server)",
        handshakes as f64 / seconds
    );

    // curl (OpenSSL), one process, a new connection per URL.
    let url = format!("https://localhost:{}/hello", addr.port());
    for (label, extra) in [("full   ", vec!["--no-sessionid"]), ("resumed", vec![])] {
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--http1.1", "--cacert"])
            .arg(&ca_path)
            .arg("--cert")
            .arg(&client_certificate)
            .arg("--key")
            .arg(&client_key)
            .args(["--header", "Connection: close"])
            .args(extra)
            .stdout(std::process::Stdio::null());
        for _ in 0..handshakes {
            command.arg(&url);
        }
        let before = (stats.handshakes_full.load(Ordering::Relaxed), stats.handshakes_resumed.load(Ordering::Relaxed));
        let start = Instant::now();
        let status =
            tokio::task::spawn_blocking(move || command.status()).await.unwrap().expect("curl must be installed");
        let seconds = start.elapsed().as_secs_f64();
        assert!(status.success());
        let after = (stats.handshakes_full.load(Ordering::Relaxed), stats.handshakes_resumed.load(Ordering::Relaxed));
        println!(
            "curl    {label} handshake + GET, TLS 1.3  {:>8.0} handshakes/s  ({} full, {} resumed counted by the server)",
            handshakes as f64 / seconds,
            after.0 - before.0,
            after.1 - before.1
        );
    }
    println!();

    // Bulk over one connection.
    let mib = BODY_BYTES as f64 / (1024.0 * 1024.0);
    let download = timed(|| async {
        let received = get_once(addr, &resumed, "/big").await;
        assert_eq!(received, BODY_BYTES);
    })
    .await;
    println!("rustls  GET  64 MiB body, HTTP/1.1         {:>8.0} MiB/s", mib / download);
    let upload = timed(|| async {
        let answer = post_once(addr, &resumed, "/sink").await;
        assert_eq!(answer, BODY_BYTES.to_string());
    })
    .await;
    println!("rustls  POST 64 MiB body, HTTP/1.1         {:>8.0} MiB/s", mib / upload);
    for (label, version) in [("HTTP/1.1", "--http1.1"), ("HTTP/2  ", "--http2")] {
        let output = Command::new("curl")
            .args(["--silent", "--show-error", version, "--cacert"])
            .arg(&ca_path)
            .arg("--cert")
            .arg(&client_certificate)
            .arg("--key")
            .arg(&client_key)
            .args(["--output", "/dev/null", "--write-out", "%{speed_download}"])
            .arg(format!("https://localhost:{}/big", addr.port()))
            .output()
            .expect("curl must be installed");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let bytes_per_second: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
        println!("curl    GET  64 MiB body, {label}         {:>8.0} MiB/s", bytes_per_second / (1024.0 * 1024.0));
    }

    shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap();
}

async fn timed<F: std::future::Future<Output = ()>>(work: impl FnOnce() -> F) -> f64 {
    let start = Instant::now();
    work().await;
    start.elapsed().as_secs_f64()
}

async fn connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// One connection, one GET; returns the number of body bytes.
async fn get_once(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, path: &str) -> usize {
    let mut sender = connect(addr, config).await;
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(http_body_util::Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
        }
    }
    total
}

/// One connection, one POST of `BODY_BYTES`; returns the response body.
async fn post_once(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, path: &str) -> String {
    let mut sender = connect(addr, config).await;
    let chunk = Bytes::from(vec![0xa5_u8; CHUNK_BYTES]);
    let frames =
        (0..BODY_BYTES / CHUNK_BYTES).map(move |_| Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk.clone())));
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed();
    let request = http::Request::post(path).header(http::header::HOST, "localhost").body(body).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}
