//! The command line and configuration as a user meets them: `check-config` reports every problem
//! with its key path, the shipped quickstart config is valid, `--version` works, and environment
//! overrides (`HIE_EDGE__<SECTION>__<KEY>`) take effect.

use std::process::{Command, Output};

use hie_e2e::{BrokerOptions, Engine, free_addr, quickstart_config};

use crate::broker_with;

fn exe() -> Command {
    hie_e2e::init!();
    let mut c = Command::new(hie_e2e::broker_exe());
    // Overrides from the developer's shell must not leak into these checks.
    for (k, _) in std::env::vars() {
        if k.starts_with("HIE_EDGE__") {
            c.env_remove(k);
        }
    }
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn quickstart() -> toml::Table {
    let s = std::fs::read_to_string(quickstart_config()).expect("config/quickstart.toml");
    s.parse().expect("quickstart.toml is TOML")
}

fn section<'a>(t: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    t.entry(name)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{name}] is not a table"))
}

/// Writes `t` to a temp file and runs `check-config` on it.
fn check_config(t: &toml::Table) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml::to_string(t).expect("serialize")).expect("write");
    exe().arg("check-config").arg("--config").arg(&path).output().expect("run check-config")
}

fn with_unknown_key(t: &mut toml::Table) {
    section(t, "hl7").insert("no_such_key".into(), toml::Value::Integer(1));
}

fn with_bad_address(t: &mut toml::Table) {
    section(t, "api").insert("listen".into(), "not-an-address".into());
}

fn with_linger_too_long(t: &mut toml::Table) {
    section(t, "store").insert("outbox_linger_ms".into(), toml::Value::Integer(5_000));
}

fn without_authority(t: &mut toml::Table) {
    section(t, "affinity_domain").remove("patient_id_authority");
}

#[test]
fn quickstart_config_is_valid() {
    let o = exe().arg("check-config").arg("--config").arg(quickstart_config()).output().expect("run");
    assert!(o.status.success(), "check-config quickstart.toml: {}", text(&o));
}

#[test]
fn each_problem_alone_is_reported_with_its_key_path() {
    type Break = fn(&mut toml::Table);
    let cases: [(&str, Break); 4] = [
        ("hl7.no_such_key", with_unknown_key),
        ("api.listen", with_bad_address),
        ("store.outbox_linger_ms", with_linger_too_long),
        ("affinity_domain.patient_id_authority", without_authority),
    ];
    for (key, breaks) in cases {
        let mut t = quickstart();
        breaks(&mut t);
        let o = check_config(&t);
        assert!(!o.status.success(), "{key}: check-config accepted it: {}", text(&o));
        assert!(text(&o).contains(key), "{key} not named in: {}", text(&o));
    }
}

#[test]
fn all_problems_of_one_file_are_reported_together() {
    let mut t = quickstart();
    with_unknown_key(&mut t);
    with_bad_address(&mut t);
    without_authority(&mut t);
    let o = check_config(&t);
    assert!(!o.status.success(), "accepted: {}", text(&o));
    for key in ["hl7.no_such_key", "api.listen", "affinity_domain.patient_id_authority"] {
        assert!(text(&o).contains(key), "{key} not named in: {}", text(&o));
    }
}

#[test]
fn bad_env_override_is_reported_with_its_key_path() {
    let o = exe()
        .env("HIE_EDGE__API__LISTEN", "not-an-address")
        .arg("check-config")
        .arg("--config")
        .arg(quickstart_config())
        .output()
        .expect("run");
    assert!(!o.status.success(), "accepted a bad override: {}", text(&o));
    assert!(text(&o).contains("api.listen"), "{}", text(&o));
}

#[test]
fn version_is_printed() {
    let o = exe().arg("--version").output().expect("run");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(env!("CARGO_PKG_VERSION")), "--version: {}", text(&o));
}

#[test]
fn help_lists_the_subcommands() {
    let o = exe().arg("--help").output().expect("run");
    assert!(o.status.success(), "{}", text(&o));
    for sub in ["serve", "check-config"] {
        assert!(text(&o).contains(sub), "--help lacks {sub}: {}", text(&o));
    }
}

/// HIE_EDGE__API__LISTEN moves the API (every test broker is started that way; here explicitly).
#[test]
fn env_override_moves_the_api() {
    let addr = free_addr();
    let b = broker_with(BrokerOptions::new(Engine::Sqlite).env("HIE_EDGE__API__LISTEN", &addr.to_string()));
    assert_eq!(b.api_addr, addr);
    let (status, _) =
        hie_e2e::http_get(addr, "/healthz", std::time::Duration::from_secs(5)).expect("API on the overridden address");
    assert_eq!(status, 200);
    let default_api = quickstart().get("api").and_then(|a| a.get("listen")).and_then(|l| l.as_str()).map(str::to_owned);
    assert_ne!(default_api.as_deref(), Some(addr.to_string().as_str()));
}
