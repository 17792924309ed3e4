//! A loopback TCP proxy in front of an HTTP peer that records every request line it forwards:
//! what lets a test say how many requests (and which) reached the PACS, and how many connections
//! to it are open (a retrieval that was aborted must not leave one behind). Blocking std threads.
//! Also used by the end-to-end tests (`tests/e2e/retrieve.rs`).
#![allow(dead_code)] // reason: each test binary that includes this uses a different part

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The proxy; it runs until the test process ends.
#[derive(Debug, Clone)]
pub struct HttpProxy {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    open: Arc<AtomicI64>,
}

impl HttpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> HttpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let open = Arc::new(AtomicI64::new(0));
        let gauge = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let recorded = Arc::clone(&recorded);
                let (client_read, server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                gauge.fetch_add(1, Ordering::SeqCst);
                let gauge = Arc::clone(&gauge);
                let upstream_side = server.try_clone().unwrap();
                std::thread::spawn(move || {
                    pump_requests(client_read, server_write, &recorded);
                    // The client side closed: the upstream connection goes too.
                    let _ = upstream_side.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    pump(server, client);
                    gauge.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        HttpProxy { addr, requests, open }
    }

    /// `http://<proxy>` plus `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The request lines forwarded so far (`GET /dicom-web/... HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Connections open through the proxy now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Forgets the requests recorded so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    // Server to client: when it ends, the client's side is closed as well.
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// Client to server: GET requests have no body, so every line that starts a request is a
/// method line; those are recorded.
fn pump_requests(mut from: TcpStream, mut to: TcpStream, recorded: &Mutex<Vec<String>>) {
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                pending.extend_from_slice(&buffer[..n]);
                while let Some(end) = pending.windows(4).position(|window| window == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    if let Some(line) = head.lines().next() {
                        recorded.lock().unwrap().push(line.to_owned());
                    }
                    pending.drain(..end + 4);
                }
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
