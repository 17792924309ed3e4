//! The HTTPS accept loop: TCP, then a mutual-TLS handshake, then HTTP/1.1 or HTTP/2 (hyper-util's
//! auto builder) serving an axum `Router`, with the caller's verified identity in every request.
//!
//! `axum::serve` cannot expose peer certificates (tokio-rs/axum#2697), so this loop is ours.
//! Per connection: `TCP_NODELAY`, the handshake under a timeout, then hyper with a header read
//! timeout. A [`PeerIdentity`] is inserted into each request's extensions, so handlers (and the
//! audit) know who called. Refused handshakes are classified ([`RefusalCategory`]), counted in
//! [`HttpsStats`], logged at warn level with the peer address, and handed to the refusal hook;
//! no request of a refused connection reaches the router.
//!
//! Limits: a connection cap (connections over it are closed at once, counted), the handshake and
//! header read timeouts, a cap on header bytes and on concurrent HTTP/2 streams. Shutdown: when
//! `shutdown` changes, the loop stops accepting, each connection finishes its in-flight requests
//! (hyper's graceful shutdown: HTTP/1.1 closes after the current response, HTTP/2 sends GOAWAY),
//! and connections still open after `shutdown_grace` are dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::HandshakeKind;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::certificate::{CertificateSummary, Fingerprint};
use crate::refusal::{HandshakeRefusal, RefusalCategory};
use crate::server::ReloadableServerConfig;

/// Who is calling: inserted into the extensions of every request of a connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// The client's certificate chain as it sent it, end entity first (verified by the handshake).
    pub certificate_chain: Arc<[CertificateDer<'static>]>,
    /// Subject, issuer, serial and fingerprints of the end-entity certificate.
    pub certificate: Arc<CertificateSummary>,
}

impl PeerIdentity {
    /// The end-entity certificate, for `PartnerDirectory::identify`.
    pub fn end_entity(&self) -> Option<&CertificateDer<'static>> {
        self.certificate_chain.first()
    }

    /// SHA-256 of the end-entity certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.certificate.fingerprint
    }

    /// RFC 4514 subject of the end-entity certificate.
    pub fn subject(&self) -> &str {
        &self.certificate.subject
    }
}

/// Limits of one HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsLimits {
    /// From TCP accept to the end of the TLS handshake (reliability-security S2: at most 10 s).
    pub handshake_timeout: Duration,
    /// For a client to send a request's headers (HTTP/1.1; hyper starts it when it waits for a
    /// request, so it also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// Open connections, handshakes included.
    pub max_connections: usize,
    /// After shutdown is requested, how long in-flight requests may take before their connections
    /// are dropped.
    pub shutdown_grace: Duration,
    /// Concurrent streams per HTTP/2 connection (RFC 9113 6.5.2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub http2_max_concurrent_streams: u32,
    /// Bytes of request headers: HTTP/1.1 read buffer, HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_bytes: u32,
}

impl Default for HttpsLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(30),
            http2_max_concurrent_streams: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Counters of one listener, and the hook refused handshakes are handed to (the ATNA Security
/// Alert is raised from there).
#[derive(Default)]
pub struct HttpsStats {
    pub connections_accepted: AtomicU64,
    /// Closed at once because the connection cap was reached.
    pub connections_over_cap: AtomicU64,
    pub handshakes_full: AtomicU64,
    pub handshakes_resumed: AtomicU64,
    /// Requests that reached the router.
    pub requests: AtomicU64,
    refusals: [AtomicU64; RefusalCategory::ALL.len()],
    refusal_hook: OnceLock<RefusalHook>,
}

type RefusalHook = Box<dyn Fn(&HandshakeRefusal) + Send + Sync>;

impl HttpsStats {
    /// Counters with no refusal hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters that call `hook` for every refused handshake, on the connection's task: it must
    /// not block (send to a bounded channel with `try_send`, for instance).
    pub fn with_refusal_hook(hook: impl Fn(&HandshakeRefusal) + Send + Sync + 'static) -> Self {
        let stats = Self::default();
        // A fresh OnceLock is empty, so this cannot fail.
        let _ = stats.refusal_hook.set(Box::new(hook));
        stats
    }

    /// Refused handshakes of `category` so far.
    pub fn refusals(&self, category: RefusalCategory) -> u64 {
        self.refusals[category.index()].load(Ordering::Relaxed)
    }

    /// Refused handshakes of every category so far.
    pub fn refusals_total(&self) -> u64 {
        self.refusals.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    fn refuse(&self, refusal: HandshakeRefusal) {
        self.refusals[refusal.category.index()].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %refusal.peer, category = %refusal.category, error = %refusal.detail,
            "TLS handshake refused.");
        if let Some(hook) = self.refusal_hook.get() {
            hook(&refusal);
        }
    }
}

impl std::fmt::Debug for HttpsStats {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = formatter.debug_struct("HttpsStats");
        debug
            .field("connections_accepted", &self.connections_accepted)
            .field("connections_over_cap", &self.connections_over_cap)
            .field("handshakes_full", &self.handshakes_full)
            .field("handshakes_resumed", &self.handshakes_resumed)
            .field("requests", &self.requests);
        for category in RefusalCategory::ALL {
            debug.field(category.as_str(), &self.refusals(category));
        }
        debug.finish_non_exhaustive()
    }
}

/// Serves `router` over mutual TLS on `listener` until `shutdown` changes (or its sender is
/// dropped), then drains connections for at most `limits.shutdown_grace`.
///
/// Each handshake uses `tls.current()` at accept time, so a reload applies to new connections.
pub async fn serve_https(
    listener: TcpListener,
    tls: ReloadableServerConfig,
    router: Router,
    stats: Arc<HttpsStats>,
    mut shutdown: watch::Receiver<bool>,
    limits: HttpsLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let builder = Arc::new(http_builder(&limits));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow with the listener's age.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "HTTPS accept failed.");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.connections_over_cap.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, max_connections = limits.max_connections, "HTTPS connection closed: connection cap reached.");
            drop(stream);
            continue;
        };
        stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let connection = Connection {
            acceptor: TlsAcceptor::from(tls.current()),
            router: router.clone(),
            builder: Arc::clone(&builder),
            stats: Arc::clone(&stats),
            handshake_timeout: limits.handshake_timeout,
        };
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection.run(stream, peer, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(open = connections.len(), "HTTPS listener stopped accepting; draining connections.");
    let deadline = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            () = &mut deadline => {
                tracing::warn!(open = connections.len(), grace = ?limits.shutdown_grace,
                    "HTTPS connections still open after the shutdown grace period; dropping them.");
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// Most bytes of TLS records rustls holds for the socket (its default is 64 KiB).
const TLS_SEND_BUFFER: usize = 512 * 1024;

/// What one connection task needs.
struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stats: Arc<HttpsStats>,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, mut shutdown: watch::Receiver<bool>) {
        // Small SOAP responses and TLS records: without this, Nagle and delayed ACKs add ~40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY could not be set.");
        }
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream));
        let mut tls_stream = tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(error)) => {
                    let category = RefusalCategory::of_io(&error);
                    self.stats.refuse(HandshakeRefusal { peer, category, detail: error.to_string() });
                    return;
                }
                Err(_elapsed) => {
                    let detail = format!("no complete handshake within {:?}", self.handshake_timeout);
                    self.stats.refuse(HandshakeRefusal { peer, category: RefusalCategory::Timeout, detail });
                    return;
                }
            },
            _ = shutdown.changed() => return,
        };
        // rustls buffers 64 KiB of records by default, so a streamed answer was written to the
        // socket in pieces of about 45 KB, one system call each; hyper hands over up to its own
        // write buffer (about 400 KiB) at a time.
        tls_stream.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
        let (_, session) = tls_stream.get_ref();
        let chain: Arc<[CertificateDer<'static>]> = session
            .peer_certificates()
            .map(|chain| chain.iter().map(|certificate| certificate.clone().into_owned()).collect())
            .unwrap_or_default();
        // The verifier requires a certificate, so an empty chain would be a rustls bug: refuse anyway.
        let Some(end_entity) = chain.first() else {
            let detail = "handshake completed without a client certificate".to_owned();
            self.stats.refuse(HandshakeRefusal { peer, category: RefusalCategory::NoClientCertificate, detail });
            return;
        };
        let certificate = match CertificateSummary::from_der(end_entity) {
            Ok(summary) => Arc::new(summary),
            Err(error) => {
                self.stats.refuse(HandshakeRefusal {
                    peer,
                    category: RefusalCategory::Other,
                    detail: error.to_string(),
                });
                return;
            }
        };
        match session.handshake_kind() {
            Some(HandshakeKind::Resumed) => self.stats.handshakes_resumed.fetch_add(1, Ordering::Relaxed),
            _ => self.stats.handshakes_full.fetch_add(1, Ordering::Relaxed),
        };
        tracing::debug!(%peer, subject = %certificate.subject, fingerprint = %certificate.fingerprint,
            protocol = ?session.protocol_version(), "TLS handshake completed.");
        let identity = PeerIdentity { addr: peer, certificate_chain: chain, certificate };
        let router = self.router;
        let stats = Arc::clone(&self.stats);
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            request.extensions_mut().insert(identity.clone());
            router.clone().oneshot(request)
        });
        let connection = self.builder.serve_connection(TokioIo::new(tls_stream), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "HTTPS connection ended with an error.");
                    }
                    break;
                }
                _ = shutdown.changed(), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

fn http_builder(limits: &HttpsLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let max_header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX).max(MIN_HTTP1_BUFFER);
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        // PING frames (RFC 9113 6.7) find peers that vanished without closing, which would
        // otherwise hold a connection slot.
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    builder
}

const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(60);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// hyper refuses an HTTP/1.1 read buffer under 8 KiB (`max_buf_size` panics below it).
const MIN_HTTP1_BUFFER: usize = 8 * 1024;
