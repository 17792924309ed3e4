//! `hie_e2e`: the end-to-end harness. It starts the real broker binary as a child process on a fresh
//! store (SQLite file or PostgreSQL database) with free loopback ports, and talks to it over the
//! real wire: MLLP (a small Rust client), HTTP (a tiny HTTP/1.1 GET), and the Python peers of the
//! project venv (python-hl7, hl7apy).
//!
//! Which executable: `CARGO_BIN_EXE_*` is only visible to integration tests and benches, not to this
//! library, so every test or bench calls [`init!`] (or [`use_exe`]) once before starting a broker.
//! `HIE_E2E_BROKER_EXE` in the environment, when set, wins (e.g. to run the suite against a release
//! build of `hie-edge`).
//!
//! Blocking std code on purpose: tests are simpler without an async runtime, and the broker under
//! test is a separate process anyway.

pub mod proxy;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// MLLP start block.
pub const SB: u8 = 0x0b;
/// MLLP end block (followed by [`CR`]).
pub const EB: u8 = 0x1c;
/// Carriage return: MLLP trailer and HL7 segment terminator.
pub const CR: u8 = 0x0d;

const DEFAULT_PG_ADMIN_URL: &str = "postgres://hie:hie@127.0.0.1:5432/postgres";
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(60);

static BROKER_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Registers the broker executable built for this test target. Call once per test binary (extra
/// calls are ignored); [`init!`] does it with the right path.
pub fn use_exe(path: &str) {
    let _ = BROKER_EXE.set(PathBuf::from(path));
}

/// `hie_e2e::init!()` in an integration test or bench registers `CARGO_BIN_EXE_hie-edge-e2e`.
#[macro_export]
macro_rules! init {
    () => {
        $crate::use_exe(env!("CARGO_BIN_EXE_hie-edge-e2e"))
    };
}

/// The broker executable: `HIE_E2E_BROKER_EXE` if set, else the one registered by [`use_exe`].
pub fn broker_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("HIE_E2E_BROKER_EXE") {
        return PathBuf::from(p);
    }
    match BROKER_EXE.get() {
        Some(p) => p.clone(),
        None => panic!("no broker executable: call hie_e2e::init!() in the test (or set HIE_E2E_BROKER_EXE)"),
    }
}

/// The workspace root (the folder holding `Cargo.toml`, `config/`, `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `config/quickstart.toml`, the embedded default every test broker starts from.
pub fn quickstart_config() -> PathBuf {
    workspace_root().join("config/quickstart.toml")
}

/// `tests/fixtures/<path>`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

/// The venv python with python-hl7 and hl7apy: `$HIE_TEST_VENV/bin/python`, default
/// `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    venv_bin("python")
}

/// A console script of the test venv, e.g. `mllp_send`.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("HIE_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".venv"));
    let p = venv.join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: the Python test peers are not installed; run `bash scripts/test.sh` \
         (or set HIE_TEST_VENV to a venv with `pip install hl7 hl7apy`)",
        p.display()
    );
    p
}

/// Which store engine a test broker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// How to start a test broker. `extra_env` entries are passed after the harness's own overrides,
/// so they win (e.g. `HIE_EDGE__HL7__IDLE_TIMEOUT_SECS`).
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub engine: Engine,
    pub extra_env: Vec<(String, String)>,
}

impl BrokerOptions {
    pub fn new(engine: Engine) -> Self {
        BrokerOptions { engine, extra_env: Vec::new() }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A broker child process on its own store and ports. Dropping it kills the child and drops its
/// PostgreSQL database (SQLite files go with the temp dir).
#[derive(Debug)]
pub struct BrokerProc {
    /// `http://127.0.0.1:PORT`
    pub api: String,
    pub api_addr: SocketAddr,
    /// The mutual-TLS listener (built-in registry, retrievals); its PKI is in `dir()/pki`.
    pub https_addr: SocketAddr,
    /// `[registry] feed`: where the built-in registry's ITI-8 listener binds (kind builtin), or
    /// where this broker sends its identity feed (kind remote).
    pub feed_addr: SocketAddr,
    pub mllp: SocketAddr,
    /// The DICOM listener (`HIE_EDGE__DICOM__LISTEN`), on a free port of its own.
    pub dicom: SocketAddr,
    pub store_url: String,
    pub engine: Engine,
    child: Option<Child>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pg_database: Option<String>,
    starts: u32,
}

impl BrokerProc {
    /// Fresh store, free ports, quickstart config; returns once `GET /healthz` answers 200.
    pub fn start(engine: Engine) -> BrokerProc {
        Self::start_with(BrokerOptions::new(engine))
    }

    pub fn start_with(opts: BrokerOptions) -> BrokerProc {
        let dir = tempfile::Builder::new().prefix("hie-e2e-").tempdir().expect("temp dir");
        // An override in `extra_env` of the store or a listener is honoured by the harness too
        // (it must know where to find the broker).
        let given = |k: &str| opts.extra_env.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let (store_url, pg_database) = match (given("HIE_EDGE__STORE__URL"), opts.engine) {
            (Some(url), _) => (url, None),
            (None, Engine::Sqlite) => (format!("sqlite://{}", dir.path().join("hie.db").display()), None),
            (None, Engine::Postgres) => {
                let url = fresh_pg_database();
                let name = url.rsplit('/').next().unwrap_or_default().to_owned();
                (url, Some(name))
            }
        };
        let addr_of = |k: &str| given(k).and_then(|v| v.parse::<SocketAddr>().ok());
        let mllp = addr_of("HIE_EDGE__HL7__LISTEN").unwrap_or_else(free_addr);
        let api_addr = addr_of("HIE_EDGE__API__LISTEN").unwrap_or_else(free_addr);
        let dicom = addr_of("HIE_EDGE__DICOM__LISTEN").unwrap_or_else(free_addr);
        let https_addr = addr_of("HIE_EDGE__HTTPS__LISTEN").unwrap_or_else(free_addr);
        let feed_addr = given("HIE_EDGE__REGISTRY__FEED")
            .and_then(|feed| feed.strip_prefix("mllp://").and_then(|address| address.parse().ok()))
            .unwrap_or_else(free_addr);
        let mut env = vec![
            ("HIE_EDGE__STORE__URL".to_owned(), store_url.clone()),
            ("HIE_EDGE__HL7__LISTEN".to_owned(), mllp.to_string()),
            ("HIE_EDGE__API__LISTEN".to_owned(), api_addr.to_string()),
            ("HIE_EDGE__DICOM__LISTEN".to_owned(), dicom.to_string()),
            ("HIE_EDGE__HTTPS__LISTEN".to_owned(), https_addr.to_string()),
            ("HIE_EDGE__REGISTRY__FEED".to_owned(), format!("mllp://{feed_addr}")),
        ];
        // Each broker its own development PKI (dev_pki creates it on start), so parallel tests
        // never race to create one.
        for (key, file) in [
            ("HIE_EDGE__HTTPS__CERTIFICATE", "server.pem"),
            ("HIE_EDGE__HTTPS__PRIVATE_KEY", "server.key"),
            ("HIE_EDGE__HTTPS__CLIENT_CA", "ca.pem"),
            ("HIE_EDGE__REGISTRY__CERTIFICATE", "client.pem"),
            ("HIE_EDGE__REGISTRY__PRIVATE_KEY", "client.key"),
            ("HIE_EDGE__REGISTRY__SERVER_CA", "ca.pem"),
        ] {
            env.push((key.to_owned(), dir.path().join("pki").join(file).display().to_string()));
        }
        env.extend(opts.extra_env);
        let mut b = BrokerProc {
            api: format!("http://{api_addr}"),
            api_addr,
            https_addr,
            feed_addr,
            mllp,
            dicom,
            store_url,
            engine: opts.engine,
            child: None,
            dir,
            env,
            pg_database,
            starts: 0,
        };
        b.spawn_and_wait();
        b
    }

    /// Where the broker's DICOM listener is.
    pub fn dicom_addr(&self) -> SocketAddr {
        self.dicom
    }

    /// The temp dir of this broker (SQLite file, logs); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's development PKI (created at its first start): `ca.pem`, `server.pem`/`.key`,
    /// `client.pem`/`.key`.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// `hie-edge <args>` with this broker's configuration (`--config` is not added) and its
    /// environment overrides, run in its folder: a CLI command on the broker's store.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(broker_exe());
        cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HIE_EDGE__") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("broker.stderr.log")
    }

    fn spawn_and_wait(&mut self) {
        self.starts += 1;
        // Appending keeps the log of earlier lives across restarts.
        let log = File::options().create(true).append(true).open(self.stderr_path()).expect("stderr log");
        let out = log.try_clone().expect("clone log");
        let mut cmd = Command::new(broker_exe());
        cmd.arg("serve")
            .arg("--config")
            .arg(quickstart_config())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        // Only the harness's overrides: none leak in from the developer's shell.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HIE_EDGE__") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", broker_exe().display()));
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + HEALTHZ_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("broker exited during start-up ({status}); stderr tail:\n{}", self.stderr_tail(60));
            }
            if let Ok((200, _)) = http_get(self.api_addr, "/healthz", Duration::from_secs(2)) {
                return;
            }
            if Instant::now() > deadline {
                panic!("broker not healthy after {HEALTHZ_TIMEOUT:?}; stderr tail:\n{}", self.stderr_tail(60));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the broker and reap it (no-op if it is not running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same store and ports (after [`kill9`](Self::kill9), or kills
    /// it first) and waits for `/healthz`.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait();
    }

    /// The broker's process id (panics if it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker not running").id()
    }

    /// True while the child process has not exited.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How many times the process was started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Everything the broker wrote to stderr and stdout so far, across restarts.
    pub fn stderr_log(&self) -> String {
        let mut s = Vec::new();
        if let Ok(mut f) = File::open(self.stderr_path()) {
            let _ = f.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// The last `n` lines of [`stderr_log`](Self::stderr_log).
    pub fn stderr_tail(&self, n: usize) -> String {
        let log = self.stderr_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// HTTP GET against the API listener: (status, body). Panics on a transport error, with the
    /// broker's stderr tail.
    pub fn get(&self, path_and_query: &str) -> (u16, String) {
        http_get(self.api_addr, path_and_query, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}; broker stderr tail:\n{}", self.stderr_tail(40)))
    }

    /// HTTP GET against the API listener with the body as bytes (a manifest): (status, body).
    pub fn get_bytes(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        http_get_bytes(self.api_addr, path_and_query, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}; broker stderr tail:\n{}", self.stderr_tail(40)))
    }

    /// HTTP POST (empty body) against the API listener: (status, body).
    pub fn post(&self, path_and_query: &str) -> (u16, String) {
        http_request(self.api_addr, "POST", path_and_query, &[], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("POST {path_and_query}: {e}; broker stderr tail:\n{}", self.stderr_tail(40)))
    }

    /// `GET path` parsed as JSON (panics unless 200).
    pub fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.get(path_and_query);
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path_and_query}: not JSON ({e}): {body}"))
    }

    /// `GET /api/submissions?study=<uid>&phi=true`, oldest first.
    pub fn submissions_of(&self, study_instance_uid: &str) -> Vec<serde_json::Value> {
        match self.get_json(&format!("/api/submissions?phi=true&study={}", url_encode(study_instance_uid))) {
            serde_json::Value::Array(rows) => rows,
            other => panic!("/api/submissions: not an array: {other}"),
        }
    }

    /// `GET /api/patients?identifier=<cx>` parsed as a JSON array (panics unless 200).
    pub fn patients(&self, cx: &str) -> Vec<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/patients?identifier={}", url_encode(cx)));
        assert_eq!(status, 200, "GET /api/patients?identifier={cx}: {body}");
        match serde_json::from_str(&body) {
            Ok(serde_json::Value::Array(a)) => a,
            other => panic!("/api/patients?identifier={cx}: not a JSON array: {other:?} ({body})"),
        }
    }

    /// Sends one framed message to the MLLP listener and returns the first reply frame.
    pub fn send(&self, msg: &[u8]) -> io::Result<Vec<u8>> {
        mllp_send(self.mllp, msg, Duration::from_secs(30))
    }

    /// True if `/healthz` answers 200 right now.
    pub fn healthy(&self) -> bool {
        matches!(http_get(self.api_addr, "/healthz", Duration::from_secs(5)), Ok((200, _)))
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
        if let Some(db) = self.pg_database.take() {
            // Best effort: a leftover database only costs disk space.
            let _ = psql(&pg_admin_url(), &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

/// Polls `probe` every 100 ms until it gives a value, and returns it; after `timeout` panics with
/// `what()` (which should say what was awaited and what was seen last).
pub fn wait_until<T>(timeout: Duration, what: impl Fn() -> String, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("waited {timeout:?} in vain: {}", what());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A loopback address with a port that was free a moment ago, from outside the ephemeral range
/// (`hie_testkit::free_port`).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], hie_testkit::free_port()))
}

/// `HIE_TEST_PG_ADMIN_URL`, default `postgres://hie:hie@127.0.0.1:5432/postgres`.
pub fn pg_admin_url() -> String {
    std::env::var("HIE_TEST_PG_ADMIN_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned())
}

/// Creates `hie_test_<random>` with the admin URL's role as owner and returns its URL.
pub fn fresh_pg_database() -> String {
    let admin = pg_admin_url();
    let name = format!("hie_test_{}", unique_suffix());
    if let Err(e) = psql(&admin, &format!("CREATE DATABASE {name}")) {
        panic!(
            "cannot create a PostgreSQL test database via {admin}: {e}\n\
             Is PostgreSQL running with role hie/hie? `bash scripts/test.sh` sets it up."
        );
    }
    match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("HIE_TEST_PG_ADMIN_URL has no database part: {admin}"),
    }
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// Lower-case, unique within this machine for practical purposes (time, pid, counter).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n}", nanos & 0xffff_ffff_ffff, std::process::id())
}

/// A message control id (MSH-10) unique across test runs.
pub fn control_id(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A minimal HTTP/1.1 GET (`Connection: close`), enough for JSON and Prometheus text answers.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], timeout)
}

/// [`http_get`] with the body as bytes.
pub fn http_get_bytes(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, Vec<u8>)> {
    http_request_bytes(addr, "GET", path, &[], timeout)
}

/// A minimal HTTP/1.1 request (`Connection: close`) with an optional body (sent as
/// `application/octet-stream` when not empty): (status, body as text).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let (status, body) = http_request_bytes(addr, method, path, body, timeout)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// [`http_request`] with the answer's body as bytes (a manifest, say).
pub fn http_request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n")?;
    if body.is_empty() && method == "GET" {
        write!(s, "\r\n")?;
    } else {
        write!(s, "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len())?;
        s.write_all(body)?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of HTTP header"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut body = raw[head_end + 4..].to_vec();
    let status: u16 =
        head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("no HTTP status"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Wraps a payload in an MLLP frame.
pub fn mllp_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 3);
    v.push(SB);
    v.extend_from_slice(payload);
    v.extend_from_slice(&[EB, CR]);
    v
}

/// Connects, sends one framed message and reads one framed reply.
pub fn mllp_send(addr: SocketAddr, payload: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut s = mllp_connect(addr, timeout)?;
    s.write_all(&mllp_frame(payload))?;
    mllp_read_frame(&mut s, timeout)
}

/// A connected MLLP client socket (TCP_NODELAY, write timeout set).
pub fn mllp_connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Reads one MLLP frame (bytes before the start block are skipped) and returns its payload.
/// `UnexpectedEof` if the peer closes first; `WouldBlock`/`TimedOut` if nothing complete arrives
/// within `timeout`.
pub fn mllp_read_frame(stream: &mut TcpStream, timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut started = false;
    let mut payload = Vec::new();
    let mut byte = [0u8; 1];
    // Byte at a time so a second frame on the same connection (enhanced mode) stays in the socket;
    // ACKs are small.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no complete MLLP frame in time"));
        }
        stream.set_read_timeout(Some(left))?;
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let b = byte[0];
        if !started {
            started = b == SB;
            continue;
        }
        if b == CR && payload.last() == Some(&EB) {
            payload.pop();
            return Ok(payload);
        }
        payload.push(b);
    }
}

/// Splits a byte stream (e.g. a Python client's stdout) into MLLP frame payloads.
pub fn split_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some(s) = rest.iter().position(|&b| b == SB) {
        let after = &rest[s + 1..];
        match after.iter().position(|&b| b == EB) {
            Some(e) => {
                frames.push(after[..e].to_vec());
                rest = &after[e + 1..];
            }
            None => break,
        }
    }
    frames
}

/// The segments of an HL7 message (CR, LF or CRLF terminated), as text.
pub fn segments(msg: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(msg).split(['\r', '\n']).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Field `n` of the first segment named `seg` (MSH numbering: MSH-1 is the separator itself).
pub fn field(msg: &[u8], seg: &str, n: usize) -> Option<String> {
    let segs = segments(msg);
    let sep = segs.first().and_then(|m| m.strip_prefix("MSH")).and_then(|r| r.chars().next()).unwrap_or('|');
    let s = segs.iter().find(|s| s.split(sep).next() == Some(seg))?;
    let parts: Vec<&str> = s.split(sep).collect();
    let idx = if seg == "MSH" { n.checked_sub(1)? } else { n };
    if seg == "MSH" && n == 1 {
        return Some(sep.to_string());
    }
    parts.get(idx).map(|p| (*p).to_owned())
}

/// MSA-1 of an ACK (empty if there is no MSA segment).
pub fn ack_code(ack: &[u8]) -> String {
    field(ack, "MSA", 1).unwrap_or_default()
}

/// The VmHWM (peak resident set) of a process, in KiB, from `/proc/<pid>/status`.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Runs a command with a deadline; kills it when the deadline passes. Returns (exit success,
/// stdout, stderr); `None` as the first element means it timed out.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Option<bool>, Vec<u8>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_p = dir.path().join("out");
    let err_p = dir.path().join("err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_p).expect("stdout file"))
        .stderr(File::create(&err_p).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st.success()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = std::fs::read(&out_p).unwrap_or_default();
    let err = String::from_utf8_lossy(&std::fs::read(&err_p).unwrap_or_default()).into_owned();
    (status, out, err)
}

/// Builds an HL7 v2.5 message from segments (joined with CR). `{ID}` in the MSH line is not
/// special: pass the complete segments.
pub fn hl7(segments: &[&str]) -> Vec<u8> {
    let mut s = segments.join("\r");
    s.push('\r');
    s.into_bytes()
}

/// An `ADT^<event>` v2.5 message from the test sender `HIE-E2E|TEST` with the given MSH-10, PID-3
/// and optional MRG-1 (A40/A47).
pub fn adt(event: &str, control_id: &str, pid3: &str, mrg1: Option<&str>) -> Vec<u8> {
    let structure = match event {
        "A40" => "ADT_A39",
        "A47" => "ADT_A30",
        "A31" | "A28" | "A05" | "A08" => "ADT_A05",
        _ => "ADT_A01",
    };
    let msh = format!("MSH|^~\\&|HIE-E2E|TEST|HIE-EDGE|HIE|20250101120000||ADT^{event}^{structure}|{control_id}|P|2.5");
    let evn = format!("EVN|{event}|20250101120000");
    let pid = format!("PID|1||{pid3}||DOE^JANE||19700101|F");
    let mut segs = vec![msh, evn, pid];
    match mrg1 {
        Some(m) => segs.push(format!("MRG|{m}")),
        None => segs.push("PV1|1|O".to_owned()),
    }
    let refs: Vec<&str> = segs.iter().map(String::as_str).collect();
    hl7(&refs)
}
