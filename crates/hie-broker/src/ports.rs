//! The seams through which the broker's decisions reach peers without depending on how they are
//! reached: traits here, implementations in `hie-outbound` (which the binary wires in).
//!
//! [`Pacs`]: the hospital's PACS as the manifest pipeline sees it, one implementation per
//! `[pacs] kind` (a folder of files, DIMSE, DICOMweb).

use std::future::Future;
use std::pin::Pin;

use hie_kos::StudyEvidence;

/// The future a [`Pacs`] method returns.
pub type PacsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PacsError>> + Send + 'a>>;

/// The hospital's PACS.
pub trait Pacs: Send + Sync + 'static {
    /// What the adapter is, for logs and errors (`folder samples/dicom`, `dimse ORTHANC@host:4242`).
    fn describe(&self) -> String;

    /// Everything a manifest for the study is built from, as the PACS holds it now: every
    /// instance, with the patient and study attributes of the images.
    fn study_evidence<'a>(&'a self, study_instance_uid: &'a str) -> PacsFuture<'a, StudyEvidence>;

    /// Studies whose Study Date is on or after `from_date` (DA, `YYYYMMDD`), with their instance
    /// counts when the PACS reports them: what a poll compares against what the broker knows.
    fn list_studies<'a>(&'a self, from_date: &'a str) -> PacsFuture<'a, Vec<StudySummary>>;
}

/// One study in a PACS listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySummary {
    pub study_instance_uid: String,
    /// Number of Study Related Instances (0020,1208), when the PACS reports it.
    pub n_instances: Option<u64>,
}

/// Why the PACS could not answer, split by what the caller does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacsError {
    /// The PACS holds no instance of the study.
    #[error("study {0} is not in the PACS")]
    UnknownStudy(String),
    /// The PACS can't be reached or did not answer in time: worth retrying later.
    #[error("PACS unreachable: {0}")]
    Unreachable(String),
    /// The PACS answered, but refused or failed the request (a failure status, an HTTP error):
    /// worth retrying later, as a PACS's refusals are usually transient.
    #[error("PACS refused the request: {0}")]
    Refused(String),
    /// The PACS answered with something we can't use (malformed response, or only unreadable
    /// instances for the study).
    #[error("unusable answer from the PACS: {0}")]
    BadAnswer(String),
}
