//! The seams through which the broker's decisions reach peers without depending on how they are
//! reached: traits here, implementations in `hie-outbound` (which the binary wires in).
//!
//! [`Pacs`]: the hospital's PACS as the manifest pipeline sees it, one implementation per
//! `[pacs] kind` (a folder of files, DIMSE, DICOMweb).

use std::future::Future;
use std::pin::Pin;

use hie_kos::StudyEvidence;
use tokio::sync::mpsc;

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

    /// Which of `instances` (all of one study) the PACS holds now, by an instance-level query:
    /// what a retrieval checks before it commits to a status (RAD-69's status comes first).
    fn find_instances<'a>(&'a self, instances: &'a [InstanceKey]) -> PacsFuture<'a, Vec<FoundInstance>>;

    /// Fetches `instances` (of one study) and streams them into `sink` as they arrive, each
    /// between [`RetrieveEvent::Begin`] and [`RetrieveEvent::End`], in any order, in one of
    /// `transfer_syntaxes` (preference order; the PACS is asked for them, nothing is transcoded
    /// here). The sink is bounded: a slow consumer slows the PACS (TCP flow control), memory
    /// stays flat. Dropping the receiving end cancels the retrieval (the association is released
    /// or aborted). The report says which instances were sent whole.
    fn retrieve<'a>(
        &'a self,
        instances: &'a [InstanceKey],
        transfer_syntaxes: &'a [String],
        sink: mpsc::Sender<RetrieveEvent>,
    ) -> PacsFuture<'a, RetrieveReport>;
}

/// One instance, by its place in the study hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
}

/// An instance the PACS holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundInstance {
    pub key: InstanceKey,
    pub sop_class_uid: String,
    /// The transfer syntax the PACS stores it in, when it says (DICOMweb: Available Transfer
    /// Syntax UID (0008,3002)); `None` for a DIMSE PACS.
    pub stored_transfer_syntax_uid: Option<String>,
}

/// What a retrieval streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieveEvent {
    /// An instance begins. With `part10` the bytes that follow are a whole DICOM Part 10 file
    /// (WADO-RS); without, a data set in `transfer_syntax_uid` (DIMSE), to which the consumer
    /// prepends the File Meta Information (PS3.10 7.1).
    Begin { sop_class_uid: String, sop_instance_uid: String, transfer_syntax_uid: String, part10: bool },
    /// The next bytes of the current instance.
    Data(bytes::Bytes),
    /// The current instance is complete.
    End,
    /// The current instance broke off (the PACS failed mid-way): whatever was sent of it is void.
    Lost(String),
}

/// What a retrieval came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrieveReport {
    /// SOP Instance UIDs sent whole (Begin, data, End).
    pub sent: Vec<String>,
    /// SOP Instance UIDs the PACS did not deliver, with why.
    pub failed: Vec<(String, String)>,
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
