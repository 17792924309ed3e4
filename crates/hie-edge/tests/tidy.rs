//! Tidy checks over the whole workspace, in the style of rust-analyzer's `tidy.rs`: the
//! dependency rules of docs/ARCHITECTURE.md, read from each crate's Cargo.toml, and the rule that
//! every Rust file opens with a `//!` doc saying what it owns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Protocol codecs: sans-IO, self-contained.
const CODECS: &[&str] = &["hie-hl7", "hie-kos", "hie-dimse", "hie-xds"];
/// What a codec must never depend on.
const IO_CRATES: &[&str] = &["tokio", "hyper", "hyper-util", "axum", "sqlx", "rusqlite", "hie-core", "hie-store"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Normal (non-dev) dependencies of every workspace crate, by package name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    dependencies_in("dependencies")
}

/// The dependencies of every workspace crate listed in one table (`dependencies`,
/// `dev-dependencies`, `build-dependencies`), by package name.
fn dependencies_in(section: &str) -> BTreeMap<String, Vec<String>> {
    let mut crates = BTreeMap::new();
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("Cargo.toml"))
        .filter(|path| path.exists())
        .collect();
    manifests.push(workspace_root().join("tests/Cargo.toml"));
    for manifest in manifests {
        let table: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let name = table["package"]["name"].as_str().unwrap().to_owned();
        let folder = manifest.parent().unwrap().file_name().unwrap().to_str().unwrap().to_owned();
        if folder != "tests" {
            assert_eq!(name, folder, "crate folder and package name must match ({})", manifest.display());
        }
        let deps = table
            .get(section)
            .and_then(toml::Value::as_table)
            .map(|deps| deps.keys().cloned().collect())
            .unwrap_or_default();
        crates.insert(name, deps);
    }
    crates
}

fn depends(crates: &BTreeMap<String, Vec<String>>, from: &str, on: &str) -> bool {
    crates.get(from).is_some_and(|deps| deps.iter().any(|dep| dep == on))
}

#[test]
fn codecs_are_self_contained() {
    let crates = dependencies();
    for codec in CODECS {
        assert!(crates.contains_key(*codec), "{codec} is listed as a codec but does not exist");
        for forbidden in IO_CRATES {
            assert!(!depends(&crates, codec, forbidden), "codec {codec} must not depend on {forbidden}");
        }
    }
}

#[test]
fn the_mllp_server_builds_on_the_hl7_codec_only() {
    let crates = dependencies();
    let net = crates.get("hie-hl7-net").expect("hie-hl7-net exists");
    for dep in net {
        assert!(
            !dep.starts_with("hie-") || dep == "hie-hl7",
            "hie-hl7-net must depend on no hie-* crate but hie-hl7 (found {dep})"
        );
    }
    assert!(!depends(&crates, "hie-broker", "hie-hl7-net"), "the broker opens no socket");
}

#[test]
fn codecs_share_only_the_dicom_codec() {
    // hie-dimse holds what every DICOM reader needs before dicom-parser sees a peer's bytes (the
    // declared-length pre-scan), so hie-kos may build on it; otherwise codecs stand alone, and
    // hie-dimse builds on no workspace crate.
    let crates = dependencies();
    for codec in CODECS {
        for dep in crates.get(*codec).into_iter().flatten() {
            let allowed = *codec == "hie-kos" && dep == "hie-dimse";
            assert!(!dep.starts_with("hie-") || allowed, "codec {codec} must not depend on {dep}");
        }
    }
}

#[test]
fn the_dicom_network_layer_builds_on_the_dimse_codec_only() {
    let crates = dependencies();
    let net = crates.get("hie-dicom-net").expect("hie-dicom-net exists");
    for dep in net {
        assert!(
            !dep.starts_with("hie-") || dep == "hie-dimse",
            "hie-dicom-net must depend on no hie-* crate but hie-dimse (found {dep})"
        );
    }
    assert!(depends(&crates, "hie-dicom-net", "hie-dimse"));
    assert!(!depends(&crates, "hie-dimse", "tokio"), "hie-dimse stays sans-IO: no tokio");
    // dicom-ul's own async association layer stays off: ours replaces it.
    for manifest in [workspace_root().join("Cargo.toml"), workspace_root().join("crates/hie-dicom-net/Cargo.toml")] {
        let table: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let entry = table
            .get("workspace")
            .and_then(|workspace| workspace.get("dependencies"))
            .or_else(|| table.get("dependencies"))
            .and_then(|deps| deps.get("dicom-ul"));
        let features = entry.and_then(|entry| entry.get("features")).and_then(toml::Value::as_array);
        let enables_async = features.is_some_and(|features| {
            features.iter().any(|feature| feature.as_str().is_some_and(|feature| feature.contains("async")))
        });
        assert!(!enables_async, "{} enables dicom-ul's async feature", manifest.display());
    }
}

#[test]
fn only_the_io_adapters_and_the_binary_open_dicom_associations() {
    let crates = dependencies();
    let users: Vec<&String> =
        crates.iter().filter(|(_, deps)| deps.iter().any(|dep| dep == "hie-dicom-net")).map(|(name, _)| name).collect();
    for user in users {
        assert!(
            ["hie-inbound", "hie-outbound", "hie-edge", "hie-e2e"].contains(&user.as_str()),
            "{user} must not depend on hie-dicom-net: peers are reached by the I/O adapters (inbound, outbound)"
        );
    }
}

#[test]
fn the_testkit_is_a_dev_dependency_only() {
    for section in ["dependencies", "build-dependencies"] {
        for (name, deps) in dependencies_in(section) {
            // The end-to-end harness is test code itself (never built into the broker).
            if name == "hie-e2e" {
                continue;
            }
            assert!(!deps.iter().any(|dep| dep == "hie-testkit"), "{name} has hie-testkit in [{section}]");
        }
    }
}

#[test]
fn core_depends_on_no_workspace_crate_and_no_io() {
    let crates = dependencies();
    let core = &crates["hie-core"];
    for dep in core {
        assert!(!dep.starts_with("hie-"), "hie-core must not depend on {dep}");
        assert!(
            !["tokio", "sqlx", "serde", "hyper", "axum"].contains(&dep.as_str()),
            "hie-core must not depend on {dep}"
        );
    }
}

#[test]
fn inbound_and_outbound_never_depend_on_each_other() {
    let crates = dependencies();
    assert!(!depends(&crates, "hie-inbound", "hie-outbound"));
    assert!(!depends(&crates, "hie-outbound", "hie-inbound"));
}

#[test]
fn the_broker_reaches_no_peer_and_the_database_only_through_the_store() {
    let crates = dependencies();
    for forbidden in ["hie-inbound", "hie-outbound", "hie-edge", "hie-dicom-net", "hyper", "axum", "sqlx", "rusqlite"] {
        assert!(!depends(&crates, "hie-broker", forbidden), "hie-broker must not depend on {forbidden}");
    }
    for forbidden in ["hie-broker", "hie-inbound", "hie-outbound", "hie-edge"] {
        assert!(!depends(&crates, "hie-store", forbidden), "hie-store must not depend on {forbidden}");
    }
}

#[test]
fn only_the_store_drives_sqlite_directly() {
    // rusqlite is the SQLite writer's in-process connection (hie-store's `sqlite_native`); the
    // ADT bench measures its commit ceiling through it too.
    for (name, deps) in dependencies() {
        if name != "hie-store" && name != "hie-e2e" {
            assert!(!deps.iter().any(|dep| dep == "rusqlite"), "{name} must reach SQLite through hie-store");
        }
    }
}

#[test]
fn tls_is_mechanism_and_depends_on_no_workspace_crate() {
    let crates = dependencies();
    let tls = crates.get("hie-tls").expect("crates/hie-tls exists");
    for dep in tls {
        assert!(!dep.starts_with("hie-"), "hie-tls must not depend on {dep}");
    }
}

#[test]
fn the_reference_registry_stands_apart_from_the_broker() {
    // It is a peer the broker talks to over the wire (an XDS registry and repository), sharing
    // only the store and the codecs; the binary wires it in, the broker never calls it directly.
    let crates = dependencies();
    assert!(crates.contains_key("hie-refregistry"), "hie-refregistry is listed but does not exist");
    for forbidden in ["hie-broker", "hie-inbound", "hie-outbound", "hie-edge"] {
        assert!(!depends(&crates, "hie-refregistry", forbidden), "hie-refregistry must not depend on {forbidden}");
    }
    for dependent in ["hie-broker", "hie-store"] {
        assert!(!depends(&crates, dependent, "hie-refregistry"), "{dependent} must not depend on hie-refregistry");
    }
}

#[test]
fn only_the_binary_reads_settings() {
    let crates = dependencies();
    for (name, deps) in &crates {
        if name == "hie-edge" || name == "hie-e2e" {
            continue;
        }
        for settings_crate in ["toml", "clap", "figment", "config"] {
            assert!(!deps.iter().any(|dep| dep == settings_crate), "{name} must not depend on {settings_crate}");
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    let mut stack = vec![workspace_root().join("crates"), workspace_root().join("tests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !["target", "test_data", "fixtures", "fuzz"].contains(&name.as_str()) {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.trim_start_matches('\u{feff}').starts_with("//!") {
                    missing.push(path.strip_prefix(workspace_root()).unwrap().display().to_string());
                }
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "files without a leading //! doc: {missing:#?}");
}
