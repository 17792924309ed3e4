//! Test harness: a test PKI written to a temporary directory, `serve_https` on a free loopback
//! port serving a tiny router that records who called, and a curl runner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use hie_tls::pki::test_pki::{LeafSpec, TestCa, TestLeaf};
use hie_tls::{HttpsLimits, HttpsStats, PeerIdentity, RefusalCategory, ReloadableServerConfig, ServerTlsSettings};
use tokio::sync::watch;

/// A CA, a server certificate and a valid client certificate on disk.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub ca_path: PathBuf,
    pub server: TestLeaf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub client: TestLeaf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Test Root CA");
        let ca_path = ca.write_certificate(dir.path(), "ca");
        let server = ca.issue(&LeafSpec::server());
        let (server_certificate, server_key) = server.write(dir.path(), "server");
        let client = ca.issue(&LeafSpec::client("Partner Gateway"));
        let (client_certificate, client_key) = client.write(dir.path(), "client");
        Self { dir, ca, ca_path, server, server_certificate, server_key, client, client_certificate, client_key }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Server settings trusting this PKI's CA for clients, without CRLs.
    pub fn settings(&self) -> ServerTlsSettings {
        ServerTlsSettings::new(&self.server_certificate, &self.server_key, &self.ca_path)
    }

    /// Issues a client certificate and writes it as `<stem>.pem`/`<stem>.key`.
    pub fn client_leaf(&self, stem: &str, spec: &LeafSpec) -> (TestLeaf, PathBuf, PathBuf) {
        let leaf = self.ca.issue(spec);
        let (certificate, key) = leaf.write(self.dir.path(), stem);
        (leaf, certificate, key)
    }
}

/// A running `serve_https` with a router that counts and records its callers.
pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<HttpsStats>,
    /// Requests that reached a handler.
    pub calls: Arc<AtomicU64>,
    /// The PeerIdentity each handler call saw.
    pub callers: Arc<Mutex<Vec<PeerIdentity>>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(settings: ServerTlsSettings) -> Self {
        Self::start_with(ReloadableServerConfig::load(settings).unwrap(), HttpsLimits::default(), Router::new()).await
    }

    /// Starts with extra routes merged into the recording router.
    pub async fn start_with(tls: ReloadableServerConfig, limits: HttpsLimits, extra: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(HttpsStats::new());
        let calls = Arc::new(AtomicU64::new(0));
        let callers = Arc::new(Mutex::new(Vec::new()));
        let router = {
            let calls = Arc::clone(&calls);
            let callers = Arc::clone(&callers);
            Router::new()
                .route(
                    "/hello",
                    get(move |Extension(peer): Extension<PeerIdentity>| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let subject = peer.subject().to_owned();
                        callers.lock().unwrap().push(peer);
                        format!("hello {subject}")
                    }),
                )
                .merge(extra)
        };
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let task = tokio::spawn(hie_tls::serve_https(
            listener,
            tls.clone(),
            router,
            Arc::clone(&stats),
            shutdown_receiver,
            limits,
        ));
        Self { addr, stats, calls, callers, shutdown, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Waits (bounded) until `category` has been counted `count` times; the server records a
    /// refusal on its own task, possibly after the client has already given up.
    pub async fn wait_for_refusals(&self, category: RefusalCategory, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stats.refusals(category) < count {
            assert!(
                Instant::now() < deadline,
                "expected {count} refusals of category {category}; counters: {:?}",
                self.stats
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        self.begin_shutdown();
        self.task.await.unwrap();
    }

    /// Asks the server to stop accepting and drain, without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.send(true).unwrap();
    }

    /// Waits (bounded) for `serve_https` to return after a shutdown.
    pub async fn join(self) {
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("serve_https did not return").unwrap();
    }
}

/// The outcome of one curl run.
#[derive(Debug)]
pub struct Curl {
    pub output: Output,
}

impl Curl {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs curl (off the runtime's worker threads) trusting `ca` for the server.
pub async fn curl(ca: &Path, args: &[&str]) -> Curl {
    let mut command = Command::new("curl");
    command.args(["--silent", "--show-error", "--max-time", "20", "--cacert"]).arg(ca).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("curl must be installed to run these tests (apt-get install curl)");
    Curl { output }
}

/// curl arguments presenting a client certificate.
pub fn with_client(certificate: &Path, key: &Path) -> Vec<String> {
    vec!["--cert".into(), certificate.display().to_string(), "--key".into(), key.display().to_string()]
}

/// Logs at debug level for the test binary when `RUST_LOG` asks for it.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A GET over rustls with `config`, connecting to `addr` and verifying `server_name`. Returns the
/// server's certificate chain, the status and the body.
pub async fn rustls_get(
    addr: SocketAddr,
    server_name: &str,
    config: rustls::ClientConfig,
    path: &str,
) -> Result<(Vec<rustls_pki_types::CertificateDer<'static>>, u16, String), std::io::Error> {
    use http_body_util::BodyExt as _;

    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    let tls = connector.connect(name, tcp).await?;
    let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, server_name)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
    Ok((chain, status, String::from_utf8_lossy(&body).into_owned()))
}
