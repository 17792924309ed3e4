//! Sans-IO XDS codec for hie-edge: bytes <-> typed messages for ITI-18, ITI-41 (RAD-68),
//! ITI-42, ITI-43, ITI-57 and RAD-69, with SOAP 1.2, WS-Addressing 1.0 and MTOM/XOP.
//! No I/O, no async; every input is bounded by explicit limits.
//!
//! Reading a request: [`read_message`] (HTTP Content-Type + body) -> [`mtom::read_message`]
//! (split parts) -> [`soap::parse_envelope`] over [`xml::parse`] (bounded tree) -> the body's
//! [`messages::XdsMessage::read`], which resolves `xop:Include` through the [`mtom::Package`].
//! Writing: [`write_soap`] (inline base64) or [`write_mtom`] (chunks, attachments borrowed).
//!
//! Modules:
//! - [`xml`]: the untrusted-input XML reader (limits, no DOCTYPE, UTF-8 only) and writer helpers.
//! - [`soap`]: SOAP 1.2 envelope, WS-Addressing headers, faults.
//! - [`mtom`]: MTOM/XOP reader (bounded part splitter, cid resolution) and chunked writer.
//! - [`ebrim`]: the typed metadata model (SubmissionSet, Folder, DocumentEntry, Association).
//! - [`messages`]: the message bodies of each transaction.
//! - [`vocabulary`]: namespaces, scheme UUIDs, stored query ids.
//! - [`error`]: XDS error codes and their client retry classes.
//! - [`actions`]: WS-Addressing actions per transaction.
//! - `test_support` (feature `test-support`): xmllint schema check of a written message.
//! - `fuzzing` (tests and `cfg(fuzzing)`): entry points that must never panic.
//!
//! Invariant: no input makes this crate panic; every failure is an [`XdsError`] that says which
//! layer refused it, and [`XdsError::to_fault`] gives the SOAP fault to answer with.

pub mod actions;
pub mod ebrim;
pub mod error;
pub mod messages;
pub mod mtom;
pub mod soap;
pub mod vocabulary;
pub mod xml;

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

#[cfg(any(test, fuzzing))]
pub mod fuzzing;

use std::borrow::Cow;

pub use ebrim::{Association, Code, DocumentEntry, EbrimError, Folder, RegistryObject, SubmissionSet};
pub use error::{ErrorCode, RetryClass};
pub use messages::XdsMessage;
pub use mtom::{MtomError, MtomLimits};
pub use soap::{Addressing, Envelope, Fault, SoapError};
pub use xml::{Limits, XmlError};

/// A message refused at one of the layers. The sender is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XdsError {
    /// The HTTP body or its MIME structure.
    #[error(transparent)]
    Mtom(#[from] MtomError),
    /// The XML or SOAP envelope.
    #[error(transparent)]
    Soap(#[from] SoapError),
    /// The body element's content.
    #[error(transparent)]
    Metadata(#[from] EbrimError),
}

impl XdsError {
    /// The SOAP fault to answer with (Sender for all but a received fault).
    pub fn to_fault(&self) -> Fault {
        match self {
            XdsError::Soap(error) => error.to_fault(),
            other => Fault::new(soap::FaultCode::Sender, None, &other.to_string()),
        }
    }
}

/// Bounds for reading one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadLimits {
    /// The MIME layer.
    pub mtom: MtomLimits,
    /// The XML of the root part.
    pub xml: Limits,
}

impl ReadLimits {
    /// Limits for a small request such as RAD-69 or ITI-43 (1 MiB in).
    pub const SMALL_REQUEST: ReadLimits = ReadLimits {
        mtom: MtomLimits { max_body_bytes: Limits::SMALL_REQUEST.max_input_bytes, ..MtomLimits::DEFAULT },
        xml: Limits::SMALL_REQUEST,
    };
}

/// A read message: its envelope (addressing, other headers) and typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a, M> {
    /// The envelope; [`Envelope::body`] is the raw body element.
    pub envelope: Envelope<'a>,
    /// The typed body.
    pub message: M,
}

/// Reads a message of type `M` from an HTTP body and its Content-Type (plain SOAP or MTOM).
/// Addressing is not checked here: servers call [`soap::check_request`], clients look at the
/// action and RelatesTo themselves. A fault body is [`SoapError::FaultReceived`].
pub fn read_message<'a, M: XdsMessage>(
    content_type: &str,
    body: &'a [u8],
    limits: &ReadLimits,
) -> Result<Received<'a, M>, XdsError> {
    let mut package = mtom::read_message(content_type, body, &limits.mtom)?;
    let envelope = soap::parse_envelope(package.root, &limits.xml)?;
    if envelope.body().is(vocabulary::NS_SOAP12, "Fault") {
        let fault = soap::read_fault_element(envelope.body())?;
        return Err(XdsError::Soap(SoapError::FaultReceived(Box::new(fault))));
    }
    let message = M::read(envelope.body(), &mut package)?;
    Ok(Received { envelope, message })
}

/// Reads a request of type `M` and checks its addressing against `supported` actions.
pub fn read_request<'a, M: XdsMessage>(
    content_type: &str,
    body: &'a [u8],
    limits: &ReadLimits,
    supported: &[&str],
) -> Result<Received<'a, M>, XdsError> {
    let mut package = mtom::read_message(content_type, body, &limits.mtom)?;
    let envelope = soap::parse_envelope(package.root, &limits.xml)?;
    soap::check_request(&envelope, supported)?;
    let message = M::read(envelope.body(), &mut package)?;
    Ok(Received { envelope, message })
}

/// A plain SOAP 1.2 message (`application/soap+xml`), documents inline as base64.
pub fn write_soap<M: XdsMessage>(message: &M, addressing: &Addressing) -> Vec<u8> {
    soap::write_envelope(addressing, &message.to_xml())
}

/// The Content-Type of a plain SOAP 1.2 message with `action` (RFC 3902).
pub fn soap_content_type(action: &str) -> String {
    format!("application/soap+xml; charset=UTF-8; action=\"{action}\"")
}

/// An MTOM message ready to send: the HTTP Content-Type and the body as chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The HTTP Content-Type header value.
    pub content_type: String,
    /// The body, in order; attachment bytes are borrowed from the message.
    pub chunks: Vec<Cow<'a, [u8]>>,
}

impl Outgoing<'_> {
    /// The whole body in one buffer (tests, small messages).
    pub fn concat(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.chunks.iter().map(|chunk| chunk.len()).sum());
        for chunk in &self.chunks {
            body.extend_from_slice(chunk);
        }
        body
    }
}

/// An MTOM/XOP message: documents as attachments. `boundary` and `root_content_id` must be
/// unique per message (derive them from the MessageID).
pub fn write_mtom<'a, M: XdsMessage>(
    message: &'a M,
    addressing: &Addressing,
    boundary: &str,
    root_content_id: &str,
) -> Result<Outgoing<'a>, MtomError> {
    let writer = mtom::MtomWriter::new(boundary, root_content_id, &addressing.action)?;
    let (body, attachments) = message.to_xop();
    let root = soap::write_envelope(addressing, &body);
    Ok(Outgoing { content_type: writer.content_type(), chunks: writer.chunks(&root, &attachments) })
}
