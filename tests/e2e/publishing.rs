//! What the publishing tests share: a broker that manifests from a real Orthanc (DICOMweb or DIMSE,
//! polled every second) and publishes to the quickstart's built-in registry, generated studies for given
//! patients, ADT sent with python-hl7's `mllp_send`, the registry queried with curl (ITI-18, the
//! broker's development PKI as client identity) and its answers read by lxml
//! (`fixtures/python/xds_summary.py`), and xmllint checks against the IHE schemas.
//!
//! Nothing here is the broker's own code: requests are written from ITI TF-2a 3.18 by hand, the
//! scheme UUIDs are copied from ITI TF-3 4.2.5, and answers are parsed by lxml.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hie_e2e::{BrokerOptions, BrokerProc, Engine, wait_until};
use hie_testkit::{GeneratedStudy, Orthanc, StudyOverrides, generate_study_with};
use serde_json::Value;

/// The quickstart's affinity domain (IHE Connectathon "IHEBLUE").
pub const AD_OID: &str = "1.3.6.1.4.1.21367.13.20.1000";
/// The quickstart's local MRN authority.
pub const LOCAL_AUTHORITY: &str = "HOSP&1.2.840.99999.1.1&ISO";
/// `[registry] builtin_repository_unique_id` of the quickstart.
pub const BUILTIN_REPOSITORY: &str = "1.2.840.99999.1.6";
/// The profile's accession issuer (profiles/ihe-default.toml), used when images carry none.
pub const ACCESSION_ISSUER: &str = "1.2.840.99999.1.5";

/// ITI TF-2a 3.18.4.1.2.3.7: stored query ids.
pub const FIND_DOCUMENTS: &str = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d";
pub const GET_DOCUMENTS: &str = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4";
pub const GET_ASSOCIATIONS: &str = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155";
pub const GET_RELATED_DOCUMENTS: &str = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6";

/// ITI TF-3 4.2.5.2: DocumentEntry classification schemes and external identifiers.
pub const SCHEME_CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
pub const SCHEME_TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
pub const SCHEME_FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
pub const SCHEME_EVENT_CODE: &str = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4";
pub const SCHEME_CONFIDENTIALITY_CODE: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
pub const SCHEME_FACILITY_TYPE_CODE: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
pub const SCHEME_PRACTICE_SETTING_CODE: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
pub const DOCUMENT_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
pub const DOCUMENT_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
/// ITI TF-3 4.1.2: a stable DocumentEntry.
pub const STABLE_DOCUMENT: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";

pub const STATUS_APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
pub const STATUS_DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";
pub const ASSOCIATION_RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";
pub const RESPONSE_SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";

/// How long a study may take from upload (or ADT) to a settled submission: a poll (1 s), the quiet
/// period (1 s), the build, the registry, and retries with the tests' short backoff.
pub const SETTLE: Duration = Duration::from_secs(90);

/// How a broker reaches Orthanc as its PACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacsLink {
    /// QIDO-RS and WADO-RS metadata.
    DicomWeb,
    /// C-FIND (C-GET for retrievals).
    Dimse,
}

/// The environment that makes a broker manifest from `orthanc` (by DICOMweb or DIMSE), polled
/// every second, with a one-second quiet period, far enough back for the fixtures' 2015 dates,
/// and retries a test can wait for (200 ms doubling to 2 s).
pub fn orthanc_pacs(orthanc: &Orthanc, link: PacsLink) -> BrokerOptions {
    let options = match link {
        PacsLink::DicomWeb => BrokerOptions::new(Engine::Sqlite)
            .env("HIE_EDGE__PACS__KIND", "dicomweb")
            .env("HIE_EDGE__PACS__URL", &format!("{}/dicom-web", orthanc.http_url())),
        PacsLink::Dimse => BrokerOptions::new(Engine::Sqlite)
            .env("HIE_EDGE__PACS__KIND", "dimse")
            .env("HIE_EDGE__PACS__AE_TITLE", orthanc.ae_title())
            .env("HIE_EDGE__PACS__HOST", "127.0.0.1")
            .env("HIE_EDGE__PACS__PORT", &orthanc.dicom_port().to_string()),
    };
    options
        .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "1")
        .env("HIE_EDGE__PACS__POLL_LOOKBACK_DAYS", "20000")
        .env("HIE_EDGE__DICOM__QUIET_PERIOD_SECS", "1")
        .env("HIE_EDGE__STORE__OUTBOX_BACKOFF_BASE_MS", "200")
        .env("HIE_EDGE__STORE__OUTBOX_BACKOFF_MAX_SECS", "2")
}

/// A broker on `engine` with the quickstart's built-in registry, manifesting from `orthanc` by
/// DICOMweb, with `extra` overrides last.
pub fn publishing_broker(engine: Engine, orthanc: &Orthanc, extra: &[(&str, &str)]) -> BrokerProc {
    publishing_broker_via(engine, PacsLink::DicomWeb, orthanc, extra)
}

/// [`publishing_broker`] reaching Orthanc by `link`.
pub fn publishing_broker_via(engine: Engine, link: PacsLink, orthanc: &Orthanc, extra: &[(&str, &str)]) -> BrokerProc {
    hie_e2e::init!();
    let mut options = orthanc_pacs(orthanc, link);
    options.engine = engine;
    for (key, value) in extra {
        options = options.env(key, value);
    }
    BrokerProc::start_with(options)
}

/// A patient as the hospital's ADT and the images name them.
#[derive(Debug, Clone)]
pub struct Patient {
    pub mrn: String,
    /// The affinity domain's ID (PID-3 repeat under [`AD_OID`]), when linked.
    pub ad_id: Option<String>,
    /// DICOM PN / HL7 XPN: family^given.
    pub name: String,
}

impl Patient {
    /// A patient with fresh identifiers, linked to the affinity domain.
    pub fn new(tag: &str) -> Patient {
        let suffix = hie_e2e::unique_suffix();
        Patient {
            mrn: format!("MRN-{tag}-{suffix}"),
            ad_id: Some(format!("AD-{tag}-{suffix}")),
            name: format!("{tag}^Pat"),
        }
    }

    /// The affinity-domain CX as XDS metadata writes it.
    pub fn ad_cx(&self) -> String {
        format!("{}^^^&{AD_OID}&ISO", self.ad_id.as_deref().unwrap_or_default())
    }

    /// The local CX as sourcePatientId carries it.
    pub fn local_cx(&self) -> String {
        format!("{}^^^{LOCAL_AUTHORITY}", self.mrn)
    }

    /// An `ADT^<event>` v2.5 with PID-3 = MRN (and the AD ID when `linked`).
    pub fn adt(&self, event: &str, linked: bool) -> Vec<u8> {
        let mut pid3 = format!("{}^^^{LOCAL_AUTHORITY}^MR", self.mrn);
        if let (true, Some(ad_id)) = (linked, &self.ad_id) {
            pid3.push_str(&format!("~{ad_id}^^^IHEBLUE&{AD_OID}&ISO^PI"));
        }
        // A01, A04 and A08 share the ADT_A01 structure in v2.5.
        let structure = "ADT_A01";
        let control_id = hie_e2e::control_id("PUB");
        hie_e2e::hl7(&[
            &format!(
                "MSH|^~\\&|E2E_RIS|E2E_HOSP|HIE_EDGE|HIE_EDGE|20261201090000||ADT^{event}^{structure}|{control_id}|P|2.5"
            ),
            &format!("EVN|{event}|20261201090000"),
            &format!("PID|1||{pid3}||{}||19780324|M", self.name),
            "PV1|1|O",
        ])
    }
}

/// Sends one ADT with python-hl7's `mllp_send` and asserts it was accepted (MSA-1 AA).
pub fn send_adt(broker: &BrokerProc, message: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("adt.hl7");
    std::fs::write(&file, message).expect("write the ADT");
    let output = Command::new(hie_e2e::venv_bin("mllp_send"))
        .args(["--loose", "--port", &broker.mllp.port().to_string(), "--file"])
        .arg(&file)
        .arg("127.0.0.1")
        .output()
        .expect("run mllp_send");
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success() && answer.contains("MSA|AA"), "ADT not accepted: {answer:?} {output:?}");
}

/// `n_instances` instances (one series) for `patient`, cloned from the NIST PET fixture (PT,
/// LUNG, 2015-03-24, born 19780324, sex M), in a new study or as a later series of `study`.
pub fn study_for(
    patient: &Patient,
    accession: &str,
    n_instances: usize,
    study: Option<&str>,
    out: &Path,
) -> GeneratedStudy {
    let overrides = StudyOverrides {
        study_instance_uid: study.map(str::to_owned),
        patient_id: Some(patient.mrn.clone()),
        patient_name: Some(patient.name.clone()),
        accession_number: Some(accession.to_owned()),
        procedure_code: None,
    };
    let template = &hie_testkit::fixtures::IDS_DEPT024_A.images()[0];
    generate_study_with(template, n_instances, n_instances, out, &overrides)
}

/// Waits until the study's submissions satisfy `done` and returns them (oldest first).
pub fn wait_submissions(broker: &BrokerProc, study: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let last = std::cell::RefCell::new(Vec::new());
    wait_until(
        SETTLE,
        || {
            format!(
                "{what} for study {study}; submissions: {:#}\nbroker log:\n{}",
                Value::Array(last.borrow().clone()),
                broker.stderr_tail(30)
            )
        },
        || {
            let rows = broker.submissions_of(study);
            let settled = done(&rows);
            *last.borrow_mut() = rows.iter().map(without_exchange).collect();
            settled.then_some(rows)
        },
    )
}

/// A submission without its (long) request and response, for messages.
pub fn without_exchange(row: &Value) -> Value {
    let mut row = row.clone();
    if let Some(object) = row.as_object_mut() {
        object.remove("request");
        object.remove("response");
    }
    row
}

/// The text of field `key` of a JSON object ("" when absent or null).
pub fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// The built-in registry of a broker, reached over its HTTPS listener with the broker's own
/// development PKI (its client certificate is issued by the CA the listener trusts).
#[derive(Debug, Clone)]
pub struct Registry {
    pub url: String,
    pki: PathBuf,
}

/// A registry answer: the raw envelope and lxml's summary of it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub request: Vec<u8>,
    pub raw: Vec<u8>,
    pub summary: Value,
}

impl Registry {
    pub fn of(broker: &BrokerProc) -> Registry {
        Registry { url: format!("https://{}/xds/registry", broker.https_addr), pki: broker.pki_dir() }
    }

    /// ITI-18 with `query_id` and slot `parameters` (values written as the query syntax wants
    /// them, quotes and lists included), LeafClass.
    pub fn query(&self, query_id: &str, parameters: &[(&str, String)]) -> Answer {
        let slots: String = parameters
            .iter()
            .map(|(name, value)| {
                format!(
                    "<rim:Slot name=\"{name}\"><rim:ValueList><rim:Value>{}</rim:Value></rim:ValueList></rim:Slot>",
                    xml_escape(value)
                )
            })
            .collect();
        let message_id = format!("urn:uuid:{}", uuid_like());
        let envelope = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">urn:ihe:iti:2007:RegistryStoredQuery</a:Action><a:MessageID>{message_id}</a:MessageID><a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo><a:To s:mustUnderstand="1">{url}</a:To></s:Header><s:Body><query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/><rim:AdhocQuery id="{query_id}">{slots}</rim:AdhocQuery></query:AdhocQueryRequest></s:Body></s:Envelope>"#,
            url = self.url
        );
        let raw = self.post(envelope.as_bytes(), "urn:ihe:iti:2007:RegistryStoredQuery");
        let summary = summarize(&raw);
        Answer { request: envelope.into_bytes(), raw, summary }
    }

    /// FindDocuments for a patient, Approved and Deprecated entries.
    pub fn find_documents(&self, patient_cx: &str) -> Answer {
        self.query(
            FIND_DOCUMENTS,
            &[
                ("$XDSDocumentEntryPatientId", format!("'{patient_cx}'")),
                ("$XDSDocumentEntryStatus", format!("('{STATUS_APPROVED}','{STATUS_DEPRECATED}')")),
            ],
        )
    }

    /// GetDocuments by uniqueId.
    pub fn get_documents(&self, unique_ids: &[&str]) -> Answer {
        let list: Vec<String> = unique_ids.iter().map(|id| format!("'{id}'")).collect();
        self.query(GET_DOCUMENTS, &[("$XDSDocumentEntryUniqueId", format!("({})", list.join(",")))])
    }

    /// GetAssociations of an entryUUID.
    pub fn get_associations(&self, entry_uuid: &str) -> Answer {
        self.query(GET_ASSOCIATIONS, &[("$uuid", format!("('{entry_uuid}')"))])
    }

    /// GetRelatedDocuments of a uniqueId for the given association types.
    pub fn get_related_documents(&self, unique_id: &str, association_types: &[&str]) -> Answer {
        let list: Vec<String> = association_types.iter().map(|kind| format!("'{kind}'")).collect();
        self.query(
            GET_RELATED_DOCUMENTS,
            &[
                ("$XDSDocumentEntryUniqueId", format!("'{unique_id}'")),
                ("$AssociationTypes", format!("({})", list.join(","))),
            ],
        )
    }

    /// POSTs a plain SOAP 1.2 request with curl (mutual TLS); returns the body of a 200 answer.
    fn post(&self, envelope: &[u8], action: &str) -> Vec<u8> {
        let mut child = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.pki.join("ca.pem"))
            .arg("--cert")
            .arg(self.pki.join("client.pem"))
            .arg("--key")
            .arg(self.pki.join("client.key"))
            .args(["-H", &format!("Content-Type: application/soap+xml; charset=UTF-8; action=\"{action}\"")])
            .args(["--data-binary", "@-", &self.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run curl");
        child.stdin.take().expect("curl stdin").write_all(envelope).expect("write to curl");
        let output = child.wait_with_output().expect("wait for curl");
        assert!(output.status.success(), "curl {}: {}", self.url, String::from_utf8_lossy(&output.stderr));
        let mut body = output.stdout;
        let newline = body.iter().rposition(|&byte| byte == b'\n').expect("curl prints the status last");
        let status = String::from_utf8_lossy(&body[newline + 1..]).into_owned();
        body.truncate(newline);
        assert_eq!(status, "200", "{}: HTTP {status}: {}", self.url, String::from_utf8_lossy(&body));
        body
    }
}

impl Answer {
    /// The DocumentEntries (ExtrinsicObjects) of the answer.
    pub fn documents(&self) -> Vec<Value> {
        self.objects("ExtrinsicObject")
    }

    pub fn associations(&self) -> Vec<Value> {
        self.objects("Association")
    }

    pub fn objects(&self, kind: &str) -> Vec<Value> {
        self.summary["objects"]
            .as_array()
            .map(|objects| objects.iter().filter(|object| object["kind"] == kind).cloned().collect())
            .unwrap_or_default()
    }

    /// Asserts a Success status without errors.
    pub fn assert_success(&self) {
        assert_eq!(self.summary["status"], RESPONSE_SUCCESS, "{:#}", self.summary);
        assert_eq!(self.summary["errors"], Value::Array(Vec::new()), "{:#}", self.summary);
    }

    /// Both the request the test sent and the registry's answer pass xmllint against the schemas.
    pub fn assert_schema_valid(&self, what: &str) {
        let plain = "application/soap+xml; charset=UTF-8";
        if let Err(report) = validate(plain, &self.request) {
            panic!("{what}: the test's own request: {report}");
        }
        if let Err(report) = validate(plain, &self.raw) {
            panic!("{what}: the registry's answer: {report}");
        }
    }
}

/// A DocumentEntry's external identifier value for `scheme`.
pub fn external_id(document: &Value, scheme: &str) -> String {
    document["external_ids"][scheme].as_str().unwrap_or_default().to_owned()
}

/// A DocumentEntry's values of slot `name`.
pub fn slot(object: &Value, name: &str) -> Vec<String> {
    object["slots"][name]
        .as_array()
        .map(|values| values.iter().filter_map(|value| value.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Checks a recorded exchange (`/api/submissions?phi=true`: `request` and `response`) against the
/// schemas: the request's root part with `document` put back (an ITI-41) or as is, and the answer
/// (plain, or MTOM as the built-in registry answers an MTOM request).
pub fn assert_recorded_exchange_valid(row: &Value, document: Option<&[u8]>, what: &str) {
    let request = text(row, "request");
    assert!(!request.is_empty(), "{what}: no request recorded: {:#}", without_exchange(row));
    let (content_type, body) = match document {
        Some(document) => with_attachment(&request, document),
        None => ("application/soap+xml; charset=UTF-8".to_owned(), request.into_bytes()),
    };
    if let Err(report) = validate(&content_type, &body) {
        panic!("{what}: the broker's request: {report}");
    }
    let response = text(row, "response");
    assert!(!response.is_empty(), "{what}: no response recorded");
    let content_type = recorded_content_type(&response);
    if let Err(report) = validate(&content_type, response.as_bytes()) {
        panic!("{what}: the registry's answer: {report}");
    }
}

/// The Content-Type a recorded body had (the record keeps the body only): MTOM when it starts with
/// a MIME delimiter, whose boundary it names.
pub fn recorded_content_type(body: &str) -> String {
    match body.strip_prefix("--") {
        Some(rest) => {
            let boundary = rest.lines().next().unwrap_or_default().trim();
            format!(
                "multipart/related; type=\"application/xop+xml\"; start-info=\"application/soap+xml\"; boundary=\"{boundary}\""
            )
        }
        None => "application/soap+xml; charset=UTF-8".to_owned(),
    }
}

/// `code^codingScheme` of each classification of `scheme`.
pub fn codes(object: &Value, scheme: &str) -> Vec<String> {
    object["classifications"]
        .as_array()
        .map(|classifications| {
            classifications
                .iter()
                .filter(|classification| classification["scheme"] == scheme)
                .map(|classification| {
                    let coding_scheme = slot(classification, "codingScheme").join(",");
                    format!("{}^{coding_scheme}", classification["node"].as_str().unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// lxml's summary of a SOAP answer (`fixtures/python/xds_summary.py`).
pub fn summarize(envelope: &[u8]) -> Value {
    let mut child = Command::new(hie_e2e::python())
        .arg(hie_e2e::fixture("python/xds_summary.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run xds_summary.py");
    child.stdin.take().expect("stdin").write_all(envelope).expect("write to python");
    let output = child.wait_with_output().expect("wait for python");
    assert!(
        output.status.success(),
        "xds_summary.py refused the answer: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&envelope[..envelope.len().min(2000)])
    );
    serde_json::from_slice(&output.stdout).expect("xds_summary.py prints JSON")
}

/// xmllint against the IHE XDS-I.b Imaging Document Source schema (it imports every ebRS and XDS.b
/// message root), XOP parts inlined first (hie-xds `test_support`, the shared fixtures' recipe).
pub fn validate(content_type: &str, body: &[u8]) -> Result<(), String> {
    hie_xds::test_support::xmllint_validate(
        content_type,
        body,
        &hie_xds::test_support::imaging_document_source_schema(),
    )
}

/// An MTOM request whose root part was recorded alone (`/api/submissions` keeps the root part with
/// its `xop:Include`), put back together with the document it includes, for [`validate`].
pub fn with_attachment(root_envelope: &str, document: &[u8]) -> (String, Vec<u8>) {
    let href = root_envelope
        .split("href=\"cid:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no xop:Include in the recorded request: {root_envelope}"));
    let content_id = percent_decode(href);
    let boundary = "e2e-boundary-6f1c";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\nContent-ID: <root@e2e>\r\n\r\n{root_envelope}\r\n--{boundary}\r\nContent-Type: application/dicom\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{content_id}>\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(document);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!(
        "multipart/related; type=\"application/xop+xml\"; start=\"<root@e2e>\"; start-info=\"application/soap+xml\"; boundary=\"{boundary}\""
    );
    (content_type, body)
}

/// A manifest from the broker's API (`/api/studies/{uid}/manifest...`); panics unless 200.
pub fn manifest_bytes(broker: &BrokerProc, path: &str) -> Vec<u8> {
    let (status, body) = broker.get_bytes(path);
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    body
}

/// SOP Instance UID (0008,0018) of a DICOM file, read by dcmtk's dcmdump.
pub fn sop_instance_uid(kos: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kos.dcm");
    std::fs::write(&path, kos).expect("write the manifest");
    let output = Command::new("dcmdump").args(["+P", "0008,0018"]).arg(&path).output().expect("run dcmdump");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split('[').nth(1).and_then(|rest| rest.split(']').next()).unwrap_or_default().to_owned()
}

/// Hex SHA-1 of bytes, by coreutils' sha1sum.
pub fn sha1_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha1sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha1sum");
    child.stdin.take().expect("stdin").write_all(bytes).expect("write to sha1sum");
    let output = child.wait_with_output().expect("wait for sha1sum");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(byte) = text.get(index + 1..index + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A random UUID-shaped string (MessageIDs of the test's requests).
fn uuid_like() -> String {
    let hex: String = hie_e2e::unique_suffix().chars().filter(char::is_ascii_hexdigit).collect();
    let hex = format!("{hex:0>32}");
    let hex = &hex[hex.len() - 32..];
    format!("{}-{}-4{}-8{}-{}", &hex[..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}
