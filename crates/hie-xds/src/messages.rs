//! The message bodies of the transactions: `lcm:SubmitObjectsRequest` (ITI-42, ITI-57),
//! `xdsb:ProvideAndRegisterDocumentSetRequest` (ITI-41, RAD-68), `query:AdhocQueryRequest` and
//! `query:AdhocQueryResponse` (ITI-18), `rs:RegistryResponse`, `xdsb:RetrieveDocumentSetRequest`
//! and `xdsb:RetrieveDocumentSetResponse` (ITI-43, and the RAD-69 answer), and
//! `xdsi:RetrieveImagingDocumentSetRequest` (RAD-69, RAD TF-3 4.69).
//!
//! Every type implements [`XdsMessage`]: read from the body element (with the MTOM package that
//! resolves `xop:Include`), write as a fragment that declares its own namespaces. Element order
//! follows the schemas in test_data/schema (lcm.xsd, query.xsd, rs.xsd, XDS.b and XDS-I.b).

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::ebrim::{
    EbrimError, EbrimErrorKind, RegistryObject, Slot, optional_attribute, read_registry_object_list, read_slot,
    required_attribute, write_registry_object_list, write_slots,
};
use crate::error::ErrorCode;
use crate::mtom::{Attachment, Package, cid_href};
use crate::vocabulary::{NS_LCM, NS_QUERY, NS_RIM, NS_RS, NS_XDSB, NS_XDSI, NS_XOP};
use crate::xml::{Element, XmlWriter, is_xml_whitespace};

/// How a writer puts document bytes into the XML.
#[derive(Debug, Default)]
pub enum DocumentMode<'d> {
    /// Inline base64 (a plain application/soap+xml message).
    #[default]
    Inline,
    /// `xop:Include` elements; the bytes are collected as attachments for [`crate::mtom`].
    Xop(Vec<Attachment<'d>>),
}

/// A message body this crate reads and writes.
pub trait XdsMessage: Sized {
    /// The namespace and local name of the body element.
    const ROOT: (&'static str, &'static str);

    /// Reads the body element; `package` resolves `xop:Include` (empty for plain SOAP).
    fn read(element: Element<'_>, package: &mut Package<'_>) -> Result<Self, EbrimError>;

    /// Writes the body element, declaring its namespaces on it.
    fn write<'s>(&'s self, writer: &mut XmlWriter, documents: &mut DocumentMode<'s>);

    /// The body as an XML fragment with inline documents.
    fn to_xml(&self) -> Vec<u8> {
        let mut writer = XmlWriter::without_declaration(BODY_CAPACITY);
        self.write(&mut writer, &mut DocumentMode::Inline);
        writer.into_inner()
    }

    /// The body as an XML fragment with `xop:Include`s, and the attachments they name.
    fn to_xop(&self) -> (Vec<u8>, Vec<Attachment<'_>>) {
        let mut writer = XmlWriter::without_declaration(BODY_CAPACITY);
        let mut mode = DocumentMode::Xop(Vec::new());
        self.write(&mut writer, &mut mode);
        let attachments = match mode {
            DocumentMode::Xop(attachments) => attachments,
            DocumentMode::Inline => Vec::new(),
        };
        (writer.into_inner(), attachments)
    }
}

/// Checks that `element` is the body element `T` expects.
pub fn expect_root<T: XdsMessage>(element: Element<'_>) -> Result<(), EbrimError> {
    let (namespace, local) = T::ROOT;
    if element.is(namespace, local) {
        return Ok(());
    }
    Err(EbrimError::at(element, EbrimErrorKind::UnexpectedElement { expected: local, found: element.expanded_name() }))
}

/// `lcm:SubmitObjectsRequest` (ITI-42 Register, ITI-57 Update, and inside ITI-41).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubmitObjectsRequest {
    /// rs:RequestSlotList slots.
    pub request_slots: Vec<Slot>,
    /// The registry objects, in order.
    pub objects: Vec<RegistryObject>,
}

impl XdsMessage for SubmitObjectsRequest {
    const ROOT: (&'static str, &'static str) = (NS_LCM, "SubmitObjectsRequest");

    fn read(element: Element<'_>, _package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let mut request = SubmitObjectsRequest::default();
        let mut seen_list = false;
        for child in element.children() {
            if child.is(NS_RS, "RequestSlotList") && !seen_list && request.request_slots.is_empty() {
                request.request_slots =
                    child.children_named(NS_RIM, "Slot").map(read_slot).collect::<Result<_, _>>()?;
            } else if child.is(NS_RIM, "RegistryObjectList") && !seen_list {
                request.objects = read_registry_object_list(child)?;
                seen_list = true;
            } else {
                return Err(out_of_order(element, child));
            }
        }
        if !seen_list {
            return Err(missing(element, "rim:RegistryObjectList"));
        }
        Ok(request)
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, _documents: &mut DocumentMode<'s>) {
        writer.start("lcm:SubmitObjectsRequest", &[("xmlns:lcm", NS_LCM), ("xmlns:rim", NS_RIM), ("xmlns:rs", NS_RS)]);
        self.write_content(writer);
        writer.end("lcm:SubmitObjectsRequest");
    }
}

impl SubmitObjectsRequest {
    fn write_content(&self, writer: &mut XmlWriter) {
        if !self.request_slots.is_empty() {
            writer.start("rs:RequestSlotList", &[]);
            write_slots(writer, &self.request_slots);
            writer.end("rs:RequestSlotList");
        }
        write_registry_object_list(writer, &self.objects);
    }
}

/// One document of an ITI-41 request: the DocumentEntry id it belongs to and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// The id attribute: the DocumentEntry's id.
    pub id: String,
    /// The bytes (decoded from base64, or the XOP attachment).
    pub content: Vec<u8>,
    /// The Content-Type to give the attachment when written with XOP.
    pub mime_type: String,
}

/// `xdsb:ProvideAndRegisterDocumentSetRequest` (ITI-41; RAD-68 sends a KOS this way).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvideAndRegisterRequest {
    /// The metadata.
    pub submission: SubmitObjectsRequest,
    /// The documents.
    pub documents: Vec<Document>,
}

impl XdsMessage for ProvideAndRegisterRequest {
    const ROOT: (&'static str, &'static str) = (NS_XDSB, "ProvideAndRegisterDocumentSetRequest");

    fn read(element: Element<'_>, package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let mut children = element.children();
        let Some(first) = children.next() else {
            return Err(missing(element, "lcm:SubmitObjectsRequest"));
        };
        let submission = SubmitObjectsRequest::read(first, package)?;
        let mut documents = Vec::new();
        for child in children {
            if !child.is(NS_XDSB, "Document") {
                return Err(out_of_order(element, child));
            }
            let id = required_attribute(child, "id")?.to_owned();
            let mime_type = submission
                .objects
                .iter()
                .find_map(|object| match object {
                    RegistryObject::DocumentEntry(entry) if entry.id == id => Some(entry.mime_type.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let content = read_document_content(child, &id, package, "xdsb:Document")?;
            documents.push(Document { id, content, mime_type });
        }
        Ok(ProvideAndRegisterRequest { submission, documents })
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, documents: &mut DocumentMode<'s>) {
        writer.start("xdsb:ProvideAndRegisterDocumentSetRequest", &[("xmlns:xdsb", NS_XDSB)]);
        writer.start("lcm:SubmitObjectsRequest", &[("xmlns:lcm", NS_LCM), ("xmlns:rim", NS_RIM), ("xmlns:rs", NS_RS)]);
        self.submission.write_content(writer);
        writer.end("lcm:SubmitObjectsRequest");
        for document in &self.documents {
            write_document(
                writer,
                "xdsb:Document",
                &[("id", document.id.as_str())],
                &document.content,
                &document.mime_type,
                documents,
            );
        }
        writer.end("xdsb:ProvideAndRegisterDocumentSetRequest");
    }
}

/// The status of a registry response (ebRS 3.0 ResponseStatusType; ITI TF-3 4.2.4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ResponseStatus {
    /// urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success.
    #[default]
    Success,
    /// urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure.
    Failure,
    /// urn:ihe:iti:2007:ResponseStatusType:PartialSuccess.
    PartialSuccess,
    /// Any other value, kept verbatim.
    Other(String),
}

impl ResponseStatus {
    /// The status attribute value.
    pub fn as_str(&self) -> &str {
        match self {
            ResponseStatus::Success => STATUS_SUCCESS,
            ResponseStatus::Failure => STATUS_FAILURE,
            ResponseStatus::PartialSuccess => STATUS_PARTIAL_SUCCESS,
            ResponseStatus::Other(other) => other,
        }
    }

    /// Parses a status attribute value.
    pub fn parse(value: &str) -> ResponseStatus {
        match value {
            STATUS_SUCCESS => ResponseStatus::Success,
            STATUS_FAILURE => ResponseStatus::Failure,
            STATUS_PARTIAL_SUCCESS => ResponseStatus::PartialSuccess,
            other => ResponseStatus::Other(other.to_owned()),
        }
    }
}

/// The severity of a RegistryError (rs.xsd; ITI TF-3 4.2.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Severity {
    /// urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error (the schema default).
    #[default]
    Error,
    /// urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning.
    Warning,
}

impl Severity {
    /// The severity attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Error => SEVERITY_ERROR,
            Severity::Warning => SEVERITY_WARNING,
        }
    }
}

/// One rs:RegistryError.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryError {
    /// errorCode.
    pub code: ErrorCode,
    /// codeContext: the human-readable explanation.
    pub context: String,
    /// severity.
    pub severity: Severity,
    /// location (RAD-69: the DocumentUniqueId concerned, RAD TF-3 4.69.4.2.3).
    pub location: Option<String>,
}

/// `rs:RegistryResponse` (ITI-41, ITI-42, ITI-57 responses; inside ITI-43 and RAD-69 answers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryResponse {
    /// status.
    pub status: ResponseStatus,
    /// requestId, if given.
    pub request_id: Option<String>,
    /// rs:ResponseSlotList slots.
    pub response_slots: Vec<Slot>,
    /// rs:RegistryErrorList entries.
    pub errors: Vec<RegistryError>,
}

impl XdsMessage for RegistryResponse {
    const ROOT: (&'static str, &'static str) = (NS_RS, "RegistryResponse");

    fn read(element: Element<'_>, _package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let (response, rest) = read_response_head(element)?;
        if let Some(extra) = rest.first() {
            return Err(out_of_order(element, *extra));
        }
        Ok(response)
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, _documents: &mut DocumentMode<'s>) {
        let attributes = self.attributes(&[("xmlns:rs", NS_RS), ("xmlns:rim", NS_RIM)]);
        if self.response_slots.is_empty() && self.errors.is_empty() {
            writer.empty("rs:RegistryResponse", &attributes);
            return;
        }
        writer.start("rs:RegistryResponse", &attributes);
        self.write_content(writer);
        writer.end("rs:RegistryResponse");
    }
}

impl RegistryResponse {
    /// A response with a status and no errors.
    pub fn with_status(status: ResponseStatus) -> RegistryResponse {
        RegistryResponse { status, ..RegistryResponse::default() }
    }

    fn attributes<'s>(&'s self, namespaces: &[(&'s str, &'s str)]) -> Vec<(&'s str, &'s str)> {
        let mut attributes = namespaces.to_vec();
        attributes.push(("status", self.status.as_str()));
        if let Some(request_id) = &self.request_id {
            attributes.push(("requestId", request_id.as_str()));
        }
        attributes
    }

    fn write_content(&self, writer: &mut XmlWriter) {
        if !self.response_slots.is_empty() {
            writer.start("rs:ResponseSlotList", &[]);
            write_slots(writer, &self.response_slots);
            writer.end("rs:ResponseSlotList");
        }
        if !self.errors.is_empty() {
            let highest = if self.errors.iter().any(|error| error.severity == Severity::Error) {
                Severity::Error
            } else {
                Severity::Warning
            };
            writer.start("rs:RegistryErrorList", &[("highestSeverity", highest.as_str())]);
            for error in &self.errors {
                let mut attributes = vec![
                    ("codeContext", error.context.as_str()),
                    ("errorCode", error.code.as_str()),
                    ("severity", error.severity.as_str()),
                ];
                if let Some(location) = &error.location {
                    attributes.push(("location", location.as_str()));
                }
                writer.empty("rs:RegistryError", &attributes);
            }
            writer.end("rs:RegistryErrorList");
        }
    }
}

/// Reads the RegistryResponseType part (status, slots, errors); returns the children after it.
fn read_response_head(element: Element<'_>) -> Result<(RegistryResponse, Vec<Element<'_>>), EbrimError> {
    let status = ResponseStatus::parse(required_attribute(element, "status")?);
    let mut response = RegistryResponse {
        status,
        request_id: optional_attribute(element, "requestId"),
        ..RegistryResponse::default()
    };
    let mut children = element.children().peekable();
    if let Some(child) = children.next_if(|child| child.is(NS_RS, "ResponseSlotList")) {
        response.response_slots = child.children_named(NS_RIM, "Slot").map(read_slot).collect::<Result<_, _>>()?;
    }
    if let Some(child) = children.next_if(|child| child.is(NS_RS, "RegistryErrorList")) {
        for entry in child.children() {
            if !entry.is(NS_RS, "RegistryError") {
                return Err(out_of_order(child, entry));
            }
            let severity = match entry.attribute("severity") {
                None | Some(SEVERITY_ERROR) => Severity::Error,
                Some(SEVERITY_WARNING) => Severity::Warning,
                Some(other) => {
                    return Err(EbrimError::at(
                        entry,
                        EbrimErrorKind::InvalidValue { what: "severity", value: other.to_owned() },
                    ));
                }
            };
            response.errors.push(RegistryError {
                code: ErrorCode::parse(required_attribute(entry, "errorCode")?),
                context: required_attribute(entry, "codeContext")?.to_owned(),
                severity,
                location: optional_attribute(entry, "location"),
            });
        }
    }
    Ok((response, children.collect()))
}

/// query:ResponseOption/@returnType (query.xsd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnType {
    /// Full objects.
    #[default]
    LeafClass,
    /// References only.
    ObjectRef,
    /// RegistryObject (the schema default; not used by XDS).
    RegistryObject,
    /// LeafClassWithRepositoryItem (not used by XDS).
    LeafClassWithRepositoryItem,
}

impl ReturnType {
    /// The attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReturnType::LeafClass => "LeafClass",
            ReturnType::ObjectRef => "ObjectRef",
            ReturnType::RegistryObject => "RegistryObject",
            ReturnType::LeafClassWithRepositoryItem => "LeafClassWithRepositoryItem",
        }
    }

    fn parse(value: &str) -> Option<ReturnType> {
        [
            ReturnType::LeafClass,
            ReturnType::ObjectRef,
            ReturnType::RegistryObject,
            ReturnType::LeafClassWithRepositoryItem,
        ]
        .into_iter()
        .find(|return_type| return_type.as_str() == value)
    }
}

/// `query:AdhocQueryRequest` for a stored query (ITI-18, ITI TF-2a 3.18.4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdhocQueryRequest {
    /// The stored query id (see [`crate::vocabulary`] `QUERY_*`).
    pub query_id: String,
    /// home (homeCommunityId) of the AdhocQuery, if given.
    pub home: Option<String>,
    /// returnType.
    pub return_type: ReturnType,
    /// returnComposedObjects.
    pub return_composed_objects: bool,
    /// Parameters as slots, values in the stored-query syntax (quoted strings, lists).
    pub parameters: Vec<Slot>,
}

impl AdhocQueryRequest {
    /// The values of parameter `name`, unquoted and with lists flattened.
    pub fn parameter_values(&self, name: &str) -> Vec<String> {
        self.parameters
            .iter()
            .filter(|slot| slot.name == name)
            .flat_map(|slot| slot.values.iter())
            .flat_map(|value| parse_query_values(value))
            .collect()
    }
}

/// A single-valued stored query parameter value: `'value'` with `'` doubled.
pub fn quote_query_value(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A list-valued stored query parameter value: `('a','b')`.
pub fn quote_query_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| quote_query_value(value)).collect();
    format!("({})", quoted.join(","))
}

/// Parses one stored-query Value: `'a'`, `('a','b')`, or a bare number (ITI TF-2a 3.18.4.1.2.3.5).
pub fn parse_query_values(value: &str) -> Vec<String> {
    let value = value.trim();
    let inner = value.strip_prefix('(').and_then(|inner| inner.strip_suffix(')')).unwrap_or(value);
    let mut values = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|character| character.is_whitespace() || *character == ',') {
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('\'') => {
                chars.next();
                let mut current = String::new();
                while let Some(character) = chars.next() {
                    if character == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            current.push('\'');
                        } else {
                            break;
                        }
                    } else {
                        current.push(character);
                    }
                }
                values.push(current);
            }
            Some(_) => {
                let mut current = String::new();
                while let Some(&character) = chars.peek() {
                    if character == ',' {
                        break;
                    }
                    current.push(character);
                    chars.next();
                }
                values.push(current.trim().to_owned());
            }
        }
    }
    values
}

impl XdsMessage for AdhocQueryRequest {
    const ROOT: (&'static str, &'static str) = (NS_QUERY, "AdhocQueryRequest");

    fn read(element: Element<'_>, _package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let mut children = element.children().peekable();
        if children.peek().is_some_and(|child| child.is(NS_RS, "RequestSlotList")) {
            children.next();
        }
        let option = children.next().filter(|child| child.is(NS_QUERY, "ResponseOption"));
        let Some(option) = option else {
            return Err(missing(element, "query:ResponseOption"));
        };
        let return_type = match option.attribute("returnType") {
            None => ReturnType::RegistryObject,
            Some(value) => ReturnType::parse(value).ok_or_else(|| {
                EbrimError::at(option, EbrimErrorKind::InvalidValue { what: "returnType", value: value.to_owned() })
            })?,
        };
        let return_composed_objects = parse_boolean(option, "returnComposedObjects")?;
        let Some(query) = children.next().filter(|child| child.is(NS_RIM, "AdhocQuery")) else {
            return Err(missing(element, "rim:AdhocQuery"));
        };
        if let Some(extra) = children.next() {
            return Err(out_of_order(element, extra));
        }
        let common = crate::ebrim::read_common(query, Some("QueryExpression"))?;
        Ok(AdhocQueryRequest {
            query_id: common.id,
            home: common.home,
            return_type,
            return_composed_objects,
            parameters: common.slots,
        })
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, _documents: &mut DocumentMode<'s>) {
        writer.start("query:AdhocQueryRequest", &[("xmlns:query", NS_QUERY), ("xmlns:rim", NS_RIM)]);
        writer.empty(
            "query:ResponseOption",
            &[
                ("returnComposedObjects", if self.return_composed_objects { "true" } else { "false" }),
                ("returnType", self.return_type.as_str()),
            ],
        );
        let mut attributes = vec![("id", self.query_id.as_str())];
        if let Some(home) = &self.home {
            attributes.push(("home", home.as_str()));
        }
        if self.parameters.is_empty() {
            writer.empty("rim:AdhocQuery", &attributes);
        } else {
            writer.start("rim:AdhocQuery", &attributes);
            write_slots(writer, &self.parameters);
            writer.end("rim:AdhocQuery");
        }
        writer.end("query:AdhocQueryRequest");
    }
}

/// `query:AdhocQueryResponse` (ITI-18 response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdhocQueryResponse {
    /// Status, slots and errors.
    pub response: RegistryResponse,
    /// totalResultCount, if given.
    pub total_result_count: Option<String>,
    /// The objects (LeafClass) or references (ObjectRef).
    pub objects: Vec<RegistryObject>,
}

impl XdsMessage for AdhocQueryResponse {
    const ROOT: (&'static str, &'static str) = (NS_QUERY, "AdhocQueryResponse");

    fn read(element: Element<'_>, _package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let (response, rest) = read_response_head(element)?;
        let mut rest = rest.iter();
        let Some(list) = rest.next().filter(|child| child.is(NS_RIM, "RegistryObjectList")) else {
            return Err(missing(element, "rim:RegistryObjectList"));
        };
        if let Some(extra) = rest.next() {
            return Err(out_of_order(element, *extra));
        }
        Ok(AdhocQueryResponse {
            response,
            total_result_count: optional_attribute(element, "totalResultCount"),
            objects: read_registry_object_list(*list)?,
        })
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, _documents: &mut DocumentMode<'s>) {
        let mut attributes =
            self.response.attributes(&[("xmlns:query", NS_QUERY), ("xmlns:rim", NS_RIM), ("xmlns:rs", NS_RS)]);
        if let Some(total) = &self.total_result_count {
            attributes.push(("totalResultCount", total.as_str()));
        }
        writer.start("query:AdhocQueryResponse", &attributes);
        self.response.write_content(writer);
        write_registry_object_list(writer, &self.objects);
        writer.end("query:AdhocQueryResponse");
    }
}

/// One xdsb:DocumentRequest (ITI-43; also inside RAD-69 SeriesRequest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentRequest {
    /// HomeCommunityId (XCA), if given.
    pub home_community_id: Option<String>,
    /// RepositoryUniqueId.
    pub repository_unique_id: String,
    /// DocumentUniqueId (RAD-69: the SOP Instance UID).
    pub document_unique_id: String,
}

fn read_document_request(element: Element<'_>) -> Result<DocumentRequest, EbrimError> {
    let mut children = element.children().peekable();
    let home_community_id =
        children.next_if(|child| child.is(NS_XDSB, "HomeCommunityId")).map(|child| child.trimmed_text().to_owned());
    let repository = children.next().filter(|child| child.is(NS_XDSB, "RepositoryUniqueId"));
    let Some(repository) = repository else {
        return Err(missing(element, "xdsb:RepositoryUniqueId"));
    };
    let document = children.next().filter(|child| child.is(NS_XDSB, "DocumentUniqueId"));
    let Some(document) = document else {
        return Err(missing(element, "xdsb:DocumentUniqueId"));
    };
    if let Some(extra) = children.next() {
        return Err(out_of_order(element, extra));
    }
    Ok(DocumentRequest {
        home_community_id,
        repository_unique_id: repository.trimmed_text().to_owned(),
        document_unique_id: document.trimmed_text().to_owned(),
    })
}

fn write_document_request(writer: &mut XmlWriter, request: &DocumentRequest) {
    writer.start("xdsb:DocumentRequest", &[]);
    if let Some(home) = &request.home_community_id {
        writer.text_element("xdsb:HomeCommunityId", &[], home);
    }
    writer.text_element("xdsb:RepositoryUniqueId", &[], &request.repository_unique_id);
    writer.text_element("xdsb:DocumentUniqueId", &[], &request.document_unique_id);
    writer.end("xdsb:DocumentRequest");
}

fn read_document_requests(element: Element<'_>) -> Result<Vec<DocumentRequest>, EbrimError> {
    let mut requests = Vec::with_capacity(element.n_children());
    for child in element.children() {
        if !child.is(NS_XDSB, "DocumentRequest") {
            return Err(out_of_order(element, child));
        }
        requests.push(read_document_request(child)?);
    }
    if requests.is_empty() {
        return Err(missing(element, "xdsb:DocumentRequest"));
    }
    Ok(requests)
}

/// `xdsb:RetrieveDocumentSetRequest` (ITI-43).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrieveDocumentSetRequest {
    /// The documents asked for (at least one).
    pub documents: Vec<DocumentRequest>,
}

impl XdsMessage for RetrieveDocumentSetRequest {
    const ROOT: (&'static str, &'static str) = (NS_XDSB, "RetrieveDocumentSetRequest");

    fn read(element: Element<'_>, _package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        Ok(RetrieveDocumentSetRequest { documents: read_document_requests(element)? })
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, _documents: &mut DocumentMode<'s>) {
        writer.start("xdsb:RetrieveDocumentSetRequest", &[("xmlns:xdsb", NS_XDSB)]);
        for request in &self.documents {
            write_document_request(writer, request);
        }
        writer.end("xdsb:RetrieveDocumentSetRequest");
    }
}

/// One xdsb:DocumentResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentResponse {
    /// HomeCommunityId, if given.
    pub home_community_id: Option<String>,
    /// RepositoryUniqueId.
    pub repository_unique_id: String,
    /// DocumentUniqueId.
    pub document_unique_id: String,
    /// NewRepositoryUniqueId (on-demand documents), if given.
    pub new_repository_unique_id: Option<String>,
    /// NewDocumentUniqueId (on-demand documents), if given.
    pub new_document_unique_id: Option<String>,
    /// mimeType.
    pub mime_type: String,
    /// The document bytes.
    pub document: Vec<u8>,
}

/// `xdsb:RetrieveDocumentSetResponse` (ITI-43 response, and the RAD-69 response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrieveDocumentSetResponse {
    /// Status and per-document errors (RAD-69: location = DocumentUniqueId).
    pub response: RegistryResponse,
    /// The documents returned.
    pub documents: Vec<DocumentResponse>,
}

impl XdsMessage for RetrieveDocumentSetResponse {
    const ROOT: (&'static str, &'static str) = (NS_XDSB, "RetrieveDocumentSetResponse");

    fn read(element: Element<'_>, package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let mut children = element.children();
        let Some(first) = children.next().filter(|child| child.is(NS_RS, "RegistryResponse")) else {
            return Err(missing(element, "rs:RegistryResponse"));
        };
        let response = RegistryResponse::read(first, package)?;
        let mut documents = Vec::new();
        for child in children {
            if !child.is(NS_XDSB, "DocumentResponse") {
                return Err(out_of_order(element, child));
            }
            documents.push(read_document_response(child, package)?);
        }
        Ok(RetrieveDocumentSetResponse { response, documents })
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, documents: &mut DocumentMode<'s>) {
        self.write_with(writer, |writer, response, _| {
            write_document(writer, "xdsb:Document", &[], &response.document, &response.mime_type, documents);
        });
    }
}

impl RetrieveDocumentSetResponse {
    /// The body with `xop:Include href="cid:<content_ids[i]>"` for document `i`, for a server
    /// that streams the documents afterwards with [`crate::mtom::MtomWriter`]; the `document`
    /// bytes of the responses are not used. Missing ids fall back to the document's index.
    pub fn to_xml_with_includes(&self, content_ids: &[&str]) -> Vec<u8> {
        let mut writer = XmlWriter::without_declaration(BODY_CAPACITY);
        self.write_with(&mut writer, |writer, _, index| {
            let fallback = format!("{}{ATTACHMENT_CID_SUFFIX}", index + 1);
            let content_id = content_ids.get(index).copied().unwrap_or(&fallback);
            write_include(writer, "xdsb:Document", &[], content_id);
        });
        writer.into_inner()
    }

    fn write_with<'s>(
        &'s self,
        writer: &mut XmlWriter,
        mut document: impl FnMut(&mut XmlWriter, &'s DocumentResponse, usize),
    ) {
        writer.start("xdsb:RetrieveDocumentSetResponse", &[("xmlns:xdsb", NS_XDSB)]);
        let attributes = self.response.attributes(&[("xmlns:rs", NS_RS), ("xmlns:rim", NS_RIM)]);
        if self.response.response_slots.is_empty() && self.response.errors.is_empty() {
            writer.empty("rs:RegistryResponse", &attributes);
        } else {
            writer.start("rs:RegistryResponse", &attributes);
            self.response.write_content(writer);
            writer.end("rs:RegistryResponse");
        }
        for (index, response) in self.documents.iter().enumerate() {
            writer.start("xdsb:DocumentResponse", &[]);
            if let Some(home) = &response.home_community_id {
                writer.text_element("xdsb:HomeCommunityId", &[], home);
            }
            writer.text_element("xdsb:RepositoryUniqueId", &[], &response.repository_unique_id);
            writer.text_element("xdsb:DocumentUniqueId", &[], &response.document_unique_id);
            if let Some(value) = &response.new_repository_unique_id {
                writer.text_element("xdsb:NewRepositoryUniqueId", &[], value);
            }
            if let Some(value) = &response.new_document_unique_id {
                writer.text_element("xdsb:NewDocumentUniqueId", &[], value);
            }
            writer.text_element("xdsb:mimeType", &[], &response.mime_type);
            document(writer, response, index);
            writer.end("xdsb:DocumentResponse");
        }
        writer.end("xdsb:RetrieveDocumentSetResponse");
    }
}

fn read_document_response(element: Element<'_>, package: &mut Package<'_>) -> Result<DocumentResponse, EbrimError> {
    let mut response = DocumentResponse::default();
    // XDS.b_DocumentRepository.xsd: HomeCommunityId?, RepositoryUniqueId, DocumentUniqueId,
    // NewRepositoryUniqueId?, NewDocumentUniqueId?, mimeType, Document.
    const ORDER: [&str; 7] = [
        "HomeCommunityId",
        "RepositoryUniqueId",
        "DocumentUniqueId",
        "NewRepositoryUniqueId",
        "NewDocumentUniqueId",
        "mimeType",
        "Document",
    ];
    let mut next_rank = 0;
    let mut seen = [false; 7];
    for child in element.children() {
        let rank = ORDER.iter().position(|name| child.is(NS_XDSB, name));
        let Some(rank) = rank.filter(|rank| *rank >= next_rank) else {
            return Err(out_of_order(element, child));
        };
        next_rank = rank + 1;
        seen[rank] = true;
        let text = child.trimmed_text().to_owned();
        match rank {
            0 => response.home_community_id = Some(text),
            1 => response.repository_unique_id = text,
            2 => response.document_unique_id = text,
            3 => response.new_repository_unique_id = Some(text),
            4 => response.new_document_unique_id = Some(text),
            5 => response.mime_type = text,
            _ => {
                let id = response.document_unique_id.clone();
                response.document = read_document_content(child, &id, package, "xdsb:Document")?;
            }
        }
    }
    for (rank, required) in
        [(1, "xdsb:RepositoryUniqueId"), (2, "xdsb:DocumentUniqueId"), (5, "xdsb:mimeType"), (6, "xdsb:Document")]
    {
        if !seen[rank] {
            return Err(missing(element, required));
        }
    }
    Ok(response)
}

/// One xdsi:SeriesRequest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeriesRequest {
    /// seriesInstanceUID.
    pub series_instance_uid: String,
    /// The instances asked for.
    pub documents: Vec<DocumentRequest>,
}

/// One xdsi:StudyRequest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudyRequest {
    /// studyInstanceUID.
    pub study_instance_uid: String,
    /// The series asked for.
    pub series: Vec<SeriesRequest>,
}

/// `xdsi:RetrieveImagingDocumentSetRequest` (RAD-69, RAD TF-3 4.69.4.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetrieveImagingDocumentSetRequest {
    /// Studies.
    pub studies: Vec<StudyRequest>,
    /// TransferSyntaxUIDList, in the requester's order of preference.
    pub transfer_syntax_uids: Vec<String>,
}

impl XdsMessage for RetrieveImagingDocumentSetRequest {
    const ROOT: (&'static str, &'static str) = (NS_XDSI, "RetrieveImagingDocumentSetRequest");

    fn read(element: Element<'_>, _package: &mut Package<'_>) -> Result<Self, EbrimError> {
        expect_root::<Self>(element)?;
        let mut request = RetrieveImagingDocumentSetRequest::default();
        let mut seen_syntaxes = false;
        for child in element.children() {
            if child.is(NS_XDSI, "StudyRequest") && !seen_syntaxes {
                let mut study = StudyRequest {
                    study_instance_uid: required_attribute(child, "studyInstanceUID")?.to_owned(),
                    series: Vec::new(),
                };
                for series in child.children() {
                    if !series.is(NS_XDSI, "SeriesRequest") {
                        return Err(out_of_order(child, series));
                    }
                    study.series.push(SeriesRequest {
                        series_instance_uid: required_attribute(series, "seriesInstanceUID")?.to_owned(),
                        documents: read_document_requests(series)?,
                    });
                }
                if study.series.is_empty() {
                    return Err(missing(child, "xdsi:SeriesRequest"));
                }
                request.studies.push(study);
            } else if child.is(NS_XDSI, "TransferSyntaxUIDList") && !seen_syntaxes && !request.studies.is_empty() {
                seen_syntaxes = true;
                for syntax in child.children() {
                    if !syntax.is(NS_XDSI, "TransferSyntaxUID") {
                        return Err(out_of_order(child, syntax));
                    }
                    request.transfer_syntax_uids.push(syntax.trimmed_text().to_owned());
                }
            } else {
                return Err(out_of_order(element, child));
            }
        }
        if !seen_syntaxes {
            return Err(missing(element, "xdsi:TransferSyntaxUIDList"));
        }
        Ok(request)
    }

    fn write<'s>(&'s self, writer: &mut XmlWriter, _documents: &mut DocumentMode<'s>) {
        writer.start("xdsi:RetrieveImagingDocumentSetRequest", &[("xmlns:xdsi", NS_XDSI), ("xmlns:xdsb", NS_XDSB)]);
        for study in &self.studies {
            writer.start("xdsi:StudyRequest", &[("studyInstanceUID", study.study_instance_uid.as_str())]);
            for series in &study.series {
                writer.start("xdsi:SeriesRequest", &[("seriesInstanceUID", series.series_instance_uid.as_str())]);
                for request in &series.documents {
                    write_document_request(writer, request);
                }
                writer.end("xdsi:SeriesRequest");
            }
            writer.end("xdsi:StudyRequest");
        }
        writer.start("xdsi:TransferSyntaxUIDList", &[]);
        for syntax in &self.transfer_syntax_uids {
            writer.text_element("xdsi:TransferSyntaxUID", &[], syntax);
        }
        writer.end("xdsi:TransferSyntaxUIDList");
        writer.end("xdsi:RetrieveImagingDocumentSetRequest");
    }
}

/// Reads a base64Binary element that may instead hold one `xop:Include` (XOP 1.0 section 3).
fn read_document_content(
    element: Element<'_>,
    id: &str,
    package: &mut Package<'_>,
    name: &'static str,
) -> Result<Vec<u8>, EbrimError> {
    let text = element.trimmed_text();
    let mut children = element.children();
    match (children.next(), children.next()) {
        (None, _) => {
            decode_base64(text).ok_or_else(|| EbrimError::at(element, EbrimErrorKind::InvalidBase64 { element: name }))
        }
        (Some(include), None) if include.is(NS_XOP, "Include") => {
            if !text.is_empty() {
                return Err(EbrimError::at(element, EbrimErrorKind::InlineAndInclude { id: id.to_owned() }));
            }
            let href = required_attribute(include, "href")?;
            let bytes = package.resolve(href).map_err(|error| EbrimError::at(include, EbrimErrorKind::Mtom(error)))?;
            Ok(bytes.to_vec())
        }
        (Some(first), _) => Err(out_of_order(element, first)),
    }
}

/// Decodes base64 text, ignoring XML whitespace (line breaks are common in inline documents).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: Cow<'_, str> = if text.contains(is_xml_whitespace) {
        Cow::Owned(text.chars().filter(|character| !is_xml_whitespace(*character)).collect())
    } else {
        Cow::Borrowed(text)
    };
    BASE64.decode(compact.as_bytes()).ok()
}

fn write_document<'s>(
    writer: &mut XmlWriter,
    name: &str,
    attributes: &[(&str, &str)],
    content: &'s [u8],
    mime_type: &str,
    documents: &mut DocumentMode<'s>,
) {
    match documents {
        DocumentMode::Inline => {
            writer.start(name, attributes);
            writer.raw_text(&BASE64.encode(content));
            writer.end(name);
        }
        DocumentMode::Xop(attachments) => {
            let content_id = format!("{}{ATTACHMENT_CID_SUFFIX}", attachments.len() + 1);
            write_include(writer, name, attributes, &content_id);
            let content_type = if mime_type.is_empty() { DEFAULT_ATTACHMENT_TYPE } else { mime_type };
            attachments.push(Attachment { content_id, content_type: content_type.to_owned(), bytes: content });
        }
    }
}

fn write_include(writer: &mut XmlWriter, name: &str, attributes: &[(&str, &str)], content_id: &str) {
    writer.start(name, attributes);
    let href = cid_href(content_id);
    writer.empty("xop:Include", &[("xmlns:xop", NS_XOP), ("href", href.as_str())]);
    writer.end(name);
}

fn parse_boolean(element: Element<'_>, name: &'static str) -> Result<bool, EbrimError> {
    match element.attribute(name).map(str::trim) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => {
            Err(EbrimError::at(element, EbrimErrorKind::InvalidValue { what: name, value: other.to_owned() }))
        }
    }
}

fn missing(element: Element<'_>, what: &'static str) -> EbrimError {
    EbrimError::at(element, EbrimErrorKind::MissingElement { parent: element.expanded_name(), missing: what })
}

fn out_of_order(parent: Element<'_>, child: Element<'_>) -> EbrimError {
    EbrimError::at(child, EbrimErrorKind::OutOfOrder { parent: parent.expanded_name(), element: child.expanded_name() })
}

/// Response status values (ebRS 3.0 section 2.1.3; ITI TF-3 4.2.4.2 for PartialSuccess).
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";
/// Failure.
pub const STATUS_FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
/// PartialSuccess.
pub const STATUS_PARTIAL_SUCCESS: &str = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess";
/// Severity values (rs.xsd).
pub const SEVERITY_ERROR: &str = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error";
/// Warning.
pub const SEVERITY_WARNING: &str = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning";
/// Content-ID domain of the attachments this crate writes.
const ATTACHMENT_CID_SUFFIX: &str = ".document@hie-xds";
/// Attachment type when a document has no mimeType.
const DEFAULT_ATTACHMENT_TYPE: &str = "application/octet-stream";
/// Initial output buffer for a body.
const BODY_CAPACITY: usize = 16 * 1024;
