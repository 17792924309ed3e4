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

use std::time::Duration;

use bytes::Bytes;
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
use super::query::{EVIDENCE_TAGS, clean_query_result};

/// Results asked for per QIDO request; later pages follow with `offset`.
const PAGE: usize = 1_000;
/// Largest QIDO response body read (one page of 1,000 instances with the included attributes is
/// a few MiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Most pages followed for one query: 200,000 instances, far beyond any study.
const MAX_PAGES: usize = 200;

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

    fn find_instances<'a>(&'a self, _instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>> {
        Box::pin(std::future::ready(Err(PacsError::Refused(
            "DICOMweb instance lookup is not available yet".to_owned(),
        ))))
    }

    fn retrieve<'a>(
        &'a self,
        _instances: &'a [InstanceKey],
        _transfer_syntaxes: &'a [String],
        _sink: tokio::sync::mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport> {
        Box::pin(std::future::ready(Err(PacsError::Refused("WADO-RS retrieval is not available yet".to_owned()))))
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

fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
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
