//! The untrusted-input XML reader and the writing helpers every message of this crate uses.
//!
//! [`parse`] turns bytes into a small owned tree ([`Element`]) with namespace-resolved names.
//! Every limit in [`Limits`] is checked while reading, before anything is allocated for the
//! offending construct, and the build is iterative (an explicit stack), so deep input cannot
//! overflow the call stack. Refused outright, as SOAP 1.2 Part 1 section 5 requires for a SOAP
//! message: any DOCTYPE (which also rules out internal, parameter and external entities),
//! processing instructions other than the XML declaration, and any encoding but UTF-8.
//!
//! Text and attribute values borrow from the input unless an escape had to be expanded, so a
//! large inline document costs no copy here.
//!
//! [`XmlWriter`] wraps quick-xml's `Writer` with the escaping rules of XML 1.0 section 2.4.

use std::borrow::Cow;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Hard limits for one XML document. Each is checked before the construct it bounds is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total input size in bytes.
    pub max_input_bytes: usize,
    /// Element nesting depth (the root is depth 1).
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// Namespace declarations (`xmlns`, `xmlns:p`) on one element.
    pub max_namespace_declarations: usize,
    /// Bytes of one attribute value, before unescaping.
    pub max_attribute_bytes: usize,
    /// Bytes of the text content of one element (all its text nodes together).
    pub max_text_bytes: usize,
    /// Bytes of one qualified element or attribute name.
    pub max_name_bytes: usize,
    /// Elements in the whole document.
    pub max_elements: usize,
}

impl Limits {
    /// Defaults sized for an ITI-41 request with inline documents: 64 MiB in, depth 64.
    pub const DEFAULT: Limits = Limits {
        max_input_bytes: 64 * MIB,
        max_depth: 64,
        max_attributes: 64,
        max_namespace_declarations: 32,
        max_attribute_bytes: 64 * KIB,
        max_text_bytes: 64 * MIB,
        max_name_bytes: 1024,
        max_elements: 1_000_000,
    };

    /// Limits for small requests such as RAD-69 and ITI-43 (reliability-security S4: 1 MiB).
    pub const SMALL_REQUEST: Limits =
        Limits { max_input_bytes: MIB, max_text_bytes: MIB, max_elements: 100_000, ..Limits::DEFAULT };

    /// Returns these limits with a different total input cap (text capped by it too).
    pub const fn with_max_input(self, max_input_bytes: usize) -> Limits {
        Limits {
            max_input_bytes,
            max_text_bytes: if self.max_text_bytes < max_input_bytes { self.max_text_bytes } else { max_input_bytes },
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Where in the input an error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 0-based byte offset.
    pub offset: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, byte {}", self.line, self.offset)
    }
}

/// The input is not XML we accept. The sender is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("XML refused at {position}: {kind}")]
pub struct XmlError {
    /// What is wrong.
    pub kind: XmlErrorKind,
    /// Where.
    pub position: Position,
}

/// What is wrong with an XML input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlErrorKind {
    /// The whole input is larger than [`Limits::max_input_bytes`].
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    InputTooLarge { size: usize, limit: usize },
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("element nesting exceeds the depth limit of {limit}")]
    TooDeep { limit: usize },
    /// More elements than [`Limits::max_elements`].
    #[error("more than {limit} elements")]
    TooManyElements { limit: usize },
    /// More attributes on one element than [`Limits::max_attributes`].
    #[error("more than {limit} attributes on one element")]
    TooManyAttributes { limit: usize },
    /// More namespace declarations on one element than [`Limits::max_namespace_declarations`].
    #[error("more than {limit} namespace declarations on one element")]
    TooManyNamespaceDeclarations { limit: usize },
    /// An attribute value longer than [`Limits::max_attribute_bytes`].
    #[error("an attribute value exceeds {limit} bytes")]
    AttributeTooLong { limit: usize },
    /// Text content longer than [`Limits::max_text_bytes`].
    #[error("text content exceeds {limit} bytes")]
    TextTooLong { limit: usize },
    /// An element or attribute name longer than [`Limits::max_name_bytes`].
    #[error("a name exceeds {limit} bytes")]
    NameTooLong { limit: usize },
    /// A document type declaration, in any form (SOAP 1.2 Part 1 section 5).
    #[error("a DOCTYPE is not allowed")]
    DoctypeRefused,
    /// A processing instruction other than the XML declaration (SOAP 1.2 Part 1 section 5).
    #[error("processing instruction <?{target}?> is not allowed")]
    ProcessingInstructionRefused { target: String },
    /// A declared or detected encoding other than UTF-8.
    #[error("encoding {encoding} is not accepted, only UTF-8")]
    EncodingRefused { encoding: String },
    /// The bytes are not valid UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A character outside XML 1.0 production 2 (Char), raw or as a character reference.
    #[error("character U+{0:04X} is not allowed in XML")]
    InvalidCharacter(u32),
    /// An entity reference other than the five predefined ones and character references.
    #[error("unknown entity reference &{name};")]
    UnknownEntity { name: String },
    /// The same attribute twice on one element (XML 1.0 WFC: Unique Att Spec).
    #[error("attribute {name} appears twice")]
    DuplicateAttribute { name: String },
    /// A prefix without a namespace declaration in scope.
    #[error("namespace prefix {prefix} is not declared")]
    UnboundPrefix { prefix: String },
    /// No root element, or content after it.
    #[error("{0}")]
    Structure(&'static str),
    /// Not well-formed, as quick-xml reports it.
    #[error("not well-formed: {0}")]
    Syntax(String),
}

/// A parsed document: every element in one arena, in document order (the root first).
///
/// Elements are reached through [`Element`] handles. Nothing here recurses over the tree: not
/// building it, not dropping, cloning or comparing it, so depth costs no stack.
#[derive(Clone, PartialEq, Eq)]
pub struct Document<'a> {
    input: &'a str,
    /// Bytes of a UTF-8 BOM before `input`, added back to reported offsets.
    bom_len: usize,
    nodes: Vec<Node<'a>>,
    attributes: Vec<StoredAttribute<'a>>,
    declarations: Vec<(Cow<'a, str>, u32)>,
    namespaces: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
struct Node<'a> {
    namespace: u32,
    local: Cow<'a, str>,
    text: Cow<'a, str>,
    attributes: (u32, u32),
    declarations: (u32, u32),
    parent: u32,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
    n_children: u32,
    offset: usize,
}

#[derive(Clone, PartialEq, Eq)]
struct StoredAttribute<'a> {
    namespace: u32,
    local: Cow<'a, str>,
    value: Cow<'a, str>,
}

/// No namespace / no node.
const NONE: u32 = u32::MAX;

/// The id of an element in its [`Document`], to keep a reference without a borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(u32);

impl<'a> Document<'a> {
    /// The root element.
    pub fn root(&self) -> Element<'_> {
        Element { document: self, index: 0 }
    }

    /// The element with `id` (from [`Element::id`] on this document).
    pub fn element(&self, id: NodeId) -> Element<'_> {
        Element { document: self, index: id.0.min(self.nodes.len().saturating_sub(1) as u32) }
    }

    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.nodes.len()
    }

    fn namespace(&self, id: u32) -> Option<&str> {
        if id == NONE { None } else { self.namespaces.get(id as usize).map(String::as_str) }
    }

    fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.input.len());
        Position {
            line: 1 + memchr::memchr_iter(b'\n', &self.input.as_bytes()[..offset]).count(),
            offset: offset + self.bom_len,
        }
    }
}

impl std::fmt::Debug for Document<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document").field("root", &self.root()).field("n_elements", &self.nodes.len()).finish()
    }
}

/// One attribute, namespace-resolved. Namespace declarations are not attributes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'d> {
    /// Namespace URI, `None` for an unprefixed attribute.
    pub namespace: Option<&'d str>,
    /// Local name.
    pub local: &'d str,
    /// Normalized and unescaped value.
    pub value: &'d str,
}

/// A handle to one element of a [`Document`]: resolved name, attributes, text and children.
///
/// Mixed content does not occur in the schemas this crate reads, so all direct text of an
/// element is kept together; whitespace between child elements is dropped.
#[derive(Clone, Copy)]
pub struct Element<'d> {
    document: &'d Document<'d>,
    index: u32,
}

impl<'d> Element<'d> {
    /// This element's id, to find it again with [`Document::element`].
    pub fn id(&self) -> NodeId {
        NodeId(self.index)
    }

    fn node(&self) -> &'d Node<'d> {
        &self.document.nodes[self.index as usize]
    }

    /// Namespace URI, `None` when unqualified.
    pub fn namespace(&self) -> Option<&'d str> {
        self.document.namespace(self.node().namespace)
    }

    /// Local name.
    pub fn local(&self) -> &'d str {
        &self.node().local
    }

    /// Whether this element has namespace `namespace` and local name `local`.
    pub fn is(&self, namespace: &str, local: &str) -> bool {
        *self.node().local == *local && self.namespace() == Some(namespace)
    }

    /// Attributes in document order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'d>> + 'd {
        let document = self.document;
        let (start, end) = self.node().attributes;
        document.attributes[start as usize..end as usize].iter().map(move |attribute| Attribute {
            namespace: document.namespace(attribute.namespace),
            local: &attribute.local,
            value: &attribute.value,
        })
    }

    /// The value of the unqualified attribute `local`.
    pub fn attribute(&self, local: &str) -> Option<&'d str> {
        let (start, end) = self.node().attributes;
        self.document.attributes[start as usize..end as usize]
            .iter()
            .find(|attribute| attribute.namespace == NONE && attribute.local == local)
            .map(|attribute| &*attribute.value)
    }

    /// The value of the attribute `local` in namespace `namespace`.
    pub fn attribute_ns(&self, namespace: &str, local: &str) -> Option<&'d str> {
        self.attributes()
            .find(|attribute| attribute.local == local && attribute.namespace == Some(namespace))
            .map(|attribute| attribute.value)
    }

    /// The text content, unescaped.
    pub fn text(&self) -> &'d str {
        &self.node().text
    }

    /// The text content with surrounding XML whitespace removed.
    pub fn trimmed_text(&self) -> &'d str {
        self.text().trim_matches(is_xml_whitespace)
    }

    /// Child elements in document order.
    pub fn children(&self) -> Children<'d> {
        let node = self.node();
        Children { document: self.document, next: node.first_child, remaining: node.n_children as usize }
    }

    /// Number of child elements.
    pub fn n_children(&self) -> usize {
        self.node().n_children as usize
    }

    /// Child elements named `namespace`:`local`.
    pub fn children_named<'s>(&self, namespace: &'s str, local: &'s str) -> impl Iterator<Item = Element<'d>> + 's
    where
        'd: 's,
    {
        self.children().filter(move |child| child.is(namespace, local))
    }

    /// The first child element named `namespace`:`local`.
    pub fn child(&self, namespace: &str, local: &str) -> Option<Element<'d>> {
        self.children().find(|child| child.is(namespace, local))
    }

    /// The parent element.
    pub fn parent(&self) -> Option<Element<'d>> {
        let parent = self.node().parent;
        (parent != NONE).then_some(Element { document: self.document, index: parent })
    }

    /// Namespace declarations made on this element: (prefix, or "" for the default; URI).
    pub fn namespace_declarations(&self) -> impl Iterator<Item = (&'d str, &'d str)> + 'd {
        let document = self.document;
        let (start, end) = self.node().declarations;
        document.declarations[start as usize..end as usize]
            .iter()
            .map(move |(prefix, uri)| (&**prefix, document.namespace(*uri).unwrap_or_default()))
    }

    /// Resolves a QName written as text (`prefix:local`, e.g. a SOAP fault code) against the
    /// declarations in scope here. Returns (namespace, local).
    pub fn resolve_qname_text<'t>(&self, qname: &'t str) -> (Option<&'d str>, &'t str) {
        let qname = qname.trim_matches(is_xml_whitespace);
        let (prefix, local) = match qname.split_once(':') {
            Some((prefix, local)) => (prefix, local),
            None => ("", qname),
        };
        if prefix == "xml" {
            return (Some(XML_NAMESPACE), local);
        }
        let mut current = Some(*self);
        while let Some(element) = current {
            if let Some((_, uri)) = element.namespace_declarations().find(|(declared, _)| *declared == prefix) {
                return (if uri.is_empty() { None } else { Some(uri) }, local);
            }
            current = element.parent();
        }
        (None, local)
    }

    /// Where the start tag is (the line is counted on demand: this is for error reports).
    pub fn position(&self) -> Position {
        self.document.position(self.node().offset)
    }

    /// `{namespace}local`, for messages.
    pub fn expanded_name(&self) -> String {
        match self.namespace() {
            Some(namespace) => format!("{{{namespace}}}{}", self.local()),
            None => self.local().to_owned(),
        }
    }
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Element({} at {})", self.expanded_name(), self.position())
    }
}

/// The child elements of an [`Element`].
#[derive(Clone)]
pub struct Children<'d> {
    document: &'d Document<'d>,
    next: u32,
    remaining: usize,
}

impl<'d> Iterator for Children<'d> {
    type Item = Element<'d>;

    fn next(&mut self) -> Option<Element<'d>> {
        if self.next == NONE {
            return None;
        }
        let element = Element { document: self.document, index: self.next };
        self.next = self.document.nodes[self.next as usize].next_sibling;
        self.remaining = self.remaining.saturating_sub(1);
        Some(element)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Children<'_> {}

/// Parses `input` as one XML document under `limits`.
pub fn parse<'a>(input: &'a [u8], limits: &Limits) -> Result<Document<'a>, XmlError> {
    let at_start = Position { line: 1, offset: 0 };
    if input.len() > limits.max_input_bytes {
        return Err(XmlError {
            kind: XmlErrorKind::InputTooLarge { size: input.len(), limit: limits.max_input_bytes },
            position: at_start,
        });
    }
    // Arena indices are u32: below 4 GiB of input no count can overflow them.
    if u32::try_from(input.len()).is_err() {
        return Err(XmlError {
            kind: XmlErrorKind::InputTooLarge { size: input.len(), limit: u32::MAX as usize },
            position: at_start,
        });
    }
    let body = check_encoding(input)?;
    let text = std::str::from_utf8(body).map_err(|error| XmlError {
        kind: XmlErrorKind::InvalidUtf8,
        position: position_of(body, error.valid_up_to()),
    })?;
    let bom_len = input.len() - body.len();
    // XML 1.0 section 2.2: C0 controls other than tab, LF and CR are never allowed.
    if let Some(index) = find_c0_control(body) {
        let kind = XmlErrorKind::InvalidCharacter(u32::from(body[index]));
        return Err(XmlError { kind, position: position_of(input, index + bom_len) });
    }
    TreeBuilder::new(text, bom_len, limits).run()
}

/// Refuses byte order marks and declarations of encodings other than UTF-8; strips a UTF-8 BOM.
fn check_encoding(input: &[u8]) -> Result<&[u8], XmlError> {
    let at_start = Position { line: 1, offset: 0 };
    let refuse = |encoding: &str| XmlError {
        kind: XmlErrorKind::EncodingRefused { encoding: encoding.to_owned() },
        position: at_start,
    };
    if let Some(rest) = input.strip_prefix(UTF8_BOM) {
        return Ok(rest);
    }
    // XML 1.0 Appendix F: the first bytes reveal UTF-16 and UTF-32 with or without a BOM.
    match input {
        [0xFE, 0xFF, ..] | [0x00, b'<', ..] => Err(refuse("UTF-16BE")),
        [0xFF, 0xFE, ..] | [b'<', 0x00, ..] => Err(refuse("UTF-16LE")),
        [0x00, 0x00, ..] => Err(refuse("UTF-32")),
        _ => Ok(input),
    }
}

struct TreeBuilder<'a, 'l> {
    limits: &'l Limits,
    reader: NsReader<&'a [u8]>,
    document: Document<'a>,
    /// Open elements, innermost last.
    stack: Vec<u32>,
    root_closed: bool,
}

impl<'a, 'l> TreeBuilder<'a, 'l> {
    fn new(text: &'a str, bom_len: usize, limits: &'l Limits) -> Self {
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.allow_dangling_amp = false;
        // In-scope bindings are bounded by depth times the per-element limit; quick-xml checks
        // its own cap while adding each binding, before storing it.
        let max_bindings = limits.max_namespace_declarations.saturating_mul(limits.max_depth);
        reader.resolver_mut().set_max_namespace_bindings(max_bindings);
        // The arena grows with the elements actually read, never with what the input's size
        // suggests: a 50 MB attribute must not reserve room for a million elements.
        let expected_elements = INITIAL_ELEMENTS.min(limits.max_elements.max(1));
        TreeBuilder {
            limits,
            reader,
            document: Document {
                input: text,
                bom_len,
                nodes: Vec::with_capacity(expected_elements),
                attributes: Vec::with_capacity(expected_elements),
                declarations: Vec::new(),
                namespaces: Vec::new(),
            },
            stack: Vec::new(),
            root_closed: false,
        }
    }

    fn fail(&self, kind: XmlErrorKind, offset: usize) -> XmlError {
        XmlError { kind, position: self.document.position(offset) }
    }

    fn run(mut self) -> Result<Document<'a>, XmlError> {
        loop {
            let event_start = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(error) => {
                    let offset = usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
                    let kind = match error {
                        quick_xml::Error::Namespace(quick_xml::name::NamespaceError::UnknownPrefix(prefix)) => {
                            XmlErrorKind::UnboundPrefix { prefix }
                        }
                        quick_xml::Error::Namespace(quick_xml::name::NamespaceError::TooManyBindings(_)) => {
                            XmlErrorKind::TooManyNamespaceDeclarations { limit: self.limits.max_namespace_declarations }
                        }
                        // quick-xml's own nesting cap (u16), below any depth a caller could ask.
                        quick_xml::Error::Namespace(quick_xml::name::NamespaceError::TooDeeplyNested(limit)) => {
                            XmlErrorKind::TooDeep { limit }
                        }
                        other => XmlErrorKind::Syntax(other.to_string()),
                    };
                    let offset = if offset == 0 { event_start } else { offset };
                    return Err(self.fail(kind, offset));
                }
            };
            match event {
                Event::Start(start) => {
                    let index = self.open(&start, event_start)?;
                    self.stack.push(index);
                }
                Event::Empty(start) => {
                    self.open(&start, event_start)?;
                }
                Event::End(_) => {
                    if self.stack.pop().is_none() {
                        return Err(self.fail(XmlErrorKind::Structure("end tag without start tag"), event_start));
                    }
                    if self.stack.is_empty() {
                        self.root_closed = true;
                    }
                }
                Event::Text(text) => {
                    let content = text.xml10_content();
                    self.append_text(content, event_start)?;
                }
                Event::CData(cdata) => {
                    self.append_text(cdata.into_inner(), event_start)?;
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(character)) if !is_xml_char(character) => {
                            return Err(self.fail(XmlErrorKind::InvalidCharacter(u32::from(character)), event_start));
                        }
                        Ok(Some(character)) => character.to_string(),
                        Ok(None) => match quick_xml::escape::resolve_predefined_entity(&reference) {
                            Some(predefined) => predefined.to_owned(),
                            None => {
                                let name = truncate(&reference, self.limits.max_name_bytes);
                                return Err(self.fail(XmlErrorKind::UnknownEntity { name }, event_start));
                            }
                        },
                        Err(error) => return Err(self.fail(XmlErrorKind::Syntax(error.to_string()), event_start)),
                    };
                    self.append_text(Cow::Owned(resolved), event_start)?;
                }
                Event::Comment(_) => {}
                Event::Decl(declaration) => {
                    if let Some(Ok(encoding)) = declaration.encoding()
                        && !encoding.eq_ignore_ascii_case("UTF-8")
                    {
                        let encoding = truncate(&encoding, self.limits.max_name_bytes);
                        return Err(self.fail(XmlErrorKind::EncodingRefused { encoding }, event_start));
                    }
                }
                Event::PI(instruction) => {
                    let target = truncate(instruction.target(), self.limits.max_name_bytes);
                    return Err(self.fail(XmlErrorKind::ProcessingInstructionRefused { target }, event_start));
                }
                Event::DocType(_) => return Err(self.fail(XmlErrorKind::DoctypeRefused, event_start)),
                Event::Eof => {
                    if !self.stack.is_empty() {
                        let offset = self.document.input.len();
                        return Err(self.fail(XmlErrorKind::Syntax("unexpected end of input".to_owned()), offset));
                    }
                    if self.document.nodes.is_empty() {
                        return Err(self.fail(XmlErrorKind::Structure("no root element"), event_start));
                    }
                    return Ok(self.document);
                }
            }
        }
    }

    /// Stores a new element as the last child of the innermost open one (or as the root).
    fn open(&mut self, start: &BytesStart<'a>, offset: usize) -> Result<u32, XmlError> {
        let limits = *self.limits;
        if self.root_closed || (self.stack.is_empty() && !self.document.nodes.is_empty()) {
            return Err(self.fail(XmlErrorKind::Structure("content after the root element"), offset));
        }
        if self.stack.len() >= limits.max_depth {
            return Err(self.fail(XmlErrorKind::TooDeep { limit: limits.max_depth }, offset));
        }
        if self.document.nodes.len() >= limits.max_elements || self.document.nodes.len() >= (NONE - 1) as usize {
            return Err(self.fail(XmlErrorKind::TooManyElements { limit: limits.max_elements }, offset));
        }
        let qname = start.name();
        if qname.as_ref().len() > limits.max_name_bytes {
            return Err(self.fail(XmlErrorKind::NameTooLong { limit: limits.max_name_bytes }, offset));
        }
        // One pass over the attributes: limits are checked on each before it is stored.
        // quick-xml has already bound the namespace declarations among them, under its own
        // in-scope cap set in `new`, so attribute prefixes resolve here.
        let attributes_start = self.document.attributes.len();
        let declarations_start = self.document.declarations.len();
        let mut n_attributes = 0usize;
        let mut n_declarations = 0usize;
        // quick-xml's duplicate check allocates per element; the check below, on resolved
        // names (Namespaces in XML 1.0 section 6.3), does not.
        let mut attributes_iter = start.attributes();
        attributes_iter.with_checks(false);
        for attribute in attributes_iter {
            let attribute = match attribute {
                Ok(attribute) => attribute,
                Err(error) => return Err(self.fail(XmlErrorKind::Syntax(error.to_string()), offset)),
            };
            n_attributes += 1;
            if n_attributes > limits.max_attributes {
                return Err(self.fail(XmlErrorKind::TooManyAttributes { limit: limits.max_attributes }, offset));
            }
            if attribute.key.as_ref().len() > limits.max_name_bytes {
                return Err(self.fail(XmlErrorKind::NameTooLong { limit: limits.max_name_bytes }, offset));
            }
            if attribute.value.len() > limits.max_attribute_bytes {
                return Err(self.fail(XmlErrorKind::AttributeTooLong { limit: limits.max_attribute_bytes }, offset));
            }
            if let Some(binding) = attribute.key.as_namespace_binding() {
                n_declarations += 1;
                if n_declarations > limits.max_namespace_declarations {
                    return Err(self.fail(
                        XmlErrorKind::TooManyNamespaceDeclarations { limit: limits.max_namespace_declarations },
                        offset,
                    ));
                }
                let prefix = match binding {
                    quick_xml::name::PrefixDeclaration::Default => Cow::Borrowed(""),
                    quick_xml::name::PrefixDeclaration::Named(prefix) => borrow_or_own(self.document.input, prefix),
                };
                let uri = intern(&mut self.document.namespaces, &attribute.value);
                self.document.declarations.push((prefix, uri));
                continue;
            }
            let (resolved, attribute_local) = self.reader.resolver().resolve_attribute(attribute.key);
            let namespace = match resolved {
                ResolveResult::Bound(namespace) => intern(&mut self.document.namespaces, namespace.0),
                ResolveResult::Unbound => NONE,
                ResolveResult::Unknown(prefix) => {
                    let prefix = truncate(&prefix, limits.max_name_bytes);
                    return Err(self.fail(XmlErrorKind::UnboundPrefix { prefix }, offset));
                }
            };
            let local = borrow_or_own(self.document.input, attribute_local.as_ref());
            if self.document.attributes[attributes_start..]
                .iter()
                .any(|earlier| earlier.namespace == namespace && earlier.local == local)
            {
                let name = truncate(attribute.key.as_ref(), limits.max_name_bytes);
                return Err(self.fail(XmlErrorKind::DuplicateAttribute { name }, offset));
            }
            let value = match attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
                Ok(Cow::Borrowed(value)) => borrow_or_own(self.document.input, value),
                Ok(Cow::Owned(value)) => Cow::Owned(value),
                Err(error) => return Err(self.fail(XmlErrorKind::Syntax(error.to_string()), offset)),
            };
            self.document.attributes.push(StoredAttribute { namespace, local, value });
        }
        let (resolved, local) = self.reader.resolver().resolve_element(qname);
        let namespace = match resolved {
            ResolveResult::Bound(namespace) => intern(&mut self.document.namespaces, namespace.0),
            ResolveResult::Unbound => NONE,
            ResolveResult::Unknown(prefix) => {
                let prefix = truncate(&prefix, limits.max_name_bytes);
                return Err(self.fail(XmlErrorKind::UnboundPrefix { prefix }, offset));
            }
        };
        let local = borrow_or_own(self.document.input, local.as_ref());
        // The counts are bounded by the input length checked against u32 in `parse`.
        let index = self.document.nodes.len() as u32;
        let parent = self.stack.last().copied().unwrap_or(NONE);
        self.document.nodes.push(Node {
            namespace,
            local,
            text: Cow::Borrowed(""),
            attributes: (attributes_start as u32, self.document.attributes.len() as u32),
            declarations: (declarations_start as u32, self.document.declarations.len() as u32),
            parent,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
            n_children: 0,
            offset,
        });
        if parent != NONE {
            let parent_node = &mut self.document.nodes[parent as usize];
            // Whitespace before the first child was indentation, not content.
            if !parent_node.text.is_empty() && parent_node.text.chars().all(is_xml_whitespace) {
                parent_node.text = Cow::Borrowed("");
            }
            let previous = parent_node.last_child;
            parent_node.last_child = index;
            parent_node.n_children += 1;
            if previous == NONE {
                parent_node.first_child = index;
            } else {
                self.document.nodes[previous as usize].next_sibling = index;
            }
        }
        Ok(index)
    }

    fn append_text(&mut self, content: Cow<'a, str>, offset: usize) -> Result<(), XmlError> {
        let max_text = self.limits.max_text_bytes;
        let Some(&open) = self.stack.last() else {
            if content.chars().all(is_xml_whitespace) {
                return Ok(());
            }
            return Err(self.fail(XmlErrorKind::Structure("text outside the root element"), offset));
        };
        let node = &mut self.document.nodes[open as usize];
        if node.n_children > 0 && content.chars().all(is_xml_whitespace) {
            return Ok(());
        }
        if node.text.len().saturating_add(content.len()) > max_text {
            return Err(self.fail(XmlErrorKind::TextTooLong { limit: max_text }, offset));
        }
        if node.text.is_empty() {
            node.text = content;
        } else {
            node.text.to_mut().push_str(&content);
        }
        Ok(())
    }
}

/// The first byte below 0x20 other than tab, LF and CR. Each block is first tested without
/// branches (a loop the compiler vectorizes); only blocks that hold a control character or a
/// line break are looked at byte by byte.
fn find_c0_control(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let is_refused = |byte: u8| byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r');
    let mut offset = 0;
    for block in bytes.chunks(BLOCK) {
        let has_control = block.iter().fold(0u8, |seen, byte| seen | u8::from(*byte < 0x20));
        if has_control != 0
            && let Some(index) = block.iter().position(|byte| is_refused(*byte))
        {
            return Some(offset + index);
        }
        offset += block.len();
    }
    None
}

/// The id of `uri` in the document's namespace table (a handful of entries; the newest is tried
/// first, as neighbouring elements mostly share a namespace).
fn intern(namespaces: &mut Vec<String>, uri: &str) -> u32 {
    if let Some(index) = namespaces.iter().rposition(|known| known == uri) {
        return index as u32;
    }
    namespaces.push(uri.to_owned());
    (namespaces.len() - 1) as u32
}

/// Borrows `bytes` from `text` when they are a sub-slice of it (always the case for names read
/// from a slice reader), and copies them otherwise.
fn borrow_or_own<'a>(text: &'a str, part: &str) -> Cow<'a, str> {
    let base = text.as_ptr() as usize;
    let start = part.as_ptr() as usize;
    if start >= base && start + part.len() <= base + text.len() {
        let from = start - base;
        if let Some(slice) = text.get(from..from + part.len()) {
            return Cow::Borrowed(slice);
        }
    }
    Cow::Owned(part.to_owned())
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn position_of(input: &[u8], offset: usize) -> Position {
    let offset = offset.min(input.len());
    Position { line: 1 + memchr::memchr_iter(b'\n', &input[..offset]).count(), offset }
}

/// XML 1.0 production 3 (S).
pub fn is_xml_whitespace(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\r' | '\n')
}

/// Writes XML with namespace prefixes chosen by the caller; escapes text and attribute values.
pub struct XmlWriter {
    writer: quick_xml::Writer<Vec<u8>>,
}

impl std::fmt::Debug for XmlWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmlWriter").field("written", &self.writer.get_ref().len()).finish()
    }
}

impl XmlWriter {
    /// A writer into a buffer of `capacity` bytes, starting with the XML declaration.
    pub fn new(capacity: usize) -> Self {
        let mut writer = XmlWriter::without_declaration(capacity);
        writer.declaration();
        writer
    }

    /// A writer with no XML declaration (for fragments).
    pub fn without_declaration(capacity: usize) -> Self {
        XmlWriter { writer: quick_xml::Writer::new(Vec::with_capacity(capacity)) }
    }

    fn declaration(&mut self) {
        self.event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    }

    fn event(&mut self, event: Event<'_>) {
        // Writing into a Vec<u8> cannot fail: io::Write for Vec never returns an error.
        let _infallible = self.writer.write_event(event);
    }

    /// `<name a="v" ...>`.
    pub fn start(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let start = start_tag(name, attributes);
        self.event(Event::Start(start));
    }

    /// `<name a="v" .../>`.
    pub fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        let start = start_tag(name, attributes);
        self.event(Event::Empty(start));
    }

    /// `</name>`.
    pub fn end(&mut self, name: &str) {
        self.event(Event::End(BytesEnd::new(name)));
    }

    /// Escaped text.
    pub fn text(&mut self, text: &str) {
        self.event(Event::Text(BytesText::from_escaped(escape(text, Context::Text))));
    }

    /// Text known to need no escaping (base64), written without a scan.
    pub fn raw_text(&mut self, text: &str) {
        self.event(Event::Text(BytesText::from_escaped(text)));
    }

    /// `<name a="v">text</name>`.
    pub fn text_element(&mut self, name: &str, attributes: &[(&str, &str)], text: &str) {
        self.start(name, attributes);
        self.text(text);
        self.end(name);
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.writer.into_inner()
    }

    /// Appends bytes that are already well-formed XML (a fragment written by another writer).
    pub fn raw(&mut self, xml: &[u8]) {
        self.writer.get_mut().extend_from_slice(xml);
    }
}

fn start_tag<'n>(name: &'n str, attributes: &[(&str, &str)]) -> BytesStart<'n> {
    let mut start = BytesStart::new(name);
    for &(key, value) in attributes {
        start.push_attribute(quick_xml::events::attributes::Attribute {
            key: quick_xml::name::QName(key),
            value: escape(value, Context::Attribute),
        });
    }
    start
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Text,
    Attribute,
}

/// Escapes for XML 1.0 so that reading gives back the same string: markup characters as entity
/// references, and the whitespace that end-of-line handling (section 2.11) and attribute-value
/// normalization (section 3.3.3) would change as character references. Characters outside the
/// `Char` production (section 2.2) cannot be written at all and become U+FFFD.
fn escape(text: &str, context: Context) -> Cow<'_, str> {
    let needs = |character: char| match character {
        '&' | '<' | '>' | '\r' => true,
        '"' | '\t' | '\n' => context == Context::Attribute,
        other => !is_xml_char(other),
    };
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + ESCAPE_HEADROOM);
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\r' => escaped.push_str("&#xD;"),
            '"' if context == Context::Attribute => escaped.push_str("&quot;"),
            '\t' if context == Context::Attribute => escaped.push_str("&#x9;"),
            '\n' if context == Context::Attribute => escaped.push_str("&#xA;"),
            other if !is_xml_char(other) => escaped.push(char::REPLACEMENT_CHARACTER),
            other => escaped.push(other),
        }
    }
    Cow::Owned(escaped)
}

/// XML 1.0 production 2 (Char).
pub fn is_xml_char(character: char) -> bool {
    matches!(character, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Extra bytes reserved when a string needs escaping (a few entity references).
const ESCAPE_HEADROOM: usize = 16;
/// Initial buffer of [`write_element`].
const SUBTREE_CAPACITY: usize = 4096;
/// Elements (and attributes) the arena starts with.
const INITIAL_ELEMENTS: usize = 64;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Unicode BOM encoded in UTF-8 (XML 1.0 section 4.3.3).
const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// Serializes an element and its subtree, declaring every namespace it uses on the top
/// element (prefixes `ns1`, `ns2`, ...; the `xml` namespace keeps its reserved prefix).
pub fn write_element(element: Element<'_>) -> Vec<u8> {
    write_element_with(element, |_| None)
}

/// Like [`write_element`], but an element for which `replace` returns text is written with that
/// text instead of its children and text (test_support uses it to inline XOP attachments).
pub fn write_element_with(element: Element<'_>, mut replace: impl FnMut(Element<'_>) -> Option<String>) -> Vec<u8> {
    let mut namespaces: Vec<&str> = Vec::new();
    let mut pending = vec![element];
    while let Some(current) = pending.pop() {
        let used =
            current.namespace().into_iter().chain(current.attributes().filter_map(|attribute| attribute.namespace));
        for namespace in used {
            if namespace != XML_NAMESPACE && !namespaces.contains(&namespace) {
                namespaces.push(namespace);
            }
        }
        pending.extend(current.children());
    }
    let qualified = |namespace: Option<&str>, local: &str| match namespace {
        Some(XML_NAMESPACE) => format!("xml:{local}"),
        Some(namespace) => match namespaces.iter().position(|known| *known == namespace) {
            Some(index) => format!("ns{}:{local}", index + 1),
            None => local.to_owned(),
        },
        None => local.to_owned(),
    };
    let mut writer = XmlWriter::new(SUBTREE_CAPACITY);
    // Iterative walk: (element, whether its start tag was written).
    let mut walk: Vec<(Element<'_>, bool)> = vec![(element, false)];
    let mut is_top = true;
    while let Some((current, opened)) = walk.pop() {
        let name = qualified(current.namespace(), current.local());
        if opened {
            writer.end(&name);
            continue;
        }
        let mut owned_attributes: Vec<(String, String)> = Vec::new();
        if is_top {
            for (index, namespace) in namespaces.iter().enumerate() {
                owned_attributes.push((format!("xmlns:ns{}", index + 1), (*namespace).to_owned()));
            }
            is_top = false;
        }
        for attribute in current.attributes() {
            owned_attributes.push((qualified(attribute.namespace, attribute.local), attribute.value.to_owned()));
        }
        let attributes: Vec<(&str, &str)> = owned_attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Some(text) = replace(current) {
            writer.start(&name, &attributes);
            writer.text(&text);
            writer.end(&name);
            continue;
        }
        if current.n_children() == 0 && current.text().is_empty() {
            writer.empty(&name, &attributes);
            continue;
        }
        writer.start(&name, &attributes);
        writer.text(current.text());
        walk.push((current, true));
        let children: Vec<Element<'_>> = current.children().collect();
        for child in children.into_iter().rev() {
            walk.push((child, false));
        }
    }
    writer.into_inner()
}

/// The namespace bound to the reserved `xml` prefix (Namespaces in XML 1.0 section 3).
pub const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_prefixes_and_default_namespaces() {
        let input =
            br#"<?xml version="1.0"?><a:x xmlns:a="urn:a" xmlns="urn:d"><y k="1" a:k="2">t&amp;&#x41;</y><z/></a:x>"#;
        let document = parse(input, &Limits::DEFAULT).unwrap();
        let root = document.root();
        assert!(root.is("urn:a", "x"));
        let y = root.child("urn:d", "y").unwrap();
        assert_eq!(y.text(), "t&A");
        assert_eq!(y.attribute("k"), Some("1"));
        assert_eq!(y.attribute_ns("urn:a", "k"), Some("2"));
        assert!(root.child("urn:d", "z").is_some());
        assert_eq!(y.parent().map(|parent| parent.local()), Some("x"));
        assert_eq!(y.resolve_qname_text("a:Q"), (Some("urn:a"), "Q"));
    }

    #[test]
    fn write_element_round_trips_a_subtree() {
        let input = br#"<a:x xmlns:a="urn:a" xml:lang="en"><a:y a:k="&lt;">1 &amp; 2</a:y></a:x>"#;
        let document = parse(input, &Limits::DEFAULT).unwrap();
        let written = write_element(document.root());
        let again = parse(&written, &Limits::DEFAULT).unwrap();
        let root = again.root();
        let child = root.children().next().unwrap();
        assert_eq!(child.text(), "1 & 2");
        assert_eq!(root.attribute_ns(XML_NAMESPACE, "lang"), Some("en"));
        assert_eq!(child.attribute_ns("urn:a", "k"), Some("<"));
    }

    #[test]
    fn errors_carry_the_line() {
        let error = parse(b"<a>\n<b>\n<!DOCTYPE x>", &Limits::DEFAULT).unwrap_err();
        assert_eq!(error.position.line, 3);
    }
}
