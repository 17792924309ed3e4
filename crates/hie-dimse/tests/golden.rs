//! Golden tests: every `test_data/ok/*.bin` command set decodes to the dump in its `.expected`
//! and re-encodes to the same bytes; every `test_data/err/*.bin` is refused with the error in
//! its `.expected`.
//!
//! `UPDATE_EXPECT=1` rewrites the `.expected` files instead of comparing.

use std::path::{Path, PathBuf};

use hie_dimse::{Limits, decode, encode};

#[test]
fn ok_cases() {
    let failures: Vec<String> = cases("ok").iter().filter_map(|path| check(path, dump_ok)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn err_cases() {
    let failures: Vec<String> = cases("err").iter().filter_map(|path| check(path, dump_err)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn cases(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data").join(folder);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no cases in {}", dir.display());
    paths
}

/// Compares (or with UPDATE_EXPECT rewrites) one case; returns a failure description.
fn check(path: &Path, dump: fn(&[u8]) -> String) -> Option<String> {
    let input = std::fs::read(path).unwrap();
    let actual = dump(&input);
    let expected_path = path.with_extension("expected");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    (expected != actual)
        .then(|| format!("--- {}\n--- expected:\n{expected}\n--- actual:\n{actual}", expected_path.display()))
}

fn dump_ok(input: &[u8]) -> String {
    match decode(input, &Limits::default()) {
        Ok(command) => {
            let mut encoded = Vec::new();
            encode(&command, &mut encoded);
            let same = if encoded == input { "identical" } else { "DIFFERENT" };
            format!("{command:#?}\nre-encoded: {same}\n")
        }
        Err(error) => format!("UNEXPECTED error: {error}\n"),
    }
}

fn dump_err(input: &[u8]) -> String {
    match decode(input, &Limits::default()) {
        Ok(command) => format!("UNEXPECTED success: {command:#?}\n"),
        Err(error) => format!("{error}\n{error:?}\n"),
    }
}
