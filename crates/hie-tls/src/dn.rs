//! Distinguished names: rendering a certificate's subject or issuer as an RFC 4514 string, parsing
//! an RFC 4514 string from configuration, and the normalized form both are compared in.
//!
//! Normalization is a simplification of RFC 4518 (LDAP string preparation) as used by
//! caseIgnoreMatch: leading and trailing spaces dropped, inner runs of white space folded to one
//! space, Unicode lower case. It does not apply NFKC; names that differ only in Unicode
//! normalization do not match. Attribute types compare by OID, so `CN`, `cn` and `2.5.4.3` are the
//! same type. Attributes of one multi-valued RDN compare as a set.

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// A distinguished name in comparable form: RDNs in DER order (the reverse of RFC 4514 string
/// order), each a sorted list of (dotted OID, normalized value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NormalizedName(Vec<Vec<(String, String)>>);

/// Why an RFC 4514 string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnParseError {
    #[error("the distinguished name is empty")]
    Empty,
    #[error("attribute {index} has no `=` between its type and value")]
    MissingEquals { index: usize },
    #[error("attribute type `{name}` is neither a known short name (RFC 4514 section 3) nor a dotted OID")]
    UnknownType { name: String },
    #[error("attribute {index} has an empty value")]
    EmptyValue { index: usize },
    #[error("bad escape at byte {offset}: `\\` must be followed by a special character or two hex digits")]
    BadEscape { offset: usize },
    #[error("attribute {index}: the value is not valid UTF-8 once unescaped")]
    NotUtf8 { index: usize },
    #[error("attribute {index}: a `#` value must be an even number of hex digits")]
    BadHex { index: usize },
}

impl NormalizedName {
    /// The comparable form of a name from a certificate.
    pub(crate) fn from_x509(name: &X509Name<'_>) -> Self {
        let rdns = name
            .iter()
            .map(|rdn| {
                let mut attributes: Vec<(String, String)> = rdn
                    .iter()
                    .map(|attribute| {
                        (attribute.attr_type().to_id_string(), normalize_value(&attribute_value(attribute)))
                    })
                    .collect();
                attributes.sort();
                attributes
            })
            .collect();
        Self(rdns)
    }

    /// Parses an RFC 4514 string (`CN=Partner A,O=Hospital B,C=DE`).
    pub(crate) fn parse_rfc4514(input: &str) -> Result<Self, DnParseError> {
        if input.trim().is_empty() {
            return Err(DnParseError::Empty);
        }
        let mut rdns: Vec<Vec<(String, String)>> = vec![Vec::new()];
        let mut field = Vec::new();
        let mut index = 0;
        let mut bytes = input.bytes().enumerate().peekable();
        fn finish(field: &mut Vec<u8>, rdns: &mut [Vec<(String, String)>], index: usize) -> Result<(), DnParseError> {
            let attribute = parse_attribute(std::mem::take(field), index)?;
            if let Some(rdn) = rdns.last_mut() {
                rdn.push(attribute);
            }
            Ok(())
        }
        while let Some((offset, byte)) = bytes.next() {
            match byte {
                b'\\' => {
                    // Keep escapes for `parse_attribute`, which must tell `\,` from a separator.
                    field.push(byte);
                    let Some((_, next)) = bytes.next() else {
                        return Err(DnParseError::BadEscape { offset });
                    };
                    field.push(next);
                }
                b',' | b';' => {
                    finish(&mut field, &mut rdns, index)?;
                    index += 1;
                    rdns.push(Vec::new());
                }
                b'+' => {
                    finish(&mut field, &mut rdns, index)?;
                    index += 1;
                }
                _ => field.push(byte),
            }
        }
        finish(&mut field, &mut rdns, index)?;
        // RFC 4514 section 2.1: the string lists the last RDN of the DER sequence first.
        rdns.reverse();
        for rdn in &mut rdns {
            rdn.sort();
        }
        Ok(Self(rdns))
    }
}

/// Renders a name as an RFC 4514 string, the format `openssl x509 -nameopt RFC2253` prints.
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (rdn_index, rdn) in rdns.iter().rev().enumerate() {
        if rdn_index > 0 {
            out.push(',');
        }
        for (attribute_index, attribute) in rdn.iter().enumerate() {
            if attribute_index > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            match short_name(&oid) {
                Some(short) => out.push_str(short),
                None => out.push_str(&oid),
            }
            out.push('=');
            match attribute_value(attribute) {
                AttributeValue::Text(text) => escape_into(&text, &mut out),
                AttributeValue::Der(hex) => {
                    out.push('#');
                    out.push_str(&hex);
                }
            }
        }
    }
    out
}

/// An attribute value as text, or as the hex of its DER when it is not a string type.
enum AttributeValue {
    Text(String),
    Der(String),
}

fn attribute_value(attribute: &AttributeTypeAndValue<'_>) -> AttributeValue {
    if let Ok(text) = attribute.as_str() {
        return AttributeValue::Text(text.to_owned());
    }
    let value = attribute.attr_value();
    let data = value.data;
    let decoded = match value.tag() {
        // X.680 41: BMPString is UCS-2 big endian, UniversalString UCS-4 big endian.
        Tag::BmpString if data.len() % 2 == 0 => {
            let units: Vec<u16> = data.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|quad| char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])))
            .collect(),
        // T.61 in practice carries Latin-1 (RFC 5280 4.1.2.4 deprecates it).
        Tag::TeletexString => Some(data.iter().map(|&byte| char::from(byte)).collect()),
        _ => None,
    };
    match decoded {
        Some(text) => AttributeValue::Text(text),
        None => AttributeValue::Der(hex_lower(&value.to_der_vec().unwrap_or_default())),
    }
}

fn normalize_value(value: &AttributeValue) -> String {
    match value {
        AttributeValue::Text(text) => text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase(),
        AttributeValue::Der(hex) => format!("#{hex}"),
    }
}

/// One `type=value` of an RFC 4514 string, escapes still in.
fn parse_attribute(field: Vec<u8>, index: usize) -> Result<(String, String), DnParseError> {
    let equals = field.iter().position(|&byte| byte == b'=').ok_or(DnParseError::MissingEquals { index })?;
    let (name, value) = field.split_at(equals);
    let value = &value[1..];
    let name = String::from_utf8_lossy(name).trim().to_owned();
    let oid = attribute_oid(&name).ok_or_else(|| DnParseError::UnknownType { name: name.clone() })?;
    let trimmed = trim_unescaped_spaces(value);
    if trimmed.is_empty() {
        return Err(DnParseError::EmptyValue { index });
    }
    // RFC 4514 section 2.4: a value starting with an unescaped `#` is the hex of its BER encoding.
    if let Some(hex) = trimmed.strip_prefix(b"#") {
        if hex.is_empty() || hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(DnParseError::BadHex { index });
        }
        return Ok((oid, format!("#{}", String::from_utf8_lossy(hex).to_lowercase())));
    }
    let unescaped = unescape(trimmed)?;
    let text = String::from_utf8(unescaped).map_err(|_| DnParseError::NotUtf8 { index })?;
    Ok((oid, normalize_value(&AttributeValue::Text(text))))
}

/// Drops leading spaces, and trailing spaces that are not escaped (`\ ` keeps its space).
fn trim_unescaped_spaces(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&byte| byte != b' ').unwrap_or(value.len());
    let mut end = value.len();
    while end > start && value[end - 1] == b' ' && !(end >= 2 && value[end - 2] == b'\\') {
        end -= 1;
    }
    &value[start..end]
}

/// RFC 4514 section 3: `\` then a special character, or `\` then two hex digits (one UTF-8 byte).
fn unescape(value: &[u8]) -> Result<Vec<u8>, DnParseError> {
    let mut out = Vec::with_capacity(value.len());
    let mut offset = 0;
    while offset < value.len() {
        let byte = value[offset];
        if byte != b'\\' {
            out.push(byte);
            offset += 1;
            continue;
        }
        let next = value.get(offset + 1).copied().ok_or(DnParseError::BadEscape { offset })?;
        if ESCAPABLE.contains(&next) {
            out.push(next);
            offset += 2;
            continue;
        }
        let pair = value.get(offset + 1..offset + 3).ok_or(DnParseError::BadEscape { offset })?;
        let text = std::str::from_utf8(pair).map_err(|_| DnParseError::BadEscape { offset })?;
        out.push(u8::from_str_radix(text, 16).map_err(|_| DnParseError::BadEscape { offset })?);
        offset += 3;
    }
    Ok(out)
}

/// RFC 4514 section 2.4.
fn escape_into(text: &str, out: &mut String) {
    let last = text.chars().count().saturating_sub(1);
    for (index, character) in text.chars().enumerate() {
        let leading = index == 0 && (character == ' ' || character == '#');
        let trailing = index == last && character == ' ';
        match character {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(character);
            }
            '\0' => out.push_str("\\00"),
            _ if leading || trailing => {
                out.push('\\');
                out.push(character);
            }
            _ => out.push(character),
        }
    }
}

fn attribute_oid(name: &str) -> Option<String> {
    let dotted = name.strip_prefix("OID.").or_else(|| name.strip_prefix("oid.")).unwrap_or(name);
    if !dotted.is_empty()
        && dotted.split('.').all(|arc| !arc.is_empty() && arc.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return Some(dotted.to_owned());
    }
    SHORT_NAMES.iter().find(|(short, _)| short.eq_ignore_ascii_case(name)).map(|(_, oid)| (*oid).to_owned())
}

fn short_name(oid: &str) -> Option<&'static str> {
    SHORT_NAMES.iter().find(|(_, known)| *known == oid).map(|(short, _)| *short)
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Characters RFC 4514 section 3 lets follow a `\` as themselves.
const ESCAPABLE: &[u8] = b" \"#+,;<=>\\";

/// RFC 4514 section 3 short names, plus `emailAddress` (PKCS #9) and `serialNumber` (X.520),
/// which openssl prints by name and certificates of partners use.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("C", "2.5.4.6"),
    ("STREET", "2.5.4.9"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("serialNumber", "2.5.4.5"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> NormalizedName {
        NormalizedName::parse_rfc4514(input).unwrap()
    }

    #[test]
    fn string_order_is_reversed_and_types_and_case_and_spaces_do_not_matter() {
        let name = parse("CN=Partner  A,O=Hospital B,C=DE");
        assert_eq!(
            name.0,
            vec![
                vec![("2.5.4.6".to_owned(), "de".to_owned())],
                vec![("2.5.4.10".to_owned(), "hospital b".to_owned())],
                vec![("2.5.4.3".to_owned(), "partner a".to_owned())],
            ]
        );
        assert_eq!(name, parse(" cn = partner a , 2.5.4.10=HOSPITAL   B;OID.2.5.4.6=de"));
        assert_ne!(name, parse("CN=Partner A,O=Hospital B"));
        assert_ne!(name, parse("O=Hospital B,CN=Partner A,C=DE"));
    }

    #[test]
    fn escapes_and_multi_valued_rdns() {
        assert_eq!(parse(r"CN=Smith\, J.+UID=42,O=X"), parse(r"UID=42+CN=smith\2c j.,O=x"));
        assert_ne!(parse(r"CN=Smith\, J.,O=X"), parse(r"CN=Smith,CN=J.,O=X"));
        assert_eq!(parse(r"CN=M\C3\BCller"), parse("CN=müller"));
        assert_eq!(parse(r"CN=\ trailing\ "), parse("CN=trailing"));
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        assert_eq!(NormalizedName::parse_rfc4514(""), Err(DnParseError::Empty));
        assert_eq!(NormalizedName::parse_rfc4514("CN"), Err(DnParseError::MissingEquals { index: 0 }));
        assert!(matches!(NormalizedName::parse_rfc4514("XX=1"), Err(DnParseError::UnknownType { .. })));
        assert_eq!(NormalizedName::parse_rfc4514("CN=a,O="), Err(DnParseError::EmptyValue { index: 1 }));
        assert!(matches!(NormalizedName::parse_rfc4514(r"CN=a\"), Err(DnParseError::BadEscape { .. })));
        assert!(matches!(NormalizedName::parse_rfc4514(r"CN=a\zz"), Err(DnParseError::BadEscape { .. })));
        assert_eq!(NormalizedName::parse_rfc4514("CN=#abc"), Err(DnParseError::BadHex { index: 0 }));
    }

    #[test]
    fn rendering_escapes_specials() {
        let mut out = String::new();
        escape_into("#a, b+c ", &mut out);
        assert_eq!(out, r"\#a\, b\+c\ ");
    }
}
