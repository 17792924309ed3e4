//! Partner identity: which partner organization a verified client certificate belongs to.
//!
//! Cross-organization identity is the TLS client certificate, never a SOAP field
//! (reliability-security 7, "Access control by AE title and certificate"). The TLS layer has
//! already checked the chain, validity, revocation and EKU; this module only maps a certificate it
//! accepted to a configured partner. A certificate that maps to none gets `None`, and the caller
//! refuses the request.
//!
//! A partner is identified in one of two ways:
//! - **Pinned**: by the SHA-256 of the SubjectPublicKeyInfo of its client certificate (the pin of
//!   RFC 7469 section 2.4), not of the whole certificate. A partner that renews its certificate
//!   over the same key stays recognized without a configuration change; a new key needs one. The
//!   chain must still verify, so an expired or revoked certificate is refused whatever its pin.
//! - **Subject**: by the RFC 4514 subject of its certificate, compared after normalization (see
//!   the `dn` module: case, insignificant spaces and attribute order within an RDN are ignored).
//!   This fits partners whose CA re-keys certificates on renewal. It trusts the CA bundle not to
//!   issue that subject to anyone else.
//!
//! A pinned match is looked up first: it is the more specific identity.

use std::collections::HashMap;

use rustls_pki_types::CertificateDer;

use crate::certificate::{self, Fingerprint};
use crate::dn::NormalizedName;

pub use crate::dn::DnParseError;

/// A partner organization allowed to call cross-organization endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// The configured name, used in logs and audit records.
    pub name: String,
    pub identity: PartnerIdentity,
    /// The transactions the partner may call (`RAD-69`, `ITI-43`, ...); the caller checks them.
    pub transactions: Vec<String>,
}

impl Partner {
    /// Whether the partner is enabled for `transaction` (exact, case-sensitive match).
    pub fn allows(&self, transaction: &str) -> bool {
        self.transactions.iter().any(|allowed| allowed == transaction)
    }
}

/// How a partner's client certificate is recognized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerIdentity {
    /// The partner's client certificate, matched by the SHA-256 of its SubjectPublicKeyInfo.
    Pinned { certificate: CertificateDer<'static> },
    /// An RFC 4514 subject (`CN=Imaging Gateway,O=Hospital B,C=DE`), matched after normalization.
    Subject { subject: String },
}

/// A partner list that could not be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartnerError {
    #[error("partner {partner}: the pinned certificate is not valid X.509: {detail}")]
    PinnedCertificate { partner: String, detail: String },
    #[error("partner {partner}: the subject is not a valid RFC 4514 string: {source}")]
    Subject { partner: String, source: DnParseError },
    #[error("partners {first} and {second} have the same identity; a certificate must name one partner")]
    Duplicate { first: String, second: String },
    #[error("two partners are named {name}")]
    DuplicateName { name: String },
}

/// Partners indexed by pin and by normalized subject.
#[derive(Debug, Clone, Default)]
pub struct PartnerDirectory {
    partners: Vec<Partner>,
    by_pin: HashMap<Fingerprint, usize>,
    by_subject: HashMap<NormalizedName, usize>,
}

impl PartnerDirectory {
    /// Indexes `partners`, refusing unparsable identities, duplicate identities and names.
    pub fn new(partners: Vec<Partner>) -> Result<Self, PartnerError> {
        let mut by_pin = HashMap::new();
        let mut by_subject = HashMap::new();
        let mut names = HashMap::new();
        for (index, partner) in partners.iter().enumerate() {
            if names.insert(partner.name.as_str(), index).is_some() {
                return Err(PartnerError::DuplicateName { name: partner.name.clone() });
            }
            let previous = match &partner.identity {
                PartnerIdentity::Pinned { certificate } => {
                    let pin = certificate::spki_fingerprint(certificate).map_err(|error| {
                        PartnerError::PinnedCertificate { partner: partner.name.clone(), detail: error.to_string() }
                    })?;
                    by_pin.insert(pin, index)
                }
                PartnerIdentity::Subject { subject } => {
                    let name = NormalizedName::parse_rfc4514(subject)
                        .map_err(|source| PartnerError::Subject { partner: partner.name.clone(), source })?;
                    by_subject.insert(name, index)
                }
            };
            if let Some(first) = previous {
                return Err(PartnerError::Duplicate {
                    first: partners[first].name.clone(),
                    second: partner.name.clone(),
                });
            }
        }
        Ok(Self { partners, by_pin, by_subject })
    }

    /// The partner a (TLS-verified) end-entity certificate belongs to, if any.
    pub fn identify(&self, certificate: &CertificateDer<'_>) -> Option<&Partner> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
        let pin = Fingerprint::of(parsed.public_key().raw);
        let index = match self.by_pin.get(&pin) {
            Some(index) => *index,
            None => *self.by_subject.get(&NormalizedName::from_x509(parsed.subject()))?,
        };
        self.partners.get(index)
    }

    /// The partner called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Partner> {
        self.partners.iter().find(|partner| partner.name == name)
    }

    /// All partners, in configuration order.
    pub fn partners(&self) -> &[Partner] {
        &self.partners
    }
}
