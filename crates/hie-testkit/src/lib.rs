//! hie-testkit: real peers and test data for hie-edge's tests and benchmarks. Dev-dependency
//! only (a tidy test checks that no crate has it as a normal dependency).
//!
//! Blocking std code on purpose: usable from plain `#[test]`s, from `#[tokio::test]`s (start a
//! peer before the first await) and from bench binaries.
//!
//! Modules:
//! - [`orthanc`]: [`Orthanc`], a real Orthanc (Debian `orthanc` + `orthanc-dicomweb`) on free
//!   ports in a temporary directory, with REST upload and deletion.
//! - [`dcmqrscp`]: [`Dcmqrscp`], dcmtk's Query/Retrieve SCP as a second, tiny PACS.
//! - [`dcmtk`]: running dcmtk tools (`echoscu`, `storescu`, `findscu`, `getscu`, `movescu`,
//!   `storescp`...) with `TCP_NODELAY=1`, output and exit code captured.
//! - [`fixtures`]: the fixture studies in `crates/hie-kos/test_data/studies/`.
//! - [`generate`]: studies of N instances cloned from one fixture file with new UIDs.
//! - [`part10`]: splitting a Part 10 file into its file meta and its data set.
//! - [`http`]: a tiny HTTP/1.1 client for the peers' REST APIs.

pub mod dcmqrscp;
pub mod dcmtk;
pub mod fixtures;
pub mod generate;
pub mod http;
pub mod orthanc;
pub mod part10;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub use dcmqrscp::{Dcmqrscp, DcmqrscpOptions};
pub use dcmtk::{ToolOutput, dcmtk};
pub use fixtures::FixtureStudy;
pub use generate::{GeneratedStudy, StudyOverrides, generate_study, generate_study_with};
pub use orthanc::{Modality, Orthanc, OrthancOptions};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A TCP port that was free on every address a moment ago (bind `0.0.0.0:0`, read, release).
/// Peers that cannot bind port 0 themselves get one of these; their launchers retry on a clash.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap_or_else(|error| panic!("cannot bind a free port: {error}"));
    listener.local_addr().map(|addr| addr.port()).unwrap_or_else(|error| panic!("no local address: {error}"))
}
