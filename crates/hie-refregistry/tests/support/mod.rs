//! Test support: a reference registry served on 127.0.0.1 (axum over plain HTTP, the feed over
//! MLLP, both on ephemeral ports) over a fresh store on SQLite or PostgreSQL; real peers to talk
//! to it (python-hl7's `mllp_send`, curl, zeep, xmllint); and SOAP helpers.
//!
//! No peer is optional: a missing one fails the test with a message saying how to install it.
#![allow(dead_code)] // reason: each test binary uses a different part of this module

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hie_core::Oid;
use hie_refregistry::{RefRegistry, RefRegistryConfig};
use hie_store::refregistry::RegCounts;
use hie_store::{Store, StoreOptions};
use hie_xds::messages::XdsMessage;
use hie_xds::soap::Fault;
use hie_xds::{Addressing, SoapError, XdsError};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sqlx::Connection;
use tokio::sync::watch;

/// The repository's uniqueId in every test registry.
pub const REPOSITORY: &str = "1.3.6.1.4.1.21367.13.71.101";

/// Which database a test registry stores in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Both engines, for rules that must hold on each.
pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

/// A running registry. Dropping it stops the servers.
pub struct Harness {
    pub registry: RefRegistry,
    pub store: Store,
    pub engine: Engine,
    pub http: SocketAddr,
    pub mllp: SocketAddr,
    pub authority: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    shutdown: watch::Sender<bool>,
}

impl Harness {
    /// A registry for the affinity domain `authority`, with the default settings.
    pub async fn start(engine: Engine, authority: &str) -> Harness {
        let config = RefRegistryConfig::new(Oid::parse(REPOSITORY).unwrap(), Oid::parse(authority).unwrap());
        Harness::start_with(engine, config).await
    }

    /// A registry with `config`.
    pub async fn start_with(engine: Engine, config: RefRegistryConfig) -> Harness {
        let store = match engine {
            Engine::Sqlite => sqlite_store().await,
            Engine::Postgres => pg_store().await,
        };
        let authority = config.patient_id_authority.to_string();
        let registry = RefRegistry::new(store.clone(), config).expect("valid config");
        let (shutdown, watcher) = watch::channel(false);
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let router = registry.router();
        let mut http_shutdown = watcher.clone();
        tokio::spawn(async move {
            axum::serve(http_listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.changed().await;
                })
                .await
                .ok();
        });
        let mllp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mllp = mllp_listener.local_addr().unwrap();
        let feed = registry.clone();
        tokio::spawn(async move { feed.serve_feed(mllp_listener, watcher).await });
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        Harness { registry, store, engine, http, mllp, authority, client, shutdown }
    }

    /// `id^^^&<authority>&ISO`.
    pub fn patient(&self, id: &str) -> String {
        format!("{id}^^^&{}&ISO", self.authority)
    }

    /// Feeds patient `id` of the affinity domain with an ADT^A01 sent by python-hl7's
    /// `mllp_send`, and checks the AA.
    pub async fn feed(&self, id: &str) {
        let message = adt_a01(&format!("{id}^^^&{}&ISO", self.authority), &format!("FEED{}", unique_suffix()));
        let ack = self.mllp_send(&message).await;
        assert_eq!(msa_code(&ack), "AA", "feed of a patient not accepted: {ack}");
    }

    /// Sends one HL7 message (segments separated by `\r`) with `mllp_send --loose`; returns the
    /// ACK text.
    pub async fn mllp_send(&self, message: &str) -> String {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("message.hl7");
        std::fs::write(&path, message.replace('\r', "\n")).unwrap();
        let output = tokio::time::timeout(
            PEER_TIMEOUT,
            tokio::process::Command::new(venv_bin("mllp_send"))
                .arg("--loose")
                .arg("--file")
                .arg(&path)
                .args(["-p", &self.mllp.port().to_string(), "127.0.0.1"])
                .output(),
        )
        .await
        .expect("mllp_send timed out")
        .expect("run mllp_send");
        assert!(output.status.success(), "mllp_send failed: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.trim_matches(['\u{b}', '\u{1c}', '\r', '\n']).to_owned()
    }

    /// POSTs `body` to `path`.
    pub async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> HttpAnswer {
        let request = hyper::Request::post(format!("http://{}{path}", self.http))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response =
            tokio::time::timeout(PEER_TIMEOUT, self.client.request(request)).await.expect("timeout").unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        HttpAnswer { status, content_type, body }
    }

    /// Sends `message` as a plain SOAP 1.2 request with `action`.
    pub async fn soap<M: XdsMessage>(&self, path: &str, action: &str, message: &M) -> HttpAnswer {
        let envelope = hie_xds::write_soap(message, &request_addressing(action, &self.url(path)));
        self.post(path, &hie_xds::soap_content_type(action), envelope).await
    }

    /// Sends `message` as an MTOM request with `action`.
    pub async fn mtom<M: XdsMessage>(&self, path: &str, action: &str, message: &M) -> HttpAnswer {
        let addressing = request_addressing(action, &self.url(path));
        let outgoing =
            hie_xds::write_mtom(message, &addressing, "MIMEBoundary_test", "root.test@hie-refregistry-tests").unwrap();
        self.post(path, &outgoing.content_type, outgoing.concat()).await
    }

    /// A body fragment (e.g. a fixture's SubmitObjectsRequest) in an envelope with `action`.
    pub async fn soap_body(&self, path: &str, action: &str, body: &[u8]) -> HttpAnswer {
        let envelope = envelope(action, &self.url(path), body);
        self.post(path, &hie_xds::soap_content_type(action), envelope).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn counts(&self) -> RegCounts {
        self.store.reg_counts().await.unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The answer as message `M` after checking it against the XDS-I schema with xmllint (XOP
    /// inlined); panics with xmllint's report if it does not validate.
    pub fn xds<M: XdsMessage>(&self) -> M {
        assert_eq!(self.status, 200, "expected an XDS answer, got HTTP {}: {}", self.status, self.text());
        hie_xds::test_support::xmllint_validate(
            &self.content_type,
            &self.body,
            &hie_xds::test_support::imaging_document_source_schema(),
        )
        .unwrap_or_else(|report| panic!("our answer does not validate: {report}"));
        hie_xds::read_message::<M>(&self.content_type, &self.body, &Default::default())
            .unwrap_or_else(|error| panic!("our answer does not read back: {error}\n{}", self.text()))
            .message
    }

    /// The answer's WS-Addressing headers.
    pub fn addressing(&self) -> Addressing {
        let package = hie_xds::mtom::read_message(&self.content_type, &self.body, &Default::default()).unwrap();
        hie_xds::soap::parse_envelope(package.root, &Default::default()).unwrap().addressing
    }

    /// The SOAP fault answered.
    pub fn fault(&self) -> Fault {
        match hie_xds::read_message::<hie_xds::messages::RegistryResponse>(
            &self.content_type,
            &self.body,
            &Default::default(),
        ) {
            Err(XdsError::Soap(SoapError::FaultReceived(fault))) => *fault,
            other => panic!("expected a SOAP fault, got {other:?} (HTTP {}): {}", self.status, self.text()),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(8192)]).into_owned()
    }

    pub fn is_mtom(&self) -> bool {
        self.content_type.starts_with("multipart/related")
    }
}

/// Request headers: Action, a fresh MessageID, To, ReplyTo anonymous.
pub fn request_addressing(action: &str, to: &str) -> Addressing {
    Addressing::request(action, &format!("urn:uuid:{}", uuid_like()), to)
}

/// A SOAP 1.2 envelope around a fixture body (its XML declaration dropped).
pub fn envelope(action: &str, to: &str, body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, after)| after.to_owned()).unwrap_or_default(),
        None => text.into_owned(),
    };
    hie_xds::soap::write_envelope(&request_addressing(action, to), body.as_bytes())
}

/// `crates/hie-refregistry/test_data/<path>`.
pub fn test_data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data").join(path)
}

pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(test_data(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The HTTP Content-Type of a `.mime` capture, from the `<Headers>` of its testplan.
pub fn testplan_content_type(path: &str) -> String {
    let plan = String::from_utf8(read(path)).unwrap();
    let line = plan.lines().find(|line| line.trim_start().starts_with("Content-Type:")).unwrap();
    line.trim().trim_start_matches("Content-Type:").trim().to_owned()
}

/// An ADT^A01 v2.3.1 for a patient with PID-3 `cx` (plus a local MRN repetition the registry
/// must ignore).
pub fn adt_a01(cx: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|HOSP|REGISTRY|HIE|20240102030405||ADT^A01|{control_id}|P|2.3.1\r\
         EVN|A01|20240102030405\r\
         PID|1||MRN{control_id}^^^HOSP&1.2.3.4.5&ISO~{cx}||Doe^Jane||19700101|F\r\
         PV1||O\r"
    )
}

/// An ADT^A40 merging `subsumed` into `surviving` (CX values).
pub fn adt_a40(surviving: &str, subsumed: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|PAS|HOSP|REGISTRY|HIE|20240102030405||ADT^A40|{control_id}|P|2.3.1\r\
         EVN|A40|20240102030405\r\
         PID|1||{surviving}||Doe^Jane||19700101|F\r\
         MRG|{subsumed}\r"
    )
}

/// MSA-1 of an ACK.
pub fn msa_code(ack: &str) -> String {
    msa_field(ack, 1)
}

/// MSA-`n` of an ACK.
pub fn msa_field(ack: &str, n: usize) -> String {
    ack.split(['\r', '\n'])
        .find(|segment| segment.starts_with("MSA|"))
        .and_then(|segment| segment.split('|').nth(n))
        .unwrap_or_default()
        .to_owned()
}

/// ERR-3 identifier of an ACK.
pub fn err_code(ack: &str) -> String {
    ack.split(['\r', '\n'])
        .find(|segment| segment.starts_with("ERR|"))
        .and_then(|segment| segment.split('|').nth(3))
        .and_then(|field| field.split('^').next())
        .unwrap_or_default()
        .to_owned()
}

/// A console script of the test venv (`$HIE_TEST_VENV`, else the workspace's `.venv`).
pub fn venv_bin(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = std::env::var_os("HIE_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| workspace.join(".venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: the Python test peers are not installed; run `bash scripts/test.sh` \
         (or set HIE_TEST_VENV to a venv with `pip install hl7==0.4.5 zeep==4.3.3`)",
        path.display()
    );
    path
}

/// A value unique enough for control ids and MessageIDs of one test run.
pub fn unique_suffix() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn uuid_like() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

async fn sqlite_store() -> Store {
    let dir = tempfile::TempDir::new().expect("temporary directory").keep();
    let url = format!("sqlite://{}", dir.join("registry.db").display());
    Store::connect(&options(url, 4)).await.expect("open SQLite store")
}

/// A fresh PostgreSQL store on a new database; PostgreSQL is not optional.
async fn pg_store() -> Store {
    let admin_url = std::env::var(PG_ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned());
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "PostgreSQL is required for the registry tests and is unreachable at {admin_url} ({error}). \
             Start it (e.g. `pg_ctlcluster 15 main start`, role `hie` with CREATEDB) or set {PG_ADMIN_URL_VAR}."
        ),
    };
    let name = format!("hie_test_reg_{:016x}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    admin.close().await.ok();
    let server = admin_url.rsplit_once('/').map(|(server, _)| server).unwrap_or(&admin_url);
    Store::connect(&options(format!("{server}/{name}"), 8)).await.expect("open PostgreSQL store")
}

fn options(url: String, max_connections: u32) -> StoreOptions {
    StoreOptions { url, max_connections, acquire_timeout: Duration::from_secs(30) }
}

const PG_ADMIN_URL_VAR: &str = "HIE_TEST_PG_ADMIN_URL";
const DEFAULT_PG_ADMIN_URL: &str = "postgres://hie:hie@127.0.0.1:5432/postgres";
/// Longest wait for a peer process or an HTTP answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);
