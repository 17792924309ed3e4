//! HL7 escape sequences (HL7 v2.5.1 2.7; v2.7 adds `\P\` for the truncation character).
//!
//! Written here because hl7-parser 0.3's decoder slices by char index but indexes bytes (wrong
//! output after non-ASCII text, panics inside multi-byte characters), leaks the letters of `\H\`
//! and `\N\`, and ignores multi-byte `\Xhh..\`. This decoder works on `str::find` positions only,
//! so it never splits a character, and it never panics on any UTF-8 input.
//!
//! Decoding policy:
//! - `\F\ \S\ \T\ \R\ \E\` give the separators; `\P\` the truncation character when MSH-2 has one.
//! - `\Xhhhh..\` gives the bytes as UTF-8 when they are valid UTF-8, else as Latin-1 (the text
//!   is already UTF-8 after `charset`, so a lone high byte most likely came from an 8859/1 sender).
//! - `\.br\` and `\.sp\` give a newline; other formatting commands, `\H\`, `\N\`, `\Cxxyy\` and
//!   `\Mxxyyzz\` are dropped: they change presentation, not the value.
//! - Anything else (local `\Z..\`, unknown, or an escape with no closing delimiter) is kept literally.

use std::borrow::Cow;

use crate::message::{NULL_VALUE, Separators};

/// Decodes the escape sequences of one leaf value.
pub fn decode<'a>(text: &'a str, separators: &Separators) -> Cow<'a, str> {
    let escape = separators.escape;
    let Some(first) = text.find(escape) else {
        return Cow::Borrowed(text);
    };
    let width = escape.len_utf8();
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    // Invariant: `rest` starts with the escape character.
    let mut rest = &text[first..];
    loop {
        let after = &rest[width..];
        let Some(close) = after.find(escape) else {
            out.push_str(rest);
            break;
        };
        let sequence_len = width + close + width;
        if !decode_sequence(&after[..close], separators, &mut out) {
            out.push_str(&rest[..sequence_len]);
        }
        rest = &rest[sequence_len..];
        match rest.find(escape) {
            Some(next) => {
                out.push_str(&rest[..next]);
                rest = &rest[next..];
            }
            None => {
                out.push_str(rest);
                break;
            }
        }
    }
    Cow::Owned(out)
}

/// Escapes the separators, the escape character and CR/LF so `text` can be one leaf value.
///
/// CR and LF become `\X0D\` and `\X0A\`: left raw they would end the segment. A value of exactly
/// `""` becomes `\X22\"` so it is not read as HL7 null.
pub fn encode<'a>(text: &'a str, separators: &Separators) -> Cow<'a, str> {
    // A value that is literally `""` would read back as HL7 null; hex-escape its first quote.
    if text == NULL_VALUE {
        return Cow::Owned(format!("{0}X22{0}\"", separators.escape));
    }
    let needs_escape = |c: char| escape_code(c, separators).is_some();
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match escape_code(c, separators) {
            Some(code) => {
                out.push(separators.escape);
                out.push_str(code);
                out.push(separators.escape);
            }
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Appends the meaning of one sequence body (between the escape characters); false if unknown.
fn decode_sequence(body: &str, separators: &Separators, out: &mut String) -> bool {
    let replacement = match body {
        "F" => Some(separators.field),
        "S" => Some(separators.component),
        "T" => Some(separators.subcomponent),
        "R" => Some(separators.repetition),
        "E" => Some(separators.escape),
        "P" => match separators.truncation {
            Some(truncation) => Some(truncation),
            None => return false,
        },
        "H" | "N" => return true,
        _ => None,
    };
    if let Some(c) = replacement {
        out.push(c);
        return true;
    }
    let mut chars = body.chars();
    match chars.next() {
        Some('X') => decode_hex(chars.as_str(), out),
        Some('C') | Some('M') => {
            let hex = chars.as_str();
            !hex.is_empty() && hex.len().is_multiple_of(2) && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        Some('.') => decode_formatting(chars.as_str(), out),
        _ => false,
    }
}

fn decode_hex(hex: &str, out: &mut String) -> bool {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let bytes: Vec<u8> =
        hex.as_bytes().chunks_exact(2).map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1])).collect();
    match std::str::from_utf8(&bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.extend(bytes.iter().map(|&b| char::from(b))),
    }
    true
}

/// Formatted-text commands (HL7 v2.5.1 2.7.6), without the leading dot.
fn decode_formatting(command: &str, out: &mut String) -> bool {
    let name = command.get(..2).unwrap_or(command);
    let argument = command.get(2..).unwrap_or("");
    let argument_ok =
        argument.is_empty() || argument.trim_start_matches(['+', '-']).bytes().all(|b| b.is_ascii_digit());
    match name {
        "br" if argument.is_empty() => {
            out.push('\n');
            true
        }
        "sp" if argument_ok => {
            out.push('\n');
            true
        }
        "fi" | "nf" if argument.is_empty() => true,
        "in" | "ti" | "sk" if argument_ok => true,
        "ce" if argument.is_empty() => true,
        _ => false,
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

fn escape_code(c: char, separators: &Separators) -> Option<&'static str> {
    if c == separators.field {
        Some("F")
    } else if c == separators.component {
        Some("S")
    } else if c == separators.subcomponent {
        Some("T")
    } else if c == separators.repetition {
        Some("R")
    } else if c == separators.escape {
        Some("E")
    } else if Some(c) == separators.truncation {
        Some("P")
    } else if c == '\r' {
        Some("X0D")
    } else if c == '\n' {
        Some("X0A")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn seps() -> Separators {
        Separators::default()
    }

    #[test]
    fn separators_and_escape() {
        assert_eq!(decode("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", &seps()), "a|b^c&d~e\\f");
    }

    #[test]
    fn non_ascii_before_escapes() {
        // hl7-parser 0.3 gets the first wrong and panics on the second.
        assert_eq!(decode("Müller\\F\\Schmidt", &seps()), "Müller|Schmidt");
        assert_eq!(decode("ÅÄÖ\\T\\x", &seps()), "ÅÄÖ&x");
        assert_eq!(decode("ÅÄÖ\\T\\", &seps()), "ÅÄÖ&");
    }

    #[test]
    fn highlight_and_formatting() {
        assert_eq!(decode("\\H\\bold\\N\\ text", &seps()), "bold text");
        assert_eq!(decode("line1\\.br\\line2", &seps()), "line1\nline2");
        assert_eq!(decode("a\\.sp2\\b\\.in+4\\c", &seps()), "a\nbc");
        assert_eq!(decode("\\C2842\\x\\M2442\\", &seps()), "x");
    }

    #[test]
    fn hex() {
        assert_eq!(decode("\\X0D0A\\", &seps()), "\r\n");
        assert_eq!(decode("M\\XC3BC\\ller", &seps()), "Müller");
        assert_eq!(decode("M\\XFC\\ller", &seps()), "Müller");
        assert_eq!(decode("\\X\\", &seps()), "\\X\\");
        assert_eq!(decode("\\X0\\", &seps()), "\\X0\\");
        assert_eq!(decode("\\XZZ\\", &seps()), "\\XZZ\\");
    }

    #[test]
    fn unknown_and_unterminated_kept() {
        assert_eq!(decode("a\\Zlocal\\b", &seps()), "a\\Zlocal\\b");
        assert_eq!(decode("a\\F", &seps()), "a\\F");
        assert_eq!(decode("a\\", &seps()), "a\\");
        assert_eq!(decode("\\\\", &seps()), "\\\\");
        assert_eq!(decode("a\\P\\b", &seps()), "a\\P\\b");
    }

    #[test]
    fn truncation_character() {
        let v27 = Separators { truncation: Some('#'), ..seps() };
        assert_eq!(decode("a\\P\\b", &v27), "a#b");
        assert_eq!(encode("a#b", &v27), "a\\P\\b");
        assert_eq!(encode("a#b", &seps()), "a#b");
    }

    #[test]
    fn encode_borrows_when_clean() {
        assert!(matches!(encode("plain", &seps()), Cow::Borrowed(_)));
        assert!(matches!(decode("plain", &seps()), Cow::Borrowed(_)));
        assert_eq!(encode("a|b^c\r\n", &seps()), "a\\F\\b\\S\\c\\X0D\\\\X0A\\");
        assert_eq!(encode("\"\"", &seps()), "\\X22\\\"");
        assert_eq!(decode("\\X22\\\"", &seps()), "\"\"");
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(text in any::<String>(), v27 in any::<bool>()) {
            let separators = Separators { truncation: v27.then_some('#'), ..seps() };
            let encoded = encode(&text, &separators);
            prop_assert_eq!(decode(&encoded, &separators), text.as_str());
        }

        #[test]
        fn decode_never_panics(text in any::<String>()) {
            let _ = decode(&text, &seps());
        }

        #[test]
        fn decode_never_panics_on_escape_heavy_text(text in "[\\\\FSTREXHNCM.br0-9A-Fa-fäö€]{0,40}") {
            let _ = decode(&text, &seps());
        }
    }
}
