//! Streaming behaviour with a scripted PACS: a failure after the status was sent aborts the
//! response (HTTP/1.1 and HTTP/2) instead of completing it; the status waits for the first
//! instance in a requested syntax; DIMSE data sets become Part 10 files; a client that goes away
//! cancels the PACS retrieval; HTTP/1.1 keep-alive and HTTP/2 carry several retrievals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use hie_broker::ports::{
    FoundInstance, InstanceKey, Pacs, PacsError, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary,
};
use hie_kos::StudyEvidence;
use hie_testkit::{GeneratedStudy, generate_study, part10};
use hie_xds::messages::ResponseStatus;
use tokio::sync::mpsc;

use crate::support::*;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// What the scripted PACS does when asked to retrieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Every instance whole, as Part 10 files.
    Whole,
    /// Every instance as a data set (a DIMSE PACS), without File Meta Information.
    DataSets,
    /// Whole instances, then the third one breaks off.
    LoseThird,
    /// Whole instances but the last, which is reported failed.
    SkipLast,
    /// The first instance in Implicit VR Little Endian (not requested), the rest as asked.
    FirstInOtherSyntax,
    /// The second instance in Implicit VR Little Endian (not requested).
    SecondInOtherSyntax,
    /// One instance whose bytes never end, until the consumer goes away.
    Endless,
}

struct ScriptedPacs {
    study: GeneratedStudy,
    script: Script,
    /// Set when the sink refused an event (the consumer went away).
    saw_cancel: Arc<AtomicBool>,
    /// Retrievals whose future was dropped or ended.
    ended: Arc<AtomicU64>,
    chunks_sent: Arc<AtomicU64>,
}

struct EndGuard(Arc<AtomicU64>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl ScriptedPacs {
    fn path_of(&self, sop: &str) -> Option<std::path::PathBuf> {
        self.study
            .instances
            .iter()
            .find(|instance| instance.sop_instance_uid == sop)
            .map(|instance| instance.path.clone())
    }
}

impl Pacs for ScriptedPacs {
    fn describe(&self) -> String {
        format!("scripted {:?}", self.script)
    }

    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        Box::pin(std::future::ready(Err(PacsError::UnknownStudy(study_instance_uid.to_owned()))))
    }

    fn list_studies<'a>(&'a self, _from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn find_instances<'a>(&'a self, instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        let found = instances
            .iter()
            .filter(|key| self.path_of(&key.sop_instance_uid).is_some())
            .map(|key| FoundInstance {
                key: key.clone(),
                sop_class_uid: self.study.sop_class_uid.clone(),
                stored_transfer_syntax_uid: None,
            })
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn retrieve<'a>(
        &'a self,
        instances: &'a [InstanceKey],
        _transfer_syntaxes: &'a [String],
        sink: mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(async move {
            let _guard = EndGuard(Arc::clone(&self.ended));
            let mut report = RetrieveReport::default();
            let send = |event: RetrieveEvent| {
                let sink = sink.clone();
                let saw_cancel = Arc::clone(&self.saw_cancel);
                let chunks_sent = Arc::clone(&self.chunks_sent);
                async move {
                    let ok = sink.send(event).await.is_ok();
                    if ok {
                        chunks_sent.fetch_add(1, Ordering::SeqCst);
                    } else {
                        saw_cancel.store(true, Ordering::SeqCst);
                    }
                    ok
                }
            };
            for (index, key) in instances.iter().enumerate() {
                let Some(path) = self.path_of(&key.sop_instance_uid) else { continue };
                let file = std::fs::read(&path).unwrap();
                let split = part10::split(&file).unwrap();
                let (syntax, bytes, part10) = match (self.script, index) {
                    (Script::DataSets, _) => (split.transfer_syntax_uid.clone(), split.data_set.clone(), false),
                    (Script::FirstInOtherSyntax, 0) | (Script::SecondInOtherSyntax, 1) => {
                        (IMPLICIT_LE.to_owned(), file.clone(), true)
                    }
                    _ => (split.transfer_syntax_uid.clone(), file.clone(), true),
                };
                if self.script == Script::SkipLast && index == instances.len() - 1 {
                    report.failed.push((key.sop_instance_uid.clone(), "scripted failure".to_owned()));
                    continue;
                }
                let begin = RetrieveEvent::Begin {
                    sop_class_uid: split.sop_class_uid.clone(),
                    sop_instance_uid: key.sop_instance_uid.clone(),
                    transfer_syntax_uid: syntax,
                    part10,
                };
                if !send(begin).await {
                    return Ok(report);
                }
                if self.script == Script::Endless {
                    let chunk = Bytes::from(vec![0_u8; 64 * 1024]);
                    while send(RetrieveEvent::Data(chunk.clone())).await {}
                    return Ok(report);
                }
                let half = bytes.len() / 2;
                if !send(RetrieveEvent::Data(Bytes::copy_from_slice(&bytes[..half]))).await {
                    return Ok(report);
                }
                if self.script == Script::LoseThird && index == 2 {
                    send(RetrieveEvent::Lost("scripted: the association was aborted".to_owned())).await;
                    report.failed.push((key.sop_instance_uid.clone(), "lost".to_owned()));
                    return Ok(report);
                }
                if !send(RetrieveEvent::Data(Bytes::copy_from_slice(&bytes[half..]))).await
                    || !send(RetrieveEvent::End).await
                {
                    return Ok(report);
                }
                report.sent.push(key.sop_instance_uid.clone());
            }
            Ok(report)
        })
    }
}

struct Scripted {
    endpoint: Endpoint,
    study: GeneratedStudy,
    saw_cancel: Arc<AtomicBool>,
    ended: Arc<AtomicU64>,
    chunks_sent: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

async fn scripted(script: Script, n_instances: usize) -> Scripted {
    let dir = tempfile::tempdir().unwrap();
    let study = generate_study(&template(), n_instances, n_instances, &dir.path().join("a"));
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicU64::new(0));
    let chunks_sent = Arc::new(AtomicU64::new(0));
    let pacs = ScriptedPacs {
        study: study.clone(),
        script,
        saw_cancel: Arc::clone(&saw_cancel),
        ended: Arc::clone(&ended),
        chunks_sent: Arc::clone(&chunks_sent),
    };
    let endpoint = Endpoint::start(Arc::new(pacs)).await;
    register(&endpoint.store, &study.study_instance_uid, 1, &referenced(&study), b"KOS").await;
    Scripted { endpoint, study, saw_cancel, ended, chunks_sent, _dir: dir }
}

fn rad69_request(study: &GeneratedStudy) -> (String, Vec<u8>) {
    let envelope = envelope(hie_xds::actions::RAD69_REQUEST, &rad69_body(&wanted_of(study), &[EXPLICIT_LE]));
    (soap_content_type(hie_xds::actions::RAD69_REQUEST), envelope.into_bytes())
}

/// The body ends without the MTOM close delimiter: the consumer cannot take it for complete.
fn unterminated(body: &[u8]) -> bool {
    !body.ends_with(b"--\r\n")
}

#[tokio::test]
async fn a_pacs_failure_after_the_status_aborts_the_response_on_http1_and_http2() {
    for http in ["--http1.1", "--http2"] {
        let s = scripted(Script::LoseThird, 5).await;
        let (content_type, body) = rad69_request(&s.study);
        let exchange = s.endpoint.post(Some(&s.endpoint.pki.partner), &content_type, &body, &[http]).await;
        assert!(!exchange.curl_ok(), "{http}: curl must see the abort");
        assert_eq!(exchange.status(), 200, "{http}: the status went out first");
        let text = String::from_utf8_lossy(&exchange.body).into_owned();
        assert!(text.contains("ResponseStatusType:Success"), "{http}: the promise made");
        assert!(unterminated(&exchange.body), "{http}: no close delimiter");
        assert!(exchange.stderr().contains("curl: ("), "{http}: {}", exchange.stderr());
        assert_eq!(s.endpoint.stats.aborted_retrievals(), 1, "{http}");
    }
}

#[tokio::test]
async fn a_promised_instance_that_never_comes_aborts_the_response() {
    let s = scripted(Script::SkipLast, 3).await;
    let (content_type, body) = rad69_request(&s.study);
    let exchange = s.endpoint.post(Some(&s.endpoint.pki.partner), &content_type, &body, &[]).await;
    assert!(!exchange.curl_ok());
    assert!(unterminated(&exchange.body));
    assert_eq!(s.endpoint.stats.aborted_retrievals(), 1);
}

#[tokio::test]
async fn an_instance_in_an_unrequested_syntax_before_the_status_is_refused_after_it_aborts() {
    let s = scripted(Script::FirstInOtherSyntax, 3).await;
    let (content_type, body) = rad69_request(&s.study);
    let response = s.endpoint.post(Some(&s.endpoint.pki.partner), &content_type, &body, &[]).await.response();
    assert_eq!(response.response.status, ResponseStatus::PartialSuccess);
    assert_eq!(response.response.errors.len(), 1);
    assert_eq!(response.response.errors[0].code.as_str(), "urn:dicom:wado:0007");
    assert_eq!(response.response.errors[0].location.as_deref(), Some(s.study.instances[0].sop_instance_uid.as_str()));
    assert_eq!(response.documents.len(), 2);

    let s = scripted(Script::SecondInOtherSyntax, 3).await;
    let (content_type, body) = rad69_request(&s.study);
    let exchange = s.endpoint.post(Some(&s.endpoint.pki.partner), &content_type, &body, &[]).await;
    assert!(!exchange.curl_ok() && unterminated(&exchange.body), "promised, then sent in the wrong syntax");
}

#[tokio::test]
async fn dimse_data_sets_are_returned_as_part10_files() {
    let s = scripted(Script::DataSets, 3).await;
    let (content_type, body) = rad69_request(&s.study);
    let response = s.endpoint.post(Some(&s.endpoint.pki.partner), &content_type, &body, &[]).await.response();
    assert_eq!(response.response.status, ResponseStatus::Success);
    for (document, instance) in response.documents.iter().zip(&s.study.instances) {
        let original = part10::read(&instance.path);
        let returned = part10::split(&document.document).unwrap();
        assert_eq!(returned.sop_instance_uid, instance.sop_instance_uid);
        assert_eq!(returned.sop_class_uid, original.sop_class_uid);
        assert_eq!(returned.transfer_syntax_uid, EXPLICIT_LE);
        assert!(returned.data_set == original.data_set, "data set unchanged");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_pacs_retrieval() {
    let s = scripted(Script::Endless, 1).await;
    let (content_type, body) = rad69_request(&s.study);
    // curl gives up after two seconds of an endless body (and reads slowly meanwhile).
    let exchange = s
        .endpoint
        .post(Some(&s.endpoint.pki.partner), &content_type, &body, &["--max-time", "2", "--limit-rate", "2M"])
        .await;
    assert!(!exchange.curl_ok());
    assert!(exchange.body.len() > 64 * 1024, "the body was streaming: {} bytes", exchange.body.len());
    eventually("the PACS retrieval cancelled", || {
        s.saw_cancel.load(Ordering::SeqCst) || s.ended.load(Ordering::SeqCst) > 0
    })
    .await;
    eventually("the retrieval ended", || s.ended.load(Ordering::SeqCst) == 1).await;
    eventually("no answer in flight", || s.endpoint.stats.in_flight() == 0).await;
    // Flow control: what the PACS produced is what the client took plus a bounded buffer.
    let produced = s.chunks_sent.load(Ordering::SeqCst) * 64 * 1024;
    let taken = exchange.body.len() as u64;
    assert!(produced < taken + 16 * 1024 * 1024, "produced {produced} bytes for {taken} taken");
}

#[tokio::test]
async fn keep_alive_and_http2_carry_several_retrievals_on_one_connection() {
    let s = scripted(Script::Whole, 2).await;
    let (content_type, body) = rad69_request(&s.study);
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request");
    std::fs::write(&request, &body).unwrap();
    for http in ["--http1.1", "--http2"] {
        let mut command = std::process::Command::new("curl");
        command
            .args(["--silent", "--show-error", "--verbose", "--max-time", "60", "--cacert"])
            .arg(&s.endpoint.pki.ca_path);
        for index in 0..2 {
            if index > 0 {
                command.arg("--next");
            }
            command
                .args([http, "--cacert"])
                .arg(&s.endpoint.pki.ca_path)
                .arg("--cert")
                .arg(&s.endpoint.pki.partner.certificate)
                .arg("--key")
                .arg(&s.endpoint.pki.partner.key)
                .args(["-H", &format!("Content-Type: {content_type}"), "--data-binary"])
                .arg(format!("@{}", request.display()))
                .args(["--output", "/dev/null", "--write-out", "%{http_code} %{num_connects}\\n"])
                .arg(s.endpoint.url());
        }
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{http}: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(stdout.lines().collect::<Vec<_>>(), ["200 1", "200 0"], "{http}: the second reuses the connection");
        let verbose = String::from_utf8_lossy(&output.stderr);
        if http == "--http2" {
            assert!(verbose.contains("ALPN: server accepted h2") || verbose.contains("using HTTP/2"), "{verbose}");
        }
    }
}
