//! SOAP 1.2 envelopes with WS-Addressing 1.0 headers, and SOAP faults (writer and reader).
//!
//! Parsing follows SOAP 1.2 Part 1: a SOAP 1.1 envelope gets a VersionMismatch fault
//! (section 5.4.7), a header block with `mustUnderstand` true that we do not process gets a
//! MustUnderstand fault (section 5.4.8), unless it is addressed to the `none` role. WS-Addressing
//! 1.0 SOAP Binding section 6 gives the faults for a missing header
//! (`wsa:MessageAddressingHeaderRequired`) and an unknown action (`wsa:ActionNotSupported`).

use crate::vocabulary::{NS_SOAP12, NS_WSA, SOAP_ROLE_NONE, WSA_ANONYMOUS};
use crate::xml::{self, Document, Element, Limits, NodeId, Position, XML_NAMESPACE, XmlError, XmlWriter};

/// The WS-Addressing headers of one message (WS-Addressing 1.0 Core section 3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addressing {
    /// wsa:Action, written with mustUnderstand="1".
    pub action: String,
    /// wsa:MessageID (`urn:uuid:...`).
    pub message_id: Option<String>,
    /// wsa:To.
    pub to: Option<String>,
    /// wsa:ReplyTo/wsa:Address.
    pub reply_to: Option<String>,
    /// wsa:RelatesTo, on responses.
    pub relates_to: Option<String>,
}

impl Addressing {
    /// Headers of a request: Action, MessageID, To, ReplyTo anonymous.
    pub fn request(action: &str, message_id: &str, to: &str) -> Addressing {
        Addressing {
            action: action.to_owned(),
            message_id: Some(message_id.to_owned()),
            to: Some(to.to_owned()),
            reply_to: Some(WSA_ANONYMOUS.to_owned()),
            relates_to: None,
        }
    }

    /// Headers of a response to the request with MessageID `relates_to`.
    pub fn response(action: &str, message_id: &str, relates_to: Option<&str>) -> Addressing {
        Addressing {
            action: action.to_owned(),
            message_id: Some(message_id.to_owned()),
            to: None,
            reply_to: None,
            relates_to: relates_to.map(str::to_owned),
        }
    }
}

/// A parsed envelope: the addressing headers, other header blocks, and the Body's child. It owns
/// the parsed [`Document`]; the elements are reached through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The WS-Addressing headers found.
    pub addressing: Addressing,
    document: Document<'a>,
    body: NodeId,
    other_headers: Vec<NodeId>,
}

impl<'a> Envelope<'a> {
    /// The one child element of soap:Body.
    pub fn body(&self) -> Element<'_> {
        self.document.element(self.body)
    }

    /// Header blocks other than WS-Addressing ones (none of them with mustUnderstand true).
    pub fn other_headers(&self) -> impl Iterator<Item = Element<'_>> + '_ {
        self.other_headers.iter().map(|id| self.document.element(*id))
    }

    /// The whole parsed document.
    pub fn document(&self) -> &Document<'a> {
        &self.document
    }
}

/// The fault codes of SOAP 1.2 Part 1 section 5.4.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultCode {
    /// The envelope's namespace is not SOAP 1.2.
    VersionMismatch,
    /// A mustUnderstand header was not understood.
    MustUnderstand,
    /// The data encoding is not supported.
    DataEncodingUnknown,
    /// The message is wrong: the sender is at fault.
    Sender,
    /// The receiver failed: the message may succeed later.
    Receiver,
}

impl FaultCode {
    /// Local name of the code in the SOAP 1.2 namespace.
    pub const fn local_name(self) -> &'static str {
        match self {
            FaultCode::VersionMismatch => "VersionMismatch",
            FaultCode::MustUnderstand => "MustUnderstand",
            FaultCode::DataEncodingUnknown => "DataEncodingUnknown",
            FaultCode::Sender => "Sender",
            FaultCode::Receiver => "Receiver",
        }
    }

    fn from_local_name(local: &str) -> Option<FaultCode> {
        [
            FaultCode::VersionMismatch,
            FaultCode::MustUnderstand,
            FaultCode::DataEncodingUnknown,
            FaultCode::Sender,
            FaultCode::Receiver,
        ]
        .into_iter()
        .find(|code| code.local_name() == local)
    }
}

/// A namespace-qualified name given as a value (fault subcodes, NotUnderstood headers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    /// Namespace URI (None if the value had no resolvable prefix).
    pub namespace: Option<String>,
    /// Local part.
    pub local: String,
}

impl QualifiedName {
    /// A name in `namespace`.
    pub fn new(namespace: &str, local: &str) -> QualifiedName {
        QualifiedName { namespace: Some(namespace.to_owned()), local: local.to_owned() }
    }
}

/// One element of the fault Detail: a qualified name and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailEntry {
    /// Element name.
    pub name: QualifiedName,
    /// Element text.
    pub text: String,
}

/// A SOAP 1.2 fault (SOAP 1.2 Part 1 section 5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// env:Code/env:Value.
    pub code: FaultCode,
    /// env:Subcode/env:Value, outermost first.
    pub subcodes: Vec<QualifiedName>,
    /// env:Reason/env:Text.
    pub reason: String,
    /// xml:lang of the reason.
    pub lang: String,
    /// env:Detail children.
    pub detail: Vec<DetailEntry>,
    /// Header blocks not understood (written as env:NotUnderstood header blocks).
    pub not_understood: Vec<QualifiedName>,
}

impl Fault {
    /// A fault with code, one optional subcode and an English reason.
    pub fn new(code: FaultCode, subcode: Option<QualifiedName>, reason: &str) -> Fault {
        Fault {
            code,
            subcodes: subcode.into_iter().collect(),
            reason: reason.to_owned(),
            lang: "en".to_owned(),
            detail: Vec::new(),
            not_understood: Vec::new(),
        }
    }
}

/// Why an envelope was refused; [`SoapError::to_fault`] gives the fault to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SoapError {
    /// The bytes are not acceptable XML (the sender is at fault).
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root is not a SOAP Envelope.
    #[error("the root element {found} is not a SOAP 1.2 Envelope")]
    NotAnEnvelope { found: String },
    /// A SOAP 1.1 (or other) envelope namespace.
    #[error("envelope namespace {namespace} is not SOAP 1.2")]
    VersionMismatch { namespace: String },
    /// Envelope structure wrong (no Body, several Body children, element order).
    #[error("envelope structure at {position}: {problem}")]
    Structure { problem: &'static str, position: Position },
    /// A header block with mustUnderstand true that we do not process.
    #[error("header block {{{}}}{} has mustUnderstand but is not understood", .header.namespace.as_deref().unwrap_or(""), .header.local)]
    MustUnderstand { header: QualifiedName },
    /// A required WS-Addressing header is missing.
    #[error("WS-Addressing header wsa:{header} is required")]
    MissingAddressingHeader { header: &'static str },
    /// A WS-Addressing header appears twice or is malformed.
    #[error("WS-Addressing header wsa:{header} is invalid: {problem}")]
    InvalidAddressingHeader { header: &'static str, problem: &'static str },
    /// The action is not one this endpoint serves.
    #[error("action {action} is not supported here")]
    ActionNotSupported { action: String },
    /// The peer answered with a fault.
    #[error("the peer answered with a SOAP fault: {} ({})", .0.reason, .0.code.local_name())]
    FaultReceived(Box<Fault>),
    /// A fault body that does not follow SOAP 1.2 Part 1 section 5.4.
    #[error("malformed SOAP fault: {problem}")]
    MalformedFault { problem: &'static str },
}

impl SoapError {
    /// The fault to send back for this error (SOAP 1.2 Part 1 5.4; WS-Addressing SOAP Binding 6).
    pub fn to_fault(&self) -> Fault {
        let wsa = |local: &str| Some(QualifiedName::new(NS_WSA, local));
        match self {
            SoapError::Xml(error) => Fault::new(FaultCode::Sender, None, &error.to_string()),
            SoapError::NotAnEnvelope { .. } | SoapError::Structure { .. } | SoapError::MalformedFault { .. } => {
                Fault::new(FaultCode::Sender, None, &self.to_string())
            }
            SoapError::VersionMismatch { .. } => Fault::new(FaultCode::VersionMismatch, None, &self.to_string()),
            SoapError::MustUnderstand { header } => {
                let mut fault = Fault::new(FaultCode::MustUnderstand, None, &self.to_string());
                fault.not_understood.push(header.clone());
                fault
            }
            SoapError::MissingAddressingHeader { header } => {
                let mut fault =
                    Fault::new(FaultCode::Sender, wsa("MessageAddressingHeaderRequired"), &self.to_string());
                fault.detail.push(DetailEntry {
                    name: QualifiedName::new(NS_WSA, "ProblemHeaderQName"),
                    text: format!("wsa:{header}"),
                });
                fault
            }
            SoapError::InvalidAddressingHeader { header, .. } => {
                let mut fault = Fault::new(FaultCode::Sender, wsa("InvalidAddressingHeader"), &self.to_string());
                fault.detail.push(DetailEntry {
                    name: QualifiedName::new(NS_WSA, "ProblemHeaderQName"),
                    text: format!("wsa:{header}"),
                });
                fault
            }
            SoapError::ActionNotSupported { action } => {
                let mut fault = Fault::new(FaultCode::Sender, wsa("ActionNotSupported"), &self.to_string());
                fault
                    .detail
                    .push(DetailEntry { name: QualifiedName::new(NS_WSA, "ProblemAction"), text: action.clone() });
                fault
            }
            SoapError::FaultReceived(fault) => (**fault).clone(),
        }
    }
}

/// Parses an envelope without addressing requirements (any direction).
pub fn parse_envelope<'a>(input: &'a [u8], limits: &Limits) -> Result<Envelope<'a>, SoapError> {
    let document = xml::parse(input, limits)?;
    envelope_from_document(document)
}

/// Parses a request: Action and MessageID are required and the action must be in `supported`.
pub fn parse_request<'a>(input: &'a [u8], limits: &Limits, supported: &[&str]) -> Result<Envelope<'a>, SoapError> {
    let envelope = parse_envelope(input, limits)?;
    check_request(&envelope, supported)?;
    Ok(envelope)
}

/// Checks the addressing of an already parsed request envelope (see [`parse_request`]).
pub fn check_request(envelope: &Envelope<'_>, supported: &[&str]) -> Result<(), SoapError> {
    if envelope.addressing.action.is_empty() {
        return Err(SoapError::MissingAddressingHeader { header: "Action" });
    }
    if envelope.addressing.message_id.is_none() {
        return Err(SoapError::MissingAddressingHeader { header: "MessageID" });
    }
    if !supported.contains(&envelope.addressing.action.as_str()) {
        return Err(SoapError::ActionNotSupported { action: envelope.addressing.action.clone() });
    }
    Ok(())
}

/// Parses a response; a Fault body becomes [`SoapError::FaultReceived`].
pub fn parse_response<'a>(input: &'a [u8], limits: &Limits) -> Result<Envelope<'a>, SoapError> {
    let envelope = parse_envelope(input, limits)?;
    if envelope.body().is(NS_SOAP12, "Fault") {
        return Err(SoapError::FaultReceived(Box::new(read_fault_element(envelope.body())?)));
    }
    Ok(envelope)
}

/// Builds the envelope from a parsed document.
pub fn envelope_from_document(document: Document<'_>) -> Result<Envelope<'_>, SoapError> {
    let (addressing, body, other_headers) = read_envelope(document.root())?;
    Ok(Envelope { addressing, document, body, other_headers })
}

fn read_envelope(root: Element<'_>) -> Result<(Addressing, NodeId, Vec<NodeId>), SoapError> {
    if root.local() != "Envelope" {
        return Err(SoapError::NotAnEnvelope { found: root.expanded_name() });
    }
    match root.namespace() {
        Some(NS_SOAP12) => {}
        Some(namespace) => return Err(SoapError::VersionMismatch { namespace: namespace.to_owned() }),
        None => return Err(SoapError::VersionMismatch { namespace: String::new() }),
    }
    let mut header = None;
    let mut body = None;
    for child in root.children() {
        let position = child.position();
        if child.is(NS_SOAP12, "Header") {
            if header.is_some() || body.is_some() {
                return Err(SoapError::Structure { problem: "Header must come once, before Body", position });
            }
            header = Some(child);
        } else if child.is(NS_SOAP12, "Body") {
            if body.is_some() {
                return Err(SoapError::Structure { problem: "more than one Body", position });
            }
            body = Some(child);
        } else {
            return Err(SoapError::Structure { problem: "only Header and Body may appear in an Envelope", position });
        }
    }
    let Some(body) = body else {
        return Err(SoapError::Structure { problem: "no Body", position: root.position() });
    };
    let mut body_children = body.children();
    let (Some(body_child), None) = (body_children.next(), body_children.next()) else {
        return Err(SoapError::Structure { problem: "Body must hold exactly one element", position: body.position() });
    };
    let mut addressing = Addressing::default();
    let mut other_headers = Vec::new();
    if let Some(header) = header {
        for block in header.children() {
            if read_header_block(block, &mut addressing)? {
                other_headers.push(block.id());
            }
        }
    }
    Ok((addressing, body_child.id(), other_headers))
}

/// Reads one header block into `addressing`; returns whether it is another (kept) block.
fn read_header_block(block: Element<'_>, addressing: &mut Addressing) -> Result<bool, SoapError> {
    if block.namespace() == Some(NS_WSA) {
        let value = block.trimmed_text().to_owned();
        let (slot, name): (&mut Option<String>, &'static str) = match block.local() {
            "Action" => {
                if !addressing.action.is_empty() {
                    return Err(SoapError::InvalidAddressingHeader { header: "Action", problem: "appears twice" });
                }
                if value.is_empty() {
                    return Err(SoapError::InvalidAddressingHeader { header: "Action", problem: "empty" });
                }
                addressing.action = value;
                return Ok(false);
            }
            "MessageID" => (&mut addressing.message_id, "MessageID"),
            "To" => (&mut addressing.to, "To"),
            "RelatesTo" => (&mut addressing.relates_to, "RelatesTo"),
            "ReplyTo" => {
                let address = block.child(NS_WSA, "Address").map(|address| address.trimmed_text().to_owned());
                let Some(address) = address else {
                    return Err(SoapError::InvalidAddressingHeader { header: "ReplyTo", problem: "no wsa:Address" });
                };
                if addressing.reply_to.replace(address).is_some() {
                    return Err(SoapError::InvalidAddressingHeader { header: "ReplyTo", problem: "appears twice" });
                }
                return Ok(false);
            }
            // Understood and not needed by a synchronous endpoint.
            "From" | "FaultTo" => return Ok(false),
            _ => {
                if must_understand(block) {
                    return Err(SoapError::MustUnderstand { header: QualifiedName::new(NS_WSA, block.local()) });
                }
                return Ok(true);
            }
        };
        if slot.replace(value).is_some() {
            return Err(SoapError::InvalidAddressingHeader { header: name, problem: "appears twice" });
        }
        return Ok(false);
    }
    if must_understand(block) {
        return Err(SoapError::MustUnderstand {
            header: QualifiedName { namespace: block.namespace().map(str::to_owned), local: block.local().to_owned() },
        });
    }
    Ok(true)
}

/// SOAP 1.2 Part 1 5.2.3: mustUnderstand is xs:boolean; blocks for the `none` role are ignored.
fn must_understand(block: Element<'_>) -> bool {
    if block.attribute_ns(NS_SOAP12, "role") == Some(SOAP_ROLE_NONE) {
        return false;
    }
    matches!(block.attribute_ns(NS_SOAP12, "mustUnderstand").map(str::trim), Some("1" | "true"))
}

/// Reads an env:Fault element (SOAP 1.2 Part 1 section 5.4); QName values resolve against the
/// declarations in scope.
pub fn read_fault_element(fault: Element<'_>) -> Result<Fault, SoapError> {
    let malformed = |problem| SoapError::MalformedFault { problem };
    let code = fault.child(NS_SOAP12, "Code").ok_or(malformed("no Code"))?;
    let value = code.child(NS_SOAP12, "Value").ok_or(malformed("no Code/Value"))?;
    let (namespace, local) = value.resolve_qname_text(value.text());
    if namespace.is_some_and(|namespace| namespace != NS_SOAP12) {
        return Err(malformed("Code/Value is not in the SOAP 1.2 namespace"));
    }
    let code_value = FaultCode::from_local_name(local).ok_or(malformed("unknown Code/Value"))?;
    let mut subcodes = Vec::new();
    let mut current = code;
    while let Some(subcode) = current.child(NS_SOAP12, "Subcode") {
        if subcodes.len() >= MAX_SUBCODES {
            return Err(malformed("too many nested Subcodes"));
        }
        let value = subcode.child(NS_SOAP12, "Value").ok_or(malformed("no Subcode/Value"))?;
        let (namespace, local) = value.resolve_qname_text(value.text());
        subcodes.push(QualifiedName { namespace: namespace.map(str::to_owned), local: local.to_owned() });
        current = subcode;
    }
    let reason = fault.child(NS_SOAP12, "Reason").ok_or(malformed("no Reason"))?;
    let text = reason.child(NS_SOAP12, "Text").ok_or(malformed("no Reason/Text"))?;
    let detail = fault
        .child(NS_SOAP12, "Detail")
        .map(|detail| {
            detail
                .children()
                .map(|entry| DetailEntry {
                    name: QualifiedName {
                        namespace: entry.namespace().map(str::to_owned),
                        local: entry.local().to_owned(),
                    },
                    text: entry.trimmed_text().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Fault {
        code: code_value,
        subcodes,
        reason: text.text().to_owned(),
        lang: text.attribute_ns(XML_NAMESPACE, "lang").unwrap_or_default().to_owned(),
        detail,
        not_understood: Vec::new(),
    })
}

/// Writes a SOAP 1.2 envelope around `body`, an XML fragment (no XML declaration) whose root
/// declares the namespaces it uses.
pub fn write_envelope(addressing: &Addressing, body: &[u8]) -> Vec<u8> {
    let mut writer = XmlWriter::new(body.len() + ENVELOPE_OVERHEAD);
    writer.start("env:Envelope", &[("xmlns:env", NS_SOAP12), ("xmlns:wsa", NS_WSA)]);
    write_header(&mut writer, addressing, &[], false);
    writer.start("env:Body", &[]);
    writer.raw(body);
    writer.end("env:Body");
    writer.end("env:Envelope");
    writer.into_inner()
}

/// Writes a fault envelope. `addressing` gives the response headers; its action is replaced by
/// the WS-Addressing fault action when empty.
pub fn write_fault(fault: &Fault, addressing: &Addressing) -> Vec<u8> {
    let mut writer = XmlWriter::new(ENVELOPE_OVERHEAD);
    writer.start("env:Envelope", &[("xmlns:env", NS_SOAP12), ("xmlns:wsa", NS_WSA)]);
    let mut addressing = addressing.clone();
    if addressing.action.is_empty() {
        addressing.action = crate::actions::WSA_FAULT.to_owned();
    }
    write_header(&mut writer, &addressing, &fault.not_understood, fault.code == FaultCode::VersionMismatch);
    writer.start("env:Body", &[]);
    writer.start("env:Fault", &[]);
    writer.start("env:Code", &[]);
    writer.text_element("env:Value", &[], &format!("env:{}", fault.code.local_name()));
    for (index, subcode) in fault.subcodes.iter().enumerate() {
        let (declaration, value) = qualified_value(subcode, index);
        let attributes: Vec<(&str, &str)> = declaration.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        writer.start("env:Subcode", &[]);
        writer.text_element("env:Value", &attributes, &value);
    }
    for _ in &fault.subcodes {
        writer.end("env:Subcode");
    }
    writer.end("env:Code");
    writer.start("env:Reason", &[]);
    writer.text_element("env:Text", &[("xml:lang", fault.lang.as_str())], &fault.reason);
    writer.end("env:Reason");
    if !fault.detail.is_empty() {
        writer.start("env:Detail", &[]);
        for (index, entry) in fault.detail.iter().enumerate() {
            let (declaration, name) = qualified_value(&entry.name, index + fault.subcodes.len());
            let attributes: Vec<(&str, &str)> = declaration.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            writer.text_element(&name, &attributes, &entry.text);
        }
        writer.end("env:Detail");
    }
    writer.end("env:Fault");
    writer.end("env:Body");
    writer.end("env:Envelope");
    writer.into_inner()
}

fn write_header(writer: &mut XmlWriter, addressing: &Addressing, not_understood: &[QualifiedName], upgrade: bool) {
    writer.start("env:Header", &[]);
    writer.text_element("wsa:Action", &[("env:mustUnderstand", "1")], &addressing.action);
    if let Some(message_id) = &addressing.message_id {
        writer.text_element("wsa:MessageID", &[], message_id);
    }
    if let Some(to) = &addressing.to {
        writer.text_element("wsa:To", &[], to);
    }
    if let Some(reply_to) = &addressing.reply_to {
        writer.start("wsa:ReplyTo", &[]);
        writer.text_element("wsa:Address", &[], reply_to);
        writer.end("wsa:ReplyTo");
    }
    if let Some(relates_to) = &addressing.relates_to {
        writer.text_element("wsa:RelatesTo", &[], relates_to);
    }
    for (index, header) in not_understood.iter().enumerate() {
        let (declaration, value) = qualified_value(header, index);
        let mut attributes: Vec<(&str, &str)> = vec![("qname", value.as_str())];
        attributes.extend(declaration.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        writer.empty("env:NotUnderstood", &attributes);
    }
    if upgrade {
        // SOAP 1.2 Part 1 5.4.7: tell the sender which envelope version we support.
        writer.start("env:Upgrade", &[]);
        writer.empty("env:SupportedEnvelope", &[("qname", "env:Envelope")]);
        writer.end("env:Upgrade");
    }
    writer.end("env:Header");
}

/// A `prefix:local` value for `name`, with the declaration of the prefix when one is needed.
fn qualified_value(name: &QualifiedName, index: usize) -> (Option<(String, String)>, String) {
    match name.namespace.as_deref() {
        Some(NS_WSA) => (None, format!("wsa:{}", name.local)),
        Some(NS_SOAP12) => (None, format!("env:{}", name.local)),
        Some(namespace) => {
            let prefix = format!("q{}", index + 1);
            (Some((format!("xmlns:{prefix}"), namespace.to_owned())), format!("{prefix}:{}", name.local))
        }
        None => (None, name.local.clone()),
    }
}

/// Nested Subcodes read from a fault (SOAP 1.2 puts no bound; peers use one or two).
const MAX_SUBCODES: usize = 8;
/// Bytes of envelope and headers around a body, to size the output buffer once.
const ENVELOPE_OVERHEAD: usize = 1024;
