//! The SOAP edge: an axum [`Router`] with `POST /xds/registry` (ITI-18, ITI-42, ITI-57) and
//! `POST /xds/repository` (ITI-41, ITI-43), dispatched by the WS-Addressing Action.
//!
//! A request is read in two steps so that the action picks the body type: the MIME layer and the
//! envelope (plain `application/soap+xml` or MTOM `multipart/related`, bounded by the body cap
//! and hie-xds's XML and MIME limits), the addressing check (Action and MessageID present, the
//! action served here), then the body. Envelope-level problems are SOAP faults (VersionMismatch,
//! MustUnderstand, Sender with wsa:ActionNotSupported or wsa:MessageAddressingHeaderRequired);
//! a body larger than the cap is HTTP 413 before anything is parsed.
//!
//! Answers carry the response action and RelatesTo the request's MessageID. The response has the
//! request's format, the rule the XDS.b profile set (IHE wiki "XDS.b Implementation", MTOM/XOP vs
//! simple SOAP): an MTOM request (ITI-41 always is, ITI TF-2b 3.41.5) gets an MTOM answer, a plain
//! one a plain answer; and an ITI-43 answer is always MTOM/XOP with the documents as attachments
//! (ITI TF-2b 3.43.5), whatever the request's packaging.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use hie_xds::actions::{self, Transaction};
use hie_xds::messages::{
    AdhocQueryRequest, ProvideAndRegisterRequest, RetrieveDocumentSetRequest, RetrieveDocumentSetResponse,
    SubmitObjectsRequest, XdsMessage,
};
use hie_xds::mtom::{self, ContentType, MtomLimits, MtomWriter, Package};
use hie_xds::soap::{self, Addressing, Envelope};
use hie_xds::xml::Limits;
use hie_xds::{EbrimError, ReadLimits, XdsError};

use crate::rescue;
use crate::{Inner, RefRegistry, ids};

/// Path of the Document Registry service.
pub const REGISTRY_PATH: &str = "/xds/registry";
/// Path of the Document Repository service.
pub const REPOSITORY_PATH: &str = "/xds/repository";

pub(crate) fn router(registry: Arc<Inner>) -> Router {
    let max_request_bytes = registry.config.max_request_bytes;
    Router::new()
        .route(REGISTRY_PATH, post(registry_endpoint))
        .route(REPOSITORY_PATH, post(repository_endpoint))
        // Larger bodies get 413 before a byte of them is buffered past the cap.
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(registry)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Registry,
    Repository,
}

impl Endpoint {
    fn actions(self) -> &'static [&'static str] {
        match self {
            Endpoint::Registry => &[actions::ITI18_REQUEST, actions::ITI42_REQUEST, actions::ITI57_REQUEST],
            Endpoint::Repository => &[actions::ITI41_REQUEST, actions::ITI43_REQUEST],
        }
    }

    fn path(self) -> &'static str {
        match self {
            Endpoint::Registry => REGISTRY_PATH,
            Endpoint::Repository => REPOSITORY_PATH,
        }
    }
}

async fn registry_endpoint(State(registry): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(registry, Endpoint::Registry, &headers, &body).await
}

async fn repository_endpoint(State(registry): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(registry, Endpoint::Repository, &headers, &body).await
}

/// A request whose envelope and addressing were accepted.
struct Request<'a> {
    transaction: Transaction,
    envelope: Envelope<'a>,
    package: Package<'a>,
    mtom: bool,
}

impl Request<'_> {
    fn message_id(&self) -> Option<&str> {
        self.envelope.addressing.message_id.as_deref()
    }
}

async fn serve(registry: Arc<Inner>, endpoint: Endpoint, headers: &HeaderMap, body: &[u8]) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let limits = ReadLimits {
        mtom: MtomLimits { max_body_bytes: registry.config.max_request_bytes, ..MtomLimits::DEFAULT },
        xml: Limits::DEFAULT.with_max_input(registry.config.max_request_bytes),
    };
    let mut request = match read_request(content_type, body, &limits, endpoint) {
        Ok(request) => request,
        Err((error, relates_to)) => return fault_response(&error, endpoint, relates_to.as_deref()),
    };
    let registry = RefRegistry { inner: registry };
    let relates_to = request.message_id().map(str::to_owned);
    let relates_to = relates_to.as_deref();
    let mtom = request.mtom;
    match request.transaction {
        Transaction::Iti42Register | Transaction::Iti57UpdateDocumentSet => {
            let transaction = request.transaction;
            let response = match read_body::<SubmitObjectsRequest>(&mut request) {
                Ok(submission) if transaction == Transaction::Iti42Register => registry.register(&submission).await,
                Ok(submission) => registry.update(&submission).await,
                Err(BodyError::Packaging(error)) => {
                    return fault_response(&XdsError::Metadata(error), endpoint, relates_to);
                }
                Err(BodyError::Metadata(error)) => rescue::unreadable_submission(&error, label(transaction)),
            };
            answer(&response, transaction, relates_to, mtom)
        }
        Transaction::Iti41ProvideAndRegister => {
            let response = match read_body::<ProvideAndRegisterRequest>(&mut request) {
                Ok(submission) => registry.provide_and_register(submission).await,
                Err(BodyError::Packaging(error)) => {
                    return fault_response(&XdsError::Metadata(error), endpoint, relates_to);
                }
                Err(BodyError::Metadata(error)) => rescue::unreadable_submission(&error, "ITI-41"),
            };
            answer(&response, Transaction::Iti41ProvideAndRegister, relates_to, mtom)
        }
        Transaction::Iti18StoredQuery => match read_body::<AdhocQueryRequest>(&mut request) {
            Ok(query) => answer(&registry.query(&query).await, Transaction::Iti18StoredQuery, relates_to, mtom),
            Err(BodyError::Packaging(error) | BodyError::Metadata(error)) => {
                fault_response(&XdsError::Metadata(error), endpoint, relates_to)
            }
        },
        Transaction::Iti43Retrieve => match read_body::<RetrieveDocumentSetRequest>(&mut request) {
            Ok(retrieve) => retrieve_answer(registry.retrieve(&retrieve).await, relates_to),
            Err(BodyError::Packaging(error) | BodyError::Metadata(error)) => {
                fault_response(&XdsError::Metadata(error), endpoint, relates_to)
            }
        },
        // The endpoint's action list admits nothing else.
        _ => fault_response(
            &XdsError::Soap(hie_xds::SoapError::ActionNotSupported {
                action: request.envelope.addressing.action.clone(),
            }),
            endpoint,
            relates_to,
        ),
    }
}

/// The MIME layer, envelope and addressing. On error, the fault's RelatesTo when the envelope
/// was read far enough to have a MessageID.
fn read_request<'a>(
    content_type: &str,
    body: &'a [u8],
    limits: &ReadLimits,
    endpoint: Endpoint,
) -> Result<Request<'a>, (XdsError, Option<String>)> {
    let media_type = ContentType::parse(content_type).map(|parsed| parsed.media_type).unwrap_or_default();
    // SOAP 1.1 comes as text/xml: read it far enough to answer VersionMismatch (SOAP 1.2 Part 1 5.4.7).
    let content_type = if media_type == MEDIA_TEXT_XML { MEDIA_SOAP_XML } else { content_type };
    let package =
        mtom::read_message(content_type, body, &limits.mtom).map_err(|error| (XdsError::Mtom(error), None))?;
    let envelope = soap::parse_envelope(package.root, &limits.xml).map_err(|error| (XdsError::Soap(error), None))?;
    if let Err(error) = soap::check_request(&envelope, endpoint.actions()) {
        return Err((XdsError::Soap(error), envelope.addressing.message_id.clone()));
    }
    let Some(transaction) = Transaction::from_request_action(&envelope.addressing.action) else {
        let error = hie_xds::SoapError::ActionNotSupported { action: envelope.addressing.action.clone() };
        return Err((XdsError::Soap(error), envelope.addressing.message_id.clone()));
    };
    Ok(Request { transaction, envelope, package, mtom: media_type == MEDIA_MULTIPART_RELATED })
}

enum BodyError {
    /// XOP or base64: the packaging, a SOAP-level fault.
    Packaging(EbrimError),
    /// The metadata itself.
    Metadata(EbrimError),
}

fn read_body<M: XdsMessage>(request: &mut Request<'_>) -> Result<M, BodyError> {
    let body = request.envelope.body();
    let (namespace, local) = M::ROOT;
    if !body.is(namespace, local) {
        // A body that is not the action's message is the sender's mistake at the SOAP level.
        return Err(BodyError::Packaging(EbrimError {
            kind: hie_xds::ebrim::EbrimErrorKind::UnexpectedElement { expected: local, found: body.expanded_name() },
            position: body.position(),
        }));
    }
    M::read(body, &mut request.package).map_err(|error| {
        if rescue::is_packaging_error(&error) { BodyError::Packaging(error) } else { BodyError::Metadata(error) }
    })
}

fn label(transaction: Transaction) -> &'static str {
    match transaction {
        Transaction::Iti57UpdateDocumentSet => "ITI-57",
        _ => "ITI-42",
    }
}

/// A message answered as plain SOAP or MTOM.
fn answer<M: XdsMessage>(message: &M, transaction: Transaction, relates_to: Option<&str>, mtom: bool) -> Response {
    let message_id = ids::new_uuid();
    let addressing = Addressing::response(transaction.response_action(), &message_id, relates_to);
    if mtom {
        let (boundary, root) = mtom_names(&message_id);
        if let Ok(outgoing) = hie_xds::write_mtom(message, &addressing, &boundary, &root) {
            return http_response(StatusCode::OK, &outgoing.content_type, Body::from(outgoing.concat()));
        }
        // The boundary is ours and valid; fall through to plain SOAP should the writer refuse it.
    }
    let body = hie_xds::write_soap(message, &addressing);
    http_response(StatusCode::OK, &hie_xds::soap_content_type(transaction.response_action()), Body::from(body))
}

/// ITI-43: always MTOM, each document moved into its own body chunk (no copy of the bytes).
fn retrieve_answer(response: RetrieveDocumentSetResponse, relates_to: Option<&str>) -> Response {
    let message_id = ids::new_uuid();
    let addressing = Addressing::response(actions::ITI43_RESPONSE, &message_id, relates_to);
    let (boundary, root) = mtom_names(&message_id);
    let Ok(writer) = MtomWriter::new(&boundary, &root, actions::ITI43_RESPONSE) else {
        return answer(&response, Transaction::Iti43Retrieve, relates_to, false);
    };
    let content_ids: Vec<String> = (1..=response.documents.len()).map(|index| format!("{index}.{}", &root)).collect();
    let content_id_refs: Vec<&str> = content_ids.iter().map(String::as_str).collect();
    let envelope = soap::write_envelope(&addressing, &response.to_xml_with_includes(&content_id_refs));
    let mut chunks: Vec<Bytes> = Vec::with_capacity(2 + 2 * response.documents.len());
    chunks.push(Bytes::from(writer.head(&envelope)));
    for (document, content_id) in response.documents.into_iter().zip(&content_ids) {
        let content_type = if document.mime_type.is_empty() { DEFAULT_ATTACHMENT_TYPE } else { &document.mime_type };
        chunks.push(Bytes::from(writer.part_header(content_id, content_type)));
        chunks.push(Bytes::from(document.document));
    }
    chunks.push(Bytes::from(writer.closing()));
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<Bytes, Infallible>));
    http_response(StatusCode::OK, &writer.content_type(), Body::from_stream(stream))
}

/// Boundary and root Content-ID derived from the response's MessageID (unique per message).
fn mtom_names(message_id: &str) -> (String, String) {
    let token: String = message_id.trim_start_matches(ids::UUID_URN_PREFIX).chars().filter(|c| *c != '-').collect();
    (format!("MIMEBoundary_{token}"), format!("root.{token}@hie-refregistry"))
}

fn fault_response(error: &XdsError, endpoint: Endpoint, relates_to: Option<&str>) -> Response {
    let (status, fault) = rescue::fault(error, endpoint.path());
    let message_id = ids::new_uuid();
    let addressing =
        Addressing { message_id: Some(message_id), relates_to: relates_to.map(str::to_owned), ..Addressing::default() };
    let body = soap::write_fault(&fault, &addressing);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    http_response(status, &hie_xds::soap_content_type(actions::WSA_FAULT), Body::from(body))
}

fn http_response(status: StatusCode, content_type: &str, body: Body) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

const MEDIA_TEXT_XML: &str = "text/xml";
const MEDIA_SOAP_XML: &str = "application/soap+xml";
const MEDIA_MULTIPART_RELATED: &str = "multipart/related";
/// Attachment type of a document stored without a mimeType.
const DEFAULT_ATTACHMENT_TYPE: &str = "application/octet-stream";
