//! What logs and audit records say about a peer certificate: RFC 4514 subject and issuer, serial,
//! validity, and SHA-256 fingerprints of the certificate and of its public key.
//!
//! The formats match openssl's (`x509 -noout -subject -issuer -serial -fingerprint -sha256
//! -nameopt RFC2253`), so an operator can compare a log line with a certificate file.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::dn;

/// A SHA-256 digest (FIPS 180-4) of a certificate or of a SubjectPublicKeyInfo.
///
/// Displays as openssl prints it: upper-case hex pairs separated by colons. Parses from that form
/// or from plain hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; SHA256_LEN]);

impl Fingerprint {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8; SHA256_LEN] {
        &self.0
    }

    /// Lower-case hex without separators.
    pub fn to_hex(&self) -> String {
        dn::hex_lower(&self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(":")?;
            }
            write!(formatter, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Fingerprint({self})")
    }
}

/// A string that is not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 fingerprint is 64 hex digits, optionally in colon-separated pairs")]
pub struct FingerprintParseError;

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits: Vec<u8> = text.bytes().filter(|&byte| byte != b':').collect();
        if digits.len() != SHA256_LEN * 2 {
            return Err(FingerprintParseError);
        }
        let mut out = [0_u8; SHA256_LEN];
        for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| FingerprintParseError)?;
            *slot = u8::from_str_radix(pair, 16).map_err(|_| FingerprintParseError)?;
        }
        Ok(Self(out))
    }
}

/// The fields of a certificate worth logging. No PHI: certificates name organizations and hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// RFC 4514 string (`CN=…,O=…,C=…`).
    pub subject: String,
    /// RFC 4514 string of the issuer.
    pub issuer: String,
    /// Serial number in upper-case hex, without leading zero bytes (RFC 5280 4.1.2.2).
    pub serial: String,
    /// SHA-256 of the certificate's DER.
    pub fingerprint: Fingerprint,
    /// SHA-256 of the DER SubjectPublicKeyInfo (RFC 7469 section 2.4), the pin of a partner.
    pub spki_fingerprint: Fingerprint,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A certificate that is not X.509 DER.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct CertificateParseError(String);

impl CertificateSummary {
    /// Reads the summary of a DER certificate.
    pub fn from_der(certificate: &CertificateDer<'_>) -> Result<Self, CertificateParseError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
            .map_err(|error| CertificateParseError(error.to_string()))?;
        let raw_serial = parsed.raw_serial();
        let significant = raw_serial.iter().position(|&byte| byte != 0).unwrap_or(raw_serial.len().saturating_sub(1));
        Ok(Self {
            subject: dn::rfc4514(parsed.subject()),
            issuer: dn::rfc4514(parsed.issuer()),
            serial: dn::hex_lower(&raw_serial[significant..]).to_uppercase(),
            fingerprint: Fingerprint::of(certificate.as_ref()),
            spki_fingerprint: Fingerprint::of(parsed.public_key().raw),
            not_before: unix_time(parsed.validity().not_before.timestamp()),
            not_after: unix_time(parsed.validity().not_after.timestamp()),
        })
    }
}

/// SHA-256 of the SubjectPublicKeyInfo of a DER certificate.
pub fn spki_fingerprint(certificate: &CertificateDer<'_>) -> Result<Fingerprint, CertificateParseError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|error| CertificateParseError(error.to_string()))?;
    Ok(Fingerprint::of(parsed.public_key().raw))
}

fn unix_time(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// FIPS 180-4: SHA-256 digests are 32 bytes.
const SHA256_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_display_like_openssl_and_parse_back() {
        let fingerprint = Fingerprint::of(b"abc");
        let shown = fingerprint.to_string();
        // FIPS 180-2 appendix B.1 test vector.
        assert!(shown.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{shown}");
        assert_eq!(shown.parse::<Fingerprint>(), Ok(fingerprint));
        assert_eq!(fingerprint.to_hex().parse::<Fingerprint>(), Ok(fingerprint));
        assert_eq!("BA:78".parse::<Fingerprint>(), Err(FingerprintParseError));
    }
}
