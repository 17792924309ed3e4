//! Configuration: one TOML file, overridable key by key from the environment
//! (`HIE_EDGE__<SECTION>__<KEY>`), validated in two phases.
//!
//! Phase one ([`raw`]) checks the *shape*: every section and key must be known and of the right
//! TOML type; it reports every problem, not just the first. Phase two ([`Config::from_raw`])
//! checks *meaning* (addresses, OIDs, URLs, ranges) and builds the typed configuration each
//! crate takes. Only this crate reads settings.
//!
//! Modules: [`schema`] (the list of keys, with defaults and docs), [`raw`] (phase one).

pub mod profile;
pub mod raw;
pub mod schema;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hie_broker::studies::EvidenceSource;
use hie_core::profile::Profile;
use hie_core::{AffinityDomain, AssigningAuthority, Oid};
use hie_outbound::pacs::{DicomWebSettings, DimseSettings, PacsSettings, Retrieve};
use hie_telemetry::{LogFormat, TelemetryConfig};

pub use raw::RawConfig;

/// One configuration problem, with the key it concerns (`hl7.listen`) and where the value came
/// from (the file or an environment variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node: NodeConfig,
    pub dicom: DicomConfig,
    /// `None` for `kind = "folder"` with an empty `path`: commands that need a PACS refuse to run.
    pub pacs: Option<PacsSettings>,
    pub poll: PollConfig,
    pub store: StoreConfig,
    pub hl7: Hl7Config,
    pub api_listen: SocketAddr,
    pub affinity_domain: AffinityDomain,
    /// `None` when `[affinity_domain] profile` is empty: publishing is off.
    pub profile: Option<Arc<Profile>>,
    /// `None` when `[https] listen` is empty.
    pub https: Option<HttpsConfig>,
    pub partners: Vec<PartnerConfig>,
    /// `None` when `[registry] kind` is empty: publishing is off.
    pub registry: Option<RegistryConfig>,
    pub telemetry: TelemetryConfig,
}

/// `[https]`: the mutual-TLS listener.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    pub listen: SocketAddr,
    pub tls: hie_tls::ServerTlsSettings,
    /// Create a development PKI when the files are missing (quickstart).
    pub dev_pki: bool,
}

/// One `[[partners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerConfig {
    pub name: String,
    pub identity: PartnerIdentityConfig,
    pub transactions: Vec<String>,
}

/// How a partner's client certificate is recognized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerIdentityConfig {
    /// The partner's certificate file; matched by its public key.
    Certificate(std::path::PathBuf),
    /// The certificate subject (RFC 4514).
    Subject(String),
}

/// The transactions a partner may be allowed.
pub const PARTNER_TRANSACTIONS: &[&str] = &["RAD-69", "ITI-43", "ITI-18", "ITI-41", "ITI-42", "ITI-57"];

/// `[store] outbox_linger_ms` at most: beyond a second the wait is a delay, not batching.
const MAX_OUTBOX_LINGER_MS: i64 = 1_000;

/// `[registry]`: where manifests are published.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub kind: RegistryKind,
    pub mode: hie_broker::publish::Mode,
    /// ITI-42/ITI-18/ITI-57 endpoint (for builtin: our own, filled in at start).
    pub registry_url: String,
    /// ITI-41 endpoint (for builtin: our own).
    pub repository_url: String,
    /// The identity feed's `host:port`; `None`: no feed is sent.
    pub feed: Option<String>,
    pub feed_receiving_application: String,
    pub feed_receiving_facility: String,
    /// The client identity for https:// endpoints.
    pub client_tls: Option<hie_tls::ClientTlsSettings>,
    pub timeout: Duration,
    /// The built-in repository's repositoryUniqueId (builtin, mode provide).
    pub builtin_repository_unique_id: Option<Oid>,
    /// The built-in registry's database URL (builtin only): `builtin_store`, or
    /// [`registry_store_beside`] the broker's store.
    pub builtin_store: Option<String>,
}

/// `[registry] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    Builtin,
    Remote,
}

/// `[node]` identities beyond the name. Each is optional until a command needs it (`kos build`
/// needs both), so a broker that only handles ADT needs neither.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// XDS repositoryUniqueId; also the manifests' Retrieve Location UID.
    pub repository_unique_id: Option<Oid>,
    /// Root of the UIDs we generate; at most [`hie_kos::RootedUids::MAX_ROOT_LEN`] characters.
    pub uid_root: Option<Oid>,
}

/// `[dicom]`: how we present ourselves to DICOM peers, our listener, and study readiness.
#[derive(Debug, Clone)]
pub struct DicomConfig {
    /// Our AE title; also the manifests' Retrieve AE Title.
    pub ae_title: String,
    /// The listener's address; `None`: no listener.
    pub listen: Option<SocketAddr>,
    /// Empty: any calling AE.
    pub allowed_calling_ae_titles: Vec<String>,
    pub max_associations: usize,
    pub association_timeout: Duration,
    pub idle_timeout: Duration,
    pub quiet_period: Duration,
    pub evidence: EvidenceSource,
}

/// `[pacs] poll_*`: polling the PACS for new and changed studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// `None`: no polling.
    pub interval: Option<Duration>,
    pub lookback_days: u32,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub group_commit_max_batch: usize,
    pub outbox_lease: Duration,
    pub outbox_backoff_base: Duration,
    pub outbox_backoff_max: Duration,
    pub outbox_max_attempts: u32,
    pub outbox_linger: Duration,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Hl7Config {
    pub listen: SocketAddr,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub application: String,
    pub facility: String,
    pub answer_never_ack: bool,
}

/// Reads `path`, applies the environment overrides, and validates. Returns every problem found.
pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![Problem { key: path.display().to_string(), message: format!("cannot read the file: {error}") }]
    })?;
    let (raw, mut problems) = RawConfig::parse_lenient(&text, env);
    let base = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match Config::from_raw_at(&raw, base) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(problems),
        Err(meaning_problems) => {
            // A key phase one already reported (wrong type, missing) is not reported twice.
            let already = |key: &str| problems.iter().any(|problem| problem.key.split(' ').next() == Some(key));
            let fresh: Vec<Problem> = meaning_problems.into_iter().filter(|problem| !already(&problem.key)).collect();
            problems.extend(fresh);
            Err(problems)
        }
    }
}

impl Config {
    /// Phase two: meaning. Collects every problem with its key path.
    pub fn from_raw(raw: &RawConfig) -> Result<Config, Vec<Problem>> {
        Config::from_raw_at(raw, Path::new("."))
    }

    /// Like [`Config::from_raw`], with relative paths (`pacs.path`, `affinity_domain.profile`)
    /// taken relative to `base`, the configuration file's folder: a broker started from anywhere
    /// finds the same files.
    pub fn from_raw_at(raw: &RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| problems.push(Problem { key: key.to_owned(), message });

        let node_name = raw.string("node", "name");
        if node_name.trim().is_empty() {
            problem("node.name", "must not be empty".to_owned());
        }

        let node = NodeConfig {
            repository_unique_id: optional_dicom_oid(raw, "node", "repository_unique_id", None, &mut problem),
            uid_root: optional_dicom_oid(
                raw,
                "node",
                "uid_root",
                Some(hie_kos::RootedUids::MAX_ROOT_LEN),
                &mut problem,
            ),
        };

        let ae_title = raw.string("dicom", "ae_title");
        if let Err(message) = check_ae_title(&ae_title) {
            problem("dicom.ae_title", message);
        }
        let dicom_listen = optional_socket_address(raw, "dicom", "listen", &mut problem);
        let allowed_calling_ae_titles = raw.strings("dicom", "allowed_calling_ae_titles");
        for (n, title) in allowed_calling_ae_titles.iter().enumerate() {
            if let Err(message) = check_ae_title(title) {
                problem(&format!("dicom.allowed_calling_ae_titles[{n}]"), message);
            }
        }
        let evidence = match raw.string("dicom", "evidence").as_str() {
            "pacs" => EvidenceSource::Pacs,
            "received" => EvidenceSource::Received,
            other => {
                problem("dicom.evidence", format!("must be \"pacs\" or \"received\", got {other:?}"));
                EvidenceSource::Pacs
            }
        };
        if evidence == EvidenceSource::Received && dicom_listen.is_none() {
            problem("dicom.evidence", "\"received\" needs the listener: set dicom.listen".to_owned());
        }
        let store_url = raw.string("store", "url");
        if !(store_url.starts_with("sqlite:")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            problem("store.url", format!("{store_url:?} is neither sqlite://… nor postgres://…"));
        } else if sqlite_in_memory(&store_url) {
            problem(
                "store.url",
                format!(
                    "{store_url:?} is an in-memory SQLite database; the store must be a file (its writer's two \
                     connections and the readers would each see a database of their own)"
                ),
            );
        }
        let positive = |section: &str, key: &str, problem: &mut dyn FnMut(&str, String)| -> u64 {
            let value = raw.integer(section, key);
            if value <= 0 {
                problem(&format!("{section}.{key}"), format!("must be a positive integer, got {value}"));
                1
            } else {
                value.unsigned_abs()
            }
        };
        let dicom_max_associations = positive("dicom", "max_associations", &mut problem);
        let association_timeout_secs = positive("dicom", "association_timeout_secs", &mut problem);
        let dicom_idle_timeout_secs = positive("dicom", "idle_timeout_secs", &mut problem);
        let quiet_period_secs = raw.integer("dicom", "quiet_period_secs");
        if quiet_period_secs < 0 {
            problem("dicom.quiet_period_secs", format!("must not be negative, got {quiet_period_secs}"));
        }
        let pacs = pacs_settings(raw, &ae_title, base, &mut problem);
        if let Some(PacsSettings::Dimse(dimse)) = &pacs
            && dimse.retrieve == Retrieve::CMove
            && dicom_listen.is_none()
        {
            problem(
                "pacs.retrieve",
                "\"c-move\" needs the listener, where the PACS sends the instances: set dicom.listen".to_owned(),
            );
        }
        let poll_interval_secs = raw.integer("pacs", "poll_interval_secs");
        if poll_interval_secs < 0 {
            problem("pacs.poll_interval_secs", format!("must not be negative, got {poll_interval_secs}"));
        }
        let poll_lookback_days = positive("pacs", "poll_lookback_days", &mut problem);
        let poll = PollConfig {
            interval: (poll_interval_secs > 0).then(|| Duration::from_secs(poll_interval_secs.unsigned_abs())),
            lookback_days: u32::try_from(poll_lookback_days).unwrap_or(u32::MAX),
        };
        if poll.interval.is_some() && pacs.is_none() {
            problem("pacs.poll_interval_secs", "polling needs a PACS: set [pacs]".to_owned());
        }
        let max_connections = positive("store", "max_connections", &mut problem);
        let acquire_timeout_secs = positive("store", "acquire_timeout_secs", &mut problem);
        let group_commit_max_batch = positive("store", "group_commit_max_batch", &mut problem);
        // Each message of a batch binds a few parameters of the batch's statements; both engines
        // cap parameters per statement (SQLite 32766), so the batch is bounded well below that.
        if group_commit_max_batch > 4_096 {
            problem("store.group_commit_max_batch", format!("must be at most 4096, got {group_commit_max_batch}"));
        }
        let outbox_lease_secs = positive("store", "outbox_lease_secs", &mut problem);
        let outbox_backoff_base_ms = positive("store", "outbox_backoff_base_ms", &mut problem);
        let outbox_backoff_max_secs = positive("store", "outbox_backoff_max_secs", &mut problem);
        let outbox_max_attempts = positive("store", "outbox_max_attempts", &mut problem);
        let retention_days = positive("store", "retention_days", &mut problem);
        let outbox_linger_ms = raw.integer("store", "outbox_linger_ms");
        if !(0..=MAX_OUTBOX_LINGER_MS).contains(&outbox_linger_ms) {
            problem("store.outbox_linger_ms", format!("must be 0 to {MAX_OUTBOX_LINGER_MS}, got {outbox_linger_ms}"));
        }
        if outbox_backoff_base_ms > outbox_backoff_max_secs.saturating_mul(1_000) {
            problem("store.outbox_backoff_base_ms", "must not exceed store.outbox_backoff_max_secs".to_owned());
        }

        let hl7_listen = socket_address(raw, "hl7", "listen", &mut problem);
        let max_frame_bytes = positive("hl7", "max_frame_bytes", &mut problem);
        // Below a few KiB no real ADT fits; above 64 MiB one peer could pin a lot of memory.
        if !(4_096..=64 * 1024 * 1024).contains(&max_frame_bytes) {
            problem("hl7.max_frame_bytes", format!("must be between 4096 and 67108864, got {max_frame_bytes}"));
        }
        let idle_timeout_secs = positive("hl7", "idle_timeout_secs", &mut problem);
        let hl7_max_connections = positive("hl7", "max_connections", &mut problem);
        let application = raw.string("hl7", "application");
        let facility = raw.string("hl7", "facility");
        for (key, value) in [("hl7.application", &application), ("hl7.facility", &facility)] {
            if value.is_empty() || value.contains(['|', '^', '~', '\\', '&', '\r', '\n']) {
                problem(key, "must be non-empty and free of HL7 delimiters".to_owned());
            }
        }

        let api_listen = socket_address(raw, "api", "listen", &mut problem);

        let authority_text = raw.string("affinity_domain", "patient_id_authority");
        let patient_id_authority = match Oid::parse(&authority_text) {
            Ok(oid) => Some(oid),
            Err(error) => {
                problem("affinity_domain.patient_id_authority", format!("{authority_text:?} is not an OID: {error}"));
                None
            }
        };
        let local_text = raw.string("affinity_domain", "local_authority");
        let local_authority = parse_hd(&local_text);
        match &local_authority {
            Err(message) => problem("affinity_domain.local_authority", message.clone()),
            Ok(local) if patient_id_authority.as_ref().is_some_and(|oid| oid.as_str() == local.universal_id) => {
                problem(
                    "affinity_domain.local_authority",
                    "must differ from affinity_domain.patient_id_authority".to_owned(),
                )
            }
            Ok(_) => {}
        }

        let profile_path = raw.string("affinity_domain", "profile");
        let profile = if profile_path.is_empty() {
            None
        } else {
            match profile::load(&base.join(&profile_path)) {
                Ok(profile) => {
                    if let Some(authority) = &patient_id_authority
                        && authority != &profile.patient_id_authority
                    {
                        problem(
                            "affinity_domain.profile",
                            format!(
                                "the profile's patient_id_authority {} differs from affinity_domain.patient_id_authority {authority}",
                                profile.patient_id_authority
                            ),
                        );
                    }
                    Some(Arc::new(profile))
                }
                Err(profile_problems) => {
                    for profile_problem in profile_problems {
                        problem(
                            &format!("affinity_domain.profile ({profile_path}): {}", profile_problem.key),
                            profile_problem.message,
                        );
                    }
                    None
                }
            }
        };

        let https = https_config(raw, base, &mut problem);
        let partners = partner_configs(raw, base, &mut problem);
        let registry = registry_config(raw, base, https.as_ref(), &mut problem);
        if registry.is_some() {
            if profile.is_none() && profile_path.is_empty() {
                problem(
                    "affinity_domain.profile",
                    "publishing ([registry]) needs the affinity domain's profile".to_owned(),
                );
            }
            for (missing, key) in [
                (node.repository_unique_id.is_none(), "node.repository_unique_id"),
                (node.uid_root.is_none(), "node.uid_root"),
            ] {
                if missing {
                    problem(key, "publishing ([registry]) needs it".to_owned());
                }
            }
            if pacs.is_none() {
                problem("pacs.kind", "publishing ([registry]) needs a PACS to build manifests from".to_owned());
            }
        }

        let log_format = match raw.string("telemetry", "log_format").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                problem("telemetry.log_format", format!("must be \"text\" or \"json\", got {other:?}"));
                LogFormat::Text
            }
        };
        let log_level = raw.string("telemetry", "log_level");
        if let Err(error) = hie_telemetry::check_filter(&log_level) {
            problem("telemetry.log_level", format!("{log_level:?} is not a valid log filter: {error}"));
        }
        let otlp_endpoint = raw.string("telemetry", "otlp_endpoint");
        if !(otlp_endpoint.is_empty() || otlp_endpoint.starts_with("http://") || otlp_endpoint.starts_with("https://"))
        {
            problem(
                "telemetry.otlp_endpoint",
                format!("{otlp_endpoint:?} must be an http:// or https:// URL, or empty"),
            );
        }

        match (problems.is_empty(), patient_id_authority, local_authority, hl7_listen, api_listen) {
            (true, Some(patient_id_authority), Ok(local_authority), Some(hl7_listen), Some(api_listen)) => Ok(Config {
                node,
                dicom: DicomConfig {
                    ae_title,
                    listen: dicom_listen,
                    allowed_calling_ae_titles,
                    max_associations: usize::try_from(dicom_max_associations).unwrap_or(usize::MAX),
                    association_timeout: Duration::from_secs(association_timeout_secs),
                    idle_timeout: Duration::from_secs(dicom_idle_timeout_secs),
                    quiet_period: Duration::from_secs(quiet_period_secs.unsigned_abs()),
                    evidence,
                },
                pacs,
                poll,
                store: StoreConfig {
                    url: store_url,
                    max_connections: u32::try_from(max_connections).unwrap_or(u32::MAX),
                    acquire_timeout: Duration::from_secs(acquire_timeout_secs),
                    group_commit_max_batch: usize::try_from(group_commit_max_batch).unwrap_or(usize::MAX),
                    outbox_lease: Duration::from_secs(outbox_lease_secs),
                    outbox_backoff_base: Duration::from_millis(outbox_backoff_base_ms),
                    outbox_backoff_max: Duration::from_secs(outbox_backoff_max_secs),
                    outbox_max_attempts: u32::try_from(outbox_max_attempts).unwrap_or(u32::MAX),
                    outbox_linger: Duration::from_millis(
                        outbox_linger_ms.clamp(0, MAX_OUTBOX_LINGER_MS).unsigned_abs(),
                    ),
                    retention: Duration::from_secs(retention_days.saturating_mul(86_400)),
                },
                hl7: Hl7Config {
                    listen: hl7_listen,
                    max_frame_bytes: usize::try_from(max_frame_bytes).unwrap_or(usize::MAX),
                    idle_timeout: Duration::from_secs(idle_timeout_secs),
                    max_connections: usize::try_from(hl7_max_connections).unwrap_or(usize::MAX),
                    application,
                    facility,
                    answer_never_ack: raw.boolean("hl7", "answer_never_ack"),
                },
                api_listen,
                affinity_domain: AffinityDomain::new(patient_id_authority, local_authority),
                profile,
                https,
                partners,
                registry,
                telemetry: TelemetryConfig {
                    log_format,
                    log_level,
                    otlp_endpoint: Some(otlp_endpoint).filter(|endpoint| !endpoint.is_empty()),
                    service_name: node_name.clone(),
                },
                node_name,
            }),
            _ => Err(problems),
        }
    }
}

/// `[pacs]` by kind. Keys of other kinds are ignored, so one file can keep several set up.
fn pacs_settings(
    raw: &RawConfig,
    our_ae_title: &str,
    base: &Path,
    problem: &mut dyn FnMut(&str, String),
) -> Option<PacsSettings> {
    let seconds = |key: &str, problem: &mut dyn FnMut(&str, String)| {
        let value = raw.integer("pacs", key);
        if value <= 0 {
            problem(&format!("pacs.{key}"), format!("must be a positive integer, got {value}"));
        }
        Duration::from_secs(value.max(1).unsigned_abs())
    };
    let connect_timeout = seconds("connect_timeout_secs", problem);
    let timeout = seconds("timeout_secs", problem);
    match raw.string("pacs", "kind").as_str() {
        "folder" => {
            let path = raw.string("pacs", "path");
            (!path.is_empty()).then(|| PacsSettings::Folder { path: base.join(path) })
        }
        "dimse" => {
            let ae_title = raw.string("pacs", "ae_title");
            if let Err(message) = check_ae_title(&ae_title) {
                problem("pacs.ae_title", message);
            }
            let host = raw.string("pacs", "host");
            let port = raw.integer("pacs", "port");
            let port = match u16::try_from(port) {
                Ok(port) if port > 0 => port,
                _ => {
                    problem("pacs.port", format!("must be a TCP port (1 to 65535), got {port}"));
                    0
                }
            };
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                problem("pacs.host", format!("must be a host name or IP address for kind = \"dimse\", got {host:?}"));
            }
            let retrieve = match raw.string("pacs", "retrieve").as_str() {
                "c-get" => Retrieve::CGet,
                "c-move" => Retrieve::CMove,
                other => {
                    problem("pacs.retrieve", format!("must be \"c-get\" or \"c-move\", got {other:?}"));
                    Retrieve::CGet
                }
            };
            let max_associations = raw.integer("pacs", "max_associations");
            if max_associations <= 0 {
                problem("pacs.max_associations", format!("must be a positive integer, got {max_associations}"));
            }
            Some(PacsSettings::Dimse(DimseSettings {
                ae_title,
                host,
                port,
                our_ae_title: our_ae_title.to_owned(),
                retrieve,
                max_associations: usize::try_from(max_associations.max(1)).unwrap_or(usize::MAX),
                connect_timeout,
                timeout,
            }))
        }
        "dicomweb" => {
            let url = raw.string("pacs", "url");
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                problem(
                    "pacs.url",
                    format!("{url:?} must be an http:// URL of the DICOMweb root, e.g. http://pacs:8042/dicom-web"),
                );
                return None;
            }
            Some(PacsSettings::DicomWeb(DicomWebSettings {
                url: url.trim_end_matches('/').to_owned(),
                connect_timeout,
                timeout,
            }))
        }
        other => {
            problem("pacs.kind", format!("must be \"folder\", \"dimse\" or \"dicomweb\", got {other:?}"));
            None
        }
    }
}

/// A path key: empty stays empty (`None`), a relative path is taken relative to `base`.
fn path_key(raw: &RawConfig, section: &str, key: &str, base: &Path) -> Option<std::path::PathBuf> {
    let text = raw.string(section, key);
    (!text.is_empty()).then(|| base.join(text))
}

fn https_config(raw: &RawConfig, base: &Path, problem: &mut dyn FnMut(&str, String)) -> Option<HttpsConfig> {
    let listen = optional_socket_address(raw, "https", "listen", problem)?;
    let mut paths = Vec::new();
    for key in ["certificate", "private_key", "client_ca"] {
        match path_key(raw, "https", key, base) {
            Some(path) => paths.push(path),
            None => problem(&format!("https.{key}"), "must be set when https.listen is".to_owned()),
        }
    }
    let [certificate, private_key, client_ca]: [std::path::PathBuf; 3] = paths.try_into().ok()?;
    let mut tls = hie_tls::ServerTlsSettings::new(certificate, private_key, client_ca);
    tls.crls = path_key(raw, "https", "crl", base).into_iter().collect();
    tls.danger_allow_expired_crl = raw.boolean("https", "danger_allow_expired_crl");
    Some(HttpsConfig { listen, tls, dev_pki: raw.boolean("https", "dev_pki") })
}

fn partner_configs(raw: &RawConfig, base: &Path, problem: &mut dyn FnMut(&str, String)) -> Vec<PartnerConfig> {
    let mut partners = Vec::new();
    for index in 0..raw.n_partners() {
        let key = |name: &str| format!("partners[{index}].{name}");
        let name = raw.partner_string(index, "name");
        if name.trim().is_empty() {
            problem(&key("name"), "must not be empty".to_owned());
        }
        if partners.iter().any(|partner: &PartnerConfig| partner.name == name) {
            problem(&key("name"), format!("{name:?} names two partners"));
        }
        let certificate = raw.partner_string(index, "certificate");
        let subject = raw.partner_string(index, "subject");
        let identity = match (certificate.is_empty(), subject.is_empty()) {
            (false, true) => PartnerIdentityConfig::Certificate(base.join(certificate)),
            (true, false) => PartnerIdentityConfig::Subject(subject),
            _ => {
                problem(&key("certificate"), "give exactly one of certificate and subject".to_owned());
                continue;
            }
        };
        let transactions = raw.partner_strings(index, "transactions");
        if transactions.is_empty() {
            problem(
                &key("transactions"),
                "must list what the partner may do, e.g. [\"RAD-69\", \"ITI-43\"]".to_owned(),
            );
        }
        for transaction in &transactions {
            if !PARTNER_TRANSACTIONS.contains(&transaction.as_str()) {
                problem(
                    &key("transactions"),
                    format!("{transaction:?} is not one of {}", PARTNER_TRANSACTIONS.join(", ")),
                );
            }
        }
        partners.push(PartnerConfig { name, identity, transactions });
    }
    partners
}

fn registry_config(
    raw: &RawConfig,
    base: &Path,
    https: Option<&HttpsConfig>,
    problem: &mut dyn FnMut(&str, String),
) -> Option<RegistryConfig> {
    let kind = match raw.string("registry", "kind").as_str() {
        "" => return None,
        "builtin" => RegistryKind::Builtin,
        "remote" => RegistryKind::Remote,
        other => {
            problem(
                "registry.kind",
                format!("must be \"builtin\" or \"remote\" (or empty: publishing off), got {other:?}"),
            );
            return None;
        }
    };
    let mode = match raw.string("registry", "mode").as_str() {
        "provide" => hie_broker::publish::Mode::Provide,
        "register" => hie_broker::publish::Mode::Register,
        other => {
            problem("registry.mode", format!("must be \"provide\" or \"register\", got {other:?}"));
            hie_broker::publish::Mode::Provide
        }
    };
    let url = |key: &str, problem: &mut dyn FnMut(&str, String)| {
        let text = raw.string("registry", key);
        if !(text.is_empty() || text.starts_with("https://") || text.starts_with("http://")) {
            problem(&format!("registry.{key}"), format!("{text:?} must be an https:// (or http://) URL"));
        }
        text
    };
    let (registry_url, repository_url) = match kind {
        RegistryKind::Builtin => {
            if https.is_none() {
                problem("registry.kind", "builtin is served on the HTTPS listener: set https.listen".to_owned());
            }
            // Filled in at start from the bound HTTPS address.
            (String::new(), String::new())
        }
        RegistryKind::Remote => {
            let registry_url = url("registry_url", problem);
            let repository_url = url("repository_url", problem);
            if registry_url.is_empty() {
                problem("registry.registry_url", "must be set for a remote registry".to_owned());
            }
            if mode == hie_broker::publish::Mode::Provide && repository_url.is_empty() {
                problem("registry.repository_url", "must be set for mode = \"provide\"".to_owned());
            }
            (registry_url, repository_url)
        }
    };
    let feed_text = raw.string("registry", "feed");
    let feed = if feed_text.is_empty() {
        if kind == RegistryKind::Builtin {
            problem(
                "registry.feed",
                "builtin needs the address its identity feed listener binds: mllp://host:port".to_owned(),
            );
        }
        None
    } else {
        match feed_text.strip_prefix("mllp://").filter(|address| address.contains(':')) {
            Some(address) => Some(address.trim_end_matches('/').to_owned()),
            None => {
                problem("registry.feed", format!("{feed_text:?} must be mllp://host:port"));
                None
            }
        }
    };
    let timeout_secs = raw.integer("registry", "timeout_secs");
    if timeout_secs <= 0 {
        problem("registry.timeout_secs", format!("must be a positive integer, got {timeout_secs}"));
    }
    let client_paths = ["certificate", "private_key", "server_ca"].map(|key| path_key(raw, "registry", key, base));
    let client_tls = match client_paths {
        [Some(certificate), Some(private_key), Some(server_ca)] => {
            Some(hie_tls::ClientTlsSettings::new(certificate, private_key, server_ca))
        }
        [None, None, None] => {
            let uses_https = kind == RegistryKind::Builtin
                || raw.string("registry", "registry_url").starts_with("https://")
                || raw.string("registry", "repository_url").starts_with("https://");
            if uses_https {
                problem(
                    "registry.certificate",
                    "https endpoints need our client identity: set registry.certificate, private_key and server_ca"
                        .to_owned(),
                );
            }
            None
        }
        _ => {
            problem(
                "registry.certificate",
                "set all three of certificate, private_key and server_ca, or none".to_owned(),
            );
            None
        }
    };
    let builtin_repository_unique_id = match (kind, mode) {
        (RegistryKind::Builtin, hie_broker::publish::Mode::Provide) => {
            optional_dicom_oid(raw, "registry", "builtin_repository_unique_id", None, problem).or_else(|| {
                problem(
                    "registry.builtin_repository_unique_id",
                    "builtin with mode = \"provide\" needs the built-in repository's own OID".to_owned(),
                );
                None
            })
        }
        _ => None,
    };
    let builtin_store = (kind == RegistryKind::Builtin).then(|| {
        let given = raw.string("registry", "builtin_store");
        if given.is_empty() {
            return registry_store_beside(&raw.string("store", "url"));
        }
        if !(given.starts_with("sqlite:") || given.starts_with("postgres://") || given.starts_with("postgresql://")) {
            problem("registry.builtin_store", format!("{given:?} is neither sqlite://… nor postgres://…"));
        }
        given
    });
    Some(RegistryConfig {
        kind,
        mode,
        registry_url,
        repository_url,
        feed,
        feed_receiving_application: raw.string("registry", "feed_receiving_application"),
        feed_receiving_facility: raw.string("registry", "feed_receiving_facility"),
        client_tls,
        timeout: Duration::from_secs(timeout_secs.max(1).unsigned_abs()),
        builtin_repository_unique_id,
        builtin_store,
    })
}

/// `sqlite::memory:`, `sqlite://` with no path, or a `mode=memory` URI: no file behind it.
fn sqlite_in_memory(url: &str) -> bool {
    let Some(rest) = ["sqlite://", "sqlite:"].iter().find_map(|scheme| url.strip_prefix(scheme)) else {
        return false;
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    path.is_empty() || path.starts_with(":memory:") || query.is_some_and(|query| query.contains("mode=memory"))
}

/// The built-in registry's database when `[registry] builtin_store` is empty. Beside a SQLite
/// store, in a file of its own (`var/hie-edge.db`: `var/hie-edge-registry.db`): the reference
/// registry commits each feed message and submission on its own, and on the broker's database
/// those commits would queue for the one SQLite writer with the ADT group commits. A PostgreSQL
/// store (no such lock), or an in-memory one, is shared.
pub fn registry_store_beside(store_url: &str) -> String {
    if sqlite_in_memory(store_url) {
        return store_url.to_owned();
    }
    let Some((scheme, rest)) =
        ["sqlite://", "sqlite:"].iter().find_map(|scheme| store_url.strip_prefix(scheme).map(|rest| (*scheme, rest)))
    else {
        return store_url.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let beside = match path.strip_suffix(".db") {
        Some(stem) => format!("{stem}-registry.db"),
        None => format!("{path}-registry"),
    };
    match query {
        Some(query) => format!("{scheme}{beside}?{query}"),
        None => format!("{scheme}{beside}"),
    }
}

/// An address that may be left empty (the listener is then off).
fn optional_socket_address(
    raw: &RawConfig,
    section: &str,
    key: &str,
    problem: &mut dyn FnMut(&str, String),
) -> Option<SocketAddr> {
    if raw.string(section, key).is_empty() { None } else { socket_address(raw, section, key, problem) }
}

fn socket_address(
    raw: &RawConfig,
    section: &str,
    key: &str,
    problem: &mut dyn FnMut(&str, String),
) -> Option<SocketAddr> {
    let text = raw.string(section, key);
    match text.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            problem(&format!("{section}.{key}"), format!("{text:?} is not a socket address such as 127.0.0.1:2575"));
            None
        }
    }
}

/// An optional OID that also goes into DICOM UI elements: empty means not configured; otherwise it
/// must be an OID, satisfy DICOM's stricter UID syntax (no leading zeros), and fit `max_len`.
fn optional_dicom_oid(
    raw: &RawConfig,
    section: &str,
    key: &str,
    max_len: Option<usize>,
    problem: &mut dyn FnMut(&str, String),
) -> Option<Oid> {
    let text = raw.string(section, key);
    if text.is_empty() {
        return None;
    }
    let path = format!("{section}.{key}");
    let oid = match Oid::parse(&text) {
        Ok(oid) => oid,
        Err(error) => {
            problem(&path, format!("{text:?} is not an OID: {error}"));
            return None;
        }
    };
    if !hie_kos::is_valid_uid(&text) {
        problem(
            &path,
            format!("{text:?} is not a DICOM UID (digits and dots, no leading zeros, at most 64 characters)"),
        );
        return None;
    }
    if let Some(max) = max_len
        && text.len() > max
    {
        problem(
            &path,
            format!("{text:?} has {} characters; at most {max} leave room for the generated part", text.len()),
        );
        return None;
    }
    Some(oid)
}

/// DICOM AE title (PS3.5 6.2 AE): 1 to 16 characters of printable ASCII, no backslash, not only spaces.
fn check_ae_title(text: &str) -> Result<(), String> {
    if text.trim().is_empty() || text.len() > 16 {
        return Err(format!("{text:?} must have 1 to 16 characters"));
    }
    if !text.bytes().all(|byte| (0x20..0x7f).contains(&byte) && byte != b'\\') {
        return Err(format!("{text:?} must be printable ASCII without backslash"));
    }
    Ok(())
}

/// Parses an HL7 HD: `NS`, `&1.2.3&ISO` or `NS&1.2.3&ISO`.
fn parse_hd(text: &str) -> Result<AssigningAuthority, String> {
    let mut parts = text.split('&');
    let namespace_id = parts.next().unwrap_or_default().to_owned();
    let universal_id = parts.next().unwrap_or_default().to_owned();
    let universal_id_type = parts.next().unwrap_or_default().to_owned();
    if parts.next().is_some() {
        return Err(format!("{text:?} has more than three parts; write NS, &OID&ISO or NS&OID&ISO"));
    }
    if namespace_id.is_empty() && universal_id.is_empty() {
        return Err("must name the hospital's MRN authority: NS, &OID&ISO or NS&OID&ISO".to_owned());
    }
    if !universal_id.is_empty()
        && let Err(error) = Oid::parse(&universal_id)
    {
        return Err(format!("universal ID {universal_id:?} is not an OID: {error}"));
    }
    let universal_id_type = if universal_id.is_empty() {
        universal_id_type
    } else if universal_id_type.is_empty() {
        "ISO".to_owned()
    } else {
        universal_id_type
    };
    Ok(AssigningAuthority { namespace_id, universal_id, universal_id_type })
}

#[cfg(test)]
mod tests;
