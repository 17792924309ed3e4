//! A fault proxy between the broker and a peer (the registry), in the spirit of Toxiproxy
//! (which no registry here packages): it forwards both ways, and on command refuses connections
//! (the peer is down) or lets requests through but drops the answers (the peer committed, the
//! answer was lost: reliability-security R5).
//!
//! Two modes. [`FaultProxy::start`] works on TCP and needs no keys; it decides per connection, and
//! "the answer" is the first bytes the peer sends, which is right for MLLP but not below TLS: there
//! the peer's first bytes are its half of the handshake, so a dropped "answer" is a request the
//! peer never saw. [`FaultProxy::start_https`] terminates TLS on both sides with the test PKI
//! (mutual TLS: it asks the broker for a client certificate and presents one to the peer), reads
//! HTTP/1.1 exchanges, and drops a whole answer only after the peer has sent all of it, so the
//! peer has committed what it answers. It also records every exchange it forwards: the exact
//! requests and answers on the wire, for the schema checks.
//!
//! Blocking std threads, like the rest of the harness.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What the proxy does with new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Fault {
    /// Forward everything.
    Pass = 0,
    /// Close every new connection at once (the peer is down).
    Down = 1,
    /// Forward the request; once the peer answers, drop the answer and close the client's
    /// connection (TCP mode: at the answer's first bytes; HTTPS mode: once the whole answer has
    /// arrived). Counts down `drop_answers`, then passes again.
    DropAnswers = 2,
}

/// The files of the test PKI an HTTPS proxy needs (paths into `BrokerProc::dir()/pki`).
#[derive(Debug, Clone)]
pub struct HttpsProxyKeys {
    /// What the proxy presents to the broker: the peer's own server certificate and key, so the
    /// broker's trust in the peer's CA covers the proxy.
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    /// CAs whose client certificates the proxy accepts from the broker.
    pub client_ca: PathBuf,
    /// What the proxy presents to the peer (a client certificate the peer trusts) ...
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    /// ... and the CA it verifies the peer's server certificate with.
    pub upstream_ca: PathBuf,
}

impl HttpsProxyKeys {
    /// A proxy in front of a broker whose development PKI is in `pki`: it poses as that broker
    /// (its server certificate), takes that PKI's client certificates, and uses its client
    /// certificate towards it.
    pub fn of_dev_pki(pki: &Path) -> HttpsProxyKeys {
        HttpsProxyKeys {
            server_certificate: pki.join("server.pem"),
            server_key: pki.join("server.key"),
            client_ca: pki.join("ca.pem"),
            client_certificate: pki.join("client.pem"),
            client_key: pki.join("client.key"),
            upstream_ca: pki.join("ca.pem"),
        }
    }
}

/// One HTTP exchange an HTTPS proxy forwarded (or whose answer it dropped).
#[derive(Debug, Clone)]
pub struct HttpExchange {
    /// Request line and headers, without the blank line.
    pub request_head: String,
    pub request_body: Vec<u8>,
    /// Status line and headers.
    pub response_head: String,
    pub response_body: Vec<u8>,
    /// The answer was dropped (the broker never saw it).
    pub dropped: bool,
}

impl HttpExchange {
    /// The request's Content-Type.
    pub fn request_content_type(&self) -> String {
        header(&self.request_head, "content-type").unwrap_or_default()
    }

    /// The answer's Content-Type.
    pub fn response_content_type(&self) -> String {
        header(&self.response_head, "content-type").unwrap_or_default()
    }

    /// The request's WS-Addressing Action (the text of its `Action` header element), or "".
    pub fn action(&self) -> String {
        soap_action(&self.request_body)
    }

    /// The answer's WS-Addressing Action, or "".
    pub fn response_action(&self) -> String {
        soap_action(&self.response_body)
    }

    /// The answer's HTTP status.
    pub fn status(&self) -> u16 {
        self.response_head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
    }
}

/// A running proxy; stops accepting when dropped (connections in flight finish on their own).
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// The TLS configurations of an HTTPS proxy, both sides.
struct TlsSides {
    towards_client: Arc<rustls::ServerConfig>,
    towards_upstream: Arc<rustls::ClientConfig>,
}

#[derive(Debug)]
struct State {
    fault: AtomicU32,
    /// Answers still to drop in [`Fault::DropAnswers`].
    drop_answers: AtomicUsize,
    /// Connections accepted.
    connections: AtomicU64,
    /// Answers dropped so far.
    dropped: AtomicU64,
    /// Connections refused while down.
    refused: AtomicU64,
    stop: AtomicBool,
    /// HTTPS mode: every exchange forwarded.
    exchanges: Mutex<Vec<HttpExchange>>,
    /// HTTPS mode: only answers to requests whose SOAP action contains this are dropped.
    drop_filter: Mutex<Option<String>>,
}

impl FaultProxy {
    /// A TCP proxy on a free loopback port in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        Self::start_mode(upstream, None)
    }

    /// An HTTPS proxy (TLS terminated on both sides, HTTP/1.1 exchanges recorded) on a free
    /// loopback port in front of the HTTPS server `upstream`.
    pub fn start_https(upstream: SocketAddr, keys: &HttpsProxyKeys) -> FaultProxy {
        Self::start_mode(upstream, Some(Arc::new(tls_sides(keys))))
    }

    fn start_mode(upstream: SocketAddr, tls: Option<Arc<TlsSides>>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let state = Arc::new(State {
            fault: AtomicU32::new(Fault::Pass as u32),
            drop_answers: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            exchanges: Mutex::new(Vec::new()),
            drop_filter: Mutex::new(None),
        });
        let accept_state = Arc::clone(&state);
        thread::spawn(move || accept_loop(listener, upstream, tls, accept_state));
        FaultProxy { addr, state }
    }

    /// HTTPS mode: the exchanges forwarded so far, in the order their answers arrived.
    pub fn exchanges(&self) -> Vec<HttpExchange> {
        self.state.exchanges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sets the fault for new connections.
    pub fn set(&self, fault: Fault) {
        self.state.fault.store(fault as u32, Ordering::SeqCst);
    }

    /// Drops the next `n` answers (TCP mode: each on its own connection), then passes again.
    pub fn drop_next_answers(&self, n: usize) {
        *self.state.drop_filter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.state.drop_answers.store(n, Ordering::SeqCst);
        self.set(Fault::DropAnswers);
    }

    /// HTTPS mode: drops the next `n` answers to requests whose SOAP action contains `action`
    /// (e.g. `ProvideAndRegisterDocumentSet`); other exchanges pass meanwhile.
    pub fn drop_next_answers_to(&self, action: &str, n: usize) {
        *self.state.drop_filter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(action.to_owned());
        self.state.drop_answers.store(n, Ordering::SeqCst);
        self.set(Fault::DropAnswers);
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, tls: Option<Arc<TlsSides>>, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        match state.fault.load(Ordering::SeqCst) {
            fault if fault == Fault::Down as u32 => {
                state.refused.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
            }
            _ if tls.is_some() => {
                let (state, tls) = (Arc::clone(&state), tls.clone());
                // Answers are counted down per exchange there, not per connection.
                thread::spawn(move || {
                    if let Some(tls) = tls {
                        forward_https(client, upstream, &tls, &state);
                    }
                });
            }
            fault => {
                let drop_answer = fault == Fault::DropAnswers as u32
                    && state
                        .drop_answers
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                        .is_ok();
                if state.drop_answers.load(Ordering::SeqCst) == 0 && fault == Fault::DropAnswers as u32 {
                    state.fault.store(Fault::Pass as u32, Ordering::SeqCst);
                }
                let state = Arc::clone(&state);
                thread::spawn(move || forward(client, upstream, drop_answer, state));
            }
        }
    }
}

fn forward(client: TcpStream, upstream: SocketAddr, drop_answer: bool, state: Arc<State>) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_reader), Ok(server_writer)) = (client.try_clone(), server.try_clone()) else { return };
    let upload = thread::spawn(move || copy(client_reader, server_writer));
    if drop_answer {
        // Wait for the first bytes of the answer (the peer has processed the request), then cut
        // the client off without them.
        let mut server = server;
        let mut first = [0_u8; 1];
        let _ = server.set_read_timeout(Some(Duration::from_secs(60)));
        if server.read(&mut first).unwrap_or(0) > 0 {
            state.dropped.fetch_add(1, Ordering::SeqCst);
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    } else {
        let _ = copy(server, client);
    }
    let _ = upload.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) -> io::Result<()> {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(());
        }
        to.write_all(&buffer[..n])?;
    }
}

fn tls_sides(keys: &HttpsProxyKeys) -> TlsSides {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificates = |path: &Path| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    };
    let key = |path: &Path| -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    };
    let roots = |path: &Path| {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(path) {
            roots.add(certificate).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        }
        Arc::new(roots)
    };
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&keys.client_ca), Arc::clone(&provider))
            .build()
            .expect("client verifier");
    let towards_client = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(certificates(&keys.server_certificate), key(&keys.server_key))
        .expect("the proxy's server certificate");
    let towards_upstream = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(&keys.upstream_ca))
        .with_client_auth_cert(certificates(&keys.client_certificate), key(&keys.client_key))
        .expect("the proxy's client certificate");
    TlsSides { towards_client: Arc::new(towards_client), towards_upstream: Arc::new(towards_upstream) }
}

/// HTTPS mode: one client connection, exchange after exchange (HTTP/1.1 keep-alive), each request
/// forwarded on one upstream connection and its whole answer read before it is passed on or dropped.
fn forward_https(client: TcpStream, upstream: SocketAddr, tls: &TlsSides, state: &State) {
    let _ = client.set_nodelay(true);
    let _ = client.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(connection) = rustls::ServerConnection::new(Arc::clone(&tls.towards_client)) else { return };
    let mut client = BufReader::new(rustls::StreamOwned::new(connection, client));
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.get_ref().sock.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = server.set_read_timeout(Some(IDLE_TIMEOUT));
    let name = ServerName::IpAddress(upstream.ip().into());
    let Ok(connection) = rustls::ClientConnection::new(Arc::clone(&tls.towards_upstream), name) else { return };
    let mut server = BufReader::new(rustls::StreamOwned::new(connection, server));
    while let Ok(Some(request)) = read_http_message(&mut client, false) {
        if server.get_mut().write_all(&request.raw).and_then(|()| server.get_mut().flush()).is_err() {
            break;
        }
        let Ok(Some(response)) = read_http_message(&mut server, true) else { break };
        let wanted = state
            .drop_filter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_none_or(|action| soap_action(&request.body).contains(action.as_str()));
        let drop_answer = wanted
            && state.fault.load(Ordering::SeqCst) == Fault::DropAnswers as u32
            && state.drop_answers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok();
        if drop_answer && state.drop_answers.load(Ordering::SeqCst) == 0 {
            state.fault.store(Fault::Pass as u32, Ordering::SeqCst);
        }
        let closes = [&request.head, &response.head]
            .iter()
            .any(|head| header(head, "connection").is_some_and(|value| value.eq_ignore_ascii_case("close")));
        state.exchanges.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(HttpExchange {
            request_head: request.head,
            request_body: request.body,
            response_head: response.head,
            response_body: response.body,
            dropped: drop_answer,
        });
        if drop_answer {
            state.dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client.get_mut().write_all(&response.raw).and_then(|()| client.get_mut().flush()).is_err() || closes {
            break;
        }
    }
    // No close_notify: to the broker a dropped answer looks like a connection cut mid-exchange.
    let _ = client.get_ref().sock.shutdown(Shutdown::Both);
    let _ = server.get_ref().sock.shutdown(Shutdown::Both);
}

/// How long an HTTPS proxy connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest HTTP head or body the proxy reads (the test messages are far smaller).
const MAX_HTTP_BYTES: usize = 64 * 1024 * 1024;

/// An HTTP/1.1 message as read: its exact bytes, and the head and (de-chunked) body apart.
struct HttpMessage {
    raw: Vec<u8>,
    head: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 message; `None` at a clean end of stream before it starts. Bodies by
/// Content-Length or chunked; an answer with neither runs to the end of the stream.
fn read_http_message(reader: &mut impl BufRead, is_response: bool) -> io::Result<Option<HttpMessage>> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidData, "HTTP message too large for the proxy");
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        reader.read_until(b'\n', &mut raw)?;
        if raw.len() == before {
            return if raw.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        if raw.ends_with(b"\r\n\r\n") {
            break;
        }
        if raw.len() > MAX_HTTP_BYTES {
            return Err(too_big());
        }
    }
    let head = String::from_utf8_lossy(&raw[..raw.len() - 4]).into_owned();
    let mut body = Vec::new();
    let chunked =
        header(&head, "transfer-encoding").is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line)?;
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(text.trim().split(';').next().unwrap_or_default(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if body.len() + size > MAX_HTTP_BYTES {
                return Err(too_big());
            }
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut trailer = Vec::new();
                    reader.read_until(b'\n', &mut trailer)?;
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" || trailer.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0_u8; size + 2];
            reader.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header(&head, "content-length").and_then(|value| value.trim().parse::<usize>().ok()) {
        if length > MAX_HTTP_BYTES {
            return Err(too_big());
        }
        body = vec![0_u8; length];
        reader.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
    } else if is_response {
        reader.take(MAX_HTTP_BYTES as u64).read_to_end(&mut body)?;
        raw.extend_from_slice(&body);
    }
    Ok(Some(HttpMessage { raw, head, body }))
}

/// The text of the first `...:Action>` element of a SOAP message (plain or MTOM root part).
fn soap_action(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ACTION_SCAN_BYTES)]).into_owned();
    let Some(at) = text.find(":Action") else { return String::new() };
    let rest = &text[at..];
    let Some(open) = rest.find('>') else { return String::new() };
    let value = &rest[open + 1..];
    value[..value.find('<').unwrap_or(value.len())].trim().to_owned()
}

/// How far into a body the SOAP header is looked for.
const ACTION_SCAN_BYTES: usize = 8192;

/// The value of header `name` (case-insensitive) in an HTTP head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}
