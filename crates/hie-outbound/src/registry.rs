//! The XDS client: SOAP 1.2 with WS-Addressing to a Document Registry and Repository (ITI-41 over
//! MTOM, ITI-42, ITI-18, ITI-57), over HTTPS with our client certificate (mutual TLS; the server
//! name is always verified) or plain HTTP where configured.
//!
//! Answers are untrusted input like any request: bounded in size (a registry answer is metadata),
//! read with a timeout per frame, parsed with hie-xds's limits. A SOAP fault, an HTTP error and a
//! transport failure are told apart so the publisher can decide what to do.

use std::time::Duration;

use bytes::Bytes;
use hie_xds::messages::{
    AdhocQueryRequest, AdhocQueryResponse, ProvideAndRegisterRequest, RegistryResponse, SubmitObjectsRequest,
};
use hie_xds::soap::FaultCode;
use hie_xds::{Addressing, ReadLimits, SoapError, XdsError, XdsMessage, actions};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer read: metadata, never documents (ITI-43 is not called from here).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// One exchange, kept for the operator (the submission's "exact request and response").
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// The SOAP envelope sent (an MTOM request's root part; attachments left out).
    pub request: String,
    /// The answer's body as text, when one came.
    pub response: Option<String>,
}

/// Why a call did not give an answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No answer: connection refused or reset, TLS failure, timeout. Worth retrying.
    #[error("{0}")]
    Transport(String),
    /// An HTTP error status; 5xx and 429 are worth retrying, others not.
    #[error("HTTP {status}: {text}")]
    Http { status: u16, text: String },
    /// A SOAP fault; a Receiver fault is worth retrying, a Sender fault is our message's fault.
    #[error("SOAP fault ({}): {reason}", if *.sender { "Sender" } else { "Receiver" })]
    Fault { sender: bool, reason: String },
    /// An answer we can't read (not SOAP, not the expected body).
    #[error("unusable answer: {0}")]
    BadAnswer(String),
}

impl CallError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Http { status, .. } => *status >= 500 || *status == 429,
            CallError::Fault { sender, .. } => !sender,
            CallError::BadAnswer(_) => true,
        }
    }
}

/// A client for one registry/repository pair.
#[derive(Debug, Clone)]
pub struct XdsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl XdsClient {
    /// `tls`: our client identity and the servers' trust anchors, for https:// endpoints (an
    /// https:// call without it fails). `timeout` bounds connecting, and each wait for data.
    pub fn new(tls: Option<rustls::ClientConfig>, timeout: Duration) -> XdsClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls {
            Some(config) => builder.with_tls_config(config).https_or_http().enable_http1().wrap_connector(http),
            // No client identity: an https:// URL is refused at connect (no trust anchors).
            None => builder
                .with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        XdsClient { client, timeout }
    }

    /// ITI-41 Provide and Register (RAD-68 for a KOS), over MTOM.
    pub async fn provide_and_register(
        &self,
        url: &str,
        request: &ProvideAndRegisterRequest,
    ) -> (Result<RegistryResponse, CallError>, Exchange) {
        let message_id = message_id();
        let addressing = Addressing::request(actions::ITI41_REQUEST, &message_id, url);
        let boundary = format!("MIMEBoundary_{}", message_id.trim_start_matches("urn:uuid:"));
        let root_cid = format!("root.message@{}", message_id.trim_start_matches("urn:uuid:"));
        let outgoing = match hie_xds::write_mtom(request, &addressing, &boundary, &root_cid) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                return (Err(CallError::BadAnswer(format!("cannot write the request: {error}"))), Exchange::default());
            }
        };
        // The root part as sent (the document as an xop:Include): the KOS itself is kept in the
        // manifests table.
        let (root_body, _) = request.to_xop();
        let exchange_text =
            String::from_utf8_lossy(&hie_xds::soap::write_envelope(&addressing, &root_body)).into_owned();
        self.call::<RegistryResponse>(
            url,
            outgoing.content_type.clone(),
            outgoing.concat(),
            exchange_text,
            actions::ITI41_RESPONSE,
        )
        .await
    }

    /// ITI-42 Register Document Set-b.
    pub async fn register(
        &self,
        url: &str,
        request: &SubmitObjectsRequest,
    ) -> (Result<RegistryResponse, CallError>, Exchange) {
        self.plain(url, actions::ITI42_REQUEST, actions::ITI42_RESPONSE, request).await
    }

    /// ITI-57 Update Document Set (a deprecation).
    pub async fn update(
        &self,
        url: &str,
        request: &SubmitObjectsRequest,
    ) -> (Result<RegistryResponse, CallError>, Exchange) {
        self.plain(url, actions::ITI57_REQUEST, actions::ITI57_RESPONSE, request).await
    }

    /// ITI-18 Registry Stored Query.
    pub async fn query(
        &self,
        url: &str,
        request: &AdhocQueryRequest,
    ) -> (Result<AdhocQueryResponse, CallError>, Exchange) {
        self.plain(url, actions::ITI18_REQUEST, actions::ITI18_RESPONSE, request).await
    }

    async fn plain<Request: XdsMessage, Answer: XdsMessage>(
        &self,
        url: &str,
        action: &str,
        expected_action: &str,
        request: &Request,
    ) -> (Result<Answer, CallError>, Exchange) {
        let addressing = Addressing::request(action, &message_id(), url);
        let body = hie_xds::write_soap(request, &addressing);
        let text = String::from_utf8_lossy(&body).into_owned();
        self.call::<Answer>(url, hie_xds::soap_content_type(action), body, text, expected_action).await
    }

    async fn call<Answer: XdsMessage>(
        &self,
        url: &str,
        content_type: String,
        body: Vec<u8>,
        request_text: String,
        expected_action: &str,
    ) -> (Result<Answer, CallError>, Exchange) {
        let mut exchange = Exchange { request: request_text, response: None };
        let result = self.exchange(url, content_type, body).await.and_then(|(status, content_type, answer)| {
            exchange.response = Some(String::from_utf8_lossy(&answer).into_owned());
            read_answer::<Answer>(status, &content_type, &answer, expected_action)
        });
        (result, exchange)
    }

    async fn exchange(
        &self,
        url: &str,
        content_type: String,
        body: Vec<u8>,
    ) -> Result<(StatusCode, String, Vec<u8>), CallError> {
        let request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| CallError::Transport(format!("{url}: cannot form the request: {error}")))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| CallError::Transport(format!("{url}: no answer within {:?}", self.timeout)))?
            .map_err(|error| CallError::Transport(format!("{url}: {}", describe_chain(&error))))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| CallError::Transport(format!("{url}: the answer stalled for {:?}", self.timeout)))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|error| CallError::Transport(format!("{url}: reading the answer: {error}")))?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > MAX_ANSWER_BYTES {
                    return Err(CallError::BadAnswer(format!("{url}: answer larger than {MAX_ANSWER_BYTES} bytes")));
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok((status, content_type, bytes))
    }
}

/// Reads an answer: a SOAP fault (any status), the expected body (2xx), or an HTTP error.
fn read_answer<Answer: XdsMessage>(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    expected_action: &str,
) -> Result<Answer, CallError> {
    let limits = ReadLimits::default();
    match hie_xds::read_message::<Answer>(content_type, body, &limits) {
        Ok(received) => {
            if !status.is_success() {
                return Err(CallError::Http { status: status.as_u16(), text: "with a SOAP body".to_owned() });
            }
            let action = received.envelope.addressing.action.clone();
            if !action.is_empty() && action != expected_action {
                return Err(CallError::BadAnswer(format!("answer action {action:?}, expected {expected_action:?}")));
            }
            Ok(received.message)
        }
        Err(XdsError::Soap(SoapError::FaultReceived(fault))) => {
            Err(CallError::Fault { sender: !matches!(fault.code, FaultCode::Receiver), reason: fault.reason.clone() })
        }
        Err(error) if status.is_success() => Err(CallError::BadAnswer(error.to_string())),
        Err(_) => Err(CallError::Http {
            status: status.as_u16(),
            text: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        }),
    }
}

fn message_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// An error and its causes, for a message an operator can act on (TLS failures hide in sources).
fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
