//! Errors of loading TLS material and building configs. Every variant names the file at fault, so
//! an operator can fix the configuration from the message alone.

use std::fmt;
use std::path::PathBuf;

/// What a file was expected to hold; used in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileRole {
    /// A CA bundle: the trust anchors that issue our peers' certificates.
    CaBundle,
    /// Our certificate, then its intermediates.
    CertificateChain,
    /// A certificate revocation list (RFC 5280 section 5).
    Crl,
    /// The private key of our certificate.
    PrivateKey,
}

impl fmt::Display for FileRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::CaBundle => "CA bundle",
            Self::CertificateChain => "certificate chain",
            Self::Crl => "CRL",
            Self::PrivateKey => "private key",
        })
    }
}

/// Why TLS material could not be loaded or a config could not be built. All of these are faults
/// of our own configuration or files, never of a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be opened or read.
    #[error("cannot read the {role} file {path}: {source}")]
    Read { role: FileRole, path: PathBuf, source: std::io::Error },
    /// The file is larger than any sane file of its kind; it is not read.
    #[error("the {role} file {path} is {len} bytes, over the cap of {max} bytes")]
    TooLarge { role: FileRole, path: PathBuf, len: u64, max: u64 },
    /// The file looks like PEM but a section is malformed.
    #[error("the {role} file {path} is not valid PEM: {detail}")]
    Pem { role: FileRole, path: PathBuf, detail: String },
    /// The file holds nothing of the expected kind.
    #[error("the {role} file {path} holds no {expected}")]
    Empty { role: FileRole, path: PathBuf, expected: &'static str },
    /// The private key is encrypted; keys must be given in clear, protected by file permissions.
    #[error(
        "the private key file {path} is encrypted (ENCRYPTED PRIVATE KEY); give the key unencrypted with mode 0600"
    )]
    EncryptedKey { path: PathBuf },
    /// The private key file is readable by group or others.
    #[error(
        "the private key file {path} has mode {mode:04o}, readable by group or others; run `chmod 600` on it \
         (or set the danger_allow_readable_key override to start anyway)"
    )]
    KeyReadable { path: PathBuf, mode: u32 },
    /// A certificate in the file is not valid X.509 DER.
    #[error("certificate {index} of the {role} file {path} is not a valid X.509 certificate: {detail}")]
    Certificate { role: FileRole, path: PathBuf, index: usize, detail: String },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("certificate {index} of the CA bundle {path} cannot be a trust anchor: {source}")]
    TrustAnchor { path: PathBuf, index: usize, source: rustls::Error },
    /// A CRL in the file is not a valid X.509 CRL.
    #[error("CRL {index} of the file {path} is not a valid X.509 CRL: {detail}")]
    Crl { path: PathBuf, index: usize, detail: String },
    /// The private key does not belong to the certificate, or rustls refused it.
    #[error("the private key {key_path} cannot be used with the certificate {certificate_path}: {source}")]
    KeyPair { certificate_path: PathBuf, key_path: PathBuf, source: rustls::Error },
    /// The client certificate verifier could not be built from the CA bundle and CRLs.
    #[error("cannot build the certificate verifier from {ca_bundle} and its CRLs: {source}")]
    Verifier { ca_bundle: PathBuf, source: rustls::server::VerifierBuilderError },
    /// rustls refused the protocol versions or provider (a bug of this crate, not of the files).
    #[error("rustls refused the configuration: {0}")]
    Config(rustls::Error),
}
