//! hie-kos: the XDS-I.b imaging manifest as a DICOM Key Object Selection (KOS) document.
//!
//! A codec in the workspace sense: no network, no database, no async. It turns what is known about
//! a study into a KOS that dciodvfy accepts, and reads a KOS back into a summary.
//!
//! Modules:
//! - [`evidence`]: what a manifest is built from ([`StudyEvidence`]), independent of where the
//!   instances came from (PACS query, C-STORE arrivals, a folder); [`StudyEvidenceBuilder`]
//!   accumulates instance headers, dedupes and sorts them.
//! - [`build`]: [`build_kos`] (IHE RAD TF-3 4.68.4.1.2; DICOM PS3.3 A.35.4, C.17.6; TID 2010) and
//!   [`to_part10_bytes`].
//! - `encode` (private): the Part 10 bytes written straight from the object, equal to
//!   dicom-object's writer byte for byte and several times faster.
//! - [`read`]: [`read_manifest`] / [`summarize_manifest`], a [`ManifestSummary`] of any KOS.
//! - [`value_type`]: IMAGE / WAVEFORM / COMPOSITE content items by SOP class.
//! - [`uid`]: [`UidSource`], [`RootedUids`] and UID syntax checks.
//! - [`element`]: reading trimmed strings and sequence items from an object (padding rules in one place).
//!
//! Every object read here goes through hie-dimse's declared-length pre-scan
//! ([`hie_dimse::bounds`]) first, so a lying length is refused before dicom-object allocates it.
//!
//! Images that violate their IOD are still referenced; only objects without readable UIDs are
//! refused (and the builder counts them as skipped).

pub mod build;
mod encode;
pub mod evidence;
pub mod read;
pub mod uid;
pub mod value_type;

pub mod element;

pub use build::{KosError, KosOptions, build_kos, to_part10_bytes};
pub use evidence::{
    Added, EvidenceError, InstanceHeader, InstanceRef, Issuer, RequestRef, SeriesEvidence, SeriesKey, StudyEvidence,
    StudyEvidenceBuilder, from_instance_header, read_instance_header,
};
/// Why the pre-scan refused an object (in [`KosError::LengthBeyondEnd`] and [`EvidenceError::LengthBeyondEnd`]).
pub use hie_dimse::bounds::LengthError;
pub use read::{CodeRef, ContentReference, ManifestSeries, ManifestSummary, read_manifest, summarize_manifest};
pub use uid::{RootedUids, UidError, UidSource, is_valid_uid};
pub use value_type::ValueType;

/// Re-exported so callers can name the object types without their own dicom-object dependency.
pub use dicom_object::{FileDicomObject, InMemDicomObject};
