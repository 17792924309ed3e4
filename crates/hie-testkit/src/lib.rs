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
use std::sync::atomic::{AtomicU32, Ordering};

pub use dcmqrscp::{Dcmqrscp, DcmqrscpOptions};
pub use dcmtk::{ToolOutput, dcmtk};
pub use fixtures::FixtureStudy;
pub use generate::{GeneratedStudy, StudyOverrides, generate_study, generate_study_with};
pub use orthanc::{Modality, Orthanc, OrthancOptions};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A TCP port that was free on loopback a moment ago, for peers (and brokers) that cannot bind
/// port 0 themselves; their launchers retry on a clash.
///
/// Ports come from below the kernel's ephemeral range (Linux: 32768-60999), never from it: a port
/// from `bind(:0)`, once released, may be taken by any outgoing connection's local end before the
/// peer binds it (a broker under a busy test run failed with "Address already in use" that way).
/// Within `PICK_RANGE` each process starts at its own offset and never hands a port out twice.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PICK_RANGE.end - PICK_RANGE.start);
    // Knuth's multiplicative hash spreads neighbouring PIDs across the range.
    let offset = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PICK_RANGE.start + u16::try_from((offset + step) % span).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PICK_RANGE:?}")
}

/// Where [`free_port`] picks: below the ephemeral range, above the well-known and registered
/// services this machine runs (PostgreSQL 5432, Orthanc's defaults 4242 and 8042).
const PICK_RANGE: std::ops::Range<u16> = 20_000..32_000;
