//! Loading TLS material from files: certificate chains, private keys (PKCS#8, SEC1, PKCS#1), CA
//! bundles and CRLs, each in PEM or DER.
//!
//! PEM goes through `rustls_pki_types::pem::PemObject` (rustls-pemfile is unmaintained,
//! RUSTSEC-2025-0134). A file is PEM when it contains a `-----BEGIN ` line (RFC 7468), DER
//! otherwise. Files are read whole, under a size cap, so a wrong path (a log, a disk image) fails
//! with a clear error instead of filling memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{FileRole, TlsError};

/// Whether a private key file readable by group or others may be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFilePolicy {
    /// Refuse a key file whose mode has any group or other bit set (the default).
    #[default]
    RequireOwnerOnly,
    /// Accept it anyway (a key on a read-only volume managed elsewhere). Logged at warn level.
    DangerAllowReadable,
}

/// Reads a certificate chain: our certificate first, then its intermediates (RFC 8446 4.4.2).
pub fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates(FileRole::CertificateChain, path)
}

/// Reads the certificates of a CA bundle into a root store.
pub fn ca_bundle(path: &Path) -> Result<RootCertStore, TlsError> {
    let certificates = certificates(FileRole::CaBundle, path)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|source| TlsError::TrustAnchor { path: path.to_owned(), index, source })?;
    }
    Ok(roots)
}

/// Reads a private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`) in PEM, or any of them in DER. Refuses a file readable by group or others
/// unless `policy` is [`KeyFilePolicy::DangerAllowReadable`].
pub fn private_key(path: &Path, policy: KeyFilePolicy) -> Result<PrivateKeyDer<'static>, TlsError> {
    let role = FileRole::PrivateKey;
    let metadata = std::fs::metadata(path).map_err(|source| read_error(role, path, source))?;
    let mode = metadata.permissions().mode() & PERMISSION_BITS;
    if mode & GROUP_OR_OTHER_BITS != 0 {
        match policy {
            KeyFilePolicy::RequireOwnerOnly => {
                return Err(TlsError::KeyReadable { path: path.to_owned(), mode });
            }
            KeyFilePolicy::DangerAllowReadable => {
                tracing::warn!(path = %path.display(), mode = format_args!("{mode:04o}"),
                    "Private key file is readable by group or others; accepted by the danger_allow_readable_key override.");
            }
        }
    }
    let bytes = read_capped(role, path, MAX_KEY_FILE_BYTES)?;
    if !is_pem(&bytes) {
        return PrivateKeyDer::try_from(bytes).map_err(|detail| TlsError::Pem {
            role,
            path: path.to_owned(),
            detail: format!("not a PEM file, and not a DER private key either: {detail}"),
        });
    }
    match PrivateKeyDer::pem_slice_iter(&bytes).next() {
        Some(Ok(key)) => Ok(key),
        Some(Err(error)) => Err(TlsError::Pem { role, path: path.to_owned(), detail: error.to_string() }),
        None if contains(&bytes, ENCRYPTED_KEY_LABEL) => Err(TlsError::EncryptedKey { path: path.to_owned() }),
        None => Err(TlsError::Empty {
            role,
            path: path.to_owned(),
            expected: "PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY section",
        }),
    }
}

/// Reads the CRLs of one file (`X509 CRL` PEM sections, or one DER CRL). Each one is parsed here
/// so that a bad file is named; rustls would only say that some CRL is bad.
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let role = FileRole::Crl;
    let bytes = read_capped(role, path, MAX_CRL_FILE_BYTES)?;
    let crls = if is_pem(&bytes) {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError::Pem { role, path: path.to_owned(), detail: error.to_string() })?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(TlsError::Empty { role, path: path.to_owned(), expected: "X509 CRL section" });
    }
    for (index, crl) in crls.iter().enumerate() {
        match x509_parser::parse_x509_crl(crl.as_ref()) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(TlsError::Crl {
                    path: path.to_owned(),
                    index,
                    detail: "trailing bytes after the CRL".into(),
                });
            }
            Err(error) => return Err(TlsError::Crl { path: path.to_owned(), index, detail: error.to_string() }),
        }
    }
    Ok(crls)
}

/// Certificates of a chain or a bundle, each checked to be X.509 DER.
fn certificates(role: FileRole, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_capped(role, path, MAX_CERTIFICATE_FILE_BYTES)?;
    let certificates = if is_pem(&bytes) {
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|error| TlsError::Pem {
            role,
            path: path.to_owned(),
            detail: error.to_string(),
        })?
    } else {
        vec![CertificateDer::from(bytes)]
    };
    if certificates.is_empty() {
        return Err(TlsError::Empty { role, path: path.to_owned(), expected: "CERTIFICATE section" });
    }
    for (index, certificate) in certificates.iter().enumerate() {
        match x509_parser::parse_x509_certificate(certificate.as_ref()) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(TlsError::Certificate {
                    role,
                    path: path.to_owned(),
                    index,
                    detail: "trailing bytes after the certificate".into(),
                });
            }
            Err(error) => {
                return Err(TlsError::Certificate { role, path: path.to_owned(), index, detail: error.to_string() });
            }
        }
    }
    Ok(certificates)
}

/// Reads a whole file, refusing one over `max` bytes without reading it.
fn read_capped(role: FileRole, path: &Path, max: u64) -> Result<Vec<u8>, TlsError> {
    let file = File::open(path).map_err(|source| read_error(role, path, source))?;
    let len = file.metadata().map_err(|source| read_error(role, path, source))?.len();
    if len > max {
        return Err(TlsError::TooLarge { role, path: path.to_owned(), len, max });
    }
    let mut bytes = Vec::new();
    // The file may grow between the metadata call and the read: `take` keeps the cap.
    file.take(max + 1).read_to_end(&mut bytes).map_err(|source| read_error(role, path, source))?;
    if bytes.len() as u64 > max {
        return Err(TlsError::TooLarge { role, path: path.to_owned(), len: bytes.len() as u64, max });
    }
    Ok(bytes)
}

fn read_error(role: FileRole, path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Read { role, path: path.to_owned(), source }
}

/// RFC 7468 section 2: a PEM file has `-----BEGIN label-----` lines.
fn is_pem(bytes: &[u8]) -> bool {
    contains(bytes, PEM_BEGIN)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// RFC 7468 section 2.
const PEM_BEGIN: &[u8] = b"-----BEGIN ";
/// RFC 7468 section 11 (PKCS#8 EncryptedPrivateKeyInfo), which rustls cannot use.
const ENCRYPTED_KEY_LABEL: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
/// A chain of a dozen certificates fits in a few tens of KiB.
const MAX_CERTIFICATE_FILE_BYTES: u64 = 4 * 1024 * 1024;
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;
/// A large public CA's CRL reaches tens of MiB.
const MAX_CRL_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// The rwx bits of user, group and other (POSIX `S_IRWXU | S_IRWXG | S_IRWXO`).
const PERMISSION_BITS: u32 = 0o777;
/// POSIX `S_IRWXG | S_IRWXO`.
const GROUP_OR_OTHER_BITS: u32 = 0o077;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_group_readable_key_is_refused_unless_the_danger_override_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let path = write(dir.path(), "key.pem", key.serialize_pem().as_bytes(), 0o640);
        let error = private_key(&path, KeyFilePolicy::RequireOwnerOnly).unwrap_err();
        assert!(matches!(error, TlsError::KeyReadable { mode: 0o640, .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("key.pem") && message.contains("0640") && message.contains("danger_allow_readable_key")
        );
        private_key(&path, KeyFilePolicy::DangerAllowReadable).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(private_key(&path, KeyFilePolicy::RequireOwnerOnly).unwrap(), PrivateKeyDer::Pkcs8(_)));
    }

    #[test]
    fn keys_load_in_pkcs8_sec1_and_pkcs1_pem_and_in_der() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let der_path = write(dir.path(), "key.der", &key.serialize_der(), 0o600);
        assert!(matches!(private_key(&der_path, KeyFilePolicy::default()).unwrap(), PrivateKeyDer::Pkcs8(_)));
        // SEC1 and PKCS#1 from openssl, a peer whose encoders we did not write.
        for (algorithm, label, expect_sec1) in [("EC", "EC PRIVATE KEY", true), ("RSA", "RSA PRIVATE KEY", false)] {
            let path = dir.path().join(format!("{algorithm}.pem"));
            let mut command = std::process::Command::new("openssl");
            if algorithm == "EC" {
                command.args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]);
                command.arg(&path);
            } else {
                command.args(["genrsa", "-traditional", "-out"]);
                command.arg(&path).arg("2048");
            }
            let status = command.status().expect("openssl must be installed (apt-get install openssl)");
            assert!(status.success());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(std::fs::read_to_string(&path).unwrap().contains(label));
            let loaded = private_key(&path, KeyFilePolicy::default()).unwrap();
            assert_eq!(matches!(loaded, PrivateKeyDer::Sec1(_)), expect_sec1);
            assert_eq!(matches!(loaded, PrivateKeyDer::Pkcs1(_)), !expect_sec1);
        }
    }

    #[test]
    fn errors_name_the_file_and_what_was_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = certificate_chain(&missing).unwrap_err();
        assert!(matches!(error, TlsError::Read { role: FileRole::CertificateChain, .. }));
        assert!(error.to_string().contains("missing.pem"));

        let key = rcgen::KeyPair::generate().unwrap();
        let key_only = write(dir.path(), "key-as-cert.pem", key.serialize_pem().as_bytes(), 0o600);
        let error = certificate_chain(&key_only).unwrap_err();
        assert!(matches!(error, TlsError::Empty { .. }), "{error}");
        assert!(error.to_string().contains("key-as-cert.pem"));

        let truncated = write(dir.path(), "truncated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n", 0o644);
        assert!(matches!(ca_bundle(&truncated).unwrap_err(), TlsError::Pem { role: FileRole::CaBundle, .. }));

        let garbage_der = write(dir.path(), "garbage.der", &[0x30, 0x03, 0x02, 0x01, 0x00], 0o644);
        assert!(matches!(certificate_chain(&garbage_der).unwrap_err(), TlsError::Certificate { index: 0, .. }));
        assert!(matches!(crls(&garbage_der).unwrap_err(), TlsError::Crl { index: 0, .. }));

        let encrypted = write(
            dir.path(),
            "encrypted.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
            0o600,
        );
        assert!(matches!(
            private_key(&encrypted, KeyFilePolicy::default()).unwrap_err(),
            TlsError::EncryptedKey { .. }
        ));
    }
}
