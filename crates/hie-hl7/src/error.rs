//! Errors of the HL7 codec: what went wrong (an HL7 table 0357 code) and where (an ERR-2 location).
//!
//! Every decoding failure above MLLP framing is an [`Hl7Error`], so the inbound edge can turn any of
//! them into an AE/AR with ERR-2 and ERR-3 without a second mapping table.
//! Messages are written by us and never quote field values, so they are safe to log (no PHI).

use std::fmt;

/// A rejected HL7 message: the HL7 table 0357 code, the location for ERR-2 and a short text for ERR-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HL7 error {code} at {location}: {message}")]
pub struct Hl7Error {
    pub location: Location,
    pub code: ErrorCode,
    pub message: String,
}

impl Hl7Error {
    pub fn new(code: ErrorCode, location: Location, message: impl Into<String>) -> Hl7Error {
        Hl7Error { location, code, message: message.into() }
    }
}

/// HL7 v2.5+ ERR-2 (ERL): segment id, segment sequence (1-based occurrence), field, component.
///
/// `0` means "not applicable"; an empty `segment` means the location is unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: String,
    pub sequence: usize,
    pub field: usize,
    pub component: usize,
}

impl Location {
    pub fn new(segment: &str, sequence: usize, field: usize, component: usize) -> Location {
        Location { segment: segment.to_owned(), sequence, field, component }
    }

    /// A location that names nothing (ERR-2 left empty).
    pub fn unknown() -> Location {
        Location::default()
    }

    pub fn is_unknown(&self) -> bool {
        self.segment.is_empty()
    }
}

/// Renders `PID^1^3^1` with trailing not-applicable parts left off (`PID^1^3`, `MSH^1`).
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unknown() {
            return f.write_str("(unknown)");
        }
        write!(f, "{}^{}", self.segment, self.sequence)?;
        if self.field != 0 {
            write!(f, "^{}", self.field)?;
            if self.component != 0 {
                write!(f, "^{}", self.component)?;
            }
        }
        Ok(())
    }
}

/// HL7 table 0357 (message error condition codes), as used in ERR-3 and the v2.2-2.4 ERR-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    SegmentSequence = 100,
    RequiredFieldMissing = 101,
    DataType = 102,
    TableValue = 103,
    UnsupportedMessageType = 200,
    UnsupportedEvent = 201,
    UnsupportedProcessingId = 202,
    UnsupportedVersion = 203,
    UnknownKey = 204,
    DuplicateKey = 205,
    RecordLocked = 206,
    InternalError = 207,
}

impl ErrorCode {
    /// The numeric code of table 0357.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The table 0357 description, as sent in ERR-3.2.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequence => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataType => "Data type error",
            ErrorCode::TableValue => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEvent => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersion => "Unsupported version id",
            ErrorCode::UnknownKey => "Unknown key identifier",
            ErrorCode::DuplicateKey => "Duplicate key identifier",
            ErrorCode::RecordLocked => "Application record locked",
            ErrorCode::InternalError => "Application internal error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_renders_like_err_2() {
        assert_eq!(Location::new("PID", 1, 3, 0).to_string(), "PID^1^3");
        assert_eq!(Location::new("MSH", 1, 9, 2).to_string(), "MSH^1^9^2");
        assert_eq!(Location::new("MRG", 2, 0, 0).to_string(), "MRG^2");
        assert_eq!(Location::unknown().to_string(), "(unknown)");
    }

    #[test]
    fn codes_follow_table_0357() {
        assert_eq!(ErrorCode::RequiredFieldMissing.code(), 101);
        assert_eq!(ErrorCode::InternalError.code(), 207);
        assert_eq!(ErrorCode::UnsupportedEvent.text(), "Unsupported event code");
    }
}
