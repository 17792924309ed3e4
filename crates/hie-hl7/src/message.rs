//! HL7 v2 message structure: separators (MSH-1/MSH-2), segments, fields, repetitions, components,
//! subcomponents, with escape sequences decoded only when a leaf is read.
//!
//! This is our own splitter rather than hl7-parser's. HL7 v2 structure is five nested splits; doing
//! them ourselves over `&str` keeps the message zero-copy, lets every failure carry the ERR-2
//! location that table 0357 answers need (hl7-parser reports nom errors with offsets), supports the
//! v2.7 truncation character in MSH-2, and keeps hl7-parser's defective escape decoder (see
//! `escape`) out of reach of callers.
//!
//! Numbering follows HL7: fields, repetitions, components and subcomponents are 1-based. In MSH,
//! MSH-1 is the field separator itself and MSH-2 the encoding characters (both read literally).

use std::borrow::Cow;

use crate::error::{ErrorCode, Hl7Error, Location};
use crate::escape;

/// The HL7 null value `""`: "delete the stored value", distinct from empty ("not sent").
pub const NULL_VALUE: &str = "\"\"";

/// The delimiters of one message: MSH-1 and MSH-2 (HL7 v2.5.1 2.5.4; v2.7 adds the truncation character).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
    /// MSH-2.5, v2.7 and later; `None` when MSH-2 has four characters.
    pub truncation: Option<char>,
}

impl Default for Separators {
    /// The recommended `|^~\&`.
    fn default() -> Separators {
        Separators { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&', truncation: None }
    }
}

impl Separators {
    /// Reads MSH-1 and MSH-2 from the start of a message (`MSH|^~\&|...`).
    ///
    /// Separators must be ASCII punctuation and pairwise distinct (102 at MSH^1^1 or MSH^1^2);
    /// MSH-2 has 4 characters, or 5 with the v2.7 truncation character.
    pub fn from_msh(text: &str) -> Result<Separators, Hl7Error> {
        let bytes = text.as_bytes();
        if !bytes.starts_with(b"MSH") {
            return Err(Hl7Error::new(
                ErrorCode::SegmentSequence,
                Location::new("MSH", 1, 0, 0),
                "message does not start with an MSH segment",
            ));
        }
        let field = match bytes.get(3) {
            None | Some(b'\r' | b'\n') => {
                return Err(Hl7Error::new(
                    ErrorCode::RequiredFieldMissing,
                    Location::new("MSH", 1, 1, 0),
                    "MSH-1 (field separator) missing",
                ));
            }
            Some(&b) if is_valid_separator(b) => b,
            Some(_) => {
                return Err(Hl7Error::new(
                    ErrorCode::DataType,
                    Location::new("MSH", 1, 1, 0),
                    "MSH-1 (field separator) must be an ASCII punctuation character",
                ));
            }
        };
        let msh_2_error = |message: &str| Hl7Error::new(ErrorCode::DataType, Location::new("MSH", 1, 2, 0), message);
        let encoding: Vec<u8> =
            bytes[4..].iter().take_while(|&&b| b != field && b != b'\r' && b != b'\n').take(6).copied().collect();
        if encoding.len() != 4 && encoding.len() != 5 {
            return Err(msh_2_error("MSH-2 (encoding characters) must have 4 or 5 characters"));
        }
        if !encoding.iter().all(|&b| is_valid_separator(b)) {
            return Err(msh_2_error("MSH-2 (encoding characters) must be ASCII punctuation"));
        }
        for (i, b) in encoding.iter().enumerate() {
            if encoding[..i].contains(b) {
                return Err(msh_2_error("MSH-2 (encoding characters) must be distinct"));
            }
        }
        Ok(Separators {
            field: char::from(field),
            component: char::from(encoding[0]),
            repetition: char::from(encoding[1]),
            escape: char::from(encoding[2]),
            subcomponent: char::from(encoding[3]),
            truncation: encoding.get(4).map(|&b| char::from(b)),
        })
    }

    /// MSH-2 as written on the wire.
    pub fn encoding_characters(&self) -> String {
        let mut out = String::with_capacity(5);
        out.push(self.component);
        out.push(self.repetition);
        out.push(self.escape);
        out.push(self.subcomponent);
        if let Some(truncation) = self.truncation {
            out.push(truncation);
        }
        out
    }
}

/// A parsed message borrowing its text; escapes are decoded only at leaf access.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    separators: Separators,
    segments: Vec<Segment<'a>>,
}

impl<'a> Message<'a> {
    /// Splits `text` into segments (CR, LF or CRLF terminated; empty lines ignored).
    ///
    /// The first segment must be MSH (100). Segment ids must be three upper-case letters or digits
    /// (100, with the segment's position in the message as the sequence).
    pub fn parse(text: &'a str) -> Result<Message<'a>, Hl7Error> {
        let separators = Separators::from_msh(text)?;
        let mut segments = Vec::with_capacity(16);
        for (position, line) in lines(text).filter(|line| !line.is_empty()).enumerate() {
            let id = segment_id(line, separators.field).ok_or_else(|| {
                let shown: String = line.chars().take_while(|&c| c != separators.field).take(3).collect();
                Hl7Error::new(
                    ErrorCode::SegmentSequence,
                    Location::new(&shown, position + 1, 0, 0),
                    format!("segment {} has no valid segment id", position + 1),
                )
            })?;
            segments.push(Segment { id, line, separators });
        }
        Ok(Message { separators, segments })
    }

    pub fn separators(&self) -> &Separators {
        &self.separators
    }

    /// All segments in message order; `segments()[0]` is MSH.
    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    /// The `occurrence`-th (1-based) segment with this id.
    pub fn segment(&self, id: &str, occurrence: usize) -> Option<Segment<'a>> {
        let index = occurrence.checked_sub(1)?;
        self.segments.iter().filter(|segment| segment.id == id).nth(index).copied()
    }

    /// One leaf by its full HL7 path (all numbers 1-based), e.g. `("PID", 1, 3, 2, 4, 2)`.
    pub fn leaf(
        &self,
        id: &str,
        occurrence: usize,
        field: usize,
        repetition: usize,
        component: usize,
        subcomponent: usize,
    ) -> Leaf<'a> {
        match self.segment(id, occurrence) {
            Some(segment) => {
                segment.field(field).repetition(repetition).component(component).subcomponent(subcomponent).leaf()
            }
            None => Leaf::Empty,
        }
    }
}

/// One segment line.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    id: &'a str,
    line: &'a str,
    separators: Separators,
}

impl<'a> Segment<'a> {
    /// Builds a segment view over one line with the given separators (for MSH-only reads).
    pub(crate) fn from_line(line: &'a str, separators: Separators) -> Option<Segment<'a>> {
        segment_id(line, separators.field).map(|id| Segment { id, line, separators })
    }

    pub fn id(&self) -> &'a str {
        self.id
    }

    pub fn separators(&self) -> &Separators {
        &self.separators
    }

    /// The segment as received (escapes not decoded).
    pub fn raw(&self) -> &'a str {
        self.line
    }

    /// Field `n` (1-based); an absent field reads as empty.
    pub fn field(&self, n: usize) -> Field<'a> {
        let raw_field = |raw: &'a str| Field { raw, separators: self.separators, literal: false };
        let nth = |index: usize| Parts::new(self.line, Some(self.separators.field)).nth(index).unwrap_or("");
        if !self.is_msh() {
            return match n {
                0 => raw_field(self.id),
                n => raw_field(nth(n)),
            };
        }
        match n {
            0 => raw_field(self.id),
            1 => Field { raw: self.line.get(3..4).unwrap_or(""), separators: self.separators, literal: true },
            2 => Field { raw: nth(1), separators: self.separators, literal: true },
            n => raw_field(nth(n - 1)),
        }
    }

    /// Fields 1, 2, .. in order (for MSH starting with MSH-1), splitting the segment once.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let separators = self.separators;
        let is_msh = self.is_msh();
        let msh_1 = is_msh.then(|| self.field(1));
        let rest = Parts::new(self.line, Some(separators.field))
            .skip(1)
            .enumerate()
            // MSH-2 (the first part after "MSH") holds the separators and is read literally.
            .map(move |(i, raw)| Field { raw, separators, literal: is_msh && i == 0 });
        msh_1.into_iter().chain(rest)
    }

    fn is_msh(&self) -> bool {
        self.id.as_bytes() == b"MSH"
    }

    /// Number of fields present (MSH counts MSH-1).
    pub fn field_count(&self) -> usize {
        let parts = Parts::new(self.line, Some(self.separators.field)).count() - 1;
        if self.is_msh() { parts + 1 } else { parts }
    }
}

/// A field: one or more repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
    separators: Separators,
    /// MSH-1 and MSH-2 are read as written: they hold the separators themselves.
    literal: bool,
}

impl<'a> Field<'a> {
    /// An absent field.
    pub fn empty(separators: Separators) -> Field<'a> {
        Field { raw: "", separators, literal: false }
    }

    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        let separators = self.separators;
        let literal = self.literal;
        Parts::new(self.raw, (!literal).then_some(separators.repetition)).map(move |raw| Repetition {
            raw,
            separators,
            literal,
        })
    }

    /// Repetition `n` (1-based); absent reads as empty.
    pub fn repetition(&self, n: usize) -> Repetition<'a> {
        let raw = if self.literal {
            if n == 1 { self.raw } else { "" }
        } else {
            nth_part(self.raw, self.separators.repetition, n)
        };
        Repetition { raw, separators: self.separators, literal: self.literal }
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Component<'a> {
        self.repetition(1).component(n)
    }

    /// The first leaf (repetition 1, component 1, subcomponent 1).
    pub fn leaf(&self) -> Leaf<'a> {
        self.repetition(1).leaf()
    }

    /// The first leaf, decoded; HL7 null reads as empty.
    pub fn value(&self) -> Cow<'a, str> {
        self.leaf().into_value()
    }

    pub fn is_null(&self) -> bool {
        is_null_raw(self.raw)
    }
}

/// One repetition of a field: one or more components.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a str,
    separators: Separators,
    literal: bool,
}

impl<'a> Repetition<'a> {
    pub fn separators(&self) -> &Separators {
        &self.separators
    }

    /// Reads `raw` as one repetition (no repetition split) with the given separators.
    pub fn from_raw(raw: &'a str, separators: Separators) -> Repetition<'a> {
        Repetition { raw, separators, literal: false }
    }

    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn is_null(&self) -> bool {
        is_null_raw(self.raw)
    }

    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + 'a {
        let separators = self.separators;
        let literal = self.literal;
        Parts::new(self.raw, (!literal).then_some(separators.component)).map(move |raw| Component {
            raw,
            separators,
            literal,
        })
    }

    /// Component `n` (1-based); absent reads as empty.
    pub fn component(&self, n: usize) -> Component<'a> {
        let raw = if self.literal {
            if n == 1 { self.raw } else { "" }
        } else {
            nth_part(self.raw, self.separators.component, n)
        };
        Component { raw, separators: self.separators, literal: self.literal }
    }

    pub fn leaf(&self) -> Leaf<'a> {
        self.component(1).leaf()
    }

    pub fn value(&self) -> Cow<'a, str> {
        self.leaf().into_value()
    }
}

/// One component: one or more subcomponents.
#[derive(Debug, Clone, Copy)]
pub struct Component<'a> {
    raw: &'a str,
    separators: Separators,
    literal: bool,
}

impl<'a> Component<'a> {
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn is_null(&self) -> bool {
        is_null_raw(self.raw)
    }

    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + 'a {
        let separators = self.separators;
        let literal = self.literal;
        Parts::new(self.raw, (!literal).then_some(separators.subcomponent)).map(move |raw| Subcomponent {
            raw,
            separators,
            literal,
        })
    }

    /// Subcomponent `n` (1-based); absent reads as empty.
    pub fn subcomponent(&self, n: usize) -> Subcomponent<'a> {
        let raw = if self.literal {
            if n == 1 { self.raw } else { "" }
        } else {
            nth_part(self.raw, self.separators.subcomponent, n)
        };
        Subcomponent { raw, separators: self.separators, literal: self.literal }
    }

    pub fn leaf(&self) -> Leaf<'a> {
        self.subcomponent(1).leaf()
    }

    pub fn value(&self) -> Cow<'a, str> {
        self.leaf().into_value()
    }
}

/// A subcomponent: the leaf of the HL7 structure.
#[derive(Debug, Clone, Copy)]
pub struct Subcomponent<'a> {
    raw: &'a str,
    separators: Separators,
    literal: bool,
}

impl<'a> Subcomponent<'a> {
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_null(&self) -> bool {
        is_null_raw(self.raw)
    }

    /// The value with escape sequences decoded, telling empty and HL7 null apart.
    pub fn leaf(&self) -> Leaf<'a> {
        if self.raw.is_empty() {
            Leaf::Empty
        } else if is_null_raw(self.raw) {
            Leaf::Null
        } else if self.literal {
            Leaf::Value(Cow::Borrowed(self.raw))
        } else {
            Leaf::Value(escape::decode(self.raw, &self.separators))
        }
    }

    pub fn value(&self) -> Cow<'a, str> {
        self.leaf().into_value()
    }
}

/// A leaf value: not sent, HL7 null (`""`, "delete"), or a decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf<'a> {
    Empty,
    Null,
    Value(Cow<'a, str>),
}

impl<'a> Leaf<'a> {
    pub fn is_null(&self) -> bool {
        matches!(self, Leaf::Null)
    }

    /// Empty or null both read as `""` here; use the variants to tell them apart.
    pub fn into_value(self) -> Cow<'a, str> {
        match self {
            Leaf::Empty | Leaf::Null => Cow::Borrowed(""),
            Leaf::Value(value) => value,
        }
    }
}

/// Splits at `separator`, or yields the whole text once when there is none (literal MSH-1/MSH-2).
struct Parts<'a> {
    rest: Option<&'a str>,
    separator: Option<char>,
}

impl<'a> Parts<'a> {
    fn new(raw: &'a str, separator: Option<char>) -> Parts<'a> {
        Parts { rest: Some(raw), separator }
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match self.separator.and_then(|separator| split_once(rest, separator)) {
            Some((part, tail)) => {
                self.rest = Some(tail);
                Some(part)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Part `n` (1-based) of `raw` split at `separator`, or `""`.
fn nth_part(raw: &str, separator: char, n: usize) -> &str {
    match n.checked_sub(1) {
        Some(index) => Parts::new(raw, Some(separator)).nth(index).unwrap_or(""),
        None => "",
    }
}

/// `str::split_once` with a plain byte loop for ASCII separators: HL7 parts are short, and
/// `CharSearcher`'s memchr set-up costs more than it saves on them.
fn split_once(text: &str, separator: char) -> Option<(&str, &str)> {
    if separator.is_ascii() {
        let byte = separator as u8;
        // An ASCII byte is always a char boundary in UTF-8, so both slices are valid.
        let at = text.as_bytes().iter().position(|&b| b == byte)?;
        Some((&text[..at], &text[at + 1..]))
    } else {
        text.split_once(separator)
    }
}

/// Lines ended by CR or LF (CRLF yields an empty line, which callers skip).
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.as_bytes().iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn is_null_raw(raw: &str) -> bool {
    matches!(raw.as_bytes(), [b'"', b'"'])
}

/// The id of a segment line if it is three upper-case letters or digits followed by the field separator or the end.
fn segment_id(line: &str, field_separator: char) -> Option<&str> {
    let bytes = line.as_bytes();
    let id_ok = bytes.len() >= 3 && bytes[..3].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !id_ok {
        return None;
    }
    let id = &line[..3];
    match line[3..].chars().next() {
        None => Some(id),
        Some(c) if c == field_separator => Some(id),
        Some(_) => None,
    }
}

fn is_valid_separator(b: u8) -> bool {
    b.is_ascii_punctuation()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|APP|FAC|||20240101||ADT^A01^ADT_A01|42|P|2.5\r\
        EVN|A01\r\
        PID|1||123^^^HOSP&1.2.3&ISO~\"\"^^^&2.71&ISO||M\\E\\ller^Hans~Doe|\"\"\r";

    #[test]
    fn separators_default_and_v27() {
        assert_eq!(Separators::from_msh("MSH|^~\\&|x").unwrap(), Separators::default());
        let seps = Separators::from_msh("MSH|^~\\&#|x").unwrap();
        assert_eq!(seps.truncation, Some('#'));
        assert_eq!(seps.encoding_characters(), "^~\\&#");
    }

    #[test]
    fn separators_rejected_with_location() {
        let cases = [
            ("MSH00000", 102, "MSH^1^1"),
            ("MSHH0\r", 102, "MSH^1^1"),
            ("MSH|0|||||||00|||2.7", 102, "MSH^1^2"),
            ("MSH|^|||||||^A|||2.2\r^AA", 102, "MSH^1^2"),
            ("MSH|^~\\&#!|x", 102, "MSH^1^2"),
            ("MSH|^~^&|x", 102, "MSH^1^2"),
            ("MSH|^~\\|||x", 102, "MSH^1^2"),
            ("MSH", 101, "MSH^1^1"),
            ("", 100, "MSH^1"),
            ("PID|", 100, "MSH^1"),
        ];
        for (text, code, location) in cases {
            let error = Separators::from_msh(text).unwrap_err();
            assert_eq!((error.code.code(), error.location.to_string().as_str()), (code, location), "{text:?}");
        }
    }

    #[test]
    fn msh_numbering() {
        let message = Message::parse(ADT).unwrap();
        let msh = message.segments()[0];
        assert_eq!(msh.field(1).raw(), "|");
        assert_eq!(msh.field(2).raw(), "^~\\&");
        assert_eq!(msh.field(2).value(), "^~\\&");
        assert_eq!(msh.field(3).value(), "APP");
        assert_eq!(msh.field(9).component(2).value(), "A01");
        assert_eq!(msh.field(10).value(), "42");
        assert_eq!(msh.field(12).value(), "2.5");
        assert_eq!(msh.field(13).value(), "");
        assert_eq!(msh.field_count(), 12);
        let fields: Vec<&str> = msh.fields().map(|field| field.raw()).take(4).collect();
        assert_eq!(fields, ["|", "^~\\&", "APP", "FAC"]);
        assert_eq!(msh.fields().count(), 12);
        let pid = message.segment("PID", 1).unwrap();
        assert_eq!(pid.fields().nth(2).unwrap().raw(), pid.field(3).raw());
    }

    #[test]
    fn nested_access_and_null() {
        let message = Message::parse(ADT).unwrap();
        let pid = message.segment("PID", 1).unwrap();
        let ids: Vec<_> = pid.field(3).repetitions().map(|rep| rep.raw()).collect();
        assert_eq!(ids, ["123^^^HOSP&1.2.3&ISO", "\"\"^^^&2.71&ISO"]);
        assert_eq!(message.leaf("PID", 1, 3, 1, 4, 2), Leaf::Value("1.2.3".into()));
        assert!(pid.field(3).repetition(2).component(1).is_null());
        assert_eq!(message.leaf("PID", 1, 3, 2, 1, 1), Leaf::Null);
        assert_eq!(message.leaf("PID", 1, 5, 1, 1, 1), Leaf::Value("M\\ller".into()));
        assert_eq!(message.leaf("PID", 1, 5, 2, 1, 1), Leaf::Value("Doe".into()));
        assert!(pid.field(6).is_null());
        assert_eq!(message.leaf("PID", 1, 7, 1, 1, 1), Leaf::Empty);
        assert_eq!(message.leaf("PID", 2, 3, 1, 1, 1), Leaf::Empty);
        assert_eq!(message.leaf("PID", 1, 0, 1, 1, 1), Leaf::Value("PID".into()));
    }

    #[test]
    fn bad_segment_ids() {
        for (text, location) in [
            ("MSH|^~\\&|\rPid|1", "Pid^2"),
            ("MSH|^~\\&|\rPI|1", "PI^2"),
            ("MSH|^~\\&|\rEVN|\rPIDX|1", "PID^3"),
            ("MSH|^~\\&|\rÄÖÜ|1", "ÄÖÜ^2"),
        ] {
            let error = Message::parse(text).unwrap_err();
            assert_eq!(error.code, ErrorCode::SegmentSequence);
            assert_eq!(error.location.to_string(), location);
        }
    }

    #[test]
    fn line_endings_and_blank_lines() {
        let message = Message::parse("MSH|^~\\&|A\r\n\r\nPID|1\nZZ1").unwrap();
        let ids: Vec<_> = message.segments().iter().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "PID", "ZZ1"]);
    }
}
