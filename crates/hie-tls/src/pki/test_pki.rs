//! Test PKI (feature `test-support`): CAs, intermediates, leaf certificates with any validity and
//! EKU, and CRLs with any dates, to mint the negative cases of mutual-TLS tests.
//!
//! Test support only: minting failures panic, because they mean a broken test setup.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use rcgen::ExtendedKeyUsagePurpose;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
pub use time::{Duration, OffsetDateTime};

use super::{distinguished_name, issue, new_ca, random_serial};

/// A certificate authority that can issue certificates, intermediates and CRLs.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// PEM of this CA and the intermediates above it, nearest first; empty for a root, which
    /// peers already hold.
    chain_pem: String,
}

impl TestCa {
    /// A self-signed root CA valid from an hour ago for ten years.
    pub fn new(common_name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca(common_name, TEST_ORGANIZATION, now - Duration::hours(1), now + Duration::days(3650))
            .expect("mint a test CA");
        Self { issuer: ca.issuer, chain_pem: String::new() }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, Some(TEST_ORGANIZATION));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate a key");
        let issuer = CertifiedIssuer::signed_by(params, key, &self.issuer).expect("mint an intermediate CA");
        let chain_pem = format!("{}{}", issuer.pem(), self.chain_pem);
        Self { issuer, chain_pem }
    }

    /// This CA's certificate in PEM.
    pub fn certificate_pem(&self) -> String {
        self.issuer.pem()
    }

    /// This CA's certificate in DER.
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a leaf certificate.
    pub fn issue(&self, spec: &LeafSpec) -> TestLeaf {
        let mut params =
            CertificateParams::new(spec.subject_alt_names.clone()).expect("valid subject alternative names");
        params.distinguished_name = distinguished_name(&spec.common_name, spec.organization.as_deref());
        params.extended_key_usages = spec.extended_key_usages.clone();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let issued = issue(&self.issuer, &params).expect("mint a test certificate");
        let chain_pem = format!("{}{}", issued.certificate_pem, self.chain_pem);
        TestLeaf {
            certificate: issued.certificate.der().clone(),
            certificate_pem: issued.certificate_pem,
            chain_pem,
            key_pem: issued.key_pem,
            serial: issued.serial,
        }
    }

    /// A CRL of this CA revoking `revoked`, with the given thisUpdate and nextUpdate, in PEM.
    pub fn crl(&self, revoked: &[&TestLeaf], this_update: OffsetDateTime, next_update: OffsetDateTime) -> String {
        self.crl_of_serials(
            &revoked.iter().map(|leaf| leaf.serial.clone()).collect::<Vec<_>>(),
            this_update,
            next_update,
        )
    }

    /// A CRL revoking certificates by serial (an intermediate CA's serial, for instance).
    pub fn crl_of_serials(
        &self,
        serials: &[SerialNumber],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> String {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: random_serial(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("sign a test CRL").pem().expect("encode a CRL in PEM")
    }

    /// A current CRL (issued an hour ago, next update in a day).
    pub fn current_crl(&self, revoked: &[&TestLeaf]) -> String {
        let now = OffsetDateTime::now_utc();
        self.crl(revoked, now - Duration::hours(1), now + Duration::days(1))
    }

    /// The serial of this CA's own certificate.
    pub fn serial(&self) -> SerialNumber {
        let summary = crate::CertificateSummary::from_der(self.issuer.der()).expect("parse our own certificate");
        let bytes: Vec<u8> = (0..summary.serial.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&summary.serial[index..index + 2], 16).expect("hex serial"))
            .collect();
        SerialNumber::from_slice(&bytes)
    }

    /// Writes the CA certificate as `<stem>.pem` into `dir` and returns its path.
    pub fn write_certificate(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.pem"));
        write_atomically(&path, self.certificate_pem().as_bytes(), 0o644);
        path
    }
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    pub organization: Option<String>,
    /// DNS names and IP addresses (parsed as IPs when they are).
    pub subject_alt_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
}

impl LeafSpec {
    /// A client certificate (clientAuth) valid from an hour ago for a year.
    pub fn client(common_name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: common_name.to_owned(),
            organization: Some("Partner Hospital".to_owned()),
            subject_alt_names: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(365),
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }

    /// A server certificate (serverAuth) for localhost, 127.0.0.1 and ::1, valid for a year.
    pub fn server() -> Self {
        Self {
            common_name: "localhost".to_owned(),
            subject_alt_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()],
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..Self::client("localhost")
        }
    }

    /// The same certificate valid between `not_before` and `not_after`.
    pub fn valid(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// The same certificate with other extended key usages.
    pub fn with_extended_key_usages(mut self, usages: Vec<ExtendedKeyUsagePurpose>) -> Self {
        self.extended_key_usages = usages;
        self
    }

    /// The same certificate with other subject alternative names.
    pub fn with_subject_alt_names(mut self, names: &[&str]) -> Self {
        self.subject_alt_names = names.iter().map(|name| (*name).to_owned()).collect();
        self
    }
}

/// A minted leaf certificate and its key.
#[derive(Debug, Clone)]
pub struct TestLeaf {
    pub certificate: CertificateDer<'static>,
    pub certificate_pem: String,
    /// The certificate followed by the intermediates of its issuer, as a server or client sends it.
    pub chain_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    pub serial: SerialNumber,
}

impl TestLeaf {
    /// Writes `<stem>.pem` (the chain, mode 0644) and `<stem>.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let certificate_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        write_atomically(&certificate_path, self.chain_pem.as_bytes(), 0o644);
        write_atomically(&key_path, self.key_pem.as_bytes(), 0o600);
        (certificate_path, key_path)
    }
}

/// Replaces `path` by a rename, as deployment tools do, so a reader sees the old or the new file.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, contents).expect("write a test file");
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode)).expect("chmod a test file");
    std::fs::rename(&temporary, path).expect("rename a test file");
}

const TEST_ORGANIZATION: &str = "hie-edge test PKI";
