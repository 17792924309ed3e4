//! Configuration tests: both phases, overrides, and that docs/configuration.md covers every key.

use super::*;
use hie_outbound::pacs::Retrieve;

const MINIMAL: &str = r#"
[store]
url = "sqlite://var/test.db"

[affinity_domain]
patient_id_authority = "1.3.6.1.4.1.21367.13.20.1000"
local_authority = "HOSP&1.2.3.4&ISO"
"#;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn problems_of(text: &str, env: Vec<(String, String)>) -> Vec<String> {
    match RawConfig::parse(text, env).and_then(|raw| Config::from_raw(&raw)) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let raw = RawConfig::parse(MINIMAL, no_env()).unwrap();
    let config = Config::from_raw(&raw).unwrap();
    assert_eq!(config.hl7.listen.to_string(), "127.0.0.1:2575");
    assert_eq!(config.hl7.max_frame_bytes, 1_048_576);
    assert_eq!(config.api_listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.affinity_domain.local_authority().namespace_id, "HOSP");
    assert!(config.telemetry.otlp_endpoint.is_none());
    assert!(!config.hl7.answer_never_ack, "HL7 table 0155: NE means never");
}

#[test]
fn environment_overrides_any_key_with_its_type() {
    let env = vec![
        ("HIE_EDGE__STORE__URL".to_owned(), "postgres://u:p@127.0.0.1/db".to_owned()),
        ("HIE_EDGE__HL7__LISTEN".to_owned(), "127.0.0.1:12575".to_owned()),
        ("HIE_EDGE__API__LISTEN".to_owned(), "127.0.0.1:18080".to_owned()),
        ("HIE_EDGE__HL7__MAX_FRAME_BYTES".to_owned(), "65536".to_owned()),
        ("HIE_EDGE__HL7__ANSWER_NEVER_ACK".to_owned(), "true".to_owned()),
        ("HIE_EDGE__AFFINITY_DOMAIN__PATIENT_ID_AUTHORITY".to_owned(), "2.16.840.1.113883.3.72".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let config = Config::from_raw(&RawConfig::parse(MINIMAL, env).unwrap()).unwrap();
    assert_eq!(config.store.url, "postgres://u:p@127.0.0.1/db");
    assert_eq!(config.hl7.listen.port(), 12575);
    assert_eq!(config.api_listen.port(), 18080);
    assert_eq!(config.hl7.max_frame_bytes, 65_536);
    assert!(config.hl7.answer_never_ack);
    assert_eq!(config.affinity_domain.patient_id_authority().as_str(), "2.16.840.1.113883.3.72");
}

#[test]
fn every_shape_problem_is_reported_with_its_key() {
    let text = r#"
[store]
url = 5
colour = "blue"

[hl7]
max_frame_bytes = "big"

[pacs_typo]
kind = "dimse"
"#;
    let env = vec![
        ("HIE_EDGE__HL7__IDLE_TIMEOUT_SECS".to_owned(), "soon".to_owned()),
        ("HIE_EDGE__NOPE__KEY".to_owned(), "1".to_owned()),
    ];
    let problems = problems_of(text, env);
    let expected_keys = [
        "store.url: expected a string",
        "store.colour: unknown key",
        "hl7.max_frame_bytes: expected an integer",
        "pacs_typo: unknown section",
        "hl7.idle_timeout_secs (from HIE_EDGE__HL7__IDLE_TIMEOUT_SECS): expected an integer",
        "nope.key (from HIE_EDGE__NOPE__KEY): unknown key",
        "affinity_domain.patient_id_authority: is required",
        "affinity_domain.local_authority: is required",
    ];
    for expected in expected_keys {
        assert!(problems.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {problems:#?}");
    }
}

#[test]
fn every_meaning_problem_is_reported_with_its_key() {
    let text = r#"
[store]
url = "mysql://x"
max_connections = 0

[hl7]
listen = "localhost"
max_frame_bytes = 10

[api]
listen = "127.0.0.1:99999"

[affinity_domain]
patient_id_authority = "not.an.oid"
local_authority = "A&B&C&D"

[telemetry]
log_format = "xml"
otlp_endpoint = "grpc://collector"
"#;
    let problems = problems_of(text, no_env());
    for expected in [
        "store.url:",
        "store.max_connections:",
        "hl7.listen:",
        "hl7.max_frame_bytes:",
        "api.listen:",
        "affinity_domain.patient_id_authority:",
        "affinity_domain.local_authority:",
        "telemetry.log_format:",
        "telemetry.otlp_endpoint:",
    ] {
        assert!(problems.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {problems:#?}");
    }
}

#[test]
fn quickstart_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/quickstart.toml");
    let config = load(&path, no_env()).unwrap_or_else(|problems| panic!("{problems:#?}"));
    assert!(config.store.url.starts_with("sqlite:"), "the embedded default must need no other service");
}

#[test]
fn configuration_doc_lists_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    for key in schema::KEYS {
        let heading = format!("[{}]", key.section);
        assert!(doc.contains(&heading), "docs/configuration.md lacks section {heading}");
        let entry = format!("`{}`", key.name);
        assert!(doc.contains(&entry), "docs/configuration.md lacks key {}.{}", key.section, key.name);
        let env = format!("HIE_EDGE__{}__{}", key.section.to_uppercase(), key.name.to_uppercase());
        assert!(doc.contains(&env), "docs/configuration.md lacks the override {env}");
    }
    assert!(doc.contains("[[partners]]"), "docs/configuration.md lacks [[partners]]");
    for key in schema::PARTNER_KEYS {
        let env = format!("HIE_EDGE__PARTNERS__<N>__{}", key.name.to_uppercase());
        assert!(doc.contains(&env) && doc.contains(&format!("`{}`", key.name)), "docs lack partners key {}", key.name);
    }
}

#[test]
fn shape_and_meaning_problems_are_reported_together_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[store]\nurl = \"sqlite://x.db\"\n[hl7]\nno_such_key = 1\n[api]\nlisten = \"nowhere\"\n")
        .unwrap();
    let problems: Vec<String> = load(&path, no_env()).unwrap_err().iter().map(ToString::to_string).collect();
    for expected in ["hl7.no_such_key:", "api.listen:", "affinity_domain.patient_id_authority: is required"] {
        assert!(problems.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {problems:#?}");
    }
    let authority_problems =
        problems.iter().filter(|problem| problem.starts_with("affinity_domain.patient_id_authority")).count();
    assert_eq!(authority_problems, 1, "{problems:#?}");
}

#[test]
fn dicom_and_pacs_keys_default_to_unset_and_parse_when_given() {
    let config = Config::from_raw(&RawConfig::parse(MINIMAL, no_env()).unwrap()).unwrap();
    assert!(config.node.repository_unique_id.is_none() && config.node.uid_root.is_none());
    assert_eq!(config.dicom.ae_title, "HIE_EDGE");
    assert_eq!(config.pacs, None, "an empty [pacs] path means no PACS");

    let env = vec![
        ("HIE_EDGE__NODE__REPOSITORY_UNIQUE_ID".to_owned(), "1.2.3.4".to_owned()),
        ("HIE_EDGE__NODE__UID_ROOT".to_owned(), "1.2.3.5".to_owned()),
        ("HIE_EDGE__DICOM__AE_TITLE".to_owned(), "EDGE 1".to_owned()),
        ("HIE_EDGE__PACS__PATH".to_owned(), "samples/dicom".to_owned()),
    ];
    let config = Config::from_raw(&RawConfig::parse(MINIMAL, env).unwrap()).unwrap();
    assert_eq!(config.node.repository_unique_id.as_ref().map(Oid::as_str), Some("1.2.3.4"));
    assert_eq!(config.node.uid_root.as_ref().map(Oid::as_str), Some("1.2.3.5"));
    assert_eq!(config.dicom.ae_title, "EDGE 1");
    assert_eq!(config.pacs, Some(PacsSettings::Folder { path: Path::new(".").join("samples/dicom") }));
}

#[test]
fn dimse_and_dicomweb_pacs_and_the_listener_parse() {
    let text = format!(
        "{MINIMAL}{}",
        r#"
[dicom]
ae_title = "EDGE"
listen = "127.0.0.1:11112"
allowed_calling_ae_titles = ["ORTHANC", "CT1"]
quiet_period_secs = 0
evidence = "received"

[pacs]
kind = "dimse"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
retrieve = "c-move"
poll_interval_secs = 30
"#
    );
    let config = Config::from_raw(&RawConfig::parse(&text, no_env()).unwrap()).unwrap();
    assert_eq!(config.dicom.listen.map(|address| address.port()), Some(11112));
    assert_eq!(config.dicom.allowed_calling_ae_titles, ["ORTHANC", "CT1"]);
    assert_eq!(config.dicom.quiet_period, Duration::ZERO);
    assert_eq!(config.dicom.evidence, EvidenceSource::Received);
    assert_eq!(config.poll.interval, Some(Duration::from_secs(30)));
    let Some(PacsSettings::Dimse(dimse)) = &config.pacs else { panic!("{:?}", config.pacs) };
    assert_eq!((dimse.ae_title.as_str(), dimse.host.as_str(), dimse.port), ("ORTHANC", "127.0.0.1", 4242));
    assert_eq!((dimse.our_ae_title.as_str(), dimse.retrieve), ("EDGE", Retrieve::CMove));

    let env = vec![
        ("HIE_EDGE__PACS__KIND".to_owned(), "dicomweb".to_owned()),
        ("HIE_EDGE__PACS__URL".to_owned(), "http://127.0.0.1:8042/dicom-web/".to_owned()),
        ("HIE_EDGE__DICOM__ALLOWED_CALLING_AE_TITLES".to_owned(), "A, B ,".to_owned()),
    ];
    let config = Config::from_raw(&RawConfig::parse(&text, env).unwrap()).unwrap();
    assert_eq!(config.dicom.allowed_calling_ae_titles, ["A", "B"], "comma-separated from the environment");
    let Some(PacsSettings::DicomWeb(web)) = &config.pacs else { panic!("{:?}", config.pacs) };
    assert_eq!(web.url, "http://127.0.0.1:8042/dicom-web", "trailing slash dropped");
}

#[test]
fn dicom_and_pacs_problems_are_reported_with_their_keys() {
    let text = format!(
        "{MINIMAL}{}",
        r#"
[node]
repository_unique_id = "1.2.03"
uid_root = "1.2.840.99999.1.2.3.4.5.6.7.8.9.10.11"

[dicom]
ae_title = "MUCH_TOO_LONG_AE_TITLE"

[pacs]
kind = "dicomweb"
path = "x"
"#
    );
    let problems = problems_of(&text, no_env());
    for expected in [
        "node.repository_unique_id: \"1.2.03\" is not",
        "node.uid_root: \"1.2.840.99999.1.2.3.4.5.6.7.8.9.10.11\" has 37 characters",
        "dicom.ae_title:",
        "pacs.url: \"\" must be an http:// URL",
    ] {
        assert!(problems.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {problems:#?}");
    }
    for (key, value) in [("ae_title", "A\\B"), ("ae_title", "   ")] {
        let problems = problems_of(&format!("{MINIMAL}\n[dicom]\n{key} = {value:?}\n"), no_env());
        assert!(problems.iter().any(|problem| problem.starts_with("dicom.ae_title:")), "{value:?}: {problems:#?}");
    }
    let problems = problems_of(&format!("{MINIMAL}\n[pacs]\nkind = \"ftp\"\n"), no_env());
    assert!(problems.iter().any(|problem| problem.starts_with("pacs.kind: must be \"folder\"")), "{problems:#?}");

    let text = format!(
        "{MINIMAL}{}",
        r#"
[dicom]
listen = "nowhere"
allowed_calling_ae_titles = ["OK", "WAY_TOO_LONG_FOR_AN_AE"]
evidence = "rumour"

[pacs]
kind = "dimse"
port = 70000
retrieve = "c-find"
poll_interval_secs = -1
"#
    );
    let problems = problems_of(&text, no_env());
    for expected in [
        "dicom.listen: \"nowhere\" is not a socket address",
        "dicom.allowed_calling_ae_titles[1]:",
        "dicom.evidence: must be \"pacs\" or \"received\"",
        "pacs.ae_title:",
        "pacs.host: must be a host name",
        "pacs.port: must be a TCP port",
        "pacs.retrieve: must be \"c-get\" or \"c-move\"",
        "pacs.poll_interval_secs: must not be negative",
    ] {
        assert!(problems.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {problems:#?}");
    }
    let problems = problems_of(&format!("{MINIMAL}\n[dicom]\nallowed_calling_ae_titles = [\"A\", 3]\n"), no_env());
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with("dicom.allowed_calling_ae_titles: expected an array of strings")),
        "{problems:#?}"
    );
    let problems = problems_of(&format!("{MINIMAL}\n[dicom]\nevidence = \"received\"\n"), no_env());
    assert!(
        problems.iter().any(|problem| problem.starts_with("dicom.evidence: \"received\" needs the listener")),
        "{problems:#?}"
    );
    let c_move = "[pacs]\nkind = \"dimse\"\nae_title = \"PACS\"\nhost = \"pacs\"\nretrieve = \"c-move\"\n";
    let problems = problems_of(&format!("{MINIMAL}\n{c_move}"), no_env());
    assert!(
        problems.iter().any(|problem| problem.starts_with("pacs.retrieve: \"c-move\" needs the listener")),
        "{problems:#?}"
    );
    assert!(problems_of(&format!("{MINIMAL}\n[dicom]\nlisten = \"127.0.0.1:0\"\n{c_move}"), no_env()).is_empty());
    let problems = problems_of(&format!("{MINIMAL}\n[pacs]\npoll_interval_secs = 10\n"), no_env());
    assert!(
        problems.iter().any(|problem| problem.starts_with("pacs.poll_interval_secs: polling needs a PACS")),
        "{problems:#?}"
    );
}

#[test]
fn the_profile_is_loaded_and_must_agree_on_the_patient_id_authority() {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles");
    let with_profile = |name: &str| {
        MINIMAL.replace(
            "[affinity_domain]\n",
            &format!("[affinity_domain]\nprofile = {:?}\n", profiles.join(name).display().to_string()),
        )
    };
    let config = Config::from_raw(&RawConfig::parse(&with_profile("ihe-default.toml"), no_env()).unwrap()).unwrap();
    assert_eq!(config.profile.as_ref().map(|profile| profile.source_id.as_str()), Some("1.2.840.99999.1.4"));

    let problems = problems_of(&with_profile("example-regional.toml"), no_env());
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with("affinity_domain.profile: the profile's patient_id_authority")),
        "{problems:#?}"
    );
    let problems = problems_of(&with_profile("no-such-profile.toml"), no_env());
    assert!(problems.iter().any(|problem| problem.contains("cannot read")), "{problems:#?}");
}

const PUBLISHING: &str = r#"
[node]
repository_unique_id = "1.2.840.99999.1.2"
uid_root = "1.2.840.99999.1.3"

[pacs]
kind = "folder"
path = "samples"

[https]
listen = "127.0.0.1:0"
certificate = "pki/server.pem"
private_key = "pki/server.key"
client_ca = "pki/ca.pem"

[registry]
kind = "builtin"
mode = "register"
feed = "mllp://127.0.0.1:2576"
certificate = "pki/client.pem"
private_key = "pki/client.key"
server_ca = "pki/ca.pem"

[[partners]]
name = "Other Hospital"
subject = "CN=viewer,O=Other Hospital"
transactions = ["RAD-69", "ITI-43"]

[[partners]]
name = "Pinned"
certificate = "partners/pinned.pem"
transactions = ["ITI-43"]
"#;

#[test]
fn https_registry_and_partners_parse_with_paths_relative_to_the_file() {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles/ihe-default.toml");
    let text = format!("{MINIMAL}{PUBLISHING}").replace(
        "[affinity_domain]\n",
        &format!("[affinity_domain]\nprofile = {:?}\n", profiles.display().to_string()),
    );
    let raw = RawConfig::parse(&text, no_env()).unwrap();
    let config = Config::from_raw_at(&raw, Path::new("/etc/hie")).unwrap();
    let https = config.https.as_ref().unwrap();
    assert_eq!(https.tls.certificate_chain, Path::new("/etc/hie/pki/server.pem"));
    assert!(https.tls.crls.is_empty() && !https.dev_pki);
    let registry = config.registry.as_ref().unwrap();
    assert_eq!((registry.kind, registry.mode), (RegistryKind::Builtin, hie_broker::publish::Mode::Register));
    assert_eq!(registry.feed.as_deref(), Some("127.0.0.1:2576"));
    assert_eq!(registry.client_tls.as_ref().unwrap().server_ca_bundle, Path::new("/etc/hie/pki/ca.pem"));
    assert_eq!(registry.builtin_store.as_deref(), Some("sqlite://var/test-registry.db"));
    assert_eq!(config.partners.len(), 2);
    assert_eq!(config.partners[0].identity, PartnerIdentityConfig::Subject("CN=viewer,O=Other Hospital".to_owned()));
    assert_eq!(config.partners[1].identity, PartnerIdentityConfig::Certificate("/etc/hie/partners/pinned.pem".into()));

    // Partners from the environment: override one key, add a third.
    let env = vec![
        ("HIE_EDGE__PARTNERS__1__TRANSACTIONS".to_owned(), "RAD-69, ITI-43".to_owned()),
        ("HIE_EDGE__PARTNERS__2__NAME".to_owned(), "Added".to_owned()),
        ("HIE_EDGE__PARTNERS__2__SUBJECT".to_owned(), "CN=added".to_owned()),
        ("HIE_EDGE__PARTNERS__2__TRANSACTIONS".to_owned(), "RAD-69".to_owned()),
    ];
    let config = Config::from_raw(&RawConfig::parse(&text, env).unwrap()).unwrap();
    assert_eq!(config.partners[1].transactions, ["RAD-69", "ITI-43"]);
    assert_eq!(config.partners[2].name, "Added");
}

#[test]
fn https_registry_and_partner_problems_name_their_keys() {
    let text = format!(
        "{MINIMAL}{}",
        r#"
[https]
listen = "127.0.0.1:8443"

[registry]
kind = "remote"
mode = "provide"
registry_url = "ftp://registry"
feed = "tcp://x"
certificate = "only-this.pem"

[[partners]]
name = "Both"
certificate = "a.pem"
subject = "CN=a"
transactions = ["RAD-69", "ITI-99"]
"#
    );
    let problems = problems_of(&text, no_env());
    for expected in [
        "https.certificate: must be set when https.listen is",
        "https.client_ca: must be set",
        "registry.registry_url: \"ftp://registry\" must be an https://",
        "registry.repository_url: must be set for mode = \"provide\"",
        "registry.feed: \"tcp://x\" must be mllp://host:port",
        "registry.certificate: set all three",
        "partners[0].certificate: give exactly one of certificate and subject",
        "affinity_domain.profile: publishing ([registry]) needs",
        "node.repository_unique_id: publishing ([registry]) needs it",
    ] {
        assert!(problems.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {problems:#?}");
    }
    let shape = problems_of(&format!("{MINIMAL}\n[[partners]]\ntransactions = []\ncolour = \"red\"\n"), no_env());
    for expected in ["partners[0].name: is required", "partners[0].colour: unknown key"] {
        assert!(shape.iter().any(|problem| problem.starts_with(expected)), "missing {expected:?} in {shape:#?}");
    }
    let problems = problems_of(&format!("{MINIMAL}\n[registry]\nkind = \"builtin\"\n"), no_env());
    assert!(
        problems.iter().any(|problem| problem.starts_with("registry.kind: builtin is served on the HTTPS listener")),
        "{problems:#?}"
    );
    let env = vec![("HIE_EDGE__PARTNERS__5__NAME".to_owned(), "x".to_owned())];
    let problems = problems_of(MINIMAL, env);
    assert!(
        problems.iter().any(|problem| problem.contains("HIE_EDGE__PARTNERS__<N>__<KEY> with N from 0 to 0")),
        "{problems:#?}"
    );
    let problems = problems_of(
        &format!("{MINIMAL}\n[[partners]]\nname = \"P\"\nsubject = \"CN=p\"\ntransactions = [\"ITI-99\"]\n"),
        no_env(),
    );
    assert!(
        problems.iter().any(|problem| problem.starts_with("partners[0].transactions: \"ITI-99\" is not one of")),
        "{problems:#?}"
    );
}

#[test]
fn an_in_memory_sqlite_store_is_refused_by_check_config() {
    for url in ["sqlite::memory:", "sqlite:file:x?mode=memory&cache=shared", "sqlite://"] {
        let env = vec![("HIE_EDGE__STORE__URL".to_owned(), url.to_owned())];
        let problems = problems_of(MINIMAL, env);
        assert!(problems.iter().any(|p| p.starts_with("store.url:") && p.contains("in-memory")), "{url}: {problems:?}");
    }
    assert!(
        problems_of(MINIMAL, vec![("HIE_EDGE__STORE__URL".to_owned(), "sqlite:/tmp/x.db?mode=rwc".to_owned())])
            .is_empty()
    );
}

#[test]
fn the_builtin_registry_gets_its_own_sqlite_file_beside_the_store() {
    assert_eq!(registry_store_beside("sqlite://var/hie-edge.db"), "sqlite://var/hie-edge-registry.db");
    assert_eq!(registry_store_beside("sqlite:/tmp/x.db?mode=rwc"), "sqlite:/tmp/x-registry.db?mode=rwc");
    assert_eq!(registry_store_beside("sqlite://var/store"), "sqlite://var/store-registry");
    for shared in
        ["sqlite::memory:", "sqlite:file:x?mode=memory", "postgres://hie:hie@127.0.0.1/hie", "postgresql://db/hie"]
    {
        assert_eq!(registry_store_beside(shared), shared);
    }
}
