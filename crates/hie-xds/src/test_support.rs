//! Test support for this crate and the broker's end-to-end tests (feature `test-support`):
//! check a message this code wrote against the IHE schemas with xmllint, the way the shared
//! fixtures README does it: take the SOAP Body's child, inline the XOP attachments as base64
//! (the XSD types `Document` as base64Binary), then `xmllint --noout --schema`.
//!
//! This module runs a process; it is compiled only for tests, never into the codec.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::mtom::{self, MtomLimits};
use crate::vocabulary::{NS_SOAP12, NS_XOP};
use crate::xml::{self, Element, Limits};

/// The entry schema that covers every message root of this crate (copied from the shared
/// fixtures into this crate's test_data).
pub fn imaging_document_source_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/schema/IHE/XDSI.b_ImagingDocumentSource.xsd")
}

/// The IHE Document Registry WSDL (ITI-18, ITI-42), which zeep loads offline.
pub fn registry_wsdl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/wsdl/XDS.b_DocumentRegistry.wsdl")
}

/// `tests/zeep_parse.py`: `python zeep_parse.py WSDL (OPERATION FILE)...` deserializes each SOAP
/// envelope FILE as the output of OPERATION with zeep and prints one JSON summary line per file
/// (see the script's docstring for the zeep 4.3.3 gaps it works around).
pub fn zeep_parse_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zeep_parse.py")
}

/// The XML xmllint should see for a message: the Body child of a SOAP envelope (or the root if
/// it is not an envelope), with every `xop:Include` replaced by the attachment in base64.
pub fn schema_view(content_type: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut package =
        mtom::read_message(content_type, body, &MtomLimits::DEFAULT).map_err(|error| error.to_string())?;
    let document = xml::parse(package.root, &Limits::DEFAULT).map_err(|error| error.to_string())?;
    let root = document.root();
    let target = if root.is(NS_SOAP12, "Envelope") {
        let body = root.child(NS_SOAP12, "Body").ok_or("envelope without Body")?;
        body.children().next().ok_or("empty Body")?
    } else {
        root
    };
    let mut failure = None;
    let view = xml::write_element_with(target, |element: Element<'_>| {
        let mut children = element.children();
        let (Some(include), None) = (children.next(), children.next()) else {
            return None;
        };
        if !include.is(NS_XOP, "Include") {
            return None;
        }
        let resolved = include
            .attribute("href")
            .ok_or_else(|| "xop:Include without href".to_owned())
            .and_then(|href| package.resolve(href).map_err(|error| error.to_string()));
        match resolved {
            Ok(bytes) => Some(BASE64.encode(bytes)),
            Err(error) => {
                failure.get_or_insert(error);
                None
            }
        }
    });
    match failure {
        Some(error) => Err(error),
        None => Ok(view),
    }
}

/// Runs `xmllint --noout --schema <schema> -` on [`schema_view`] of the message.
/// Returns xmllint's report on failure; fails with a clear message if xmllint is missing.
pub fn xmllint_validate(content_type: &str, body: &[u8], schema: &Path) -> Result<(), String> {
    let view = schema_view(content_type, body)?;
    xmllint_validate_xml(&view, schema)
}

/// Runs xmllint on an XML document as is.
pub fn xmllint_validate_xml(xml: &[u8], schema: &Path) -> Result<(), String> {
    let mut child = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(schema)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run xmllint (apt-get install libxml2-utils): {error}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin for xmllint")?;
    stdin.write_all(xml).map_err(|error| format!("writing to xmllint: {error}"))?;
    drop(stdin);
    let output = child.wait_with_output().map_err(|error| format!("waiting for xmllint: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "xmllint refused the message ({}):\n{}\n--- document ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&xml[..xml.len().min(MAX_ECHOED_DOCUMENT)])
    ))
}

/// Bytes of the refused document echoed in a failure report.
const MAX_ECHOED_DOCUMENT: usize = 4096;
