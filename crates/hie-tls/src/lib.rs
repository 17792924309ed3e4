//! TLS mechanism for hie-edge: everything between a TCP socket and an authenticated peer.
//!
//! The broker serves the registry, repository and retrieval endpoints on one HTTPS listener, and
//! every cross-organization endpoint requires mutual TLS (IHE ITI TF-2 3.19, "ATNA Secure Node";
//! DICOM PS3.15 B.12, "BCP195 TLS Secure Transport Connection Profile"). Outbound, the broker calls
//! a remote registry, repository or audit repository presenting its own certificate.
//!
//! Modules:
//! - [`load`]: PEM/DER files (certificate chains, private keys, CA bundles, CRLs) with errors
//!   naming the file, and the refusal of private keys readable by group or others.
//! - [`server`]: the rustls server config (TLS 1.2/1.3, ECDHE+AEAD suites, required client
//!   certificates verified against a CA bundle and CRLs, ALPN) and [`ReloadableServerConfig`],
//!   which re-reads its files when they change and keeps the old config when a new file is bad.
//! - [`client`]: the rustls client config for outbound calls (our certificate, server trust
//!   anchors, server name verification that cannot be turned off).
//! - [`certificate`]: the fields of a peer certificate that logs and audit records need
//!   (RFC 4514 subject and issuer, serial, SHA-256 fingerprints).
//! - [`partner`]: [`PartnerDirectory`], which maps a verified client certificate to a partner
//!   organization by pinned key or by subject.
//! - [`refusal`]: the classification of refused handshakes into categories for counters, logs and
//!   the ATNA Security Alert.
//! - [`https`]: [`serve_https`], the accept loop (TLS handshake with a timeout, HTTP/1.1 and
//!   HTTP/2 through hyper-util, [`PeerIdentity`] in every request's extensions, connection cap,
//!   graceful shutdown) over any axum `Router`.
//! - [`pki`]: `pki::init`, a development PKI (CA, server and client certificates) written to a
//!   directory; with the `test-support` feature, `pki::test_pki` mints the negative cases.
//!
//! Only the aws-lc-rs crypto provider is used, passed explicitly to every config builder, so the
//! process-wide default provider does not matter to this crate; [`install_default_provider`]
//! sets it for other rustls users in the process.
//!
//! **Architecture invariant:** depends on no other `hie-*` crate; it is mechanism, and the binary
//! hands it paths and limits.

pub mod certificate;
pub mod client;
mod dn;
pub mod error;
pub mod https;
pub mod load;
pub mod partner;
pub mod pki;
pub mod refusal;
pub mod server;

pub use certificate::{CertificateSummary, Fingerprint};
pub use client::{ClientTlsSettings, client_config};
pub use error::{FileRole, TlsError};
pub use https::{HttpsLimits, HttpsStats, PeerIdentity, serve_https};
pub use load::KeyFilePolicy;
pub use partner::{Partner, PartnerDirectory, PartnerError, PartnerIdentity};
pub use refusal::{HandshakeRefusal, RefusalCategory};
pub use server::{ReloadableServerConfig, ServerTlsSettings, server_config};

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// Installs aws-lc-rs as the process-wide default rustls provider, for rustls users that do not
/// take an explicit provider (hyper-rustls builders, for instance). Call it first thing in `main`.
///
/// Returns `false` when a default was already installed (by an earlier call or another crate); the
/// configs of this crate do not depend on it either way.
pub fn install_default_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider().install_default().is_ok()
}

/// The provider every config of this crate is built with: aws-lc-rs, restricted to the cipher
/// suites of [`server::CIPHER_SUITES`].
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: server::CIPHER_SUITES.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}
