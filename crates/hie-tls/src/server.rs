//! The rustls server config of cross-organization listeners, and its reload.
//!
//! Policy (IHE ITI TF-2 3.19 "Authenticate Node"; DICOM PS3.15 B.12 "BCP195 TLS Secure Transport
//! Connection Profile"; BCP 195 = RFC 9325):
//! - TLS 1.3 and TLS 1.2 only (RFC 9325 3.1.1: TLS 1.1 and below MUST NOT be negotiated).
//! - TLS 1.2 cipher suites are ECDHE with AEAD only: AES-GCM and CHACHA20-POLY1305
//!   (RFC 9325 4.2). No CBC, no static RSA key exchange, no compression, no renegotiation: rustls
//!   implements none of them, and [`CIPHER_SUITES`] lists the suites explicitly so that a change
//!   of rustls defaults cannot widen them.
//! - A client certificate is REQUIRED and verified against the client CA bundle; there is no
//!   anonymous fallback (reliability-security 0 item 10: OpenSSL's VERIFY_PEER without
//!   FAIL_IF_NO_PEER_CERT accepted clients without certificates). The CertificateRequest lists the
//!   CA names of the bundle, which some IHE peers need to pick a certificate.
//! - Revocation comes from CRL files, checked for every certificate of the chain below the trust
//!   anchor. A certificate no CRL covers fails (unknown status is an error), and so does a CRL
//!   past its nextUpdate unless `danger_allow_expired_crl` is set: an expired CRL fails closed.
//! - ALPN offers `h2` then `http/1.1` (RFC 7301).
//!
//! Reload: [`ReloadableServerConfig`] re-reads every file when one of them changes (polled by
//! [`ReloadableServerConfig::watch`], or on demand by [`ReloadableServerConfig::reload`]) and swaps
//! the `Arc<ServerConfig>` new handshakes use. A bad new file keeps the old config running and is
//! logged at error level. Each config has its own session cache, so a session from before a CRL
//! reload cannot be resumed to skip the new revocation check.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, SupportedCipherSuite};
use tokio::sync::watch;

use crate::error::TlsError;
use crate::load::{self, KeyFilePolicy};

/// The cipher suites of every config of this crate, in server preference order.
///
/// TLS 1.3 (RFC 8446 B.4) and the TLS 1.2 ECDHE+AEAD suites RFC 9325 4.2 recommends, with
/// CHACHA20-POLY1305 (RFC 7905) for clients without AES instructions.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// TLS 1.3 and 1.2, nothing older (RFC 9325 3.1.1).
pub(crate) static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// RFC 7301 3.1 protocol IDs, in preference order: HTTP/2 (RFC 9113), then HTTP/1.1.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The files and policy of a mutual-TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsSettings {
    /// Our certificate, then its intermediates (PEM or DER).
    pub certificate_chain: PathBuf,
    /// The key of our certificate; refused if readable by group or others (see `key_file_policy`).
    pub private_key: PathBuf,
    /// The CAs that issue our partners' client certificates.
    pub client_ca_bundle: PathBuf,
    /// CRL files (PEM or DER) of those CAs and their intermediates; may be empty.
    pub crls: Vec<PathBuf>,
    /// Accept certificates covered only by a CRL past its nextUpdate. Off by default: an expired
    /// CRL fails closed. Logged at warn level on every load when it matters.
    pub danger_allow_expired_crl: bool,
    pub key_file_policy: KeyFilePolicy,
}

impl ServerTlsSettings {
    /// Settings with no CRLs and the default (strict) policies.
    pub fn new(
        certificate_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
        client_ca_bundle: impl Into<PathBuf>,
    ) -> Self {
        Self {
            certificate_chain: certificate_chain.into(),
            private_key: private_key.into(),
            client_ca_bundle: client_ca_bundle.into(),
            crls: Vec::new(),
            danger_allow_expired_crl: false,
            key_file_policy: KeyFilePolicy::RequireOwnerOnly,
        }
    }

    /// Every file the config is built from, for change detection.
    fn files(&self) -> impl Iterator<Item = &Path> {
        [self.certificate_chain.as_path(), self.private_key.as_path(), self.client_ca_bundle.as_path()]
            .into_iter()
            .chain(self.crls.iter().map(PathBuf::as_path))
    }
}

/// Builds the server config from `settings` (see the module doc for the policy).
pub fn server_config(settings: &ServerTlsSettings) -> Result<ServerConfig, TlsError> {
    let chain = load::certificate_chain(&settings.certificate_chain)?;
    let key = load::private_key(&settings.private_key, settings.key_file_policy)?;
    let roots = load::ca_bundle(&settings.client_ca_bundle)?;
    let mut crls = Vec::new();
    for path in &settings.crls {
        let loaded = load::crls(path)?;
        warn_about_expired_crls(path, &loaded, settings.danger_allow_expired_crl);
        crls.extend(loaded);
    }
    let provider = crate::provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).with_crls(crls);
    if !settings.danger_allow_expired_crl {
        verifier = verifier.enforce_revocation_expiration();
    }
    let verifier = verifier
        .build()
        .map_err(|source| TlsError::Verifier { ca_bundle: settings.client_ca_bundle.clone(), source })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::KeyPair {
            certificate_path: settings.certificate_chain.clone(),
            key_path: settings.private_key.clone(),
            source,
        })?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|protocol| protocol.to_vec()).collect();
    // Our preference order (strongest first) rather than the client's.
    config.ignore_client_order = true;
    Ok(config)
}

/// A server config that can be replaced while the listener runs. Cheap to clone.
#[derive(Clone)]
pub struct ReloadableServerConfig {
    inner: Arc<Reloadable>,
}

struct Reloadable {
    /// `None` for a fixed config, which never reloads.
    settings: Option<ServerTlsSettings>,
    current: ArcSwap<ServerConfig>,
    stamps: Mutex<Stamps>,
    generation: AtomicU64,
}

/// The file stamps of the loaded config, and of the last attempt that failed (reported once).
#[derive(Default)]
struct Stamps {
    loaded: Vec<Option<FileStamp>>,
    failed: Option<Vec<Option<FileStamp>>>,
}

/// What tells a changed file from an unchanged one: a replaced file (rename over) has another
/// inode; a rewritten one another size, mtime or ctime.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl ReloadableServerConfig {
    /// Loads the config from `settings`; fails if any file is bad (there is no old config yet).
    pub fn load(settings: ServerTlsSettings) -> Result<Self, TlsError> {
        let stamps = stamps(&settings);
        let config = server_config(&settings)?;
        Ok(Self {
            inner: Arc::new(Reloadable {
                settings: Some(settings),
                current: ArcSwap::from_pointee(config),
                stamps: Mutex::new(Stamps { loaded: stamps, failed: None }),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// A config that never reloads (tests, or material that is not in files).
    pub fn fixed(config: Arc<ServerConfig>) -> Self {
        Self {
            inner: Arc::new(Reloadable {
                settings: None,
                current: ArcSwap::new(config),
                stamps: Mutex::new(Stamps::default()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.inner.current.load_full()
    }

    /// How many times a reload succeeded.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Re-reads every file now and swaps the config. On error the previous config stays in use,
    /// and the error is logged at error level and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some(settings) = &self.inner.settings else {
            return Ok(());
        };
        let mut state = self.inner.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.reload_locked(settings, &mut state)
    }

    /// Reloads if a file changed since the last load (or the last failed attempt, which was
    /// already reported). Returns whether a new config is in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some(settings) = &self.inner.settings else {
            return Ok(false);
        };
        let mut state = self.inner.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamps(settings);
        if now == state.loaded || state.failed.as_ref() == Some(&now) {
            return Ok(false);
        }
        self.reload_locked(settings, &mut state).map(|()| true)
    }

    /// Polls the files every `interval` until `shutdown` turns true, reloading on change. File
    /// reads run on the blocking pool (a CRL can be large).
    pub async fn watch(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let this = self.clone();
            // Errors are logged by `reload_locked`; the watcher keeps polling.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }

    fn reload_locked(&self, settings: &ServerTlsSettings, state: &mut Stamps) -> Result<(), TlsError> {
        // Stamps are taken before reading, so a file changed during the read is seen as changed at
        // the next poll and read again.
        let now = stamps(settings);
        match server_config(settings) {
            Ok(config) => {
                self.inner.current.store(Arc::new(config));
                state.loaded = now;
                state.failed = None;
                let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
                tracing::info!(generation, certificate = %settings.certificate_chain.display(),
                    "TLS server configuration reloaded; new handshakes use it.");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error,
                    "TLS server configuration reload FAILED; the previous configuration stays in use until the files are fixed.");
                state.failed = Some(now);
                Err(error)
            }
        }
    }
}

impl std::fmt::Debug for ReloadableServerConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReloadableServerConfig")
            .field("settings", &self.inner.settings)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

fn stamps(settings: &ServerTlsSettings) -> Vec<Option<FileStamp>> {
    settings
        .files()
        .map(|path| {
            std::fs::metadata(path).ok().map(|metadata| FileStamp {
                device: metadata.dev(),
                inode: metadata.ino(),
                len: metadata.len(),
                modified: (metadata.mtime(), metadata.mtime_nsec()),
                changed: (metadata.ctime(), metadata.ctime_nsec()),
            })
        })
        .collect()
}

/// Logs CRLs past their nextUpdate: an error if they will make handshakes fail, a warning if the
/// override accepts them.
fn warn_about_expired_crls(path: &Path, crls: &[rustls_pki_types::CertificateRevocationListDer<'_>], allowed: bool) {
    let now = x509_parser::time::ASN1Time::now();
    for (index, crl) in crls.iter().enumerate() {
        let Ok((_, parsed)) = x509_parser::parse_x509_crl(crl.as_ref()) else {
            continue;
        };
        let Some(next_update) = parsed.next_update() else {
            continue;
        };
        if next_update < now {
            if allowed {
                tracing::warn!(path = %path.display(), index, next_update = %next_update,
                    "CRL is past its nextUpdate; accepted by the danger_allow_expired_crl override.");
            } else {
                tracing::error!(path = %path.display(), index, next_update = %next_update,
                    "CRL is past its nextUpdate; every client certificate it covers will be refused until it is renewed.");
            }
        }
    }
}
