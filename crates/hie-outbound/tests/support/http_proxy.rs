//! A loopback TCP proxy in front of an HTTP/1.1 peer that records every request line it forwards
//! and follows each connection's exchanges: what lets a test say how many requests (and which)
//! reached the PACS, and whether a connection still carries a request whose response has not come
//! back whole (a retrieval that was aborted must not leave one behind). Blocking std threads.
//! Also used by the end-to-end tests (`tests/e2e/retrieve.rs`).
//!
//! Why responses are followed rather than connections counted: hyper's client pool races a new
//! connection against the return of a busy one for each request, and when the returned one wins
//! after the connect has started, the new connection is parked idle in the pool without ever
//! carrying a request (hyper-util `Client::one_connection_for`). On a loaded machine that happens
//! now and then; Orthanc keeps a connection that has sent no request open for 30 s, and the
//! broker's pool keeps idle ones as long, so "connections open" stayed above zero for 30 s after
//! an aborted retrieval whose own connection had closed in milliseconds. A connection is
//! [`ConnectionInfo::busy`] from a request line until its response is complete by its HTTP/1.1
//! framing (RFC 9112 6.3: Content-Length, chunked, or until close); idle ones are not.
#![allow(dead_code)] // reason: each test binary that includes this uses a different part

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The proxy; it runs until the test process ends.
#[derive(Debug, Clone)]
pub struct HttpProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

/// What one connection through the proxy carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Its request lines, in order.
    pub requests: Vec<String>,
    /// Responses that came back whole.
    pub responses: usize,
    /// Whether it is still open (neither side has closed it).
    pub open: bool,
}

impl ConnectionInfo {
    /// Open, with a request whose response is not complete.
    pub fn busy(&self) -> bool {
        self.open && self.requests.len() > self.responses
    }
}

#[derive(Debug, Default)]
struct ProxyState {
    /// Request lines of every connection, in arrival order (cleared by [`HttpProxy::clear`]).
    requests: Vec<String>,
    connections: Vec<ConnectionInfo>,
}

impl HttpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> HttpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let index = {
                    let mut state = shared.lock().unwrap();
                    state.connections.push(ConnectionInfo { open: true, ..ConnectionInfo::default() });
                    state.connections.len() - 1
                };
                let (client_read, server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let upstream_side = server.try_clone().unwrap();
                let requests_state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    pump_requests(client_read, server_write, &requests_state, index);
                    // The client side closed: the upstream connection goes too.
                    let _ = upstream_side.shutdown(Shutdown::Both);
                });
                let responses_state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    pump_responses(server, client, &responses_state, index);
                    responses_state.lock().unwrap().connections[index].open = false;
                });
            }
        });
        HttpProxy { addr, state }
    }

    /// `http://<proxy>` plus `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The request lines forwarded so far (`GET /dicom-web/... HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Connections open through the proxy now (idle keep-alive ones included).
    pub fn open(&self) -> usize {
        self.state.lock().unwrap().connections.iter().filter(|connection| connection.open).count()
    }

    /// Open connections with a request whose response has not come back whole.
    pub fn busy(&self) -> usize {
        self.state.lock().unwrap().connections.iter().filter(|connection| connection.busy()).count()
    }

    /// Every connection so far, in the order they were accepted.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.state.lock().unwrap().connections.clone()
    }

    /// Forgets the request lines recorded so far (connections keep theirs).
    pub fn clear(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

/// Server to client, counting the responses that end; when it ends, the client's side is closed
/// as well.
fn pump_responses(mut from: TcpStream, mut to: TcpStream, state: &Mutex<ProxyState>, index: usize) {
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut framing = ResponseFraming::default();
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let completed = framing.feed(&buffer[..n]);
                if completed > 0 {
                    state.lock().unwrap().connections[index].responses += completed;
                }
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
fn pump_requests(mut from: TcpStream, mut to: TcpStream, state: &Mutex<ProxyState>, index: usize) {
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
                        let mut state = state.lock().unwrap();
                        state.requests.push(line.to_owned());
                        state.connections[index].requests.push(line.to_owned());
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

/// Where the reader is in a stream of HTTP/1.1 responses (RFC 9112 6.3).
#[derive(Debug)]
enum ResponseFraming {
    /// Reading a status line and header fields, up to the empty line.
    Head(Vec<u8>),
    /// A body of this many more bytes.
    Length(u64),
    /// A chunk-size line (RFC 9112 7.1).
    ChunkSize(Vec<u8>),
    /// This many more bytes of chunk data.
    ChunkData(u64),
    /// The CRLF after chunk data: bytes of it still to come.
    ChunkEnd(u8),
    /// Trailer fields after the last chunk, up to the empty line.
    Trailer(Vec<u8>),
    /// A body delimited by the connection's close.
    UntilClose,
}

impl Default for ResponseFraming {
    fn default() -> Self {
        ResponseFraming::Head(Vec::new())
    }
}

impl ResponseFraming {
    /// Takes the next bytes from the server; returns how many responses they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut completed = 0;
        while !bytes.is_empty() {
            match self {
                ResponseFraming::Head(line) | ResponseFraming::ChunkSize(line) | ResponseFraming::Trailer(line) => {
                    line.push(bytes[0]);
                    bytes = &bytes[1..];
                    if line.len() > MAX_HEAD_BYTES {
                        *self = ResponseFraming::UntilClose;
                    } else if let Some((next, complete)) = self.line_done() {
                        completed += usize::from(complete);
                        *self = next;
                    }
                }
                ResponseFraming::Length(left) | ResponseFraming::ChunkData(left) => {
                    let taken = bytes.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= taken as u64;
                    bytes = &bytes[taken..];
                    if *left == 0 {
                        if matches!(self, ResponseFraming::Length(_)) {
                            completed += 1;
                            *self = ResponseFraming::default();
                        } else {
                            *self = ResponseFraming::ChunkEnd(2);
                        }
                    }
                }
                ResponseFraming::ChunkEnd(left) => {
                    bytes = &bytes[1..];
                    *left -= 1;
                    if *left == 0 {
                        *self = ResponseFraming::ChunkSize(Vec::new());
                    }
                }
                ResponseFraming::UntilClose => bytes = &[],
            }
        }
        completed
    }

    /// After a byte of a head, chunk-size line or trailer: once what it accumulates is complete,
    /// the next state and whether a response just ended.
    fn line_done(&self) -> Option<(ResponseFraming, bool)> {
        match self {
            ResponseFraming::Head(head) if head.ends_with(b"\r\n\r\n") => Some(after_head(head)),
            ResponseFraming::ChunkSize(line) if line.ends_with(b"\r\n") => {
                let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                let size = text.split(';').next().unwrap_or("").trim();
                Some(match u64::from_str_radix(size, 16) {
                    Ok(0) => (ResponseFraming::Trailer(Vec::new()), false),
                    Ok(n) => (ResponseFraming::ChunkData(n), false),
                    Err(_) => (ResponseFraming::UntilClose, false),
                })
            }
            ResponseFraming::Trailer(line) if line == b"\r\n" => Some((ResponseFraming::default(), true)),
            ResponseFraming::Trailer(line) if line.ends_with(b"\r\n") => {
                Some((ResponseFraming::Trailer(Vec::new()), false))
            }
            _ => None,
        }
    }
}

/// What follows a response head (RFC 9112 6.3), and whether the response is already complete.
fn after_head(head: &[u8]) -> (ResponseFraming, bool) {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut lines = text.split("\r\n");
    let status: u16 =
        lines.next().and_then(|line| line.split_whitespace().nth(1)).and_then(|code| code.parse().ok()).unwrap_or(0);
    // A 1xx is followed by the final response's head.
    if (100..200).contains(&status) {
        return (ResponseFraming::default(), false);
    }
    let fields: Vec<(&str, &str)> =
        lines.filter_map(|line| line.split_once(':')).map(|(name, value)| (name.trim(), value.trim())).collect();
    let length: Option<u64> =
        fields.iter().find(|(name, _)| *name == "content-length").and_then(|(_, value)| value.parse().ok());
    let chunked = fields.iter().any(|(name, value)| *name == "transfer-encoding" && value.contains("chunked"));
    match (status, chunked, length) {
        // 204 and 304 have no body, whatever the fields say.
        (204 | 304, _, _) | (_, false, Some(0)) => (ResponseFraming::default(), true),
        (_, true, _) => (ResponseFraming::ChunkSize(Vec::new()), false),
        (_, false, Some(length)) => (ResponseFraming::Length(length), false),
        (_, false, None) => (ResponseFraming::UntilClose, false),
    }
}

/// Longest head, chunk-size line or trailer followed; past it the framing is given up (the
/// connection then counts as busy until it closes).
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_length_chunks_and_bodiless_statuses() {
        let stream = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab";
        for split in [1, 2, 7, stream.len()] {
            let mut framing_split = ResponseFraming::default();
            let completed: usize = stream.chunks(split).map(|piece| framing_split.feed(piece)).sum();
            assert_eq!(completed, 3, "split {split}");
            assert!(matches!(framing_split, ResponseFraming::Length(2)), "split {split}: {framing_split:?}");
        }
        let mut framing = ResponseFraming::default();
        assert_eq!(framing.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 1);
    }
}
