//! OpenTelemetry export over the real wire: a broker with `telemetry.otlp_endpoint` set sends
//! its spans as OTLP/HTTP protobuf to a collector (here a minimal HTTP server in the test).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use hie_edge::app::App;

/// Accepts HTTP requests and forwards (request line, body) of each; answers 200 with an empty
/// protobuf body, which OTLP/HTTP accepts as success.
fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read headers, then Content-Length bytes of body.
            let (head_end, content_length) = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (None, 0);
                }
                request.extend_from_slice(&chunk[..n]);
                if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (Some(end + 4), length);
                }
            };
            let Some(head_end) = head_end else { continue };
            while request.len() < head_end + content_length {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            let request_line =
                String::from_utf8_lossy(&request[..head_end]).lines().next().unwrap_or_default().to_owned();
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let _ = sender.send((request_line, request[head_end..].to_vec()));
        }
    });
    (format!("http://{address}/v1/traces"), receiver)
}

#[test]
fn spans_reach_an_otlp_collector() {
    let (endpoint, requests) = collector();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("HIE_EDGE__STORE__URL".to_owned(), format!("sqlite://{}", dir.path().join("otlp.db").display())),
        ("HIE_EDGE__HL7__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("HIE_EDGE__API__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("HIE_EDGE__DICOM__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("HIE_EDGE__TELEMETRY__OTLP_ENDPOINT".to_owned(), endpoint),
        ("HIE_EDGE__TELEMETRY__LOG_LEVEL".to_owned(), "info".to_owned()),
    ];
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/quickstart.toml");
    let config = hie_edge::config::load(&quickstart, env).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let guard = hie_telemetry::init(&config.telemetry).unwrap();
        let app = App::start(config).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(app.hl7_addr).await.unwrap();
        let message =
            b"\x0bMSH|^~\\&|ADT|HOSP|HIE|HIE|20261128120000||ADT^A04|OTLP1|P|2.5\rPID|1||T1^^^HOSP||Doe^Ann\r\x1c\r";
        tokio::io::AsyncWriteExt::write_all(&mut stream, message).await.unwrap();
        let mut ack = vec![0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut ack).await.unwrap();
        assert!(String::from_utf8_lossy(&ack[..n]).contains("MSA|AA|OTLP1"));
        app.shutdown().await;
        // Dropping the guard flushes the batch exporter.
        tokio::task::spawn_blocking(move || drop(guard)).await.unwrap();
    });
    let (request_line, body) = requests.recv_timeout(Duration::from_secs(20)).expect("no OTLP export arrived");
    assert!(request_line.starts_with("POST /v1/traces"), "{request_line}");
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|window| window == needle);
    assert!(contains(b"hl7.message"), "the MLLP message span is exported");
    assert!(contains(b"adt.group_commit"), "the commit span is exported");
    assert!(contains(b"hie-edge-quickstart"), "service.name comes from node.name");
}
