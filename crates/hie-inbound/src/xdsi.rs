//! `/xdsi/imaging-source` on the HTTPS listener: the XDS-I.b Imaging Document Source's retrieval
//! endpoint, answering RAD-69 Retrieve Imaging Document Set (images, streamed from the local PACS)
//! and ITI-43 Retrieve Document Set (the manifests hie-edge registered), chosen by WS-Addressing
//! Action.
//!
//! A request goes through these steps, in this order, and [`rescue`] turns whatever it came to
//! into the one answer on the wire:
//! 1. the partner is identified from the verified client certificate ([`hie_tls::PeerIdentity`],
//!    [`hie_tls::PartnerDirectory`]); an unmapped certificate is refused with a SOAP Sender fault
//!    and nothing else is done;
//! 2. the request is read within the small-request limits of `hie_xds` (1 MiB, depth, counts): a
//!    larger body is refused with 413 before it is read, a malformed one with a SOAP fault;
//! 3. each document's repository (ours) and home community (ours, when configured) are checked;
//! 4. each document is authorized against the store: only instances (RAD-69) or manifests
//!    (ITI-43) of a study's current registered manifest are served, and only to a partner allowed
//!    the transaction; everything else gets the same "unknown document" error, and no PACS
//!    request is made for it ([`plan`]);
//! 5. RAD-69: the PACS is asked which authorized instances it holds (`Pacs::find_instances`),
//!    then the retrieval starts and the answer waits for its first instance in a requested
//!    transfer syntax ([`stream`]), so the status that leads the response is known to be true;
//! 6. the answer: an MTOM/XOP RetrieveDocumentSetResponse whose root part carries the status
//!    (Success, PartialSuccess with one RegistryError per refused document, location = its UID,
//!    or Failure) and an `xop:Include` per returned document, followed by one part per document,
//!    streamed as it arrives. If the PACS fails after the status was sent, the body ends with an
//!    error so that hyper aborts the response (HTTP/1.1: the connection closes without the last
//!    chunk; HTTP/2: RST_STREAM): a consumer never receives a false Success.
//!
//! Memory per retrieval is bounded and independent of the study: a bounded channel of PACS
//! chunks and the request (at most 1 MiB); ITI-43 reads one manifest from the store at a time.
//!
//! Submodules: [`plan`] (per-document decisions, no I/O), [`stream`] (the response bodies; DIMSE
//! data sets get the Part 10 header of `hie_dicom_net::file_meta`).

pub mod plan;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hie_broker::ports::{InstanceKey, Pacs};
use hie_store::Store;
use hie_store::retrieval::RequestedInstance;
use hie_telemetry::metrics::{Kind, MetricsText};
use hie_tls::{Partner, PartnerDirectory, PeerIdentity};
use hie_xds::actions::{ITI43_REQUEST, ITI43_RESPONSE, RAD69_REQUEST, RAD69_RESPONSE};
use hie_xds::messages::{
    DocumentResponse, RegistryError, RegistryResponse, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse,
    RetrieveImagingDocumentSetRequest,
};
use hie_xds::soap::{self, Addressing, Fault, FaultCode};
use hie_xds::{ReadLimits, XdsError, XdsMessage, mtom};
use http_body_util::BodyExt as _;

use plan::{Doc, Identity};

/// The endpoint's path on the HTTPS listener.
pub const PATH: &str = "/xdsi/imaging-source";

/// The partner transaction names of `[[partners]] transactions`.
pub const RAD69: &str = "RAD-69";
pub const ITI43: &str = "ITI-43";

/// What the endpoint is configured with.
#[derive(Debug, Clone)]
pub struct XdsiSettings {
    /// Our repositoryUniqueId (`[node] repository_unique_id`).
    pub repository_unique_id: String,
    /// Our homeCommunityId (`urn:oid:...`), checked when set.
    pub home_community_id: Option<String>,
    /// Largest request body read (reliability-security S4: 1 MiB for retrieve requests).
    pub max_request_bytes: usize,
    /// Longest wait for a whole request body (a client sending 1 byte a second is cut off).
    pub request_body_timeout: Duration,
    /// PACS chunks buffered per retrieval between the PACS and the response.
    pub retrieve_buffer: usize,
}

impl XdsiSettings {
    /// The limits of reliability-security S4/S5 for `repository_unique_id`.
    pub fn new(repository_unique_id: impl Into<String>) -> XdsiSettings {
        XdsiSettings {
            repository_unique_id: repository_unique_id.into(),
            home_community_id: None,
            max_request_bytes: ReadLimits::SMALL_REQUEST.mtom.max_body_bytes,
            request_body_timeout: Duration::from_secs(30),
            retrieve_buffer: DEFAULT_RETRIEVE_BUFFER,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct XdsiStats {
    /// Requests by transaction and outcome: [RAD-69, ITI-43, other] x [`Outcome`].
    requests: [[AtomicU64; Outcome::ALL.len()]; 3],
    documents_returned: [AtomicU64; 2],
    documents_refused: [AtomicU64; 2],
    bytes_streamed: AtomicU64,
    retrievals_aborted: AtomicU64,
    pacs_lookups: AtomicU64,
    pacs_retrievals: AtomicU64,
    in_flight: AtomicU64,
    /// PACS retrieval tasks not yet ended (a cancelled one ends after its C-CANCEL or close).
    pacs_in_flight: AtomicU64,
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    PartialSuccess,
    Failure,
    /// A SOAP fault (malformed, unsupported) or an HTTP refusal (413, 408).
    Fault,
    /// The client certificate maps to no partner.
    Refused,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Success, Outcome::PartialSuccess, Outcome::Failure, Outcome::Fault, Outcome::Refused];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::PartialSuccess => "partial_success",
            Outcome::Failure => "failure",
            Outcome::Fault => "fault",
            Outcome::Refused => "refused",
        }
    }
}

/// The transaction of a request, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    Rad69,
    Iti43,
    /// Refused before the action was read.
    Unknown,
}

impl Transaction {
    fn index(self) -> usize {
        match self {
            Transaction::Rad69 => 0,
            Transaction::Iti43 => 1,
            Transaction::Unknown => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Transaction::Rad69 => RAD69,
            Transaction::Iti43 => ITI43,
            Transaction::Unknown => "unknown",
        }
    }

    fn response_action(self) -> &'static str {
        match self {
            Transaction::Rad69 => RAD69_RESPONSE,
            Transaction::Iti43 | Transaction::Unknown => ITI43_RESPONSE,
        }
    }
}

impl XdsiStats {
    fn count(&self, transaction: Transaction, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|known| *known == outcome).unwrap_or(0);
        self.requests[transaction.index()][index].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: usize) {
        self.bytes_streamed.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn aborted(&self) {
        self.retrievals_aborted.fetch_add(1, Ordering::Relaxed);
    }

    /// PACS lookups (`find_instances`) and retrievals (`retrieve`) started so far: what tests
    /// check to prove that refused requests reach no PACS.
    pub fn pacs_requests(&self) -> (u64, u64) {
        (self.pacs_lookups.load(Ordering::Relaxed), self.pacs_retrievals.load(Ordering::Relaxed))
    }

    /// Responses whose body was aborted after the status went out (PACS failure, client gone).
    pub fn aborted_retrievals(&self) -> u64 {
        self.retrievals_aborted.load(Ordering::Relaxed)
    }

    /// Answers (not aborted) in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// PACS retrievals still running, those whose answer was dropped included.
    pub fn pacs_in_flight(&self) -> u64 {
        self.pacs_in_flight.load(Ordering::Relaxed)
    }

    /// Writes the counters into a `/metrics` answer.
    pub fn render(&self, text: &mut MetricsText) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let mut samples: Vec<([(&str, &str); 2], f64)> = Vec::new();
        for transaction in [Transaction::Rad69, Transaction::Iti43, Transaction::Unknown] {
            for (index, outcome) in Outcome::ALL.iter().enumerate() {
                samples.push((
                    [("transaction", transaction.as_str()), ("outcome", outcome.as_str())],
                    load(&self.requests[transaction.index()][index]),
                ));
            }
        }
        let samples: Vec<(&[(&str, &str)], f64)> =
            samples.iter().map(|(labels, value)| (&labels[..], *value)).collect();
        text.family(
            "hie_retrieve_requests_total",
            "Retrieval requests at /xdsi/imaging-source, by transaction and outcome",
            Kind::Counter,
            &samples,
        )
        .family(
            "hie_retrieve_documents_total",
            "Documents asked for, by transaction and fate",
            Kind::Counter,
            &[
                (&[("transaction", RAD69), ("fate", "returned")], load(&self.documents_returned[0])),
                (&[("transaction", RAD69), ("fate", "refused")], load(&self.documents_refused[0])),
                (&[("transaction", ITI43), ("fate", "returned")], load(&self.documents_returned[1])),
                (&[("transaction", ITI43), ("fate", "refused")], load(&self.documents_refused[1])),
            ],
        )
        .single(
            "hie_retrieve_bytes_total",
            "Document bytes streamed to partners",
            Kind::Counter,
            load(&self.bytes_streamed),
        )
        .single(
            "hie_retrieve_aborted_total",
            "Responses aborted after their status was sent (PACS failure or client gone)",
            Kind::Counter,
            load(&self.retrievals_aborted),
        )
        .family(
            "hie_retrieve_pacs_requests_total",
            "PACS requests made for retrievals, by kind",
            Kind::Counter,
            &[
                (&[("kind", "lookup")], load(&self.pacs_lookups)),
                (&[("kind", "retrieve")], load(&self.pacs_retrievals)),
            ],
        )
        .single("hie_retrieve_in_flight", "Retrieval answers being streamed", Kind::Gauge, load(&self.in_flight))
        .single(
            "hie_retrieve_pacs_in_flight",
            "PACS retrievals running, including those still cancelling after their client left",
            Kind::Gauge,
            load(&self.pacs_in_flight),
        );
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct XdsiState {
    settings: Arc<XdsiSettings>,
    store: Store,
    pacs: Option<Arc<dyn Pacs>>,
    partners: Arc<PartnerDirectory>,
    stats: Arc<XdsiStats>,
}

impl std::fmt::Debug for XdsiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsiState")
            .field("settings", &self.settings)
            .field("pacs", &self.pacs.as_ref().map(|pacs| pacs.describe()))
            .field("partners", &self.partners.partners().len())
            .finish_non_exhaustive()
    }
}

impl XdsiState {
    /// `pacs` is `None` when no `[pacs]` is configured: RAD-69 then returns no image.
    pub fn new(
        settings: XdsiSettings,
        store: Store,
        pacs: Option<Arc<dyn Pacs>>,
        partners: Arc<PartnerDirectory>,
    ) -> XdsiState {
        XdsiState { settings: Arc::new(settings), store, pacs, partners, stats: Arc::new(XdsiStats::default()) }
    }

    pub fn stats(&self) -> Arc<XdsiStats> {
        Arc::clone(&self.stats)
    }
}

/// The router: `POST /xdsi/imaging-source`.
pub fn router(state: XdsiState) -> Router {
    Router::new().route(PATH, post(imaging_source)).with_state(state)
}

async fn imaging_source(State(state): State<XdsiState>, request: Request) -> Response {
    let started = Instant::now();
    let (transaction, partner, outcome) = handle(&state, request).await;
    rescue(&state, transaction, partner.as_deref(), outcome, started)
}

/// What a request came to, before it is put on the wire by [`rescue`].
enum Handled {
    /// The certificate maps to no partner (or the request did not come over mutual TLS).
    Unmapped,
    /// The body is larger than the limit.
    TooLarge,
    /// The body did not arrive in time.
    BodyTimeout,
    /// The request is not one we serve, or not well-formed.
    Malformed { fault: Fault, relates_to: Option<String> },
    /// Our side failed before anything was decided (the store).
    Internal { error: String, relates_to: Option<String> },
    /// An answer: the response head and what streams after it.
    Answer(Answer),
}

/// A RetrieveDocumentSetResponse to send.
struct Answer {
    relates_to: Option<String>,
    response: RetrieveDocumentSetResponse,
    content_ids: Vec<String>,
    parts: stream::Parts,
    n_requested: usize,
}

async fn handle(state: &XdsiState, request: Request) -> (Transaction, Option<String>, Handled) {
    // 1. Who is calling: nothing else happens for an unknown certificate.
    let partner = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(PeerIdentity::end_entity)
        .and_then(|certificate| state.partners.identify(certificate))
        .cloned();
    let Some(partner) = partner else {
        return (Transaction::Unknown, None, Handled::Unmapped);
    };
    let name = Some(partner.name.clone());

    // 2. The request, bounded.
    let (parts, body) = request.into_parts();
    let content_type =
        parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("").to_owned();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let max = state.settings.max_request_bytes;
    if declared.is_some_and(|length| length > u64::try_from(max).unwrap_or(u64::MAX)) {
        return (Transaction::Unknown, name, Handled::TooLarge);
    }
    let collected =
        tokio::time::timeout(state.settings.request_body_timeout, http_body_util::Limited::new(body, max).collect())
            .await;
    let bytes = match collected {
        Err(_) => return (Transaction::Unknown, name, Handled::BodyTimeout),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return (Transaction::Unknown, name, Handled::TooLarge);
        }
        Ok(Err(error)) => {
            let fault = Fault::new(FaultCode::Sender, None, &format!("the request body could not be read: {error}"));
            return (Transaction::Unknown, name, Handled::Malformed { fault, relates_to: None });
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let limits = ReadLimits::SMALL_REQUEST;
    let read = (|| -> Result<(Transaction, Option<String>, Request69Or43), XdsError> {
        let mut package = mtom::read_message(&content_type, &bytes, &limits.mtom)?;
        let envelope = soap::parse_envelope(package.root, &limits.xml)?;
        soap::check_request(&envelope, &[RAD69_REQUEST, ITI43_REQUEST])?;
        let relates_to = envelope.addressing.message_id.clone();
        if envelope.addressing.action == RAD69_REQUEST {
            let message = RetrieveImagingDocumentSetRequest::read(envelope.body(), &mut package)?;
            Ok((Transaction::Rad69, relates_to, Request69Or43::Rad69(message)))
        } else {
            let message = RetrieveDocumentSetRequest::read(envelope.body(), &mut package)?;
            Ok((Transaction::Iti43, relates_to, Request69Or43::Iti43(message)))
        }
    })();
    let (transaction, relates_to, message) = match read {
        Ok(read) => read,
        Err(error) => {
            let relates_to = relates_to_of(&bytes);
            return (Transaction::Unknown, name, Handled::Malformed { fault: error.to_fault(), relates_to });
        }
    };
    drop(bytes);
    let handled = match message {
        Request69Or43::Rad69(request) => rad69(state, &partner, relates_to, &request).await,
        Request69Or43::Iti43(request) => iti43(state, &partner, relates_to, &request).await,
    };
    (transaction, name, handled)
}

enum Request69Or43 {
    Rad69(RetrieveImagingDocumentSetRequest),
    Iti43(RetrieveDocumentSetRequest),
}

/// The MessageID of a request refused before its envelope could be read whole, when it can be
/// found: a fault then still relates to the request.
fn relates_to_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body.get(..body.len().min(RELATES_TO_SCAN)).unwrap_or_default()).ok()?;
    let start = text.find("MessageID")?;
    let open = start + text[start..].find('>')? + 1;
    let close = open + text[open..].find('<')?;
    let id = text[open..close].trim();
    (!id.is_empty() && id.len() <= 256 && id.chars().all(|character| !character.is_control())).then(|| id.to_owned())
}

fn identity(state: &XdsiState) -> Identity {
    Identity {
        repository_unique_id: state.settings.repository_unique_id.clone(),
        home_community_id: state.settings.home_community_id.clone(),
    }
}

/// RAD-69: address checks, authorization, PACS lookup, then the retrieval and its first instance.
async fn rad69(
    state: &XdsiState,
    partner: &Partner,
    relates_to: Option<String>,
    request: &RetrieveImagingDocumentSetRequest,
) -> Handled {
    let docs = plan::rad69_documents(request);
    let identity = identity(state);
    let mut refusals: Vec<Option<RegistryError>> = docs.iter().map(|doc| plan::address_error(doc, &identity)).collect();

    // Authorization: one store lookup for every document whose address is ours.
    let open: Vec<usize> = (0..docs.len()).filter(|index| refusals[*index].is_none()).collect();
    let mut authorized: Vec<Option<String>> = vec![None; docs.len()];
    if partner.allows(RAD69) && !open.is_empty() {
        let requested: Vec<RequestedInstance<'_>> = open
            .iter()
            .map(|index| &docs[*index])
            .filter(|doc| plan::plausible_uid(doc.document_unique_id))
            .map(|doc| RequestedInstance {
                study_instance_uid: doc.study_instance_uid,
                series_instance_uid: doc.series_instance_uid,
                sop_instance_uid: doc.document_unique_id,
            })
            .collect();
        match state.store.authorized_instances(&requested).await {
            Ok(rows) => {
                let by_uid: std::collections::HashMap<&str, usize> =
                    open.iter().map(|index| (docs[*index].document_unique_id, *index)).collect();
                for row in rows {
                    if let Some(index) = by_uid.get(row.sop_instance_uid.as_str()) {
                        authorized[*index] = Some(row.sop_class_uid);
                    }
                }
            }
            Err(error) => return Handled::Internal { error: format!("authorization lookup: {error}"), relates_to },
        }
    }
    for index in open {
        if authorized[index].is_none() {
            refusals[index] = Some(plan::unknown_document(&docs[index]));
        }
    }

    // Transfer syntaxes: without one usable, nothing can be given (and the PACS is not asked).
    let syntaxes = plan::usable_transfer_syntaxes(&request.transfer_syntax_uids);
    let candidates: Vec<usize> = (0..docs.len()).filter(|index| refusals[*index].is_none()).collect();
    if syntaxes.is_empty() {
        for index in &candidates {
            refusals[*index] = Some(plan::transfer_syntax_unavailable(&docs[*index], &syntaxes));
        }
    }
    let candidates: Vec<usize> = candidates.into_iter().filter(|index| refusals[*index].is_none()).collect();
    if candidates.is_empty() {
        return answer_without_parts(relates_to, &docs, refusals);
    }
    let Some(pacs) = state.pacs.clone() else {
        for index in candidates {
            refusals[index] = Some(plan::repository_error(&docs[index], "no PACS is configured"));
        }
        return answer_without_parts(relates_to, &docs, refusals);
    };

    // Which authorized instances the PACS holds now, study by study (the port's unit).
    let mut to_fetch: Vec<usize> = Vec::new();
    for study in distinct(candidates.iter().map(|index| docs[*index].study_instance_uid)) {
        let in_study: Vec<usize> =
            candidates.iter().copied().filter(|index| docs[*index].study_instance_uid == study).collect();
        let keys: Vec<InstanceKey> = in_study.iter().map(|index| key(&docs[*index])).collect();
        state.stats.pacs_lookups.fetch_add(1, Ordering::Relaxed);
        match pacs.find_instances(&keys).await {
            Ok(found) => {
                for index in in_study {
                    let doc = &docs[index];
                    match found.iter().find(|found| found.key.sop_instance_uid == doc.document_unique_id) {
                        None => refusals[index] = Some(plan::missing_document(doc)),
                        // What the PACS holds it in is known: a syntax outside the list can't be had.
                        Some(found)
                            if found
                                .stored_transfer_syntax_uid
                                .as_ref()
                                .is_some_and(|stored| !syntaxes.contains(stored)) =>
                        {
                            refusals[index] = Some(plan::transfer_syntax_unavailable(doc, &syntaxes));
                        }
                        Some(_) => to_fetch.push(index),
                    }
                }
            }
            Err(error) => {
                tracing::warn!(pacs = %pacs.describe(), %error, "PACS lookup for a retrieval failed.");
                for index in in_study {
                    refusals[index] = Some(plan::repository_error(&docs[index], "the imaging source is not reachable"));
                }
            }
        }
    }
    if to_fetch.is_empty() {
        return answer_without_parts(relates_to, &docs, refusals);
    }

    // The retrieval starts; the answer's status waits for its first instance.
    state.stats.pacs_retrievals.fetch_add(1, Ordering::Relaxed);
    let keys: Vec<InstanceKey> = to_fetch.iter().map(|index| key(&docs[*index])).collect();
    let retrieval = stream::Retrieval::start(
        pacs,
        keys,
        syntaxes.clone(),
        state.settings.retrieve_buffer,
        Arc::clone(&state.stats),
    );
    let gate = retrieval.first_instance().await;
    let mut promised = Vec::new();
    for index in to_fetch {
        let doc = &docs[index];
        match gate.refused.get(doc.document_unique_id) {
            Some(stream::Refusal::TransferSyntax) => {
                refusals[index] = Some(plan::transfer_syntax_unavailable(doc, &syntaxes))
            }
            Some(stream::Refusal::Failed(why)) => refusals[index] = Some(plan::repository_error(doc, why)),
            None => promised.push(index),
        }
    }
    let retrieval = match gate.retrieval {
        Some(retrieval) if !promised.is_empty() => retrieval,
        _ => {
            for index in promised {
                refusals[index] = Some(plan::repository_error(&docs[index], "the imaging source did not deliver it"));
            }
            return answer_without_parts(relates_to, &docs, refusals);
        }
    };
    let mut response = response_head(&docs, &refusals);
    let mut content_ids = Vec::new();
    let mut cids = std::collections::HashMap::new();
    for index in &promised {
        let doc = &docs[*index];
        let content_id = format!("{}.{}@hie-edge", content_ids.len() + 1, uuid::Uuid::new_v4().simple());
        response.documents.push(document_response(doc, &state.settings.repository_unique_id));
        cids.insert(doc.document_unique_id.to_owned(), content_id.clone());
        content_ids.push(content_id);
    }
    Handled::Answer(Answer {
        relates_to,
        response,
        content_ids,
        parts: stream::Parts::Rad69(Box::new(retrieval.into_parts(cids, syntaxes))),
        n_requested: docs.len(),
    })
}

/// ITI-43: the manifests (KOS) that are their study's current registered version.
async fn iti43(
    state: &XdsiState,
    partner: &Partner,
    relates_to: Option<String>,
    request: &RetrieveDocumentSetRequest,
) -> Handled {
    let docs = plan::iti43_documents(request);
    let identity = identity(state);
    let mut refusals: Vec<Option<RegistryError>> = docs.iter().map(|doc| plan::address_error(doc, &identity)).collect();
    let open: Vec<usize> = (0..docs.len()).filter(|index| refusals[*index].is_none()).collect();
    let mut current = std::collections::HashMap::new();
    if partner.allows(ITI43) && !open.is_empty() {
        let ids: Vec<&str> =
            open.iter().map(|index| docs[*index].document_unique_id).filter(|uid| plan::plausible_uid(uid)).collect();
        match state.store.current_manifests(&ids).await {
            Ok(rows) => {
                for row in rows {
                    current.insert(row.document_unique_id.clone(), row);
                }
            }
            Err(error) => return Handled::Internal { error: format!("authorization lookup: {error}"), relates_to },
        }
    }
    let mut response = RetrieveDocumentSetResponse::default();
    let mut manifests = Vec::new();
    let mut content_ids = Vec::new();
    for index in open {
        let doc = &docs[index];
        match current.get(doc.document_unique_id) {
            None => refusals[index] = Some(plan::unknown_document(doc)),
            Some(row) => {
                let content_id = format!("{}.{}@hie-edge", content_ids.len() + 1, uuid::Uuid::new_v4().simple());
                manifests.push(stream::Manifest {
                    content_id: content_id.clone(),
                    study_instance_uid: row.study_instance_uid.clone(),
                    version: row.version,
                });
                content_ids.push(content_id);
                response.documents.push(document_response(doc, &state.settings.repository_unique_id));
            }
        }
    }
    let head = response_head(&docs, &refusals);
    response.response = head.response;
    // ITI-43 documents come out in request order: the head lists them in that order.
    Handled::Answer(Answer {
        relates_to,
        response,
        content_ids,
        parts: stream::Parts::Iti43 { store: state.store.clone(), manifests },
        n_requested: docs.len(),
    })
}

fn key(doc: &Doc<'_>) -> InstanceKey {
    InstanceKey {
        study_instance_uid: doc.study_instance_uid.to_owned(),
        series_instance_uid: doc.series_instance_uid.to_owned(),
        sop_instance_uid: doc.document_unique_id.to_owned(),
    }
}

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

fn document_response(doc: &Doc<'_>, repository_unique_id: &str) -> DocumentResponse {
    DocumentResponse {
        home_community_id: doc.home_community_id.map(|home| home.trim().to_owned()),
        repository_unique_id: repository_unique_id.to_owned(),
        document_unique_id: doc.document_unique_id.to_owned(),
        mime_type: MIME_DICOM.to_owned(),
        ..DocumentResponse::default()
    }
}

/// The response head without documents: the errors in request order. Its status is set by
/// [`rescue`] from the documents finally listed.
fn response_head(docs: &[Doc<'_>], refusals: &[Option<RegistryError>]) -> RetrieveDocumentSetResponse {
    let errors: Vec<RegistryError> = refusals.iter().flatten().cloned().collect();
    debug_assert_eq!(refusals.len(), docs.len());
    RetrieveDocumentSetResponse {
        response: RegistryResponse { errors, ..RegistryResponse::default() },
        documents: Vec::new(),
    }
}

fn answer_without_parts(relates_to: Option<String>, docs: &[Doc<'_>], refusals: Vec<Option<RegistryError>>) -> Handled {
    let response = response_head(docs, &refusals);
    Handled::Answer(Answer {
        relates_to,
        response,
        content_ids: Vec::new(),
        parts: stream::Parts::None,
        n_requested: docs.len(),
    })
}

/// The one place that turns what a request came to into bytes on the wire, counts it and logs it.
fn rescue(
    state: &XdsiState,
    transaction: Transaction,
    partner: Option<&str>,
    handled: Handled,
    started: Instant,
) -> Response {
    let partner_name = partner.unwrap_or("-");
    let message_id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let fault_response = |status: StatusCode, fault: Fault, relates_to: Option<&str>| {
        let addressing = Addressing::response(hie_xds::actions::WSA_FAULT, &message_id, relates_to);
        let body = soap::write_fault(&fault, &addressing);
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, soap_fault_content_type());
        response
    };
    match handled {
        Handled::Unmapped => {
            state.stats.count(transaction, Outcome::Refused);
            tracing::warn!("Retrieval refused: the client certificate maps to no partner.");
            let fault = Fault::new(FaultCode::Sender, None, "the client certificate is not that of a known partner");
            fault_response(StatusCode::FORBIDDEN, fault, None)
        }
        Handled::TooLarge => {
            state.stats.count(transaction, Outcome::Fault);
            tracing::warn!(
                partner = partner_name,
                limit = state.settings.max_request_bytes,
                "Retrieval request refused: body too large."
            );
            let fault = Fault::new(
                FaultCode::Sender,
                None,
                &format!("the request is larger than {} bytes", state.settings.max_request_bytes),
            );
            fault_response(StatusCode::PAYLOAD_TOO_LARGE, fault, None)
        }
        Handled::BodyTimeout => {
            state.stats.count(transaction, Outcome::Fault);
            tracing::warn!(partner = partner_name, "Retrieval request refused: the body did not arrive in time.");
            let fault = Fault::new(FaultCode::Sender, None, "the request body did not arrive in time");
            fault_response(StatusCode::REQUEST_TIMEOUT, fault, None)
        }
        Handled::Malformed { fault, relates_to } => {
            state.stats.count(transaction, Outcome::Fault);
            tracing::info!(partner = partner_name, reason = %fault.reason, "Retrieval request refused with a SOAP fault.");
            // SOAP 1.2 Part 2 7.5.2.2: Sender faults are 400, the others 500.
            let status = if fault.code == FaultCode::Sender {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            fault_response(status, fault, relates_to.as_deref())
        }
        Handled::Internal { error, relates_to } => {
            state.stats.count(transaction, Outcome::Fault);
            tracing::error!(partner = partner_name, %error, "Retrieval failed on our side.");
            let fault = Fault::new(FaultCode::Receiver, None, "the imaging source failed; try again later");
            fault_response(StatusCode::INTERNAL_SERVER_ERROR, fault, relates_to.as_deref())
        }
        Handled::Answer(mut answer) => {
            let n_returned = answer.response.documents.len();
            let n_refused = answer.response.response.errors.len();
            answer.response.response.status = plan::status(n_returned, n_refused);
            let outcome = match (n_returned, n_refused) {
                (_, 0) if n_returned > 0 => Outcome::Success,
                (0, _) => Outcome::Failure,
                _ => Outcome::PartialSuccess,
            };
            state.stats.count(transaction, outcome);
            let which = usize::from(transaction == Transaction::Iti43);
            state.stats.documents_returned[which].fetch_add(n_returned as u64, Ordering::Relaxed);
            state.stats.documents_refused[which].fetch_add(n_refused as u64, Ordering::Relaxed);
            let addressing =
                Addressing::response(transaction.response_action(), &message_id, answer.relates_to.as_deref());
            let content_ids: Vec<&str> = answer.content_ids.iter().map(String::as_str).collect();
            let root_xml = soap::write_envelope(&addressing, &answer.response.to_xml_with_includes(&content_ids));
            let boundary = format!("MIMEBoundary_{}", uuid::Uuid::new_v4().simple());
            let root_content_id = format!("root.message.{}@hie-edge", uuid::Uuid::new_v4().simple());
            let writer = match mtom::MtomWriter::new(&boundary, &root_content_id, transaction.response_action()) {
                Ok(writer) => writer,
                Err(error) => {
                    tracing::error!(%error, "MTOM writer refused our own boundary.");
                    let fault = Fault::new(FaultCode::Receiver, None, "the imaging source failed; try again later");
                    return fault_response(StatusCode::INTERNAL_SERVER_ERROR, fault, answer.relates_to.as_deref());
                }
            };
            let log = stream::LogContext {
                partner: partner_name.to_owned(),
                transaction: transaction.as_str(),
                n_requested: answer.n_requested,
                n_returned,
                n_refused,
                status: outcome.as_str(),
                started,
            };
            let content_type = writer.content_type();
            let body = stream::body(writer, root_xml, answer.parts, Arc::clone(&state.stats), log);
            let mut response = Response::new(body);
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
    }
}

fn soap_fault_content_type() -> HeaderValue {
    HeaderValue::from_static(concat!(
        "application/soap+xml; charset=UTF-8; action=\"",
        "http://www.w3.org/2005/08/addressing/fault",
        "\""
    ))
}

/// The mimeType of RAD-69 documents and of manifests (RAD TF-3 4.69.4.2.2).
const MIME_DICOM: &str = "application/dicom";
/// Bytes of a refused request searched for its MessageID.
const RELATES_TO_SCAN: usize = 16 * 1024;
/// PACS chunks (up to 256 KiB each) buffered between the PACS and the response.
const DEFAULT_RETRIEVE_BUFFER: usize = 8;
