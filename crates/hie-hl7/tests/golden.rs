//! Golden tests: every `test_data/ok/*.hl7` parses to the dump in its `.expected`, every
//! `test_data/err/*.hl7` is rejected with the code, location and ACK in its `.expected`.
//!
//! `UPDATE_EXPECT=1` rewrites the `.expected` files instead of comparing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hie_hl7::ack::{AckCode, build_ack, salvage_header};
use hie_hl7::adt::{AdtMessage, parse_adt};
use hie_hl7::charset::decode_to_utf8;

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
        .filter(|path| path.extension().is_some_and(|ext| ext == "hl7"))
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
    let text = match decode_to_utf8(input) {
        Ok(text) => text,
        Err(error) => return format!("UNEXPECTED charset error: {error}\n"),
    };
    match parse_adt(&text) {
        Ok(message) => {
            let mut out = dump_message(&message);
            let ack = build_ack(&message.header, AckCode::AA, None, "ACK-1", "20240101000000", "HIE_EDGE", "EDGE");
            writeln!(out, "ack:\n{}", ack.replace('\r', "\n")).unwrap();
            out
        }
        Err(error) => format!("UNEXPECTED error: {error}\n"),
    }
}

fn dump_err(input: &[u8]) -> String {
    let (text, result) = match decode_to_utf8(input) {
        Ok(text) => {
            let result = parse_adt(&text).map(|_| ());
            (text, result)
        }
        Err(error) => (String::from_utf8_lossy(input).into_owned(), Err(error)),
    };
    let Err(error) = result else {
        return "UNEXPECTED success\n".to_owned();
    };
    let header = salvage_header(&text);
    let ack = build_ack(&header, AckCode::AR, Some(&error), "ACK-1", "20240101000000", "HIE_EDGE", "EDGE");
    format!(
        "code: {}\nlocation: {}\nmessage: {}\nack:\n{}",
        error.code.code(),
        error.location,
        error.message,
        ack.replace('\r', "\n")
    )
}

fn dump_message(message: &AdtMessage) -> String {
    let header = &message.header;
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "event: {} ({:?})", message.event.as_str(), message.event.kind()).unwrap();
    writeln!(w, "control_id: {}", header.control_id).unwrap();
    writeln!(w, "type: {}^{}^{}", header.message_code, header.trigger_event, header.message_structure).unwrap();
    writeln!(w, "version: {}", header.version).unwrap();
    writeln!(w, "sender: {} / {}", header.sending_application, header.sending_facility).unwrap();
    writeln!(w, "receiver: {} / {}", header.receiving_application, header.receiving_facility).unwrap();
    writeln!(w, "processing_id: {}", header.processing_id).unwrap();
    writeln!(w, "datetime: {}", header.datetime).unwrap();
    writeln!(w, "charset: {}", header.charset).unwrap();
    writeln!(w, "separators: {}{}", header.separators.field, header.separators.encoding_characters()).unwrap();
    writeln!(w, "ack_types: accept={:?} application={:?}", header.accept_ack_type, header.application_ack_type)
        .unwrap();
    for group in &message.groups {
        writeln!(w, "group (PID {}):", group.pid_index).unwrap();
        for cx in &group.pid.identifiers {
            writeln!(w, "  id: {}", cx.to_cx_string()).unwrap();
        }
        for name in &group.pid.names {
            writeln!(
                w,
                "  name: family={:?} given={:?} middle={:?} suffix={:?} prefix={:?} type={:?}",
                name.family, name.given, name.middle, name.suffix, name.prefix, name.name_type
            )
            .unwrap();
        }
        writeln!(w, "  birth_date: {}", group.pid.birth_date).unwrap();
        writeln!(w, "  sex: {}", group.pid.sex).unwrap();
        if let Some(mrg) = &group.mrg {
            for cx in &mrg.prior_identifiers {
                writeln!(w, "  prior id: {}", cx.to_cx_string()).unwrap();
            }
        }
    }
    out
}
