//! ISO object identifiers (dotted decimal), as used for assigning authorities, UID roots and
//! repository unique IDs.

use std::fmt;
use std::str::FromStr;

/// An OID such as `1.3.6.1.4.1.21367.13.20.1000`.
///
/// Built only by [`Oid::parse`], so holders may rely on its shape: two or more arcs, decimal
/// digits without leading zeros, first arc 0..=2, at most 64 characters (DICOM UI and XDS limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(String);

/// Why a string is not an OID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidError {
    #[error("an OID must not be empty")]
    Empty,
    #[error("an OID is at most 64 characters, this one has {0}")]
    TooLong(usize),
    #[error("an OID needs at least two arcs separated by '.'")]
    TooFewArcs,
    #[error("arc {0} is not a decimal number without leading zeros")]
    BadArc(usize),
    #[error("the first arc must be 0, 1 or 2")]
    BadRoot,
}

/// DICOM PS3.5 9.1: a UID (and so an OID we hand out) is at most 64 characters.
const MAX_OID_LEN: usize = 64;

impl Oid {
    /// Parses a dotted-decimal OID.
    pub fn parse(text: &str) -> Result<Oid, OidError> {
        if text.is_empty() {
            return Err(OidError::Empty);
        }
        if text.len() > MAX_OID_LEN {
            return Err(OidError::TooLong(text.len()));
        }
        let mut n_arcs = 0;
        for (arc_idx, arc) in text.split('.').enumerate() {
            let digits_only = !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit());
            if !digits_only || (arc.len() > 1 && arc.starts_with('0')) {
                return Err(OidError::BadArc(arc_idx + 1));
            }
            if arc_idx == 0 && !matches!(arc, "0" | "1" | "2") {
                return Err(OidError::BadRoot);
            }
            n_arcs += 1;
        }
        if n_arcs < 2 {
            return Err(OidError::TooFewArcs);
        }
        Ok(Oid(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Oid {
    type Err = OidError;
    fn from_str(text: &str) -> Result<Oid, OidError> {
        Oid::parse(text)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_oids() {
        for text in ["1.2", "2.16.840.1.113883.3.37.4.1.1.2.1.1", "0.0", "1.3.6.1.4.1.21367.13.20.1000"] {
            assert_eq!(Oid::parse(text).map(|oid| oid.to_string()), Ok(text.to_owned()));
        }
    }

    #[test]
    fn rejects_malformed_oids() {
        assert_eq!(Oid::parse(""), Err(OidError::Empty));
        assert_eq!(Oid::parse("1"), Err(OidError::TooFewArcs));
        assert_eq!(Oid::parse("3.1"), Err(OidError::BadRoot));
        assert_eq!(Oid::parse("1.02"), Err(OidError::BadArc(2)));
        assert_eq!(Oid::parse("1..2"), Err(OidError::BadArc(2)));
        assert_eq!(Oid::parse("1.2."), Err(OidError::BadArc(3)));
        assert_eq!(Oid::parse("1.2a"), Err(OidError::BadArc(2)));
        let long = format!("1.{}", "2".repeat(70));
        assert_eq!(Oid::parse(&long), Err(OidError::TooLong(72)));
    }
}
