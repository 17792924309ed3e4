//! Bytes to UTF-8 text: UTF-8 BOM, MSH-18 character set (HL7 table 0211), segment terminators.
//!
//! MSH-18 is read from the raw bytes before decoding: every supported character set keeps ASCII
//! bytes as ASCII, and MSH-1 to MSH-18 are ASCII in practice. After decoding, CR LF, LF and lone
//! CR all become CR, and trailing empty (or blank) segments are dropped.
//!
//! Character set policy:
//! - empty or `ASCII`: strict HL7 would reject bytes above 0x7F. We accept them: valid UTF-8 is
//!   read as UTF-8 (senders that leave MSH-18 empty but send UTF-8 are common, e.g. the
//!   `ipf-msg01-A01-v22-utf8` fixture), anything else as Latin-1 (windows-1252).
//! - `8859/1`: windows-1252, the WHATWG reading of ISO-8859-1 (C1 bytes become the printable
//!   characters senders usually meant). `8859/2`..`8859/16`: the matching ISO-8859 part
//!   (8859/9 and 8859/11 via their windows supersets, as encoding_rs provides them).
//! - `UNICODE UTF-8`, `UTF-8`, `UNICODE`: UTF-8; invalid bytes are rejected (102 at MSH^1^18).
//! - `BIG-5`, `GB 18030-2000`, `KS X 1001` (ASCII-compatible multi-byte sets) via encoding_rs.
//! - anything else (including UTF-16/32, which are not ASCII-compatible): 103 at MSH^1^18.

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::error::{ErrorCode, Hl7Error, Location};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes one message to UTF-8 text with CR segment terminators.
pub fn decode_to_utf8(raw: &[u8]) -> Result<String, Hl7Error> {
    let raw = raw.strip_prefix(UTF8_BOM).unwrap_or(raw);
    let charset = declared_charset(raw);
    let text = match classify(charset) {
        Some(Charset::Unspecified) => match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(raw).0,
        },
        Some(Charset::Utf8) => match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(error) => {
                return Err(Hl7Error::new(
                    ErrorCode::DataType,
                    Location::new("MSH", 1, 18, 0),
                    format!("invalid UTF-8 at byte {} although MSH-18 declares UTF-8", error.valid_up_to()),
                ));
            }
        },
        Some(Charset::Other(encoding)) => match encoding.decode_without_bom_handling_and_without_replacement(raw) {
            Some(text) => text,
            None => {
                return Err(Hl7Error::new(
                    ErrorCode::DataType,
                    Location::new("MSH", 1, 18, 0),
                    format!("bytes not valid in the declared character set {}", encoding.name()),
                ));
            }
        },
        None => {
            return Err(Hl7Error::new(
                ErrorCode::TableValue,
                Location::new("MSH", 1, 18, 0),
                "unsupported character set in MSH-18",
            ));
        }
    };
    Ok(normalize_segment_ends(&text))
}

/// Encodes outgoing text (an ACK) in the character set named by `charset` (an MSH-18 value).
///
/// UTF-8, unspecified and unsupported sets give the UTF-8 bytes; characters the target set cannot
/// represent become HTML numeric references (encoding_rs behaviour), which only non-ASCII text
/// copied from a message could contain.
pub fn encode_from_utf8<'a>(text: &'a str, charset: &str) -> Cow<'a, [u8]> {
    match classify(charset.trim().as_bytes()) {
        Some(Charset::Other(encoding)) => encoding.encode(text).0,
        Some(Charset::Unspecified | Charset::Utf8) | None => Cow::Borrowed(text.as_bytes()),
    }
}

/// True when `charset` (an MSH-18 value) is one this module decodes.
pub fn is_supported(charset: &str) -> bool {
    classify(charset.trim().as_bytes()).is_some()
}

/// MSH-18 (first repetition, trimmed) read from the raw bytes, or empty.
pub fn declared_charset(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_prefix(UTF8_BOM).unwrap_or(raw);
    if !raw.starts_with(b"MSH") || raw.len() < 4 {
        return b"";
    }
    let field_separator = raw[3];
    let repetition = raw.get(5).copied().unwrap_or(b'~');
    let msh_end = raw.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(raw.len());
    // Index 0 is "MSH" and index 1 MSH-2, so MSH-n is at index n - 1.
    let msh_18 = raw[..msh_end].split(|&b| b == field_separator).nth(17).unwrap_or(b"");
    let first = msh_18.split(|&b| b == repetition).next().unwrap_or(b"");
    first.trim_ascii()
}

enum Charset {
    Unspecified,
    Utf8,
    Other(&'static Encoding),
}

/// HL7 table 0211 value to a decoder; `None` if unsupported.
fn classify(declared: &[u8]) -> Option<Charset> {
    let declared = std::str::from_utf8(declared).ok()?.to_ascii_uppercase();
    let charset = match declared.as_str() {
        "" | "ASCII" | "ISO IR6" => Charset::Unspecified,
        "UNICODE UTF-8" | "UTF-8" | "UNICODE" | "ISO IR192" => Charset::Utf8,
        "8859/1" | "ISO IR100" => Charset::Other(encoding_rs::WINDOWS_1252),
        "8859/2" => Charset::Other(encoding_rs::ISO_8859_2),
        "8859/3" => Charset::Other(encoding_rs::ISO_8859_3),
        "8859/4" => Charset::Other(encoding_rs::ISO_8859_4),
        "8859/5" => Charset::Other(encoding_rs::ISO_8859_5),
        "8859/6" => Charset::Other(encoding_rs::ISO_8859_6),
        "8859/7" => Charset::Other(encoding_rs::ISO_8859_7),
        "8859/8" => Charset::Other(encoding_rs::ISO_8859_8),
        "8859/9" => Charset::Other(encoding_rs::WINDOWS_1254),
        "8859/10" => Charset::Other(encoding_rs::ISO_8859_10),
        "8859/11" => Charset::Other(encoding_rs::WINDOWS_874),
        "8859/13" => Charset::Other(encoding_rs::ISO_8859_13),
        "8859/14" => Charset::Other(encoding_rs::ISO_8859_14),
        "8859/15" => Charset::Other(encoding_rs::ISO_8859_15),
        "8859/16" => Charset::Other(encoding_rs::ISO_8859_16),
        "BIG-5" => Charset::Other(encoding_rs::BIG5),
        "GB 18030-2000" => Charset::Other(encoding_rs::GB18030),
        "KS X 1001" => Charset::Other(encoding_rs::EUC_KR),
        _ => return None,
    };
    Some(charset)
}

/// CR LF, LF and lone CR to CR; trailing empty or blank segments dropped.
fn normalize_segment_ends(text: &str) -> String {
    let mut out = if text.as_bytes().contains(&b'\n') {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.as_bytes().iter().position(|&b| b == b'\r' || b == b'\n') {
            out.push_str(&rest[..at]);
            out.push('\r');
            let width = if rest.as_bytes()[at..].starts_with(b"\r\n") { 2 } else { 1 };
            rest = &rest[at + width..];
        }
        out.push_str(rest);
        out
    } else {
        text.to_owned()
    };
    loop {
        let last_start = out.rfind('\r').map_or(0, |at| at + 1);
        let last_blank = out[last_start..].trim().is_empty();
        if !last_blank || out.is_empty() {
            break;
        }
        out.truncate(last_start.saturating_sub(1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msh(charset: &str) -> Vec<u8> {
        format!("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||{charset}\rPID|||1||").into_bytes()
    }

    #[test]
    fn utf8_declared() {
        let mut raw = msh("UNICODE UTF-8");
        raw.extend_from_slice("Müller\r".as_bytes());
        assert!(decode_to_utf8(&raw).unwrap().ends_with("PID|||1||Müller"));
    }

    #[test]
    fn utf8_declared_but_invalid() {
        let mut raw = msh("UNICODE UTF-8");
        raw.extend_from_slice(b"M\xfcller");
        let error = decode_to_utf8(&raw).unwrap_err();
        assert_eq!((error.code, error.location.to_string()), (ErrorCode::DataType, "MSH^1^18".into()));
    }

    #[test]
    fn latin1_declared() {
        let mut raw = msh("8859/1");
        raw.extend_from_slice(b"M\xfcller^J\xf6rg");
        assert!(decode_to_utf8(&raw).unwrap().ends_with("Müller^Jörg"));
        let mut raw = msh("8859/15");
        raw.extend_from_slice(b"\xa4");
        assert!(decode_to_utf8(&raw).unwrap().ends_with('€'));
    }

    #[test]
    fn unspecified_reads_utf8_then_latin1() {
        let mut raw = msh("");
        raw.extend_from_slice("Jörg".as_bytes());
        assert!(decode_to_utf8(&raw).unwrap().ends_with("Jörg"));
        let mut raw = msh("ASCII");
        raw.extend_from_slice(b"J\xf6rg");
        assert!(decode_to_utf8(&raw).unwrap().ends_with("Jörg"));
    }

    #[test]
    fn unknown_charset() {
        for charset in ["KOI8-R", "UNICODE UTF-16", "8859/99"] {
            let error = decode_to_utf8(&msh(charset)).unwrap_err();
            assert_eq!((error.code, error.location.to_string()), (ErrorCode::TableValue, "MSH^1^18".into()));
        }
    }

    #[test]
    fn charset_repetition_and_case() {
        assert_eq!(declared_charset(&msh("8859/1~ISO IR87")), b"8859/1");
        assert!(decode_to_utf8(&msh("unicode utf-8")).is_ok());
    }

    #[test]
    fn encode_outgoing() {
        assert_eq!(&*encode_from_utf8("Jörg", "8859/1"), b"J\xf6rg");
        assert_eq!(&*encode_from_utf8("Jörg", "UNICODE UTF-8"), "Jörg".as_bytes());
        assert_eq!(&*encode_from_utf8("Jörg", ""), "Jörg".as_bytes());
    }

    #[test]
    fn bom_and_segment_ends() {
        let raw = b"\xEF\xBB\xBFMSH|^~\\&|A\r\nEVN|A01\nPID|1\rPV1\r\n\r\n \r\n";
        assert_eq!(decode_to_utf8(raw).unwrap(), "MSH|^~\\&|A\rEVN|A01\rPID|1\rPV1");
        assert_eq!(decode_to_utf8(b"").unwrap(), "");
        assert_eq!(decode_to_utf8(b"\r\n\r").unwrap(), "");
    }
}
