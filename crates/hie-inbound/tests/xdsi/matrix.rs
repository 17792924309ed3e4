//! The authorization matrix of reliability-security S9 against a folder PACS: only instances of
//! a study's current registered manifest are served; everything else gets the same answer and
//! costs no PACS request. ITI-43 serves current registered manifests only. Every answer passes
//! xmllint against the IHE schema (attachments inlined); a zeep client reads one.

use hie_store::submissions::SubmissionKind;
use hie_testkit::generate_study;
use hie_xds::ErrorCode;
use hie_xds::messages::{RegistryError, ResponseStatus};

use crate::support::*;

/// The study layout every matrix test uses: folder PACS holding A (6 instances), B (2) and C (2).
struct Matrix {
    endpoint: Endpoint,
    a: hie_testkit::GeneratedStudy,
    b: hie_testkit::GeneratedStudy,
    c: hie_testkit::GeneratedStudy,
    /// A's registered manifests: v1 (replaced) and v2 (current).
    a_v1: String,
    a_v2: String,
    b_v1: String,
    _dir: tempfile::TempDir,
}

/// A: v1 referenced a0..a4, v2 (current) references a0..a3: a4 is "replaced", a5 never in a
/// manifest. B: registered, then deprecated. C: in the PACS, never registered.
async fn matrix() -> Matrix {
    let dir = tempfile::tempdir().unwrap();
    let a = generate_study(&template(), 6, 6, &dir.path().join("a"));
    let b = generate_study(&template(), 2, 2, &dir.path().join("b"));
    let c = generate_study(&template(), 2, 2, &dir.path().join("c"));
    let endpoint = Endpoint::start(folder(dir.path())).await;
    let store = &endpoint.store;
    let all_a = referenced(&a);
    let a_v1 = register(store, &a.study_instance_uid, 1, &all_a[..5], b"KOS A v1").await;
    let a_v2 = register(store, &a.study_instance_uid, 2, &all_a[..4], b"KOS A v2").await;
    let b_v1 = register(store, &b.study_instance_uid, 1, &referenced(&b), b"KOS B v1").await;
    submitted(store, &b.study_instance_uid, 1, &b_v1, SubmissionKind::Deprecate).await;
    Matrix { endpoint, a, b, c, a_v1, a_v2, b_v1, _dir: dir }
}

fn codes(errors: &[RegistryError]) -> Vec<(String, String)> {
    errors.iter().map(|error| (error.code.as_str().to_owned(), error.location.clone().unwrap_or_default())).collect()
}

/// The context of an error with its UID taken out: what must read the same for unknown and
/// forbidden documents.
fn shape(error: &RegistryError) -> String {
    error.context.replace(error.location.as_deref().unwrap_or(""), "<uid>")
}

#[tokio::test]
async fn registered_and_current_instances_are_served_byte_for_byte() {
    let m = matrix().await;
    let wanted = wanted_of(&m.a);
    let exchange = m.endpoint.rad69(&rad69_body(&wanted[..4], &[EXPLICIT_LE])).await;
    let response = exchange.response();
    assert_eq!(response.response.status, ResponseStatus::Success);
    assert!(response.response.errors.is_empty(), "{:?}", response.response.errors);
    assert_eq!(response.documents.len(), 4);
    for (document, instance) in response.documents.iter().zip(&m.a.instances) {
        assert_eq!(document.document_unique_id, instance.sop_instance_uid, "request order");
        assert_eq!(document.repository_unique_id, REPOSITORY);
        assert_eq!(document.home_community_id.as_deref(), Some(HOME), "echoed as requested");
        assert_eq!(document.mime_type, "application/dicom");
        assert!(
            document.document == std::fs::read(&instance.path).unwrap(),
            "{}: bytes differ",
            instance.sop_instance_uid
        );
    }
    assert_eq!(m.endpoint.pacs.counts(), (1, 1, 8), "one lookup and one retrieval of four instances");
}

#[tokio::test]
async fn every_denied_case_gets_the_same_answer_and_no_pacs_request() {
    let m = matrix().await;
    let a = wanted_of(&m.a);
    let b = wanted_of(&m.b);
    let c = wanted_of(&m.c);
    let mut shapes = Vec::new();
    for (case, instance) in [
        ("replaced (only in v1)", a[4].clone()),
        ("never in a manifest", a[5].clone()),
        ("deprecated study", b[0].clone()),
        ("never registered, in the PACS", c[0].clone()),
        ("SOP under another series", Wanted { series: m.b.instances[0].series_instance_uid.clone(), ..a[0].clone() }),
        ("SOP under another study", Wanted { study: m.c.study_instance_uid.clone(), ..a[0].clone() }),
        ("not a UID", Wanted { sop: "1.2.3'; DROP TABLE manifests; --".to_owned(), ..a[0].clone() }),
    ] {
        let response = m.endpoint.rad69(&rad69_body(std::slice::from_ref(&instance), &[EXPLICIT_LE])).await.response();
        assert_eq!(response.response.status, ResponseStatus::Failure, "{case}");
        assert!(response.documents.is_empty(), "{case}");
        assert_eq!(
            codes(&response.response.errors),
            [("XDSDocumentUniqueIdError".to_owned(), instance.sop.clone())],
            "{case}"
        );
        shapes.push(shape(&response.response.errors[0]));
    }
    // The partner not allowed RAD-69 asking for a served instance: the same answer again.
    let envelope = envelope(hie_xds::actions::RAD69_REQUEST, &rad69_body(&a[..1], &[EXPLICIT_LE]));
    let exchange = m
        .endpoint
        .post(
            Some(&m.endpoint.pki.restricted),
            &soap_content_type(hie_xds::actions::RAD69_REQUEST),
            envelope.as_bytes(),
            &[],
        )
        .await;
    let response = exchange.response();
    assert_eq!(codes(&response.response.errors), [("XDSDocumentUniqueIdError".to_owned(), a[0].sop.clone())]);
    shapes.push(shape(&response.response.errors[0]));
    shapes.dedup();
    assert_eq!(shapes.len(), 1, "every denial reads the same: {shapes:?}");

    // Wrong repository and wrong community: their own codes, no PACS either.
    let wrong_repository = Wanted { repository: "1.3.6.1.4.1.21367.13.80.110.999".to_owned(), ..a[0].clone() };
    let wrong_community = Wanted { home: Some("urn:oid:1.2.3.999".to_owned()), ..a[1].clone() };
    let response = m.endpoint.rad69(&rad69_body(&[wrong_repository, wrong_community], &[EXPLICIT_LE])).await.response();
    assert_eq!(response.response.status, ResponseStatus::Failure);
    assert_eq!(
        codes(&response.response.errors),
        [("XDSUnknownRepositoryId".to_owned(), a[0].sop.clone()), ("XDSUnknownCommunity".to_owned(), a[1].sop.clone())]
    );
    assert_eq!(m.endpoint.pacs.counts(), (0, 0, 0), "no PACS request for any denied instance");
    assert_eq!(m.endpoint.stats.pacs_requests(), (0, 0));
}

#[tokio::test]
async fn a_mixed_request_is_a_partial_success_and_only_the_served_instance_reaches_the_pacs() {
    let m = matrix().await;
    let a = wanted_of(&m.a);
    let c = wanted_of(&m.c);
    let wrong_repository = Wanted { repository: "9.9.9".to_owned(), ..a[1].clone() };
    let wanted = [a[0].clone(), a[4].clone(), c[0].clone(), wrong_repository];
    let response = m.endpoint.rad69(&rad69_body(&wanted, &[EXPLICIT_LE])).await.response();
    assert_eq!(response.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(response.documents.len(), 1);
    assert_eq!(response.documents[0].document_unique_id, a[0].sop);
    assert_eq!(
        codes(&response.response.errors),
        [
            ("XDSDocumentUniqueIdError".to_owned(), a[4].sop.clone()),
            ("XDSDocumentUniqueIdError".to_owned(), c[0].sop.clone()),
            ("XDSUnknownRepositoryId".to_owned(), a[1].sop.clone()),
        ]
    );
    assert!(response.response.errors.iter().all(|error| error.severity == hie_xds::messages::Severity::Error));
    assert_eq!(m.endpoint.pacs.counts(), (1, 1, 2), "the PACS saw only the authorized instance");
}

#[tokio::test]
async fn missing_instances_and_impossible_transfer_syntaxes_have_their_own_errors() {
    let m = matrix().await;
    let a = wanted_of(&m.a);
    // The PACS lost a registered instance.
    std::fs::remove_file(&m.a.instances[3].path).unwrap();
    let response = m.endpoint.rad69(&rad69_body(&a[2..4], &[EXPLICIT_LE])).await.response();
    assert_eq!(response.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(codes(&response.response.errors), [("XDSMissingDocument".to_owned(), a[3].sop.clone())]);
    assert_eq!(response.documents[0].document_unique_id, a[2].sop);

    // The folder holds Explicit VR Little Endian only and converts nothing.
    let before = m.endpoint.pacs.counts();
    let response = m.endpoint.rad69(&rad69_body(&a[..2], &[JPEG_BASELINE])).await.response();
    assert_eq!(response.response.status, ResponseStatus::Failure);
    assert_eq!(
        codes(&response.response.errors),
        [("urn:dicom:wado:0007".to_owned(), a[0].sop.clone()), ("urn:dicom:wado:0007".to_owned(), a[1].sop.clone())]
    );
    let after = m.endpoint.pacs.counts();
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "looked up, never retrieved");

    // No usable transfer syntax at all (ids_4812 case 8): no PACS request.
    let response = m.endpoint.rad69(&rad69_body(&a[..1], &[""])).await.response();
    assert_eq!(codes(&response.response.errors), [("urn:dicom:wado:0007".to_owned(), a[0].sop.clone())]);
    assert_eq!(m.endpoint.pacs.counts(), after);
}

#[tokio::test]
async fn iti43_serves_current_registered_manifests_only() {
    let m = matrix().await;
    let response = m.endpoint.iti43(&iti43_body(&[&m.a_v2, &m.a_v1, &m.b_v1, "1.2.3.4"])).await.response();
    assert_eq!(response.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(response.documents.len(), 1);
    assert_eq!(response.documents[0].document_unique_id, m.a_v2);
    assert_eq!(response.documents[0].document, b"KOS A v2");
    assert_eq!(response.documents[0].mime_type, "application/dicom");
    let refused: Vec<String> =
        response.response.errors.iter().map(|error| error.location.clone().unwrap_or_default()).collect();
    assert_eq!(refused, [m.a_v1.clone(), m.b_v1.clone(), "1.2.3.4".to_owned()]);
    assert!(response.response.errors.iter().all(|error| error.code == ErrorCode::XdsDocumentUniqueIdError));
    let shapes: std::collections::HashSet<String> = response.response.errors.iter().map(shape).collect();
    assert_eq!(shapes.len(), 1, "replaced, deprecated and unknown read the same");
    assert_eq!(m.endpoint.pacs.counts(), (0, 0, 0), "ITI-43 never reaches the PACS");

    // Not allowed ITI-43: the same answer as an unknown manifest.
    let envelope = envelope(hie_xds::actions::ITI43_REQUEST, &iti43_body(&[&m.a_v2]));
    let exchange = m
        .endpoint
        .post(
            Some(&m.endpoint.pki.restricted),
            &soap_content_type(hie_xds::actions::ITI43_REQUEST),
            envelope.as_bytes(),
            &[],
        )
        .await;
    let response = exchange.response();
    assert_eq!(response.response.status, ResponseStatus::Failure);
    assert_eq!(response.response.errors[0].code, ErrorCode::XdsDocumentUniqueIdError);
}

#[tokio::test]
async fn zeep_reads_a_rad69_answer_with_its_attachments() {
    let m = matrix().await;
    let wanted = wanted_of(&m.a);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, ZEEP_CLIENT).unwrap();
    let wsdl = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/xdsi/data/wsdl/XDS-I.b_ImagingDocumentSource.wsdl");
    assert!(wsdl.exists(), "{}", wsdl.display());
    let python = std::env::var_os("HIE_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"))
        .join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: set HIE_TEST_VENV to a venv with zeep (pip install zeep)",
        python.display()
    );
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg(&wsdl)
        .arg(m.endpoint.url())
        .arg(&m.endpoint.pki.ca_path)
        .arg(&m.endpoint.pki.partner.certificate)
        .arg(&m.endpoint.pki.partner.key)
        .arg(REPOSITORY)
        .arg(&wanted[0].study)
        .arg(&wanted[0].series)
        .arg(&wanted[0].sop)
        .arg(&wanted[1].sop);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success");
    for (line, instance) in lines[1..].iter().zip(&m.a.instances[..2]) {
        let bytes = std::fs::read(&instance.path).unwrap();
        assert_eq!(*line, format!("{} {} {}", instance.sop_instance_uid, bytes.len(), sha256_hex(&bytes)));
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A zeep client of the IHE RAD-69 WSDL, with the client certificate, over MTOM: prints the status
/// and, per document, its UID, size and SHA-256.
const ZEEP_CLIENT: &str = r#"
import hashlib, sys
import requests
from zeep import Client, Settings
from zeep.transports import Transport

wsdl, url, ca, cert, key, repository, study, series = sys.argv[1:9]
sops = sys.argv[9:]
session = requests.Session()
session.verify = ca
# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the session's CA: not here.
session.trust_env = False
session.cert = (cert, key)
client = Client(wsdl, transport=Transport(session=session), settings=Settings(strict=False))
service = client.create_service(
    "{urn:ihe:rad:xdsi-b:2009}ImagingDocumentSource_Binding", url)
request = {
    "StudyRequest": [{
        "studyInstanceUID": study,
        "SeriesRequest": [{
            "seriesInstanceUID": series,
            "DocumentRequest": [{"RepositoryUniqueId": repository, "DocumentUniqueId": sop} for sop in sops],
        }],
    }],
    "TransferSyntaxUIDList": {"TransferSyntaxUID": ["1.2.840.10008.1.2.1"]},
}
response = service.ImagingDocumentSource_RetrieveImagingDocumentSet(**request)
print(response.RegistryResponse.status)
for document in response.DocumentResponse:
    data = document.Document
    print(document.DocumentUniqueId, len(data), hashlib.sha256(data).hexdigest())
"#;
