//! A development PKI: a CA, a server certificate for `localhost`/`127.0.0.1`/`::1`, and a client
//! certificate, written to a directory by [`init`] (the `hie-edge pki init --out DIR` command).
//!
//! It is for trying the broker on one machine and for tests, never for production: the CA's
//! subject and every key file say so, and the CA key sits beside the certificates. Keys are ECDSA
//! P-256 (FIPS 186-5) in PKCS#8, written with mode 0600; certificates with mode 0644. Existing
//! files are never replaced unless the caller asks for it.
//!
//! With the `test-support` feature, `test_pki` mints the negative cases of the tests (expired,
//! not yet valid, wrong EKU, untrusted CA, revoked, CRLs with any dates).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

#[cfg(feature = "test-support")]
pub mod test_pki;

/// Whether [`init`] may replace files that exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overwrite {
    /// Fail if any of the files exists (the default): a second `init` must not silently replace a
    /// CA that issued certificates already in use.
    #[default]
    Refuse,
    /// Replace the files.
    Replace,
}

/// The files [`init`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca_certificate: PathBuf,
    pub ca_key: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

/// Why the development PKI could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("{path} exists; refusing to overwrite it (remove it, or ask for overwrite)")]
    Exists { path: PathBuf },
    #[error("cannot create the directory {path}: {source}")]
    CreateDirectory { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot generate the {what}: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
}

/// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key`, `client.pem` and `client.key` into
/// `out_dir` (created if missing).
pub fn init(out_dir: &Path, overwrite: Overwrite) -> Result<PkiFiles, PkiError> {
    let files = PkiFiles {
        ca_certificate: out_dir.join("ca.pem"),
        ca_key: out_dir.join("ca.key"),
        server_certificate: out_dir.join("server.pem"),
        server_key: out_dir.join("server.key"),
        client_certificate: out_dir.join("client.pem"),
        client_key: out_dir.join("client.key"),
    };
    let all = [
        &files.ca_certificate,
        &files.ca_key,
        &files.server_certificate,
        &files.server_key,
        &files.client_certificate,
        &files.client_key,
    ];
    // Checked for all files before writing any, so a refusal leaves the directory as it was.
    if overwrite == Overwrite::Refuse
        && let Some(existing) = all.iter().find(|path| path.symlink_metadata().is_ok())
    {
        return Err(PkiError::Exists { path: (*existing).clone() });
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|source| PkiError::CreateDirectory { path: out_dir.to_owned(), source })?;

    let now = OffsetDateTime::now_utc();
    let ca = new_ca(DEV_CA_NAME, DEV_ORGANIZATION, now, now + DEV_CA_VALIDITY)
        .map_err(|source| PkiError::Generate { what: "CA", source })?;
    let server = issue(
        &ca.issuer,
        &dev_server_params(now).map_err(|source| PkiError::Generate { what: "server certificate", source })?,
    )
    .map_err(|source| PkiError::Generate { what: "server certificate", source })?;
    let client = issue(&ca.issuer, &dev_client_params(now))
        .map_err(|source| PkiError::Generate { what: "client certificate", source })?;

    write_file(&files.ca_certificate, ca.issuer.pem().as_bytes(), CERTIFICATE_MODE, overwrite)?;
    write_file(&files.ca_key, key_file(CA_KEY_WARNING, &ca.key_pem).as_bytes(), KEY_MODE, overwrite)?;
    write_file(&files.server_certificate, server.certificate_pem.as_bytes(), CERTIFICATE_MODE, overwrite)?;
    write_file(&files.server_key, key_file(LEAF_KEY_WARNING, &server.key_pem).as_bytes(), KEY_MODE, overwrite)?;
    write_file(&files.client_certificate, client.certificate_pem.as_bytes(), CERTIFICATE_MODE, overwrite)?;
    write_file(&files.client_key, key_file(LEAF_KEY_WARNING, &client.key_pem).as_bytes(), KEY_MODE, overwrite)?;
    Ok(files)
}

/// A CA: its issuer (certificate, name and key) and its key in PEM.
pub(crate) struct Ca {
    pub(crate) issuer: CertifiedIssuer<'static, KeyPair>,
    pub(crate) key_pem: String,
}

/// An issued certificate with its key.
// `certificate` and `serial` serve the test PKI (CRLs by serial, DER for pins).
#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) struct Issued {
    pub(crate) certificate: rcgen::Certificate,
    pub(crate) certificate_pem: String,
    pub(crate) key_pem: String,
    pub(crate) serial: SerialNumber,
}

/// A self-signed CA allowed to sign certificates and CRLs (RFC 5280 4.2.1.3, 4.2.1.9).
pub(crate) fn new_ca(
    common_name: &str,
    organization: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Ca, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, Some(organization));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(params, key)?;
    Ok(Ca { issuer, key_pem })
}

/// Issues `params` (with a fresh key and a random serial) under `issuer`.
pub(crate) fn issue(issuer: &rcgen::Issuer<'_, KeyPair>, params: &CertificateParams) -> Result<Issued, rcgen::Error> {
    let mut params = params.clone();
    let serial = random_serial();
    params.serial_number = Some(serial.clone());
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    Ok(Issued { certificate_pem: certificate.pem(), certificate, key_pem: key.serialize_pem(), serial })
}

/// A server certificate for this machine's loopback names (RFC 5280 4.2.1.6 SANs; id-kp-serverAuth).
pub(crate) fn dev_server_params(now: OffsetDateTime) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(LOOPBACK_NAMES.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name = distinguished_name("localhost", Some(DEV_ORGANIZATION));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + DEV_LEAF_VALIDITY;
    Ok(params)
}

/// A client certificate (id-kp-clientAuth), as a partner gateway would present.
pub(crate) fn dev_client_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(DEV_CLIENT_NAME, Some(DEV_ORGANIZATION));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + DEV_LEAF_VALIDITY;
    params
}

pub(crate) fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

/// A positive serial of 16 random bytes (RFC 5280 4.1.2.2: at most 20 octets, unpredictable per
/// CA/Browser Forum BR 7.1).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0_u8; SERIAL_LEN];
    if rustls::crypto::aws_lc_rs::default_provider().secure_random.fill(&mut bytes).is_err() {
        // aws-lc's RNG does not fail in practice; a time-based serial still keeps certificates apart.
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos().to_be_bytes();
        bytes.copy_from_slice(&nanos[..SERIAL_LEN]);
    }
    // Positive and without a leading zero byte, so its DER INTEGER is exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// A PEM key with explanatory text before it (RFC 7468 section 5.2 lets parsers skip it).
fn key_file(warning: &str, key_pem: &str) -> String {
    format!("{warning}\n{key_pem}")
}

fn write_file(path: &Path, contents: &[u8], mode: u32, overwrite: Overwrite) -> Result<(), PkiError> {
    let write_error = |source| PkiError::Write { path: path.to_owned(), source };
    if overwrite == Overwrite::Replace {
        // Removed first so the new file gets `mode` (an existing file keeps its own mode).
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(write_error(error)),
        }
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists { path: path.to_owned() }
        } else {
            write_error(error)
        }
    })?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

const DEV_CA_NAME: &str = "hie-edge development CA (TEST ONLY, not for production)";
const DEV_CLIENT_NAME: &str = "hie-edge development client";
const DEV_ORGANIZATION: &str = "hie-edge development PKI";
const CA_KEY_WARNING: &str = "TEST ONLY: private key of the hie-edge development CA, written by `hie-edge pki init`.\n\
Anyone holding it can mint certificates this CA's users trust. Never trust this CA in production.";
const LEAF_KEY_WARNING: &str = "TEST ONLY: key of a certificate of the hie-edge development PKI (`hie-edge pki init`).";
/// What the dev server certificate is valid for.
const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
const DEV_CA_VALIDITY: time::Duration = time::Duration::days(10 * 365);
const DEV_LEAF_VALIDITY: time::Duration = time::Duration::days(2 * 365);
/// Tolerates a peer whose clock is a little behind ours.
const BACKDATE: time::Duration = time::Duration::hours(1);
const SERIAL_LEN: usize = 16;
/// Owner read/write only (the key-file rule of `load::private_key`).
const KEY_MODE: u32 = 0o600;
const CERTIFICATE_MODE: u32 = 0o644;
