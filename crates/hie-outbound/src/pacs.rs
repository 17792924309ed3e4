//! The hospital's PACS, as hie-edge opens it: one adapter per `[pacs] kind`. Each turns a Study
//! Instance UID into the [`hie_kos::StudyEvidence`] a manifest is built from.
//!
//! Modules:
//! - [`folder`]: [`FolderPacs`], a directory tree of DICOM Part 10 files.
//!
//! The DIMSE and DICOMweb adapters come with the association layer (issue 3).

pub mod folder;

pub use folder::{FolderPacs, PacsError};
