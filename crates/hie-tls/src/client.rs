//! The rustls client config for outbound calls: the remote registry, repository and audit record
//! repository.
//!
//! We present our client certificate, trust only the configured CA bundle for servers, and always
//! verify the server's name against its certificate's SAN (IHE ITI TF-2 3.19, "FQDN Validation of
//! Server Certificate" option): there is no setting that turns verification off. TLS 1.2 and 1.3
//! with the suites of [`crate::server::CIPHER_SUITES`]. CRLs are optional; when given, they apply
//! to the server's chain with the same fail-closed rules as on the server side.
//!
//! The config is returned by value so the caller can set ALPN (hyper-rustls does so itself).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;

use crate::error::TlsError;
use crate::load::{self, KeyFilePolicy};
use crate::server::PROTOCOL_VERSIONS;

/// The files of an outbound mutual-TLS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSettings {
    /// Our client certificate, then its intermediates.
    pub certificate_chain: PathBuf,
    pub private_key: PathBuf,
    /// The CAs that issue the servers' certificates (registry, repository, ARR).
    pub server_ca_bundle: PathBuf,
    /// CRLs of those CAs; may be empty.
    pub crls: Vec<PathBuf>,
    /// See [`crate::ServerTlsSettings::danger_allow_expired_crl`].
    pub danger_allow_expired_crl: bool,
    pub key_file_policy: KeyFilePolicy,
}

impl ClientTlsSettings {
    /// Settings with no CRLs and the default (strict) policies.
    pub fn new(
        certificate_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
        server_ca_bundle: impl Into<PathBuf>,
    ) -> Self {
        Self {
            certificate_chain: certificate_chain.into(),
            private_key: private_key.into(),
            server_ca_bundle: server_ca_bundle.into(),
            crls: Vec::new(),
            danger_allow_expired_crl: false,
            key_file_policy: KeyFilePolicy::RequireOwnerOnly,
        }
    }
}

/// Builds the client config from `settings`.
pub fn client_config(settings: &ClientTlsSettings) -> Result<ClientConfig, TlsError> {
    let chain = load::certificate_chain(&settings.certificate_chain)?;
    let key = load::private_key(&settings.private_key, settings.key_file_policy)?;
    let roots = load::ca_bundle(&settings.server_ca_bundle)?;
    let mut crls = Vec::new();
    for path in &settings.crls {
        crls.extend(load::crls(path)?);
    }
    let provider = crate::provider();
    let mut verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).with_crls(crls);
    if !settings.danger_allow_expired_crl {
        verifier = verifier.enforce_revocation_expiration();
    }
    let verifier = verifier
        .build()
        .map_err(|source| TlsError::Verifier { ca_bundle: settings.server_ca_bundle.clone(), source })?;
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::KeyPair {
            certificate_path: settings.certificate_chain.clone(),
            key_path: settings.private_key.clone(),
            source,
        })
}
