//! Why the registry or the repository refused something. Each [`Violation`] names one broken
//! rule and where; which XDS errorCode it becomes is decided in one place, [`crate::rescue`].
//!
//! Texts carry object ids, uniqueIds and parameter names, never patient identifiers: they end up
//! in logs. The patient id of a refusal is in the RegistryError only (the submitter sent it).

use hie_store::StoreError;

/// One broken XDS rule. The submitter is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Metadata missing or malformed (ITI TF-3 4.2.3, Table 4.3.1-3).
    #[error("{object}: {problem}")]
    Metadata { object: String, problem: String },
    /// The repository's own metadata checks (hash, size, mimeType of ITI-41, ITI TF-2b 3.41.4.1.3).
    #[error("document {document}: {problem}")]
    RepositoryMetadata { document: String, problem: String },
    /// The patientId is not one the feed registered (or it was merged away).
    #[error("{object}: the patientId is not known to the registry{}", merged_note(.merged))]
    UnknownPatient { object: String, patient_id: String, merged: bool },
    /// Objects of one submission, or an object and what it refers to, name different patients.
    #[error("{object}: its patientId differs from {other}'s")]
    PatientMismatch { object: String, other: String },
    /// Two objects of the message share a uniqueId (registry checks).
    #[error("uniqueId {unique_id} appears more than once in the submission")]
    DuplicateUniqueIdInMessage { unique_id: String },
    /// Two documents of an ITI-41 share a uniqueId (repository checks).
    #[error("document uniqueId {unique_id} appears more than once in the submission")]
    RepositoryDuplicateUniqueIdInMessage { unique_id: String },
    /// A SubmissionSet or Folder uniqueId, or a DocumentEntry uniqueId of another patient, is
    /// registered already.
    #[error("uniqueId {unique_id} is already registered")]
    DuplicateUniqueIdInRegistry { unique_id: String },
    /// A DocumentEntry uniqueId is registered with another hash.
    #[error("uniqueId {unique_id} is registered with a different hash")]
    NonIdenticalHash { unique_id: String },
    /// A DocumentEntry uniqueId is registered with another size.
    #[error("uniqueId {unique_id} is registered with a different size")]
    NonIdenticalSize { unique_id: String },
    /// A reference (association end, lid) names no object of the submission or the registry.
    #[error("{object}: {reference} does not resolve to a registry object")]
    UnresolvedReference { object: String, reference: String },
    /// A replacement, transformation or addendum of a document that is not Approved.
    #[error("{association}: target document {target} is not Approved")]
    TargetNotApproved { association: String, target: String },
    /// An ITI-41 DocumentEntry without its Document.
    #[error("DocumentEntry {entry} has no Document in the request")]
    MissingDocument { entry: String },
    /// An ITI-41 Document without its DocumentEntry.
    #[error("Document {document} has no DocumentEntry in the metadata")]
    MissingDocumentMetadata { document: String },
    /// ITI-57: an update this registry does not perform.
    #[error("{object}: {problem}")]
    UpdateOperation { object: String, problem: String },
    /// ITI-57: an update that does not apply to the registry's state.
    #[error("{object}: {problem}")]
    Update { object: String, problem: String },
    /// ITI-57: the PreviousVersion is not the latest version.
    #[error("{object}: PreviousVersion {found} is not the latest version {latest}")]
    Version { object: String, latest: i64, found: String },
    /// ITI-18: the query id is not a stored query this registry runs.
    #[error("stored query {query_id} is not supported here")]
    UnknownStoredQuery { query_id: String },
    /// ITI-18: a required parameter is missing.
    #[error("parameter {parameter} is required")]
    MissingParameter { parameter: String },
    /// ITI-18: a parameter given too often, or parameters that exclude each other.
    #[error("parameter {parameter}: {problem}")]
    ParameterNumber { parameter: String, problem: &'static str },
    /// ITI-18: a parameter this query does not take, or a malformed value.
    #[error("parameter {parameter}: {problem}")]
    Parameter { parameter: String, problem: String },
    /// ITI-18: more results than the registry returns at once.
    #[error("the query matches more than {limit} objects; narrow it")]
    TooManyResults { limit: usize },
    /// ITI-18: objects asked for by id belong to several patients.
    #[error("the objects asked for belong to more than one patient")]
    ResultNotSinglePatient,
    /// ITI-43: a repositoryUniqueId that is not this repository's.
    #[error("repository {repository_unique_id} is not this repository")]
    UnknownRepository { repository_unique_id: String, document_unique_id: String },
    /// ITI-43: a homeCommunityId that is not this community's.
    #[error("homeCommunityId {home_community_id} is not this community")]
    UnknownCommunity { home_community_id: String, document_unique_id: String },
    /// ITI-43: no document with this uniqueId.
    #[error("document {document_unique_id} is not in this repository")]
    UnknownDocument { document_unique_id: String },
}

fn merged_note(merged: &bool) -> &'static str {
    if *merged { " (it was merged into another patient)" } else { "" }
}

/// Why an operation failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The request broke XDS rules; nothing was stored.
    #[error("refused: {}", first(.0))]
    Refused(Vec<Violation>),
    /// The database failed; nothing was stored and the request may succeed later.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Violation> for Failure {
    fn from(violation: Violation) -> Self {
        Failure::Refused(vec![violation])
    }
}

fn first(violations: &[Violation]) -> String {
    match violations {
        [] => "no reason given".to_owned(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}
