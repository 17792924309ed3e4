//! Why a TLS handshake was refused, in categories an operator and an auditor can act on.
//!
//! Every refused handshake is counted by category and logged at warn level with the peer address
//! (reliability-security 0 item 10: refusals logged without category or peer are useless). The
//! category is what the ATNA Security Alert (EventID 110113, EventTypeCode 110126 "Node
//! Authentication", IHE ITI TF-2 3.20) reports. rustls says precisely what failed; this module
//! maps its error.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use rustls::{CertificateError, PeerIncompatible};

/// The category of a refused handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RefusalCategory {
    /// The peer closed or reset the connection during the handshake (scanners, health probes, a
    /// client that refused our certificate without an alert).
    Aborted,
    /// The certificate's extended key usage (or key usage) does not allow this use: a client
    /// certificate without clientAuth, or a server certificate without serverAuth.
    BadKeyUsage,
    /// The certificate (or one in its chain) is past its notAfter.
    Expired,
    /// The server certificate is not valid for the name we connected to (client side only).
    NameMismatch,
    /// The client sent no certificate; every cross-organization listener requires one.
    NoClientCertificate,
    /// No cipher suite, key exchange group or signature scheme in common (a peer offering only CBC
    /// or RSA key exchange suites, for instance).
    NoSharedCipher,
    /// The certificate (or one in its chain) is before its notBefore.
    NotYetValid,
    /// Any other failure: malformed messages, alerts from the peer, bad signatures.
    Other,
    /// The peer offered only protocol versions below TLS 1.2.
    ProtocolVersion,
    /// A certificate's revocation status could not be established: the CRL that covers it is
    /// past its nextUpdate, or no configured CRL covers its issuer. Fails closed.
    RevocationStatusUnknown,
    /// A certificate in the chain is on a configured CRL.
    Revoked,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The certificate chain does not lead to a configured trust anchor.
    UnknownCa,
}

impl RefusalCategory {
    /// Every category, in declaration order (for counters and metrics).
    pub const ALL: [Self; 13] = [
        Self::Aborted,
        Self::BadKeyUsage,
        Self::Expired,
        Self::NameMismatch,
        Self::NoClientCertificate,
        Self::NoSharedCipher,
        Self::NotYetValid,
        Self::Other,
        Self::ProtocolVersion,
        Self::RevocationStatusUnknown,
        Self::Revoked,
        Self::Timeout,
        Self::UnknownCa,
    ];

    /// A stable snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::BadKeyUsage => "bad_key_usage",
            Self::Expired => "expired",
            Self::NameMismatch => "name_mismatch",
            Self::NoClientCertificate => "no_client_certificate",
            Self::NoSharedCipher => "no_shared_cipher",
            Self::NotYetValid => "not_yet_valid",
            Self::Other => "other",
            Self::ProtocolVersion => "protocol_version",
            Self::RevocationStatusUnknown => "revocation_status_unknown",
            Self::Revoked => "revoked",
            Self::Timeout => "timeout",
            Self::UnknownCa => "unknown_ca",
        }
    }

    /// The position of the category in [`Self::ALL`].
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|category| *category == self).unwrap_or(Self::ALL.len() - 1)
    }

    /// The category of a rustls error, on either side of a handshake.
    pub fn of_rustls(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::NoCertificatesPresented => Self::NoClientCertificate,
            rustls::Error::InvalidCertificate(certificate_error) => Self::of_certificate_error(certificate_error),
            rustls::Error::PeerIncompatible(incompatible) => match incompatible {
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                // signature_algorithms appeared in TLS 1.2 (RFC 5246 7.4.1.4.1) and is mandatory in
                // TLS 1.3 (RFC 8446 4.2.3); rustls checks it before the version, so a TLS 1.0/1.1
                // ClientHello (curl --tls-max 1.1, sslscan) ends here.
                | PeerIncompatible::SignatureAlgorithmsExtensionRequired => Self::ProtocolVersion,
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon
                | PeerIncompatible::NoCertificateRequestSignatureSchemesInCommon => Self::NoSharedCipher,
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }

    /// The category of an I/O error from a tokio-rustls handshake, which wraps the rustls error.
    pub fn of_io(error: &io::Error) -> Self {
        if let Some(rustls_error) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Self::of_rustls(rustls_error);
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Aborted,
            io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Other,
        }
    }

    fn of_certificate_error(error: &CertificateError) -> Self {
        match error {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Self::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => Self::NotYetValid,
            CertificateError::Revoked => Self::Revoked,
            CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Self::RevocationStatusUnknown,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => Self::BadKeyUsage,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => Self::NameMismatch,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for RefusalCategory {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One refused handshake, as handed to the refusal hook of [`crate::HttpsStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRefusal {
    /// The peer's address (no PHI: addresses of organizations' gateways).
    pub peer: SocketAddr,
    pub category: RefusalCategory,
    /// The error as rustls or the OS worded it.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_has_its_own_index_and_label() {
        for (position, category) in RefusalCategory::ALL.iter().enumerate() {
            assert_eq!(category.index(), position);
        }
        let mut labels: Vec<&str> = RefusalCategory::ALL.iter().map(|category| category.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RefusalCategory::ALL.len());
    }

    #[test]
    fn io_errors_wrapping_rustls_errors_are_classified_by_the_rustls_error() {
        let wrapped =
            io::Error::new(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(CertificateError::Revoked));
        assert_eq!(RefusalCategory::of_io(&wrapped), RefusalCategory::Revoked);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(RefusalCategory::of_io(&eof), RefusalCategory::Aborted);
        let context = rustls::Error::InvalidCertificate(CertificateError::ExpiredRevocationListContext {
            time: rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(2)),
            next_update: rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1)),
        });
        assert_eq!(RefusalCategory::of_rustls(&context), RefusalCategory::RevocationStatusUnknown);
    }
}
