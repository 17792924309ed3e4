//! The `dicomweb` PACS: QIDO-RS queries (DICOM PS3.18 10.6) over HTTP, answered in DICOM JSON
//! (PS3.18 Annex F) and read with dicom-json.
//!
//! A study's evidence is one instance-level query of the study (`/studies/{uid}/instances`) with
//! the patient and study attributes the manifest copies as `includefield`s, then the metadata
//! (WADO-RS, PS3.18 10.4) of the instance whose attributes the manifest copies: a QIDO-RS origin
//! server returns only the included fields it supports (PS3.18 10.6.3.3.1), and Orthanc, for one,
//! answers only its indexed tags, so sequences such as the Procedure Code Sequence (typeCode) and
//! the issuers' qualifiers would otherwise be lost. A listing for polls is a study-level query by
//! Study Date with Number of Study Related Instances. Queries page with `limit`/`offset`, so a
//! PACS that caps its answers still gives every instance. Responses are read with a size cap and a
//! timeout per read; nothing a PACS sends can grow memory without bound.
//!
//! Retrieval (`find_instances`, `retrieve`): QIDO-RS says which requested instances the PACS
//! holds: whole series by their instance counts, other instances by an instance-level query (by
//! SOP Instance UID list, or the study's listing for many), with Available Transfer Syntax UID
//! (0008,3002) when the server gives it (Orthanc does not). WADO-RS
//! (PS3.18 10.4) fetches them, asking for the caller's transfer syntaxes one at a time in the
//! Accept header (PS3.18 8.7.3.5.2), the next only if the PACS refuses the previous; the
//! multipart/related answer is split as it streams ([`super::multipart`]) and each part, a Part 10
//! file, is forwarded in the chunks it arrives in, announced by what its File Meta Information
//! says. Nothing else of the DICOM data is read, and memory holds at most a part's headers, its
//! meta group and one body frame. A body that breaks off mid-part sends [`RetrieveEvent::Lost`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use hie_broker::ports::{
    FoundInstance, InstanceKey, Pacs, PacsError, PacsFuture, RetrieveEvent, RetrieveReport, StudySummary,
};
use hie_kos::{StudyEvidence, StudyEvidenceBuilder};
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::DicomWebSettings;
use super::file_meta;
use super::multipart::{Event, Splitter, boundary_of};
use super::query::{EVIDENCE_TAGS, clean_query_result, counts_by_series, text};

/// Results asked for per QIDO request; later pages follow with `offset`.
const PAGE: usize = 1_000;
/// Largest QIDO response body read (one page of 1,000 instances with the included attributes is
/// a few MiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Most pages followed for one query: 200,000 instances, far beyond any study.
const MAX_PAGES: usize = 200;
/// Most SOP Instance UIDs in one UID-list query; more are looked up in the study's listing.
const UID_LIST_MAX: usize = 64;
/// PS3.5 9.1: a UID is at most 64 characters.
const MAX_UID_LEN: usize = 64;
/// Available Transfer Syntax UID (0008,3002): the syntaxes an instance is held in.
const AVAILABLE_TRANSFER_SYNTAX: dicom_core::Tag = dicom_core::Tag(0x0008, 0x3002);
/// The WADO-RS media range of Part 10 instances (PS3.18 8.7.3.5).
const MULTIPART_DICOM: &str = "multipart/related; type=\"application/dicom\"";
/// The preamble, `DICM` and the group length element before the meta group's elements.
const META_PREFIX_LEN: usize = 128 + 4 + 12;

/// A DICOMweb PACS.
#[derive(Debug, Clone)]
pub struct DicomWebPacs {
    settings: DicomWebSettings,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl DicomWebPacs {
    pub fn new(settings: DicomWebSettings) -> Result<DicomWebPacs, PacsError> {
        if !settings.url.starts_with("http://") {
            return Err(PacsError::Unreachable(format!(
                "{}: only http:// DICOMweb roots are supported in this release",
                settings.url
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(DicomWebPacs { settings, client })
    }

    /// Every page of a QIDO query: `path_and_query` without `limit`/`offset`.
    async fn qido_all(&self, path_and_query: &str) -> Result<Vec<InMemDicomObject>, PacsError> {
        let mut results = Vec::new();
        for page in 0..MAX_PAGES {
            let separator = if path_and_query.contains('?') { '&' } else { '?' };
            let url = format!(
                "{}{path_and_query}{separator}limit={PAGE}&offset={}",
                self.settings.url.trim_end_matches('/'),
                page * PAGE
            );
            let batch = self.qido(&url).await?;
            let n = batch.len();
            results.extend(batch);
            if n < PAGE {
                return Ok(results);
            }
        }
        Err(PacsError::BadAnswer(format!("more than {} results for {path_and_query}", MAX_PAGES * PAGE)))
    }

    /// The metadata of one instance (WADO-RS Retrieve Instance Metadata, PS3.18 10.4.1.1.2), its
    /// bulk data left out; `None` when the origin server does not offer it (404, 406, 501).
    async fn instance_metadata(
        &self,
        study: &str,
        series: &str,
        instance: &str,
    ) -> Result<Option<InMemDicomObject>, PacsError> {
        let url = format!(
            "{}/studies/{study}/series/{series}/instances/{instance}/metadata",
            self.settings.url.trim_end_matches('/')
        );
        let request = hyper::Request::get(&url)
            .header(hyper::header::ACCEPT, "application/dicom+json")
            .body(Empty::<Bytes>::new())
            .map_err(|error| PacsError::BadAnswer(format!("cannot form a request for {url}: {error}")))?;
        let response = tokio::time::timeout(self.settings.timeout, self.client.request(request))
            .await
            .map_err(|_| PacsError::Unreachable(format!("{url}: no response within {:?}", self.settings.timeout)))?
            .map_err(|error| PacsError::Unreachable(format!("{url}: {error}")))?;
        let status = response.status();
        let body = read_body(response.into_body(), self.settings.timeout, &url).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::NOT_ACCEPTABLE | StatusCode::NOT_IMPLEMENTED => {
                tracing::warn!(%url, %status, "no instance metadata: the manifest copies what the query returned");
                return Ok(None);
            }
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                return Err(PacsError::Unreachable(format!("{url}: HTTP {status}")));
            }
            status => return Err(PacsError::Refused(format!("{url}: HTTP {status}"))),
        }
        let mut objects: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|error| PacsError::BadAnswer(format!("{url}: not a DICOM JSON array: {error}")))?;
        let Some(mut object) = objects.drain(..).next() else { return Ok(None) };
        drop_bulk_data(&mut object);
        let object: dicom_json::DicomJson<InMemDicomObject> = serde_json::from_value(object)
            .map_err(|error| PacsError::BadAnswer(format!("{url}: not a DICOM JSON data set: {error}")))?;
        Ok(Some(object.into_inner()))
    }

    /// One QIDO request. 204 No Content is an empty answer (PS3.18 8.3.4 / 10.6.1.3.2).
    async fn qido(&self, url: &str) -> Result<Vec<InMemDicomObject>, PacsError> {
        let request = hyper::Request::get(url)
            .header(hyper::header::ACCEPT, "application/dicom+json")
            .body(Empty::<Bytes>::new())
            .map_err(|error| PacsError::BadAnswer(format!("cannot form a request for {url}: {error}")))?;
        let response = tokio::time::timeout(self.settings.timeout, self.client.request(request))
            .await
            .map_err(|_| PacsError::Unreachable(format!("{url}: no response within {:?}", self.settings.timeout)))?
            .map_err(|error| PacsError::Unreachable(format!("{url}: {error}")))?;
        let status = response.status();
        let body = read_body(response.into_body(), self.settings.timeout, url).await?;
        match status {
            StatusCode::NO_CONTENT => Ok(Vec::new()),
            StatusCode::OK => {
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Vec::new());
                }
                let objects: Vec<dicom_json::DicomJson<InMemDicomObject>> = serde_json::from_slice(&body)
                    .map_err(|error| PacsError::BadAnswer(format!("{url}: not a DICOM JSON array: {error}")))?;
                Ok(objects.into_iter().map(dicom_json::DicomJson::into_inner).collect())
            }
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                Err(PacsError::Unreachable(format!("{url}: HTTP {status}")))
            }
            status => Err(PacsError::Refused(format!("{url}: HTTP {status}"))),
        }
    }
}

impl DicomWebPacs {
    /// Which of `keys` (all of `study`) the PACS holds.
    ///
    /// A series asked for whole (as many distinct instances as its Number of Series Related
    /// Instances (0020,1209) says it holds) is taken to hold them, from one series-level query
    /// for the study and one instance of the series (for its SOP Class UID): an instance-level
    /// listing costs Orthanc about 2.5 ms per instance, more than fetching the instance, and a
    /// whole-series request is what a RAD-69 of a published study is. Should the count match
    /// while an instance is missing (one deleted and one added since the manifest), the
    /// retrieval does not deliver it and the response is aborted, never completed falsely.
    /// Other instances are looked up at instance level: a UID-list query (PS3.18 8.3.4.1) for a
    /// few, the study's whole instance listing (paged) for many, as a URL of thousands of UIDs is
    /// refused by many servers.
    async fn find_in_study(&self, study: &str, keys: &[&InstanceKey]) -> Result<Vec<FoundInstance>, PacsError> {
        if !url_safe_uid(study) {
            return Ok(Vec::new());
        }
        let keys: Vec<&InstanceKey> = keys
            .iter()
            .copied()
            .filter(|key| url_safe_uid(&key.series_instance_uid) && url_safe_uid(&key.sop_instance_uid))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Whole series first: counted, not listed.
        let counts = self.series_counts(study).await;
        let mut by_series: BTreeMap<&str, Vec<&InstanceKey>> = BTreeMap::new();
        for key in &keys {
            by_series.entry(key.series_instance_uid.as_str()).or_default().push(key);
        }
        let mut found = Vec::new();
        let mut listed: Vec<&InstanceKey> = Vec::new();
        for (series, asked) in by_series {
            let distinct: std::collections::HashSet<&str> =
                asked.iter().map(|key| key.sop_instance_uid.as_str()).collect();
            let whole = counts.get(series).is_some_and(|n| *n == distinct.len());
            let sop_class = if whole { self.series_sop_class(study, series).await } else { None };
            match sop_class {
                Some(sop_class_uid) => {
                    let mut seen = std::collections::HashSet::new();
                    for key in asked.into_iter().filter(|key| seen.insert(key.sop_instance_uid.as_str())) {
                        found.push(FoundInstance {
                            key: key.clone(),
                            sop_class_uid: sop_class_uid.clone(),
                            stored_transfer_syntax_uid: None,
                        });
                    }
                }
                None => listed.extend(asked),
            }
        }
        let wanted: HashMap<&str, &InstanceKey> =
            listed.iter().map(|key| (key.sop_instance_uid.as_str(), *key)).collect();
        if wanted.is_empty() {
            return Ok(found);
        }
        let mut answers = Vec::new();
        let include = format!(
            "includefield={:04X}{:04X}",
            AVAILABLE_TRANSFER_SYNTAX.group(),
            AVAILABLE_TRANSFER_SYNTAX.element()
        );
        let queries: Vec<String> = if wanted.len() <= UID_LIST_MAX {
            let mut sops: Vec<&str> = wanted.keys().copied().collect();
            sops.sort_unstable();
            vec![format!("/studies/{study}/instances?SOPInstanceUID={}&{include}", sops.join(","))]
        } else {
            vec![format!("/studies/{study}/instances?{include}")]
        };
        for query in queries {
            match self.qido_all(&query).await {
                Ok(batch) => answers.extend(batch),
                // A study the PACS does not hold: 404 from some servers, an empty answer from others.
                Err(PacsError::Refused(text)) if text.ends_with("HTTP 404 Not Found") => {}
                Err(error) => return Err(error),
            }
        }
        for answer in &answers {
            let (Some(sop), Some(series)) =
                (text(answer, tags::SOP_INSTANCE_UID), text(answer, tags::SERIES_INSTANCE_UID))
            else {
                continue;
            };
            let Some(key) = wanted.get(sop.as_str()) else { continue };
            // The instance is only the one asked for in its own series.
            if key.series_instance_uid != series || found.iter().any(|f: &FoundInstance| f.key == **key) {
                continue;
            }
            found.push(FoundInstance {
                key: (*key).clone(),
                sop_class_uid: text(answer, tags::SOP_CLASS_UID).unwrap_or_default(),
                stored_transfer_syntax_uid: text(answer, AVAILABLE_TRANSFER_SYNTAX),
            });
        }
        Ok(found)
    }

    /// Number of Series Related Instances of each series of `study`; empty when the PACS does
    /// not say.
    async fn series_counts(&self, study: &str) -> HashMap<String, usize> {
        match self.qido_all(&format!("/studies/{study}/series?includefield=00201209")).await {
            Ok(series) => counts_by_series(&series),
            Err(error) => {
                tracing::debug!(%error, "series counts unavailable");
                HashMap::new()
            }
        }
    }

    /// The SOP Class UID of one instance of the series (`limit=1`).
    async fn series_sop_class(&self, study: &str, series: &str) -> Option<String> {
        let url =
            format!("{}/studies/{study}/series/{series}/instances?limit=1", self.settings.url.trim_end_matches('/'));
        let answers = self.qido(&url).await.ok()?;
        answers.first().and_then(|answer| text(answer, tags::SOP_CLASS_UID))
    }

    /// The WADO-RS requests that fetch `keys` (all of `study`): the whole study in one request
    /// when every instance of every series is asked for, a whole series in one request when all
    /// of it is, and each remaining instance on its own. One request per study or series lets
    /// the PACS stream without a round trip per instance (thousands of instances); a request per
    /// instance for a partial series keeps the PACS from sending what was not asked for (and was
    /// perhaps not authorized). Whether a series is whole is read from its Number of Series
    /// Related Instances (0020,1209); without it, instances are fetched one by one.
    async fn plan_requests(&self, study: &str, keys: &[&InstanceKey]) -> Vec<WadoRequest> {
        let mut by_series: BTreeMap<&str, Vec<&InstanceKey>> = BTreeMap::new();
        for key in keys {
            if url_safe_uid(study) && url_safe_uid(&key.series_instance_uid) && url_safe_uid(&key.sop_instance_uid) {
                by_series.entry(key.series_instance_uid.as_str()).or_default().push(key);
            }
        }
        if by_series.is_empty() {
            return Vec::new();
        }
        let counts = self.series_counts(study).await;
        let whole = |series: &str, asked: &[&InstanceKey]| {
            let distinct: std::collections::HashSet<&str> =
                asked.iter().map(|key| key.sop_instance_uid.as_str()).collect();
            counts.get(series).is_some_and(|n| *n == distinct.len())
        };
        let study_whole = !counts.is_empty()
            && counts.len() == by_series.len()
            && by_series.iter().all(|(series, asked)| whole(series, asked));
        if study_whole {
            return vec![WadoRequest {
                path: format!("/studies/{study}"),
                study: study.to_owned(),
                series: None,
                sop: None,
            }];
        }
        let mut requests = Vec::new();
        for (series, asked) in by_series {
            if whole(series, &asked) {
                requests.push(WadoRequest {
                    path: format!("/studies/{study}/series/{series}"),
                    study: study.to_owned(),
                    series: Some(series.to_owned()),
                    sop: None,
                });
            } else {
                for key in asked {
                    requests.push(WadoRequest {
                        path: format!("/studies/{study}/series/{series}/instances/{}", key.sop_instance_uid),
                        study: study.to_owned(),
                        series: Some(series.to_owned()),
                        sop: Some(key.sop_instance_uid.clone()),
                    });
                }
            }
        }
        requests
    }

    /// One WADO-RS request, its multipart answer split as it streams (nothing of the DICOM data
    /// is parsed but each part's File Meta Information). Parts of instances not asked for, or
    /// already sent, are dropped.
    async fn wado(&self, request: &WadoRequest, retrieval: &mut Retrieval<'_>) -> Flow {
        let url = format!("{}{}", self.settings.url.trim_end_matches('/'), request.path);
        // One transfer syntax per attempt, in the caller's order, the next only when the PACS
        // refuses the previous: servers differ in how they weigh several media ranges (Orthanc's
        // DICOMweb plugin takes the last one and ignores q-values), a refusal is unambiguous.
        let choices: Vec<Option<&str>> = if retrieval.transfer_syntaxes.is_empty() {
            vec![None]
        } else {
            retrieval.transfer_syntaxes.iter().map(|syntax| Some(syntax.as_str())).collect()
        };
        let mut refusal = String::new();
        let mut answer = None;
        for choice in choices {
            let built = hyper::Request::get(&url)
                .header(hyper::header::ACCEPT, accept_header(choice))
                .body(Empty::<Bytes>::new());
            let Ok(built) = built else {
                retrieval.fail_requested(request, &format!("cannot form a request for {url}"));
                return Flow::Continue;
            };
            // A consumer that goes away while the PACS prepares its answer ends the wait.
            let answered = tokio::select! {
                answered = tokio::time::timeout(self.settings.timeout, self.client.request(built)) => answered,
                () = retrieval.sink.closed() => return Flow::Cancelled,
            };
            let response = match answered {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    retrieval.fail_requested(request, &format!("{url}: {error}"));
                    return Flow::Continue;
                }
                Err(_) => {
                    retrieval
                        .fail_requested(request, &format!("{url}: no response within {:?}", self.settings.timeout));
                    return Flow::Continue;
                }
            };
            let status = response.status();
            if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
                answer = Some(response);
                break;
            }
            refusal = format!("{url}: HTTP {status} for transfer syntax {}", choice.unwrap_or("*"));
            if status == StatusCode::NOT_FOUND {
                break;
            }
        }
        let Some(response) = answer else {
            retrieval.fail_requested(request, &refusal);
            return Flow::Continue;
        };
        let content_type =
            response.headers().get(hyper::header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
        let Some(mut splitter) = boundary_of(content_type).and_then(|boundary| Splitter::new(&boundary).ok()) else {
            retrieval.fail_requested(request, &format!("{url}: not a multipart/related answer ({content_type:?})"));
            return Flow::Continue;
        };
        let mut body = response.into_body();
        let mut part = PartState::Between;
        loop {
            // Also between frames: the connection is dropped (closed) as soon as the consumer goes.
            let next = tokio::select! {
                next = tokio::time::timeout(self.settings.timeout, body.frame()) => next,
                () = retrieval.sink.closed() => return Flow::Cancelled,
            };
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    return retrieval.broke_off(request, &mut part, &format!("{url}: {error}")).await;
                }
                Err(_) => {
                    let reason = format!("{url}: the answer stalled for {:?}", self.settings.timeout);
                    return retrieval.broke_off(request, &mut part, &reason).await;
                }
            };
            let Some(data) = frame.data_ref() else { continue };
            splitter.push(data);
            loop {
                let event = match splitter.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(error) => return retrieval.broke_off(request, &mut part, &format!("{url}: {error}")).await,
                };
                if retrieval.on_event(event, &mut part).await == Flow::Cancelled {
                    return Flow::Cancelled;
                }
            }
        }
        if let Err(error) = splitter.finish() {
            return retrieval.broke_off(request, &mut part, &format!("{url}: {error}")).await;
        }
        retrieval.request_done(request);
        Flow::Continue
    }
}

/// A WADO-RS request and what it covers: a study, a series of it, or one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WadoRequest {
    /// Path below the DICOMweb root.
    path: String,
    study: String,
    series: Option<String>,
    sop: Option<String>,
}

impl WadoRequest {
    fn covers(&self, key: &InstanceKey) -> bool {
        key.study_instance_uid == self.study
            && self.series.as_ref().is_none_or(|series| *series == key.series_instance_uid)
            && self.sop.as_ref().is_none_or(|sop| *sop == key.sop_instance_uid)
    }
}

/// Whether a retrieval goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The consumer dropped its receiver.
    Cancelled,
}

/// Where the current multipart part stands.
#[derive(Debug)]
enum PartState {
    /// No part open.
    Between,
    /// A part began; its first bytes are kept until its File Meta Information is complete.
    Meta(BytesMut),
    /// A wanted instance is being forwarded.
    Forwarding { sop_instance_uid: String },
    /// A part that is not forwarded (not asked for, sent already, or not Part 10).
    Skipping,
}

/// One retrieval's bookkeeping: what is wanted, what was sent, the sink.
struct Retrieval<'a> {
    wanted: HashMap<&'a str, &'a InstanceKey>,
    transfer_syntaxes: &'a [String],
    sink: tokio::sync::mpsc::Sender<RetrieveEvent>,
    report: RetrieveReport,
    done: std::collections::HashSet<String>,
}

impl<'a> Retrieval<'a> {
    fn new(
        instances: &'a [InstanceKey],
        transfer_syntaxes: &'a [String],
        sink: tokio::sync::mpsc::Sender<RetrieveEvent>,
    ) -> Retrieval<'a> {
        Retrieval {
            wanted: instances.iter().map(|key| (key.sop_instance_uid.as_str(), key)).collect(),
            transfer_syntaxes,
            sink,
            report: RetrieveReport::default(),
            done: std::collections::HashSet::new(),
        }
    }

    async fn send(&self, event: RetrieveEvent) -> Flow {
        if self.sink.send(event).await.is_ok() { Flow::Continue } else { Flow::Cancelled }
    }

    async fn on_event(&mut self, event: Event, part: &mut PartState) -> Flow {
        match event {
            Event::PartStart { .. } => {
                *part = PartState::Meta(BytesMut::new());
                Flow::Continue
            }
            Event::Data(bytes) => match part {
                PartState::Meta(head) => {
                    head.extend_from_slice(&bytes);
                    match file_meta::read(head) {
                        Ok(None) if head.len() <= file_meta::MAX_META_BYTES + META_PREFIX_LEN => Flow::Continue,
                        Ok(None) | Err(_) => {
                            tracing::warn!("a WADO-RS part is not a DICOM Part 10 file; dropped");
                            *part = PartState::Skipping;
                            Flow::Continue
                        }
                        Ok(Some(meta)) => {
                            let sop = meta.sop_instance_uid.clone();
                            if !self.wanted.contains_key(sop.as_str()) || self.done.contains(&sop) {
                                tracing::debug!(sop_instance_uid = %sop, "a WADO-RS part not asked for; dropped");
                                *part = PartState::Skipping;
                                return Flow::Continue;
                            }
                            let head = std::mem::take(head).freeze();
                            *part = PartState::Forwarding { sop_instance_uid: sop.clone() };
                            let begin = RetrieveEvent::Begin {
                                sop_class_uid: meta.sop_class_uid,
                                sop_instance_uid: sop,
                                transfer_syntax_uid: meta.transfer_syntax_uid,
                                part10: true,
                            };
                            if self.send(begin).await == Flow::Cancelled {
                                return Flow::Cancelled;
                            }
                            self.send(RetrieveEvent::Data(head)).await
                        }
                    }
                }
                PartState::Forwarding { .. } => self.send(RetrieveEvent::Data(bytes)).await,
                PartState::Between | PartState::Skipping => Flow::Continue,
            },
            Event::PartEnd | Event::Closed => {
                let previous = std::mem::replace(part, PartState::Between);
                if let PartState::Forwarding { sop_instance_uid } = previous {
                    if self.send(RetrieveEvent::End).await == Flow::Cancelled {
                        return Flow::Cancelled;
                    }
                    self.done.insert(sop_instance_uid.clone());
                    self.report.sent.push(sop_instance_uid);
                }
                Flow::Continue
            }
        }
    }

    /// The answer broke off: the open instance is lost, the rest of the request's instances failed.
    async fn broke_off(&mut self, request: &WadoRequest, part: &mut PartState, reason: &str) -> Flow {
        if let PartState::Forwarding { sop_instance_uid } = std::mem::replace(part, PartState::Between) {
            if self.send(RetrieveEvent::Lost(reason.to_owned())).await == Flow::Cancelled {
                return Flow::Cancelled;
            }
            self.done.insert(sop_instance_uid.clone());
            self.report.failed.push((sop_instance_uid, reason.to_owned()));
        }
        self.fail_requested(request, reason);
        Flow::Continue
    }

    /// Marks the instances `request` covers and that are not done as failed.
    fn fail_requested(&mut self, request: &WadoRequest, reason: &str) {
        let covered: Vec<&'a InstanceKey> = self.wanted.values().copied().filter(|key| request.covers(key)).collect();
        for key in covered {
            if self.done.insert(key.sop_instance_uid.clone()) {
                self.report.failed.push((key.sop_instance_uid.clone(), reason.to_owned()));
            }
        }
    }

    /// Marks every instance not done as failed.
    fn fail_pending(&mut self, reason: &str) {
        let pending: Vec<String> =
            self.wanted.keys().filter(|sop| !self.done.contains(**sop)).map(|sop| (*sop).to_owned()).collect();
        for sop in pending {
            self.done.insert(sop.clone());
            self.report.failed.push((sop, reason.to_owned()));
        }
    }

    /// A request's answer ended whole: what it should have held and did not is missing.
    fn request_done(&mut self, request: &WadoRequest) {
        self.fail_requested(request, "not in the PACS's WADO-RS answer");
    }

    fn finish(mut self) -> RetrieveReport {
        self.fail_pending("not retrieved (invalid UID)");
        self.report
    }
}

/// The Accept header asking for Part 10 instances in `transfer_syntax` (PS3.18 8.7.3.5.2), or in
/// any syntax.
fn accept_header(transfer_syntax: Option<&str>) -> String {
    format!("{MULTIPART_DICOM}; transfer-syntax={}", transfer_syntax.unwrap_or("*"))
}

/// The instances, grouped by study, in request order within each.
fn by_study(instances: &[InstanceKey]) -> BTreeMap<&str, Vec<&InstanceKey>> {
    let mut studies: BTreeMap<&str, Vec<&InstanceKey>> = BTreeMap::new();
    for key in instances {
        studies.entry(key.study_instance_uid.as_str()).or_default().push(key);
    }
    studies
}

/// A UID that can go into a URL path or query as it is: digits and dots (PS3.5 9.1), at most 64.
fn url_safe_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= MAX_UID_LEN && uid.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.')
}

impl Pacs for DicomWebPacs {
    fn describe(&self) -> String {
        format!("dicomweb {}", self.settings.url)
    }

    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence> {
        Box::pin(async move {
            if !hie_kos::is_valid_uid(study_instance_uid) {
                return Err(PacsError::UnknownStudy(study_instance_uid.to_owned()));
            }
            let mut query = format!("/studies/{study_instance_uid}/instances?");
            for (n, tag) in EVIDENCE_TAGS.iter().enumerate() {
                if n > 0 {
                    query.push('&');
                }
                query.push_str(&format!("includefield={:04X}{:04X}", tag.group(), tag.element()));
            }
            let instances = match self.qido_all(&query).await {
                // A study the PACS does not hold: 404 from some servers, an empty answer from others.
                Err(PacsError::Refused(text)) if text.ends_with("HTTP 404 Not Found") => Vec::new(),
                other => other?,
            };
            let mut instances = instances;
            for instance in &mut instances {
                clean_query_result(instance);
            }
            let listed = evidence_of(study_instance_uid, None, &instances, true)?;
            // The builder copies the patient and study attributes of the instance that sorts first.
            let (Some(series), Some(instance)) =
                (listed.series.first(), listed.series.first().and_then(|series| series.instances.first()))
            else {
                return Ok(listed);
            };
            let header =
                self.instance_metadata(study_instance_uid, &series.series_instance_uid, &instance.sop_instance_uid);
            match header.await? {
                Some(header) => evidence_of(study_instance_uid, Some(&header), &instances, false),
                None => Ok(listed),
            }
        })
    }

    fn find_instances<'a>(&'a self, instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        Box::pin(async move {
            let mut found = Vec::new();
            for (study, keys) in by_study(instances) {
                found.extend(self.find_in_study(study, &keys).await?);
            }
            Ok(found)
        })
    }

    fn retrieve<'a>(
        &'a self,
        instances: &'a [InstanceKey],
        transfer_syntaxes: &'a [String],
        sink: tokio::sync::mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(async move {
            let mut retrieval = Retrieval::new(instances, transfer_syntaxes, sink);
            for (study, keys) in by_study(instances) {
                let requests = self.plan_requests(study, &keys).await;
                for request in requests {
                    if self.wado(&request, &mut retrieval).await == Flow::Cancelled {
                        return Ok(retrieval.report);
                    }
                }
            }
            Ok(retrieval.finish())
        })
    }

    fn list_studies<'a>(&'a self, from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>> {
        Box::pin(async move {
            if from_date.len() != 8 || !from_date.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(PacsError::BadAnswer(format!("{from_date:?} is not a DICOM date")));
            }
            let query = format!("/studies?StudyDate={from_date}-&includefield=00201208");
            let studies = self.qido_all(&query).await?;
            Ok(studies
                .iter()
                .filter_map(|study| {
                    let study_instance_uid = text(study, tags::STUDY_INSTANCE_UID)?;
                    let n_instances = text(study, tags::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| n.parse().ok());
                    Some(StudySummary { study_instance_uid, n_instances })
                })
                .collect())
        })
    }
}

/// The evidence of the query results, with `header` (an instance's full metadata) added first so
/// its patient and study attributes are the ones kept. `warn`: log the results that are skipped
/// (once per study build, not on the second pass).
fn evidence_of(
    study_instance_uid: &str,
    header: Option<&InMemDicomObject>,
    instances: &[InMemDicomObject],
    warn: bool,
) -> Result<StudyEvidence, PacsError> {
    let mut builder = StudyEvidenceBuilder::for_study(study_instance_uid);
    if let Some(header) = header
        && let Err(error) = builder.add_object(header)
    {
        tracing::warn!(study = study_instance_uid, %error, "instance metadata unusable; the query's attributes are kept");
    }
    for instance in instances {
        if let Err(error) = builder.add_object(instance)
            && warn
        {
            tracing::warn!(study = study_instance_uid, %error, "skipped a QIDO result");
        }
    }
    if builder.n_instances() == 0 {
        return Err(PacsError::UnknownStudy(study_instance_uid.to_owned()));
    }
    builder.build().map_err(|error| PacsError::BadAnswer(error.to_string()))
}

/// Removes the attributes given by BulkDataURI (pixel data and other large values, PS3.18 F.2.6)
/// from a DICOM JSON data set, nested items included: the manifest copies none of them.
fn drop_bulk_data(value: &mut serde_json::Value) {
    let Some(attributes) = value.as_object_mut() else { return };
    attributes.retain(|_, attribute| attribute.get("BulkDataURI").is_none());
    for attribute in attributes.values_mut() {
        if let Some(items) = attribute.get_mut("Value").and_then(serde_json::Value::as_array_mut) {
            for item in items.iter_mut().filter(|item| item.is_object()) {
                drop_bulk_data(item);
            }
        }
    }
}

/// Reads a response body up to [`MAX_RESPONSE_BYTES`], with `timeout` per frame (a stalled server
/// is cut off; a slow but steady one is not).
async fn read_body(mut body: hyper::body::Incoming, timeout: Duration, url: &str) -> Result<Vec<u8>, PacsError> {
    let mut bytes = Vec::new();
    loop {
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .map_err(|_| PacsError::Unreachable(format!("{url}: the response stalled for {timeout:?}")))?;
        let Some(frame) = frame else { return Ok(bytes) };
        let frame = frame.map_err(|error| PacsError::Unreachable(format!("{url}: reading the response: {error}")))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > MAX_RESPONSE_BYTES {
                return Err(PacsError::BadAnswer(format!("{url}: response larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            bytes.extend_from_slice(data);
        }
    }
}
