//! ACK messages (HL7 v2.5.1 2.9.2, 2.14.1 MSA, 2.15.5 ERR) and a header salvaged from any input.
//!
//! An ACK uses the original's separators and version, names the original sender as receiver,
//! echoes MSH-10 in MSA-2, and for errors carries both the v2.2-2.4 ERR-1 (ELD) and the v2.5+
//! ERR-2 (location), ERR-3 (table 0357), ERR-4 (severity) and ERR-8 (user message), so receivers
//! of every version find the error where they look for it. Every value is escaped, so an ACK is
//! well-formed whatever the original contained.

use crate::adt::{MessageHeader, header_from_msh, parse_header};
use crate::error::{ErrorCode, Hl7Error};
use crate::message::{Leaf, NULL_VALUE, Repetition, Segment, Separators};
use crate::{charset, escape};

/// MSH-12 of an ACK when the original's version could not be read.
pub const FALLBACK_VERSION: &str = "2.5";
/// MSH-11 of an ACK when the original's processing id could not be read.
pub const FALLBACK_PROCESSING_ID: &str = "P";
/// MSA-3 is ST with a maximum length of 80 in v2.2-2.4.
const MSA_3_MAX_CHARS: usize = 80;
/// Coding system of ERR-3 and ERR-1.4.
const TABLE_0357: &str = "HL70357";

/// HL7 table 0008 (acknowledgment code): original mode `A*`, enhanced-mode accept `C*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    AA,
    AE,
    AR,
    CA,
    CE,
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }
}

/// Builds an ACK for `original` with CR after every segment.
///
/// MSH-18 repeats the original's character set when it is one [`charset`] supports; encode the
/// result with [`charset::encode_from_utf8`]. `sending_app` and `sending_facility` are HD strings in default separators (`HIE_EDGE` or
/// `HIE^1.2.3^ISO`); `timestamp` is `YYYYMMDDHHMMSS`. The error, when given, fills MSA-3 and ERR.
pub fn build_ack(
    original: &MessageHeader,
    code: AckCode,
    error: Option<&Hl7Error>,
    ack_control_id: &str,
    timestamp: &str,
    sending_app: &str,
    sending_facility: &str,
) -> String {
    let separators = &original.separators;
    let encode = |value: &str| escape::encode(value, separators).into_owned();
    let version = if original.version.is_empty() { FALLBACK_VERSION } else { &original.version };
    let processing_id =
        if original.processing_id.is_empty() { FALLBACK_PROCESSING_ID } else { &original.processing_id };
    let mut message_type = String::from("ACK");
    if !original.trigger_event.is_empty() {
        message_type.push(separators.component);
        message_type.push_str(&encode(&original.trigger_event));
        // MSH-9.3 (message structure) exists from v2.3.1 on.
        if !matches!(version, "2.0" | "2.1" | "2.2" | "2.3") {
            message_type.push(separators.component);
            message_type.push_str("ACK");
        }
    }

    let mut out = String::with_capacity(256);
    out.push_str("MSH");
    out.push(separators.field);
    out.push_str(&separators.encoding_characters());
    let mut msh = vec![
        from_canonical(sending_app, separators),
        from_canonical(sending_facility, separators),
        from_canonical(&original.sending_application, separators),
        from_canonical(&original.sending_facility, separators),
        encode(timestamp),
        String::new(),
        message_type,
        encode(ack_control_id),
        from_canonical(processing_id, separators),
        encode(version),
    ];
    // Naming a character set we rejected would claim the ACK is encoded in it.
    if !original.charset.is_empty() && charset::is_supported(&original.charset) {
        msh.extend(std::iter::repeat_n(String::new(), 5));
        msh.push(encode(&original.charset));
    }
    push_fields(&mut out, separators.field, &msh);

    out.push_str("MSA");
    let mut msa = vec![code.as_str().to_owned(), encode(&original.control_id)];
    if let Some(error) = error {
        let text: String = error.message.chars().take(MSA_3_MAX_CHARS).collect();
        msa.push(encode(&text));
    }
    push_fields(&mut out, separators.field, &msa);

    if let Some(error) = error {
        out.push_str("ERR");
        let err = err_fields(error, separators);
        push_fields(&mut out, separators.field, &err);
    }
    out
}

/// The header of any input, never failing: [`parse_header`] when it succeeds, else whatever of
/// MSH could be read (MSH-10 above all, for MSA-2), with default separators where MSH-2 is unusable.
pub fn salvage_header(text: &str) -> MessageHeader {
    if let Ok(header) = parse_header(text) {
        return header;
    }
    let separators = Separators::from_msh(text).unwrap_or_else(|_| fallback_separators(text));
    let line = crate::message::lines(text).next().unwrap_or("");
    match Segment::from_line(line, separators).filter(|segment| segment.id() == "MSH") {
        Some(msh) => header_from_msh(&msh),
        None => minimal_header_for_unparseable(),
    }
}

/// A header with nothing but default separators, for input without a usable MSH.
pub fn minimal_header_for_unparseable() -> MessageHeader {
    MessageHeader {
        sending_application: String::new(),
        sending_facility: String::new(),
        receiving_application: String::new(),
        receiving_facility: String::new(),
        control_id: String::new(),
        message_code: String::new(),
        trigger_event: String::new(),
        message_structure: String::new(),
        processing_id: String::new(),
        version: String::new(),
        accept_ack_type: None,
        application_ack_type: None,
        charset: String::new(),
        separators: Separators::default(),
        datetime: String::new(),
    }
}

/// ERR-1 to ERR-8 for one error.
fn err_fields(error: &Hl7Error, separators: &Separators) -> Vec<String> {
    let code = error.code;
    let location = &error.location;
    let number = |n: usize| if n == 0 { String::new() } else { n.to_string() };
    let (segment, sequence, field, component) = if location.is_unknown() {
        (String::new(), String::new(), String::new(), String::new())
    } else {
        (
            escape::encode(&location.segment, separators).into_owned(),
            number(location.sequence),
            number(location.field),
            number(location.component),
        )
    };
    let err_1 = join_trimmed(
        &[segment.clone(), sequence.clone(), field.clone(), coded(code, separators.subcomponent)],
        separators.component,
    );
    let err_2 = join_trimmed(&[segment, sequence, field, component], separators.component);
    let err_3 = coded(code, separators.component);
    vec![
        err_1,
        err_2,
        err_3,
        "E".to_owned(),
        String::new(),
        String::new(),
        String::new(),
        escape::encode(&error.message, separators).into_owned(),
    ]
}

/// `code<sep>text<sep>HL70357` (CWE in ERR-3, subcomponents in ERR-1.4).
fn coded(code: ErrorCode, separator: char) -> String {
    format!("{}{separator}{}{separator}{TABLE_0357}", code.code(), code.text())
}

/// Re-writes an HD/PT string given in default separators with `separators`, escaping every leaf.
fn from_canonical(value: &str, separators: &Separators) -> String {
    let default = Separators::default();
    let plain = !value.contains(['|', '~', '\\', '\r', '\n']);
    if *separators == default && plain {
        return value.to_owned();
    }
    let repetition = Repetition::from_raw(value, default);
    let components: Vec<String> = repetition
        .components()
        .map(|component| {
            let subcomponents: Vec<String> = component
                .subcomponents()
                .map(|subcomponent| match subcomponent.leaf() {
                    Leaf::Empty => String::new(),
                    Leaf::Null => NULL_VALUE.to_owned(),
                    Leaf::Value(text) => escape::encode(&text, separators).into_owned(),
                })
                .collect();
            join_trimmed(&subcomponents, separators.subcomponent)
        })
        .collect();
    join_trimmed(&components, separators.component)
}

/// Appends `|f1|f2..` (trailing empty fields left off) and the segment terminator.
fn push_fields(out: &mut String, separator: char, fields: &[String]) {
    let n_valued = fields.iter().rposition(|field| !field.is_empty()).map_or(0, |at| at + 1);
    for field in &fields[..n_valued] {
        out.push(separator);
        out.push_str(field);
    }
    out.push('\r');
}

fn join_trimmed(parts: &[String], separator: char) -> String {
    let n_valued = parts.iter().rposition(|part| !part.is_empty()).map_or(0, |at| at + 1);
    let mut out = String::new();
    for (i, part) in parts[..n_valued].iter().enumerate() {
        if i > 0 {
            out.push(separator);
        }
        out.push_str(part);
    }
    out
}

/// Default separators, keeping the input's field separator when it is usable.
fn fallback_separators(text: &str) -> Separators {
    let default = Separators::default();
    match text.as_bytes().get(3) {
        Some(&b) if text.starts_with("MSH") && b.is_ascii_punctuation() && !b"^~\\&".contains(&b) => {
            Separators { field: char::from(b), ..default }
        }
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adt::parse_adt;
    use crate::error::Location;

    const A01: &str =
        "MSH|^~\\&|APP^1.2^ISO|FAC|HIE|X|20240101120000||ADT^A01^ADT_A01|C1|P^T|2.5.1\rEVN|A01\rPID|||1\r";

    fn ack(header: &MessageHeader, code: AckCode, error: Option<&Hl7Error>) -> String {
        build_ack(header, code, error, "A1", "20240102030405", "HIE", "EDGE^1.3^ISO")
    }

    #[test]
    fn accepts() {
        let header = parse_adt(A01).unwrap().header;
        assert_eq!(
            ack(&header, AckCode::AA, None),
            "MSH|^~\\&|HIE|EDGE^1.3^ISO|APP^1.2^ISO|FAC|20240102030405||ACK^A01^ACK|A1|P^T|2.5.1\rMSA|AA|C1\r"
        );
    }

    #[test]
    fn rejects_with_err() {
        let header = parse_header(A01).unwrap();
        let error = Hl7Error::new(ErrorCode::RequiredFieldMissing, Location::new("PID", 1, 3, 0), "PID-3 | empty");
        assert_eq!(
            ack(&header, AckCode::AR, Some(&error)),
            "MSH|^~\\&|HIE|EDGE^1.3^ISO|APP^1.2^ISO|FAC|20240102030405||ACK^A01^ACK|A1|P^T|2.5.1\r\
             MSA|AR|C1|PID-3 \\F\\ empty\r\
             ERR|PID^1^3^101&Required field missing&HL70357|PID^1^3|101^Required field missing^HL70357|E||||PID-3 \\F\\ empty\r"
        );
    }

    #[test]
    fn old_versions_charset_and_separators() {
        let text = "MSH*#~\\$*APP#X*FAC*****ADT#A01*C\\F\\2*P*2.3******8859/1\r";
        let header = parse_header(text).unwrap();
        assert_eq!(header.control_id, "C*2");
        let error = Hl7Error::new(ErrorCode::UnsupportedEvent, Location::new("MSH", 1, 9, 2), "no");
        assert_eq!(
            ack(&header, AckCode::AE, Some(&error)),
            "MSH*#~\\$*HIE*EDGE#1.3#ISO*APP#X*FAC*20240102030405**ACK#A01*A1*P*2.3******8859/1\r\
             MSA*AE*C\\F\\2*no\r\
             ERR*MSH#1#9#201$Unsupported event code$HL70357*MSH#1#9#2*201#Unsupported event code#HL70357*E****no\r"
        );
    }

    #[test]
    fn salvage() {
        let header = salvage_header("MSH|^~\\&|A|B|||x||ORU^R01|CTRL|P|9.9\r");
        assert_eq!((header.control_id.as_str(), header.version.as_str()), ("CTRL", "9.9"));
        let header = salvage_header("MSH|0|||||||00|CTRL||2.7");
        assert_eq!(header.control_id, "CTRL");
        assert_eq!(header.separators, Separators::default());
        let header = salvage_header("MSH*0*******ADT*CTRL");
        assert_eq!(header.control_id, "CTRL");
        assert_eq!(header.separators.field, '*');
        assert_eq!(salvage_header("MSH00000"), minimal_header_for_unparseable());
        assert_eq!(salvage_header(""), minimal_header_for_unparseable());
        let unparseable = ack(&minimal_header_for_unparseable(), AckCode::AR, None);
        assert_eq!(unparseable, "MSH|^~\\&|HIE|EDGE^1.3^ISO|||20240102030405||ACK|A1|P|2.5\rMSA|AR\r");
    }

    #[test]
    fn unknown_location_leaves_err_2_empty() {
        let error = Hl7Error::new(ErrorCode::InternalError, Location::unknown(), "store down");
        let text = ack(&minimal_header_for_unparseable(), AckCode::AE, Some(&error));
        assert!(text.ends_with("ERR|^^^207&Application internal error&HL70357||207^Application internal error^HL70357|E||||store down\r"), "{text}");
    }
}
