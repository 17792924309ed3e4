//! Every configuration key: section, name, TOML type, default and meaning. Phase one checks
//! files and environment overrides against this list, and a test checks that
//! `docs/configuration.md` documents each entry.

/// The TOML type a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Boolean,
    /// A TOML array of strings; from the environment, comma-separated.
    StringList,
}

/// A key's default, or that it must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    Required,
    String(&'static str),
    Integer(i64),
    Boolean(bool),
    /// The empty list.
    EmptyList,
}

impl DefaultValue {
    /// The value an absent key takes; `None` for a required key.
    pub(super) fn value(self) -> Option<super::raw::Value> {
        use super::raw::Value;
        Some(match self {
            DefaultValue::Required => return None,
            DefaultValue::String(text) => Value::String(text.to_owned()),
            DefaultValue::Integer(number) => Value::Integer(number),
            DefaultValue::Boolean(flag) => Value::Boolean(flag),
            DefaultValue::EmptyList => Value::StringList(Vec::new()),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    pub doc: &'static str,
}

const fn key(section: &'static str, name: &'static str, kind: Kind, default: DefaultValue, doc: &'static str) -> Key {
    Key { section, name, kind, default, doc }
}

use DefaultValue as D;
use Kind as K;

/// All keys, in documentation order.
pub const KEYS: &[Key] = &[
    key("node", "name", K::String, D::String("hie-edge"), "Name of this broker instance, in logs and telemetry."),
    key(
        "node",
        "repository_unique_id",
        K::String,
        D::String(""),
        "OID of this Imaging Document Source (XDS repositoryUniqueId), also each manifest's Retrieve Location UID; required by kos build.",
    ),
    key(
        "node",
        "uid_root",
        K::String,
        D::String(""),
        "Organisation UID root (at most 32 characters) under which manifests get new UIDs; required by kos build.",
    ),
    key(
        "store",
        "url",
        K::String,
        D::Required,
        "Database: sqlite://path/file.db (embedded) or postgres://user:password@host/db. A SQLite store is a file (an in-memory database is refused: the writer's two connections and the readers would each see a database of their own).",
    ),
    key(
        "store",
        "max_connections",
        K::Integer,
        D::Integer(8),
        "Connections in the pool (SQLite: readers; its writer is one connection).",
    ),
    key(
        "store",
        "acquire_timeout_secs",
        K::Integer,
        D::Integer(10),
        "How long to wait for a connection or a lock before failing.",
    ),
    key(
        "store",
        "group_commit_max_batch",
        K::Integer,
        D::Integer(256),
        "Most ADT messages committed in one transaction.",
    ),
    key(
        "store",
        "outbox_lease_secs",
        K::Integer,
        D::Integer(30),
        "How long a worker holds an outbox item before others may take it over.",
    ),
    key(
        "store",
        "outbox_backoff_base_ms",
        K::Integer,
        D::Integer(1000),
        "First retry delay of a failed delivery; doubles per attempt.",
    ),
    key(
        "store",
        "outbox_backoff_max_secs",
        K::Integer,
        D::Integer(60),
        "Cap of the retry delay, and of the wait of a parked item (a submission whose patient is not known yet), which looks again after a quarter of the time it has waited, unless an item of its key is delivered first.",
    ),
    key(
        "store",
        "outbox_linger_ms",
        K::Integer,
        D::Integer(10),
        "How long the outbox worker waits after a wake-up or a round of deliveries before it claims, so one claim and one report cover what arrives meanwhile (0 to 1000; 0: claim at once).",
    ),
    key(
        "store",
        "outbox_max_attempts",
        K::Integer,
        D::Integer(20),
        "Attempts before an item is marked failed (visible, retried by hand).",
    ),
    key(
        "store",
        "retention_days",
        K::Integer,
        D::Integer(30),
        "How long recorded HL7 message IDs (duplicate detection) and delivered outbox items are kept.",
    ),
    key("hl7", "listen", K::String, D::String("127.0.0.1:2575"), "MLLP listen address (host:port)."),
    key(
        "hl7",
        "max_frame_bytes",
        K::Integer,
        D::Integer(1_048_576),
        "Largest MLLP frame accepted; a larger one closes the connection.",
    ),
    key("hl7", "idle_timeout_secs", K::Integer, D::Integer(300), "An MLLP connection silent this long is closed."),
    key("hl7", "max_connections", K::Integer, D::Integer(256), "Concurrent MLLP connections; more are closed at once."),
    key("hl7", "application", K::String, D::String("HIE_EDGE"), "MSH-3 (sending application) of our ACKs."),
    key("hl7", "facility", K::String, D::String("HIE_EDGE"), "MSH-4 (sending facility) of our ACKs."),
    key(
        "hl7",
        "answer_never_ack",
        K::Boolean,
        D::Boolean(false),
        "Answer even messages whose MSH-15 and MSH-16 are both NE (HL7: never acknowledge); for senders that block on a reply.",
    ),
    key(
        "api",
        "listen",
        K::String,
        D::String("127.0.0.1:8080"),
        "HTTP listen address for /healthz, /readyz, /metrics and /api.",
    ),
    key(
        "dicom",
        "ae_title",
        K::String,
        D::String("HIE_EDGE"),
        "Our DICOM AE title (1 to 16 characters, no backslash), also each manifest's Retrieve AE Title and the C-MOVE destination.",
    ),
    key(
        "dicom",
        "listen",
        K::String,
        D::String(""),
        "DICOM listener (C-ECHO, C-STORE from the PACS or modalities, C-MOVE destination), host:port; empty = no listener.",
    ),
    key(
        "dicom",
        "allowed_calling_ae_titles",
        K::StringList,
        D::EmptyList,
        "Calling AE titles the listener accepts (others are rejected, PS3.8 reason 3); empty = any.",
    ),
    key(
        "dicom",
        "max_associations",
        K::Integer,
        D::Integer(16),
        "Associations the listener holds at once; more are rejected (transient).",
    ),
    key(
        "dicom",
        "association_timeout_secs",
        K::Integer,
        D::Integer(30),
        "How long a peer may take to open or release an association (ARTIM).",
    ),
    key("dicom", "idle_timeout_secs", K::Integer, D::Integer(60), "An association silent this long is aborted."),
    key(
        "dicom",
        "quiet_period_secs",
        K::Integer,
        D::Integer(60),
        "A study is manifested once no change has been seen for this long; later changes make a new version.",
    ),
    key(
        "dicom",
        "evidence",
        K::String,
        D::String("pacs"),
        "What manifests reference: pacs (what the PACS holds, by query) or received (the instances our listener received).",
    ),
    key("pacs", "kind", K::String, D::String("folder"), "The local PACS adapter: folder, dimse or dicomweb."),
    key(
        "pacs",
        "path",
        K::String,
        D::String(""),
        "For kind = folder: the directory tree of DICOM Part 10 files (relative to the configuration file's folder); empty = no PACS.",
    ),
    key("pacs", "ae_title", K::String, D::String(""), "For kind = dimse: the PACS's AE title."),
    key("pacs", "host", K::String, D::String(""), "For kind = dimse: the PACS's host name or IP address."),
    key("pacs", "port", K::Integer, D::Integer(104), "For kind = dimse: the PACS's DICOM port."),
    key(
        "pacs",
        "retrieve",
        K::String,
        D::String("c-get"),
        "For kind = dimse: how instances are fetched: c-get (preferred) or c-move (to our [dicom] listener).",
    ),
    key(
        "pacs",
        "url",
        K::String,
        D::String(""),
        "For kind = dicomweb: the DICOMweb root, e.g. http://pacs:8042/dicom-web.",
    ),
    key(
        "pacs",
        "max_associations",
        K::Integer,
        D::Integer(4),
        "Connections (associations) open to the PACS at once, per purpose (queries; retrievals).",
    ),
    key("pacs", "connect_timeout_secs", K::Integer, D::Integer(10), "How long connecting to the PACS may take."),
    key(
        "pacs",
        "timeout_secs",
        K::Integer,
        D::Integer(30),
        "Longest wait for the PACS's next answer (DIMSE response or HTTP data).",
    ),
    key(
        "pacs",
        "poll_interval_secs",
        K::Integer,
        D::Integer(0),
        "How often the PACS is asked for new or changed studies; 0 = no polling.",
    ),
    key(
        "pacs",
        "poll_lookback_days",
        K::Integer,
        D::Integer(7),
        "A poll looks at studies whose Study Date is within this many days.",
    ),
    key(
        "https",
        "listen",
        K::String,
        D::String(""),
        "HTTPS listener (mutual TLS) for the built-in registry (/xds/registry, /xds/repository) and retrievals (/xdsi/imaging-source); empty = off.",
    ),
    key(
        "https",
        "certificate",
        K::String,
        D::String(""),
        "PEM certificate chain of the listener (server certificate first).",
    ),
    key("https", "private_key", K::String, D::String(""), "PEM private key of the listener (mode 0600)."),
    key(
        "https",
        "client_ca",
        K::String,
        D::String(""),
        "PEM bundle of the CAs whose client certificates are accepted; every client must present one.",
    ),
    key(
        "https",
        "crl",
        K::String,
        D::String(""),
        "Optional CRL file (PEM or DER) checked for every client certificate.",
    ),
    key(
        "https",
        "danger_allow_expired_crl",
        K::Boolean,
        D::Boolean(false),
        "Accept clients while the CRL is past its next update (otherwise they are refused: fail closed).",
    ),
    key(
        "https",
        "dev_pki",
        K::Boolean,
        D::Boolean(false),
        "Create a development PKI (hie-edge pki init) in the folder of certificate when none of its files exist; for the quickstart only.",
    ),
    key(
        "registry",
        "kind",
        K::String,
        D::String(""),
        "Where manifests are published: builtin (the reference registry/repository served on [https]) or remote; empty = publishing off.",
    ),
    key(
        "registry",
        "mode",
        K::String,
        D::String("provide"),
        "provide (ITI-41/RAD-68 to a repository, the KOS attached) or register (ITI-42; the broker is the repository and serves the KOS by ITI-43).",
    ),
    key(
        "registry",
        "registry_url",
        K::String,
        D::String(""),
        "For remote: the Document Registry's SOAP endpoint (ITI-42, ITI-18, ITI-57).",
    ),
    key(
        "registry",
        "repository_url",
        K::String,
        D::String(""),
        "For remote: the Document Repository's SOAP endpoint (ITI-41).",
    ),
    key(
        "registry",
        "feed",
        K::String,
        D::String(""),
        "The registry's identity feed, mllp://host:port (ITI-8). For builtin: where the built-in registry listens for it.",
    ),
    key(
        "registry",
        "feed_receiving_application",
        K::String,
        D::String("XDS_REGISTRY"),
        "MSH-5 of our identity feed messages.",
    ),
    key("registry", "feed_receiving_facility", K::String, D::String("HIE"), "MSH-6 of our identity feed messages."),
    key(
        "registry",
        "certificate",
        K::String,
        D::String(""),
        "PEM client certificate we present to the registry and repository (mutual TLS).",
    ),
    key("registry", "private_key", K::String, D::String(""), "PEM private key of that certificate (mode 0600)."),
    key(
        "registry",
        "server_ca",
        K::String,
        D::String(""),
        "PEM bundle of the CAs trusted for the registry's and repository's server certificates.",
    ),
    key("registry", "timeout_secs", K::Integer, D::Integer(60), "Longest wait for a registry or repository answer."),
    key(
        "registry",
        "builtin_repository_unique_id",
        K::String,
        D::String(""),
        "For builtin with mode provide: the built-in repository's repositoryUniqueId (an OID other than node.repository_unique_id).",
    ),
    key(
        "registry",
        "builtin_store",
        K::String,
        D::String(""),
        "For builtin: the built-in registry's database (sqlite://… or postgres://…). Empty: beside a SQLite store (var/hie-edge.db: var/hie-edge-registry.db), so its writes do not wait for the broker's single SQLite writer; a PostgreSQL store is shared. A registry kept in the broker's database by an earlier version stays there: set this to the store's url to keep using it.",
    ),
    key(
        "affinity_domain",
        "patient_id_authority",
        K::String,
        D::Required,
        "OID of the affinity domain's patient ID assigning authority.",
    ),
    key(
        "affinity_domain",
        "profile",
        K::String,
        D::String(""),
        "The affinity-domain profile (profiles/*.toml: codes, mappings, OIDs), relative to the configuration file's folder; needed to publish.",
    ),
    key(
        "affinity_domain",
        "local_authority",
        K::String,
        D::Required,
        "The hospital's MRN assigning authority as an HL7 HD: NS, &OID&ISO or NS&OID&ISO.",
    ),
    key("telemetry", "log_format", K::String, D::String("text"), "Log format on stderr: text or json."),
    key("telemetry", "log_level", K::String, D::String("info"), "Log filter, e.g. info or info,hie_store=debug."),
    key(
        "telemetry",
        "otlp_endpoint",
        K::String,
        D::String(""),
        "OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; empty turns export off.",
    ),
];

/// The keys of each `[[partners]]` entry: the organizations allowed to retrieve from us.
pub const PARTNER_KEYS: &[Key] = &[
    key("partners", "name", K::String, D::Required, "The partner's name, in logs and audit records."),
    key(
        "partners",
        "certificate",
        K::String,
        D::String(""),
        "PEM file of the partner's client certificate, pinned by its public key (or give subject).",
    ),
    key(
        "partners",
        "subject",
        K::String,
        D::String(""),
        "The partner certificate's subject as an RFC 4514 string, e.g. CN=viewer,O=Other Hospital (or give certificate).",
    ),
    key(
        "partners",
        "transactions",
        K::StringList,
        D::EmptyList,
        "What the partner may do: RAD-69, ITI-43 (and ITI-18, ITI-41, ITI-42, ITI-57 on the built-in registry).",
    ),
];

/// The section holding an array of tables, not keys.
pub const PARTNERS: &str = "partners";

/// The sections that exist, in documentation order.
pub fn sections() -> Vec<&'static str> {
    let mut sections: Vec<&'static str> = Vec::new();
    for key in KEYS.iter().chain(PARTNER_KEYS) {
        if !sections.contains(&key.section) {
            sections.push(key.section);
        }
    }
    sections
}

pub fn find(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.section == section && key.name == name)
}

pub fn find_partner_key(name: &str) -> Option<&'static Key> {
    PARTNER_KEYS.iter().find(|key| key.name == name)
}
