//! The hospital's PACS, as hie-edge opens it: one adapter per `[pacs] kind`, each implementing
//! the broker's [`Pacs`] port (a Study Instance UID in, the [`hie_kos::StudyEvidence`] a manifest
//! is built from out; study listings for polls).
//!
//! Modules:
//! - [`folder`]: [`FolderPacs`] / [`FolderAdapter`], a directory tree of DICOM Part 10 files.
//! - [`dicomweb`]: [`DicomWebPacs`], QIDO-RS queries and WADO-RS retrieval over HTTP (with
//!   `multipart`, the streaming multipart/related splitter, and `file_meta`, the Part 10 meta
//!   group reader).
//! - [`dimse`]: [`DimsePacs`], C-FIND, C-GET and C-MOVE over DICOM associations.

pub mod dicomweb;
pub mod dimse;
mod file_meta;
pub mod folder;
mod multipart;
mod query;

use std::path::PathBuf;
use std::time::Duration;

pub use dicomweb::DicomWebPacs;
pub use dimse::DimsePacs;
pub use folder::{FolderAdapter, FolderPacs};
pub use hie_broker::ports::{Pacs, PacsError, StudySummary};

/// Which adapter, and how to reach the PACS (`[pacs]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacsSettings {
    /// A directory tree of DICOM Part 10 files.
    Folder { path: PathBuf },
    /// A DIMSE PACS: C-FIND for queries, C-GET or C-MOVE for retrieval.
    Dimse(DimseSettings),
    /// A DICOMweb PACS: QIDO-RS for queries, WADO-RS for retrieval.
    DicomWeb(DicomWebSettings),
}

/// How instances are fetched from a DIMSE PACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieve {
    /// C-GET on the query association's peer: one association, no inbound port (preferred).
    CGet,
    /// C-MOVE to our own listener, for PACS without C-GET.
    CMove,
}

/// A DIMSE PACS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimseSettings {
    /// The PACS's AE title (called AE).
    pub ae_title: String,
    /// Where it listens; the name is resolved at each connection, so a PACS that moves is followed.
    pub host: String,
    pub port: u16,
    /// Our AE title (calling AE, and the C-MOVE destination).
    pub our_ae_title: String,
    pub retrieve: Retrieve,
    /// Associations open to the PACS at once.
    pub max_associations: usize,
    pub connect_timeout: Duration,
    /// Longest wait for the PACS's next PDU.
    pub timeout: Duration,
}

/// A DICOMweb PACS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomWebSettings {
    /// The DICOMweb root, e.g. `http://127.0.0.1:8042/dicom-web` (no trailing slash).
    pub url: String,
    pub connect_timeout: Duration,
    /// Longest wait for a response (or the next part of a body).
    pub timeout: Duration,
}
