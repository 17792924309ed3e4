//! MTOM/XOP packaging (W3C XOP 1.0, SOAP 1.2 MTOM, RFC 2387 multipart/related, RFC 2046 5.1).
//!
//! Reading: [`read_message`] takes the HTTP Content-Type value and the body (already bounded by
//! the caller's body cap) and gives a [`Package`]: the root part's bytes and the attachments,
//! borrowed from the body. `xop:Include href="cid:..."` is resolved through
//! [`Package::resolve`], which refuses a dangling cid and a cid included twice. A plain
//! `application/soap+xml` body is a package with no attachments.
//!
//! The splitter, [`PartSplitter`], works on offsets and keeps its state between calls, so it can
//! later be fed a body in pieces; today it is given the whole body.
//!
//! Writing: [`MtomWriter`] produces the message as byte chunks (head with the root XML, then per
//! attachment a part header and the caller's bytes, then the closing delimiter), so a large
//! attachment is streamed by the caller and never held here.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Limits on a multipart body (reliability-security section 6, S5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtomLimits {
    /// Total body bytes.
    pub max_body_bytes: usize,
    /// Parts, the root included.
    pub max_parts: usize,
    /// Header bytes of one part.
    pub max_header_bytes: usize,
    /// Header lines of one part.
    pub max_headers: usize,
}

impl MtomLimits {
    /// 64 MiB, 64 parts, 16 KiB and 128 headers per part (deno's and pekko-http's figures).
    pub const DEFAULT: MtomLimits =
        MtomLimits { max_body_bytes: 64 * 1024 * 1024, max_parts: 64, max_header_bytes: 16 * 1024, max_headers: 128 };
}

impl Default for MtomLimits {
    fn default() -> Self {
        MtomLimits::DEFAULT
    }
}

/// Why a message body was refused. The sender is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MtomError {
    /// The body is larger than [`MtomLimits::max_body_bytes`].
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    /// The Content-Type cannot be parsed.
    #[error("malformed Content-Type: {0}")]
    MalformedContentType(&'static str),
    /// The media type is neither multipart/related nor application/soap+xml.
    #[error("media type {found} is not multipart/related or application/soap+xml")]
    UnsupportedMediaType { found: String },
    /// multipart/related without a boundary parameter.
    #[error("multipart/related without a boundary parameter")]
    MissingBoundary,
    /// A boundary that RFC 2046 5.1.1 does not allow.
    #[error("boundary is not 1 to 70 RFC 2046 characters")]
    InvalidBoundary,
    /// The first delimiter line is not found.
    #[error("no part delimiter found")]
    NoParts,
    /// The body ends before the closing delimiter.
    #[error("part {part} is not terminated by a delimiter")]
    Unterminated { part: usize },
    /// More parts than [`MtomLimits::max_parts`].
    #[error("more than {limit} parts")]
    TooManyParts { limit: usize },
    /// Part headers larger than [`MtomLimits::max_header_bytes`].
    #[error("headers of part {part} exceed {limit} bytes")]
    HeadersTooLarge { part: usize, limit: usize },
    /// More header lines than [`MtomLimits::max_headers`].
    #[error("part {part} has more than {limit} headers")]
    TooManyHeaders { part: usize, limit: usize },
    /// A header line without a colon, or not UTF-8.
    #[error("malformed header in part {part}")]
    MalformedHeader { part: usize },
    /// A Content-Transfer-Encoding other than binary, 8bit or 7bit (XOP 1.0 section 4.1).
    #[error("part {part} uses Content-Transfer-Encoding {encoding}")]
    UnsupportedTransferEncoding { part: usize, encoding: String },
    /// A part is itself multipart (not allowed in an XOP package).
    #[error("part {part} is a nested multipart")]
    NestedMultipart { part: usize },
    /// Two parts with the same Content-ID.
    #[error("Content-ID <{cid}> appears on more than one part")]
    DuplicateContentId { cid: String },
    /// The `start` parameter names no part.
    #[error("start part <{start}> not found")]
    StartPartNotFound { start: String },
    /// The root part is not XML (application/xop+xml or application/soap+xml).
    #[error("root part has Content-Type {found}")]
    RootNotXml { found: String },
    /// An xop:Include href that is not a cid: URL.
    #[error("xop:Include href {href} is not a cid: URL")]
    NotCidHref { href: String },
    /// An xop:Include naming no attachment.
    #[error("xop:Include refers to cid {cid}, which is not in the package")]
    DanglingInclude { cid: String },
    /// Two xop:Include elements naming the same attachment.
    #[error("attachment cid {cid} is included twice")]
    IncludeUsedTwice { cid: String },
    /// The root part itself is named by an xop:Include.
    #[error("xop:Include refers to the root part")]
    IncludesRoot,
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// Content-ID without angle brackets.
    pub content_id: Option<String>,
    /// Content-Type header value.
    pub content_type: Option<String>,
    /// The part's bytes.
    pub body: &'a [u8],
}

/// A read message: the root XML and the attachments it may include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package<'a> {
    /// The root part's bytes (the SOAP envelope).
    pub root: &'a [u8],
    /// The attachments (every part but the root).
    pub attachments: Vec<Part<'a>>,
    used: Vec<bool>,
    root_content_id: Option<String>,
}

impl<'a> Package<'a> {
    /// A package of a plain SOAP body: no attachments.
    pub fn plain(root: &'a [u8]) -> Package<'a> {
        Package { root, attachments: Vec::new(), used: Vec::new(), root_content_id: None }
    }

    /// Resolves an `xop:Include` href (`cid:...`, percent-encoded per RFC 2392) to the
    /// attachment's bytes. Each attachment may be included once (XOP 1.0 section 3.1).
    pub fn resolve(&mut self, href: &str) -> Result<&'a [u8], MtomError> {
        let href = href.trim();
        let Some(encoded) = href.strip_prefix("cid:").or_else(|| href.strip_prefix("CID:")) else {
            return Err(MtomError::NotCidHref { href: truncate(href) });
        };
        let cid = percent_decode_str(encoded).decode_utf8_lossy();
        if self.root_content_id.as_deref() == Some(&*cid) {
            return Err(MtomError::IncludesRoot);
        }
        let Some(index) = self.attachments.iter().position(|part| part.content_id.as_deref() == Some(&*cid)) else {
            return Err(MtomError::DanglingInclude { cid: truncate(&cid) });
        };
        if std::mem::replace(&mut self.used[index], true) {
            return Err(MtomError::IncludeUsedTwice { cid: truncate(&cid) });
        }
        Ok(self.attachments[index].body)
    }

    /// Attachments no xop:Include referred to (callers may warn or refuse).
    pub fn unreferenced(&self) -> impl Iterator<Item = &Part<'a>> {
        self.attachments.iter().zip(&self.used).filter(|(_, used)| !**used).map(|(part, _)| part)
    }
}

/// A parsed Content-Type: lower-cased media type and parameters with quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower case.
    pub media_type: String,
    /// Parameters in order; names lower case.
    pub parameters: Vec<(String, String)>,
}

impl ContentType {
    /// Parses an RFC 2045 section 5.1 Content-Type value (quoted strings with escapes allowed).
    pub fn parse(value: &str) -> Result<ContentType, MtomError> {
        let value = value.trim();
        let (media_type, mut rest) = match value.find(';') {
            Some(index) => (&value[..index], &value[index + 1..]),
            None => (value, ""),
        };
        let media_type = media_type.trim().to_ascii_lowercase();
        if !media_type.contains('/') {
            return Err(MtomError::MalformedContentType("no type/subtype"));
        }
        let mut parameters = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ';', '\r', '\n']);
            if rest.is_empty() {
                break;
            }
            if parameters.len() >= MAX_CONTENT_TYPE_PARAMETERS {
                return Err(MtomError::MalformedContentType("too many parameters"));
            }
            let Some(equals) = rest.find('=') else {
                return Err(MtomError::MalformedContentType("parameter without ="));
            };
            let name = rest[..equals].trim().to_ascii_lowercase();
            rest = rest[equals + 1..].trim_start();
            let parameter_value;
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut unquoted = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((index, character)) = chars.next() {
                    match character {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                unquoted.push(escaped);
                            }
                        }
                        '"' => {
                            end = Some(index);
                            break;
                        }
                        other => unquoted.push(other),
                    }
                }
                let Some(end) = end else {
                    return Err(MtomError::MalformedContentType("unterminated quoted string"));
                };
                parameter_value = unquoted;
                rest = &quoted[end + 1..];
            } else {
                let end = rest.find(';').unwrap_or(rest.len());
                parameter_value = rest[..end].trim().to_owned();
                rest = &rest[end..];
            }
            parameters.push((name, parameter_value));
        }
        Ok(ContentType { media_type, parameters })
    }

    /// The value of parameter `name` (lower case).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Reads a SOAP message body: multipart/related (MTOM/XOP) or plain application/soap+xml.
pub fn read_message<'a>(content_type: &str, body: &'a [u8], limits: &MtomLimits) -> Result<Package<'a>, MtomError> {
    if body.len() > limits.max_body_bytes {
        return Err(MtomError::BodyTooLarge { size: body.len(), limit: limits.max_body_bytes });
    }
    let content_type = ContentType::parse(content_type)?;
    match content_type.media_type.as_str() {
        MEDIA_SOAP_XML | MEDIA_XOP_XML => return Ok(Package::plain(body)),
        MEDIA_MULTIPART_RELATED => {}
        other => return Err(MtomError::UnsupportedMediaType { found: truncate(other) }),
    }
    let boundary = content_type.parameter("boundary").ok_or(MtomError::MissingBoundary)?;
    let mut splitter = PartSplitter::new(boundary, *limits)?;
    let mut parts = Vec::new();
    while let Some(part) = splitter.next_part(body)? {
        if let Some(cid) = &part.content_id
            && parts.iter().any(|known: &Part<'_>| known.content_id.as_deref() == Some(cid))
        {
            return Err(MtomError::DuplicateContentId { cid: truncate(cid) });
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(MtomError::NoParts);
    }
    let root_index = match content_type.parameter("start") {
        Some(start) => {
            let start = strip_angle_brackets(start);
            parts
                .iter()
                .position(|part| part.content_id.as_deref() == Some(start))
                .ok_or_else(|| MtomError::StartPartNotFound { start: truncate(start) })?
        }
        None => 0,
    };
    let root = parts.remove(root_index);
    let root_type = root.content_type.as_deref().map(ContentType::parse).transpose()?;
    match root_type.as_ref().map(|root_type| root_type.media_type.as_str()) {
        Some(MEDIA_XOP_XML | MEDIA_SOAP_XML) => {}
        other => return Err(MtomError::RootNotXml { found: truncate(other.unwrap_or("(none)")) }),
    }
    let used = vec![false; parts.len()];
    Ok(Package { root: root.body, attachments: parts, used, root_content_id: root.content_id })
}

/// Splits a multipart body into parts by offsets, keeping its position between calls.
#[derive(Debug, Clone)]
pub struct PartSplitter {
    delimiter: Vec<u8>,
    limits: MtomLimits,
    state: SplitterState,
    n_parts: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitterState {
    ExpectFirstDelimiter,
    /// The next part starts at this offset (just after a delimiter line).
    ExpectPart {
        at: usize,
    },
    Done,
}

impl PartSplitter {
    /// A splitter for `boundary` (RFC 2046 5.1.1: 1 to 70 characters of `bchars`).
    pub fn new(boundary: &str, limits: MtomLimits) -> Result<PartSplitter, MtomError> {
        validate_boundary(boundary)?;
        let mut delimiter = b"--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(PartSplitter { delimiter, limits, state: SplitterState::ExpectFirstDelimiter, n_parts: 0 })
    }

    /// The next part of `body`, or `None` after the closing delimiter.
    pub fn next_part<'a>(&mut self, body: &'a [u8]) -> Result<Option<Part<'a>>, MtomError> {
        let at = match self.state {
            SplitterState::Done => return Ok(None),
            SplitterState::ExpectFirstDelimiter => {
                let Some(start) = find_delimiter(body, &self.delimiter, 0) else {
                    return Err(MtomError::NoParts);
                };
                match self.after_delimiter(body, start) {
                    Some(next) => next,
                    None => {
                        self.state = SplitterState::Done;
                        return Ok(None);
                    }
                }
            }
            SplitterState::ExpectPart { at } => at,
        };
        self.n_parts += 1;
        let part_number = self.n_parts;
        if part_number > self.limits.max_parts {
            return Err(MtomError::TooManyParts { limit: self.limits.max_parts });
        }
        let (headers, body_start) = self.read_headers(body, at, part_number)?;
        let Some(delimiter_at) = find_delimiter(body, &self.delimiter, body_start) else {
            return Err(MtomError::Unterminated { part: part_number });
        };
        // The line break before the delimiter belongs to the delimiter (RFC 2046 5.1.1).
        let mut body_end = delimiter_at;
        if body_end > body_start && body[body_end - 1] == b'\n' {
            body_end -= 1;
            if body_end > body_start && body[body_end - 1] == b'\r' {
                body_end -= 1;
            }
        }
        self.state = match self.after_delimiter(body, delimiter_at) {
            Some(next) => SplitterState::ExpectPart { at: next },
            None => SplitterState::Done,
        };
        let mut content_id = None;
        let mut content_type = None;
        for (name, value) in headers {
            match name.as_str() {
                "content-id" => content_id = Some(strip_angle_brackets(&value).to_owned()),
                "content-type" => {
                    if value.trim_start().to_ascii_lowercase().starts_with("multipart/") {
                        return Err(MtomError::NestedMultipart { part: part_number });
                    }
                    content_type = Some(value);
                }
                "content-transfer-encoding" => {
                    let encoding = value.trim().to_ascii_lowercase();
                    if !matches!(encoding.as_str(), "binary" | "8bit" | "7bit") {
                        return Err(MtomError::UnsupportedTransferEncoding {
                            part: part_number,
                            encoding: truncate(&encoding),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(Some(Part { content_id, content_type, body: &body[body_start..body_end] }))
    }

    /// Given the offset of a delimiter, returns where the next part starts, or `None` if it is
    /// the closing delimiter.
    fn after_delimiter(&self, body: &[u8], delimiter_at: usize) -> Option<usize> {
        let after = delimiter_at + self.delimiter.len();
        if body[after..].starts_with(b"--") {
            return None;
        }
        // Transport padding (linear white space) then the line break.
        let rest = &body[after..];
        let line_end = memchr::memchr(b'\n', rest).map(|index| after + index + 1).unwrap_or(body.len());
        Some(line_end)
    }

    fn read_headers(&self, body: &[u8], at: usize, part: usize) -> Result<(Vec<(String, String)>, usize), MtomError> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut position = at;
        loop {
            if position - at > self.limits.max_header_bytes {
                return Err(MtomError::HeadersTooLarge { part, limit: self.limits.max_header_bytes });
            }
            let window_end = body.len().min(at + self.limits.max_header_bytes + 2);
            let Some(newline) = memchr::memchr(b'\n', &body[position..window_end]) else {
                if window_end == body.len() {
                    return Err(MtomError::Unterminated { part });
                }
                return Err(MtomError::HeadersTooLarge { part, limit: self.limits.max_header_bytes });
            };
            let line = &body[position..position + newline];
            position += newline + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Ok(line) = std::str::from_utf8(line) else {
                return Err(MtomError::MalformedHeader { part });
            };
            if line.trim().is_empty() {
                return Ok((headers, position));
            }
            if line.starts_with([' ', '\t']) {
                // RFC 5322 2.2.3 folding: continue the previous header.
                let Some(last) = headers.last_mut() else {
                    return Err(MtomError::MalformedHeader { part });
                };
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            if headers.len() >= self.limits.max_headers {
                return Err(MtomError::TooManyHeaders { part, limit: self.limits.max_headers });
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(MtomError::MalformedHeader { part });
            };
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
}

/// Finds `delimiter` at the start of a line, at or after `from`.
fn find_delimiter(body: &[u8], delimiter: &[u8], from: usize) -> Option<usize> {
    let finder = memchr::memmem::Finder::new(delimiter);
    let mut search_from = from;
    while let Some(found) = finder.find(&body[search_from..]) {
        let at = search_from + found;
        let at_line_start = at == 0 || body[at - 1] == b'\n';
        // RFC 2046 5.1.1: the boundary is followed by "--", or by transport padding and a line
        // break; anything else means the bytes only start like a delimiter.
        let after = &body[at + delimiter.len()..];
        let padding = after.iter().take_while(|byte| matches!(byte, b' ' | b'\t')).count();
        let ends_line = after.starts_with(b"--") || matches!(after.get(padding), None | Some(b'\r' | b'\n'));
        if at_line_start && ends_line {
            return Some(at);
        }
        search_from = at + 1;
    }
    None
}

fn validate_boundary(boundary: &str) -> Result<(), MtomError> {
    let valid_char = |byte: u8| byte.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&byte);
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY_LEN
        || boundary.ends_with(' ')
        || !boundary.bytes().all(valid_char)
    {
        return Err(MtomError::InvalidBoundary);
    }
    Ok(())
}

fn strip_angle_brackets(value: &str) -> &str {
    let value = value.trim();
    value.strip_prefix('<').and_then(|inner| inner.strip_suffix('>')).unwrap_or(value)
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_ECHOED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One attachment to write: its Content-ID (no angle brackets), type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment<'a> {
    /// Content-ID without angle brackets.
    pub content_id: String,
    /// Content-Type of the part.
    pub content_type: String,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// Writes an MTOM message as a sequence of chunks (SOAP 1.2 MTOM section 3; XOP 1.0 section 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtomWriter {
    boundary: String,
    root_content_id: String,
    action: String,
}

impl MtomWriter {
    /// A writer with the given boundary (RFC 2046 characters, at most 70), root Content-ID and
    /// SOAP action. A UUID-derived boundary makes a collision with content improbable.
    pub fn new(boundary: &str, root_content_id: &str, action: &str) -> Result<MtomWriter, MtomError> {
        validate_boundary(boundary)?;
        Ok(MtomWriter {
            boundary: boundary.to_owned(),
            root_content_id: root_content_id.to_owned(),
            action: action.to_owned(),
        })
    }

    /// The HTTP Content-Type header value for the message.
    pub fn content_type(&self) -> String {
        format!(
            "{MEDIA_MULTIPART_RELATED}; type=\"{MEDIA_XOP_XML}\"; start=\"<{}>\"; start-info=\"{MEDIA_SOAP_XML}\"; action=\"{}\"; boundary=\"{}\"",
            self.root_content_id, self.action, self.boundary
        )
    }

    /// The first chunk: delimiter, root part headers and the root XML.
    pub fn head(&self, root_xml: &[u8]) -> Vec<u8> {
        let mut head = Vec::with_capacity(root_xml.len() + PART_HEADER_CAPACITY);
        head.extend_from_slice(b"--");
        head.extend_from_slice(self.boundary.as_bytes());
        head.extend_from_slice(
            format!(
                "\r\nContent-Type: {MEDIA_XOP_XML}; charset=UTF-8; type=\"{MEDIA_SOAP_XML}\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{}>\r\n\r\n",
                self.root_content_id
            )
            .as_bytes(),
        );
        head.extend_from_slice(root_xml);
        head
    }

    /// The chunk before an attachment's bytes: delimiter and part headers.
    pub fn part_header(&self, content_id: &str, content_type: &str) -> Vec<u8> {
        format!(
            "\r\n--{}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{content_id}>\r\n\r\n",
            self.boundary
        )
        .into_bytes()
    }

    /// The last chunk: the closing delimiter.
    pub fn closing(&self) -> Vec<u8> {
        format!("\r\n--{}--\r\n", self.boundary).into_bytes()
    }

    /// All chunks of a message whose attachments are in memory; attachment bytes are borrowed.
    pub fn chunks<'a>(&self, root_xml: &[u8], attachments: &[Attachment<'a>]) -> Vec<Cow<'a, [u8]>> {
        let mut chunks = Vec::with_capacity(2 + 2 * attachments.len());
        chunks.push(Cow::Owned(self.head(root_xml)));
        for attachment in attachments {
            chunks.push(Cow::Owned(self.part_header(&attachment.content_id, &attachment.content_type)));
            chunks.push(Cow::Borrowed(attachment.bytes));
        }
        chunks.push(Cow::Owned(self.closing()));
        chunks
    }
}

/// The `href` of an xop:Include for `content_id` (RFC 2392: cid URLs are percent-encoded).
pub fn cid_href(content_id: &str) -> String {
    format!("cid:{}", utf8_percent_encode(content_id, CID_ENCODE))
}

/// Characters RFC 2392/RFC 3986 do not allow unencoded in a cid URL.
const CID_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'#')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'/');

/// Media types (RFC 2387; XOP 1.0 section 4.1; RFC 3902).
const MEDIA_MULTIPART_RELATED: &str = "multipart/related";
const MEDIA_XOP_XML: &str = "application/xop+xml";
const MEDIA_SOAP_XML: &str = "application/soap+xml";
/// RFC 2046 5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY_LEN: usize = 70;
/// Content-Type parameters accepted; MTOM uses six.
const MAX_CONTENT_TYPE_PARAMETERS: usize = 16;
/// Bytes of peer-supplied text echoed into an error message.
const MAX_ECHOED_BYTES: usize = 256;
/// Size of the part headers written before the root XML.
const PART_HEADER_CAPACITY: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_messages_split_back_into_their_parts() {
        let writer = MtomWriter::new("b-1", "root@x", "urn:a").unwrap();
        let attachments = [
            Attachment {
                content_id: "d1@x".to_owned(),
                content_type: "application/dicom".to_owned(),
                bytes: b"\r\n--b-1x is not a delimiter\r\n",
            },
            Attachment { content_id: "d 2@x".to_owned(), content_type: "text/plain".to_owned(), bytes: b"" },
        ];
        let body: Vec<u8> = writer.chunks(b"<root/>", &attachments).concat();
        let mut package = read_message(&writer.content_type(), &body, &MtomLimits::DEFAULT).unwrap();
        assert_eq!(package.root, b"<root/>");
        assert_eq!(package.resolve(&cid_href("d1@x")).unwrap(), attachments[0].bytes);
        assert_eq!(package.resolve(&cid_href("d 2@x")).unwrap(), b"");
        assert_eq!(package.resolve(&cid_href("d1@x")), Err(MtomError::IncludeUsedTwice { cid: "d1@x".to_owned() }));
    }

    #[test]
    fn content_type_parameters_are_unquoted() {
        let parsed = ContentType::parse(r#"Multipart/Related; boundary="a\"b"; start=<x>"#).unwrap();
        assert_eq!(parsed.media_type, "multipart/related");
        assert_eq!(parsed.parameter("boundary"), Some("a\"b"));
        assert_eq!(parsed.parameter("start"), Some("<x>"));
    }
}
