//! Test harness of the retrieval endpoint: a test PKI on disk, the endpoint's router served by
//! `hie_tls::serve_https` on a free loopback port, a fresh store, a PACS wrapped in a counter, and
//! curl as the client (OpenSSL, written by nobody here).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hie_broker::ports::{FoundInstance, InstanceKey, Pacs, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary};
use hie_inbound::xdsi::{XdsiSettings, XdsiState, XdsiStats};
use hie_kos::StudyEvidence;
use hie_store::studies::{self, ChangeSource, NewManifest, ReferencedInstance, StudyChange};
use hie_store::submissions::{self, Ended, NewSubmission, SubmissionKind};
use hie_store::{Store, StoreOptions, now_micros};
use hie_tls::pki::test_pki::{LeafSpec, TestCa, TestLeaf};
use hie_tls::{
    HttpsLimits, HttpsStats, Partner, PartnerDirectory, PartnerIdentity, ReloadableServerConfig, ServerTlsSettings,
};
use hie_xds::messages::RetrieveDocumentSetResponse;
use tokio::sync::{mpsc, watch};

/// Our repositoryUniqueId in these tests.
pub const REPOSITORY: &str = "1.3.6.1.4.1.21367.13.80.110";
/// Our homeCommunityId in these tests.
pub const HOME: &str = "urn:oid:1.3.6.1.4.1.21367.13.70.200";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// A CA, the server's certificate, and client certificates: a partner allowed RAD-69 and ITI-43,
/// a partner allowed neither, and a certificate of the same CA that maps to no partner.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub ca_path: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub partner: Client,
    pub restricted: Client,
    pub unmapped: Client,
}

/// A client certificate on disk.
pub struct Client {
    pub leaf: TestLeaf,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Retrieval Test CA");
        let ca_path = ca.write_certificate(dir.path(), "ca");
        let (server_certificate, server_key) = ca.issue(&LeafSpec::server()).write(dir.path(), "server");
        let client = |stem: &str, name: &str| {
            let leaf = ca.issue(&LeafSpec::client(name));
            let (certificate, key) = leaf.write(dir.path(), stem);
            Client { leaf, certificate, key }
        };
        let partner = client("partner", "Imaging Gateway B");
        let restricted = client("restricted", "Registry Browser C");
        let unmapped = client("unmapped", "Somebody Else");
        Pki { dir, ca, ca_path, server_certificate, server_key, partner, restricted, unmapped }
    }

    pub fn settings(&self) -> ServerTlsSettings {
        ServerTlsSettings::new(&self.server_certificate, &self.server_key, &self.ca_path)
    }

    /// The partners: B pinned by certificate (RAD-69, ITI-43), C by subject (ITI-18 only).
    pub fn partners(&self) -> PartnerDirectory {
        PartnerDirectory::new(vec![
            Partner {
                name: "hospital-b".to_owned(),
                identity: PartnerIdentity::Pinned { certificate: self.partner.leaf.certificate.clone() },
                transactions: vec!["RAD-69".to_owned(), "ITI-43".to_owned()],
            },
            Partner {
                name: "hospital-c".to_owned(),
                identity: PartnerIdentity::Subject { subject: "CN=Registry Browser C,O=Partner Hospital".to_owned() },
                transactions: vec!["ITI-18".to_owned()],
            },
        ])
        .unwrap()
    }
}

/// A PACS wrapped to count what reaches it.
pub struct CountingPacs {
    inner: Arc<dyn Pacs>,
    pub lookups: AtomicU64,
    pub retrievals: AtomicU64,
    /// Instances named in lookups and retrievals.
    pub instances_asked: AtomicU64,
}

impl CountingPacs {
    pub fn new(inner: Arc<dyn Pacs>) -> Arc<CountingPacs> {
        Arc::new(CountingPacs {
            inner,
            lookups: AtomicU64::new(0),
            retrievals: AtomicU64::new(0),
            instances_asked: AtomicU64::new(0),
        })
    }

    /// (lookups, retrievals, instances named) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.lookups.load(Ordering::SeqCst),
            self.retrievals.load(Ordering::SeqCst),
            self.instances_asked.load(Ordering::SeqCst),
        )
    }
}

impl Pacs for CountingPacs {
    fn describe(&self) -> String {
        format!("counting {}", self.inner.describe())
    }

    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        self.inner.study_evidence(study_instance_uid)
    }

    fn list_studies<'a>(&'a self, from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        self.inner.list_studies(from_date)
    }

    fn find_instances<'a>(&'a self, instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.instances_asked.fetch_add(instances.len() as u64, Ordering::SeqCst);
        self.inner.find_instances(instances)
    }

    fn retrieve<'a>(
        &'a self,
        instances: &'a [InstanceKey],
        transfer_syntaxes: &'a [String],
        sink: mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        self.retrievals.fetch_add(1, Ordering::SeqCst);
        self.instances_asked.fetch_add(instances.len() as u64, Ordering::SeqCst);
        self.inner.retrieve(instances, transfer_syntaxes, sink)
    }
}

/// The endpoint served over mutual TLS.
pub struct Endpoint {
    pub pki: Pki,
    pub addr: SocketAddr,
    pub store: Store,
    pub pacs: Arc<CountingPacs>,
    pub stats: Arc<XdsiStats>,
    pub https: Arc<HttpsStats>,
    shutdown: watch::Sender<bool>,
    _store_dir: tempfile::TempDir,
}

impl Endpoint {
    /// Serves the endpoint over `pacs` on a fresh SQLite store.
    pub async fn start(pacs: Arc<dyn Pacs>) -> Endpoint {
        Endpoint::start_with(pacs, |_| {}).await
    }

    pub async fn start_with(pacs: Arc<dyn Pacs>, configure: impl FnOnce(&mut XdsiSettings)) -> Endpoint {
        Endpoint::start_full(pacs, configure, Pki::settings).await
    }

    /// `tls` makes the listener's TLS settings from the test PKI (to add CRLs, for instance).
    pub async fn start_full(
        pacs: Arc<dyn Pacs>,
        configure: impl FnOnce(&mut XdsiSettings),
        tls: impl FnOnce(&Pki) -> ServerTlsSettings,
    ) -> Endpoint {
        let pki = Pki::new();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&StoreOptions {
            url: format!("sqlite://{}", store_dir.path().join("hie.db").display()),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
        let pacs = CountingPacs::new(pacs);
        let mut settings = XdsiSettings::new(REPOSITORY);
        settings.home_community_id = Some(HOME.to_owned());
        configure(&mut settings);
        let as_pacs: Arc<dyn Pacs> = Arc::clone(&pacs) as Arc<dyn Pacs>;
        let state = XdsiState::new(settings, store.clone(), Some(as_pacs), Arc::new(pki.partners()));
        let stats = state.stats();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let https = Arc::new(HttpsStats::new());
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let tls = ReloadableServerConfig::load(tls(&pki)).unwrap();
        tokio::spawn(hie_tls::serve_https(
            listener,
            tls,
            hie_inbound::xdsi::router(state),
            Arc::clone(&https),
            shutdown_receiver,
            HttpsLimits::default(),
        ));
        Endpoint { pki, addr, store, pacs, stats, https, shutdown, _store_dir: store_dir }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}{}", self.addr.port(), hie_inbound::xdsi::PATH)
    }

    /// POSTs `body` as RAD-69 (or ITI-43, by its action) with curl presenting `client`.
    pub async fn post(&self, client: Option<&Client>, content_type: &str, body: &[u8], extra: &[&str]) -> Exchange {
        let dir = tempfile::tempdir().unwrap();
        let request = dir.path().join("request");
        std::fs::write(&request, body).unwrap();
        let headers = dir.path().join("headers");
        let response = dir.path().join("response");
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--max-time", "60", "--cacert"])
            .arg(&self.pki.ca_path)
            .args(["-H", &format!("Content-Type: {content_type}"), "--data-binary"])
            .arg(format!("@{}", request.display()))
            .arg("--dump-header")
            .arg(&headers)
            .arg("--output")
            .arg(&response)
            .args(["--write-out", "%{http_code}"]);
        if let Some(client) = client {
            command.arg("--cert").arg(&client.certificate).arg("--key").arg(&client.key);
        }
        command.args(extra).arg(self.url());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("curl must be installed to run these tests (apt-get install curl)");
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let content_type = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.trim().to_owned())
            .next_back()
            .unwrap_or_default();
        Exchange { output, content_type, body: std::fs::read(&response).unwrap_or_default() }
    }

    /// A RAD-69 request by the allowed partner.
    pub async fn rad69(&self, body_xml: &str) -> Exchange {
        let envelope = envelope(hie_xds::actions::RAD69_REQUEST, body_xml);
        self.post(
            Some(&self.pki.partner),
            &soap_content_type(hie_xds::actions::RAD69_REQUEST),
            envelope.as_bytes(),
            &[],
        )
        .await
    }

    /// An ITI-43 request by the allowed partner.
    pub async fn iti43(&self, body_xml: &str) -> Exchange {
        let envelope = envelope(hie_xds::actions::ITI43_REQUEST, body_xml);
        self.post(
            Some(&self.pki.partner),
            &soap_content_type(hie_xds::actions::ITI43_REQUEST),
            envelope.as_bytes(),
            &[],
        )
        .await
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One curl exchange.
#[derive(Debug)]
pub struct Exchange {
    pub output: Output,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Exchange {
    pub fn status(&self) -> u16 {
        String::from_utf8_lossy(&self.output.stdout).trim().parse().unwrap_or(0)
    }

    pub fn curl_ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The response read by the codec (MTOM resolved), after checking it against the IHE schema
    /// with xmllint, attachments inlined.
    pub fn response(&self) -> RetrieveDocumentSetResponse {
        assert_eq!(
            self.status(),
            200,
            "HTTP status; curl: {} body: {}",
            self.stderr(),
            String::from_utf8_lossy(&self.body)
        );
        assert!(self.content_type.starts_with("multipart/related"), "MTOM answer: {}", self.content_type);
        hie_xds::test_support::xmllint_validate(&self.content_type, &self.body, &schema()).unwrap();
        let limits = hie_xds::ReadLimits {
            mtom: hie_xds::MtomLimits { max_body_bytes: 1 << 30, max_parts: 100_000, ..hie_xds::MtomLimits::DEFAULT },
            xml: hie_xds::Limits::DEFAULT,
        };
        hie_xds::read_message::<RetrieveDocumentSetResponse>(&self.content_type, &self.body, &limits)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
            .message
    }

    /// The fault of a refused request: its HTTP status and reason.
    pub fn fault(&self) -> (u16, String) {
        let text = String::from_utf8_lossy(&self.body).into_owned();
        assert!(text.contains("Fault"), "a SOAP fault: {text}");
        let reason = text
            .split("<env:Text")
            .nth(1)
            .and_then(|rest| rest.split_once('>'))
            .map(|(_, rest)| rest.split('<').next().unwrap_or("").to_owned())
            .unwrap_or_default();
        (self.status(), reason)
    }
}

/// The IHE entry schema kept by hie-xds.
pub fn schema() -> PathBuf {
    hie_xds::test_support::imaging_document_source_schema()
}

pub fn soap_content_type(action: &str) -> String {
    format!("application/soap+xml; charset=UTF-8; action=\"{action}\"")
}

/// A SOAP 1.2 request envelope with WS-Addressing around `body_xml`.
pub fn envelope(action: &str, body_xml: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing"><env:Header><wsa:Action env:mustUnderstand="1">{action}</wsa:Action><wsa:MessageID>urn:uuid:{}</wsa:MessageID><wsa:To>https://localhost/xdsi/imaging-source</wsa:To><wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo></env:Header><env:Body>{body_xml}</env:Body></env:Envelope>"#,
        uuid::Uuid::new_v4()
    )
}

/// One instance of a RAD-69 request.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub study: String,
    pub series: String,
    pub sop: String,
    pub repository: String,
    pub home: Option<String>,
}

impl Wanted {
    pub fn ours(study: &str, series: &str, sop: &str) -> Wanted {
        Wanted {
            study: study.to_owned(),
            series: series.to_owned(),
            sop: sop.to_owned(),
            repository: REPOSITORY.to_owned(),
            home: Some(HOME.to_owned()),
        }
    }
}

/// A RetrieveImagingDocumentSetRequest body (one StudyRequest/SeriesRequest per instance).
pub fn rad69_body(wanted: &[Wanted], syntaxes: &[&str]) -> String {
    let mut xml = String::from(
        r#"<xdsiB:RetrieveImagingDocumentSetRequest xmlns:xdsiB="urn:ihe:rad:xdsi-b:2009" xmlns:xdsb="urn:ihe:iti:xds-b:2007">"#,
    );
    for instance in wanted {
        xml.push_str(&format!(r#"<xdsiB:StudyRequest studyInstanceUID="{}"><xdsiB:SeriesRequest seriesInstanceUID="{}"><xdsb:DocumentRequest>"#, instance.study, instance.series));
        if let Some(home) = &instance.home {
            xml.push_str(&format!("<xdsb:HomeCommunityId>{home}</xdsb:HomeCommunityId>"));
        }
        xml.push_str(&format!(
            "<xdsb:RepositoryUniqueId>{}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{}</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsiB:SeriesRequest></xdsiB:StudyRequest>",
            instance.repository, instance.sop
        ));
    }
    xml.push_str("<xdsiB:TransferSyntaxUIDList>");
    for syntax in syntaxes {
        xml.push_str(&format!("<xdsiB:TransferSyntaxUID>{syntax}</xdsiB:TransferSyntaxUID>"));
    }
    xml.push_str("</xdsiB:TransferSyntaxUIDList></xdsiB:RetrieveImagingDocumentSetRequest>");
    xml
}

/// A RetrieveDocumentSetRequest body (ITI-43) for `unique_ids` in our repository.
pub fn iti43_body(unique_ids: &[&str]) -> String {
    let mut xml = String::from(r#"<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007">"#);
    for id in unique_ids {
        xml.push_str(&format!("<xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{REPOSITORY}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{id}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>"));
    }
    xml.push_str("</xdsb:RetrieveDocumentSetRequest>");
    xml
}

/// Records manifest `version` of `study` referencing `instances` (series, sop, sop class), with
/// `kos` as its bytes. Returns the manifest's uniqueId.
pub async fn manifest(
    store: &Store,
    study: &str,
    version: i64,
    instances: &[(String, String, String)],
    kos: &[u8],
) -> String {
    let now = now_micros();
    let kos_uid = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let referenced: Vec<ReferencedInstance<'_>> = instances
        .iter()
        .map(|(series, sop, class)| ReferencedInstance {
            series_instance_uid: series,
            sop_instance_uid: sop,
            sop_class_uid: class,
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    let change =
        StudyChange { study_instance_uid: study, source: ChangeSource::Request, due_at: now, pacs_instances: None };
    studies::note_change(&mut tx, &change, now).await.unwrap();
    let series_uid = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    studies::record_manifest(
        &mut tx,
        &NewManifest {
            study_instance_uid: study,
            version,
            sop_instance_uid: &kos_uid,
            series_instance_uid: &series_uid,
            n_series: 1,
            n_instances: instances.len() as i64,
            fingerprint: "f",
            kos,
            modalities: "",
            body_parts: "",
            instances: &referenced,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    kos_uid
}

/// Queues a submission of `kind` for manifest `version` (`document_unique_id`) and marks it done.
pub async fn submitted(store: &Store, study: &str, version: i64, document_unique_id: &str, kind: SubmissionKind) {
    let now = now_micros();
    let unique = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
    let mut tx = store.begin().await.unwrap();
    let id = submissions::enqueue(
        &mut tx,
        &NewSubmission {
            study_instance_uid: study,
            manifest_version: version,
            kind,
            document_unique_id,
            document_entry_uuid: &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            submission_set_unique_id: &unique,
            submission_set_uuid: &format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            key: &format!("study:{study}"),
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store
        .submission_finished(id, Ended::Done { registry_entry_uuid: None, replaced_unique_id: None, note: None }, now)
        .await
        .unwrap();
}

/// Registers a manifest of `instances` as the current version of `study`; returns its uniqueId.
pub async fn register(
    store: &Store,
    study: &str,
    version: i64,
    instances: &[(String, String, String)],
    kos: &[u8],
) -> String {
    let uid = manifest(store, study, version, instances, kos).await;
    submitted(store, study, version, &uid, SubmissionKind::Publish).await;
    uid
}

/// `(series, sop, sop class)` of each generated instance.
pub fn referenced(study: &hie_testkit::GeneratedStudy) -> Vec<(String, String, String)> {
    study
        .instances
        .iter()
        .map(|instance| {
            (instance.series_instance_uid.clone(), instance.sop_instance_uid.clone(), study.sop_class_uid.clone())
        })
        .collect()
}

/// The generated study's instances as request entries.
pub fn wanted_of(study: &hie_testkit::GeneratedStudy) -> Vec<Wanted> {
    study
        .instances
        .iter()
        .map(|instance| {
            Wanted::ours(&study.study_instance_uid, &instance.series_instance_uid, &instance.sop_instance_uid)
        })
        .collect()
}

/// A fixture image to clone studies from (PET, 40 KB, Explicit VR Little Endian).
pub fn template() -> PathBuf {
    hie_testkit::fixtures::IDS_DEPT024_A.images()[0].clone()
}

/// Waits (bounded) until `condition` holds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files of a folder PACS.
pub fn folder(path: &Path) -> Arc<dyn Pacs> {
    Arc::new(hie_outbound::pacs::FolderAdapter::new(path))
}
