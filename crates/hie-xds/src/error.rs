//! XDS error codes (ITI TF-3 4.2.4.1, Table 4.2.4.1-2) with their string forms, and the
//! [`RetryClass`] a client uses to decide what to do with a refused submission.

/// The errorCode values of ITI TF-3 Table 4.2.4.1-2, plus the XCA and Metadata Update codes
/// that share the table (IPF `ErrorCode` lists the same set). Unknown codes are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Warning: the document was queued (ITI-41 asynchronous).
    DocumentQueued,
    /// The document content does not match its declared type.
    InvalidDocumentContent,
    /// An APND association was not processed.
    PartialAppendContentNotProcessed,
    /// A folder content association was not processed.
    PartialFolderContentNotProcessed,
    /// An RPLC association was not processed.
    PartialReplaceContentNotProcessed,
    /// An XFRM association was not processed.
    PartialTransformContentNotProcessed,
    /// An XFRM_RPLC association was not processed.
    PartialTransformReplaceContentNotProcessed,
    /// A document unique id is in use by another document, or unknown to the repository.
    XdsDocumentUniqueIdError,
    /// A uniqueId in the submission is already in the registry with different content.
    XdsDuplicateUniqueIdInRegistry,
    /// Extra metadata was not saved (warning).
    XdsExtraMetadataNotSaved,
    /// A DocumentEntry has no Document attached.
    XdsMissingDocument,
    /// A Document has no DocumentEntry.
    XdsMissingDocumentMetadata,
    /// The hash does not match the document.
    XdsNonIdenticalHash,
    /// The size does not match the document.
    XdsNonIdenticalSize,
    /// patientId differs between objects of one submission.
    XdsPatientIdDoesNotMatch,
    /// The registry is busy.
    XdsRegistryBusy,
    /// A replaced document is deprecated.
    XdsRegistryDeprecatedDocumentError,
    /// Two objects of one message share a uniqueId (registry).
    XdsRegistryDuplicateUniqueIdInMessage,
    /// Internal registry error (the default: the least specific code).
    #[default]
    XdsRegistryError,
    /// Metadata refused by the registry.
    XdsRegistryMetadataError,
    /// The repository could not reach the registry.
    XdsRegistryNotAvailable,
    /// The registry is out of resources.
    XdsRegistryOutOfResources,
    /// The repository is busy.
    XdsRepositoryBusy,
    /// Two documents of one message share a uniqueId (repository).
    XdsRepositoryDuplicateUniqueIdInMessage,
    /// Internal repository error.
    XdsRepositoryError,
    /// Metadata refused by the repository.
    XdsRepositoryMetadataError,
    /// The repository is out of resources.
    XdsRepositoryOutOfResources,
    /// The query result would span several patients.
    XdsResultNotSinglePatient,
    /// A stored query parameter is missing.
    XdsStoredQueryMissingParam,
    /// A stored query parameter has too many values.
    XdsStoredQueryParamNumber,
    /// Too many results (warning or error).
    XdsTooManyResults,
    /// The homeCommunityId is unknown (XCA).
    XdsUnknownCommunity,
    /// The community is not reachable (XCA).
    XdsUnavailableCommunity,
    /// homeCommunityId is required but missing (XCA).
    XdsMissingHomeCommunityId,
    /// The patient id is not known to the registry.
    XdsUnknownPatientId,
    /// The repositoryUniqueId is unknown.
    XdsUnknownRepositoryId,
    /// The stored query id is unknown.
    XdsUnknownStoredQuery,
    /// Metadata Update: general error (ITI-57).
    XdsMetadataUpdateError,
    /// Metadata Update: the operation is not allowed (ITI-57).
    XdsMetadataUpdateOperationError,
    /// Metadata Update: version mismatch (ITI-57).
    XdsMetadataVersionError,
    /// Metadata Update: patient id reconciliation failed (ITI-57).
    XdsPatientIdReconciliationError,
    /// ebRS 3.0: a reference in the submission does not resolve.
    UnresolvedReferenceException,
    /// A code not in the table, kept verbatim.
    Other(String),
}

/// What a client should do after a submission was refused with an error code.
///
/// Our own classification (landscape-and-requirements.md 3.6), from the codes' meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryClass {
    /// Transient: send the same message again later, with backoff.
    RetryWithBackoff,
    /// The registry does not know the patient yet: wait for the identity feed, then resend.
    ParkUntilIdentityFeed,
    /// Possibly our own earlier attempt succeeded: check with ITI-18 before resending.
    VerifyByQuery,
    /// The message itself is wrong: do not resend it; alert.
    Fatal,
    /// A warning: the submission succeeded.
    Accepted,
}

impl ErrorCode {
    /// Every known code, in the table's order (for exhaustive tests).
    pub const KNOWN: &'static [ErrorCode] = &[
        ErrorCode::DocumentQueued,
        ErrorCode::InvalidDocumentContent,
        ErrorCode::PartialAppendContentNotProcessed,
        ErrorCode::PartialFolderContentNotProcessed,
        ErrorCode::PartialReplaceContentNotProcessed,
        ErrorCode::PartialTransformContentNotProcessed,
        ErrorCode::PartialTransformReplaceContentNotProcessed,
        ErrorCode::XdsDocumentUniqueIdError,
        ErrorCode::XdsDuplicateUniqueIdInRegistry,
        ErrorCode::XdsExtraMetadataNotSaved,
        ErrorCode::XdsMissingDocument,
        ErrorCode::XdsMissingDocumentMetadata,
        ErrorCode::XdsNonIdenticalHash,
        ErrorCode::XdsNonIdenticalSize,
        ErrorCode::XdsPatientIdDoesNotMatch,
        ErrorCode::XdsRegistryBusy,
        ErrorCode::XdsRegistryDeprecatedDocumentError,
        ErrorCode::XdsRegistryDuplicateUniqueIdInMessage,
        ErrorCode::XdsRegistryError,
        ErrorCode::XdsRegistryMetadataError,
        ErrorCode::XdsRegistryNotAvailable,
        ErrorCode::XdsRegistryOutOfResources,
        ErrorCode::XdsRepositoryBusy,
        ErrorCode::XdsRepositoryDuplicateUniqueIdInMessage,
        ErrorCode::XdsRepositoryError,
        ErrorCode::XdsRepositoryMetadataError,
        ErrorCode::XdsRepositoryOutOfResources,
        ErrorCode::XdsResultNotSinglePatient,
        ErrorCode::XdsStoredQueryMissingParam,
        ErrorCode::XdsStoredQueryParamNumber,
        ErrorCode::XdsTooManyResults,
        ErrorCode::XdsUnknownCommunity,
        ErrorCode::XdsUnavailableCommunity,
        ErrorCode::XdsMissingHomeCommunityId,
        ErrorCode::XdsUnknownPatientId,
        ErrorCode::XdsUnknownRepositoryId,
        ErrorCode::XdsUnknownStoredQuery,
        ErrorCode::XdsMetadataUpdateError,
        ErrorCode::XdsMetadataUpdateOperationError,
        ErrorCode::XdsMetadataVersionError,
        ErrorCode::XdsPatientIdReconciliationError,
        ErrorCode::UnresolvedReferenceException,
    ];

    /// The errorCode attribute value.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::DocumentQueued => "DocumentQueued",
            ErrorCode::InvalidDocumentContent => "InvalidDocumentContent",
            ErrorCode::PartialAppendContentNotProcessed => "PartialAppendContentNotProcessed",
            ErrorCode::PartialFolderContentNotProcessed => "PartialFolderContentNotProcessed",
            ErrorCode::PartialReplaceContentNotProcessed => "PartialReplaceContentNotProcessed",
            ErrorCode::PartialTransformContentNotProcessed => "PartialTransformContentNotProcessed",
            ErrorCode::PartialTransformReplaceContentNotProcessed => "PartialTransformReplaceContentNotProcessed",
            ErrorCode::XdsDocumentUniqueIdError => "XDSDocumentUniqueIdError",
            ErrorCode::XdsDuplicateUniqueIdInRegistry => "XDSDuplicateUniqueIdInRegistry",
            ErrorCode::XdsExtraMetadataNotSaved => "XDSExtraMetadataNotSaved",
            ErrorCode::XdsMissingDocument => "XDSMissingDocument",
            ErrorCode::XdsMissingDocumentMetadata => "XDSMissingDocumentMetadata",
            ErrorCode::XdsNonIdenticalHash => "XDSNonIdenticalHash",
            ErrorCode::XdsNonIdenticalSize => "XDSNonIdenticalSize",
            ErrorCode::XdsPatientIdDoesNotMatch => "XDSPatientIdDoesNotMatch",
            ErrorCode::XdsRegistryBusy => "XDSRegistryBusy",
            ErrorCode::XdsRegistryDeprecatedDocumentError => "XDSRegistryDeprecatedDocumentError",
            ErrorCode::XdsRegistryDuplicateUniqueIdInMessage => "XDSRegistryDuplicateUniqueIdInMessage",
            ErrorCode::XdsRegistryError => "XDSRegistryError",
            ErrorCode::XdsRegistryMetadataError => "XDSRegistryMetadataError",
            ErrorCode::XdsRegistryNotAvailable => "XDSRegistryNotAvailable",
            ErrorCode::XdsRegistryOutOfResources => "XDSRegistryOutOfResources",
            ErrorCode::XdsRepositoryBusy => "XDSRepositoryBusy",
            ErrorCode::XdsRepositoryDuplicateUniqueIdInMessage => "XDSRepositoryDuplicateUniqueIdInMessage",
            ErrorCode::XdsRepositoryError => "XDSRepositoryError",
            ErrorCode::XdsRepositoryMetadataError => "XDSRepositoryMetadataError",
            ErrorCode::XdsRepositoryOutOfResources => "XDSRepositoryOutOfResources",
            ErrorCode::XdsResultNotSinglePatient => "XDSResultNotSinglePatient",
            ErrorCode::XdsStoredQueryMissingParam => "XDSStoredQueryMissingParam",
            ErrorCode::XdsStoredQueryParamNumber => "XDSStoredQueryParamNumber",
            ErrorCode::XdsTooManyResults => "XDSTooManyResults",
            ErrorCode::XdsUnknownCommunity => "XDSUnknownCommunity",
            ErrorCode::XdsUnavailableCommunity => "XDSUnavailableCommunity",
            ErrorCode::XdsMissingHomeCommunityId => "XDSMissingHomeCommunityId",
            ErrorCode::XdsUnknownPatientId => "XDSUnknownPatientId",
            ErrorCode::XdsUnknownRepositoryId => "XDSUnknownRepositoryId",
            ErrorCode::XdsUnknownStoredQuery => "XDSUnknownStoredQuery",
            ErrorCode::XdsMetadataUpdateError => "XDSMetadataUpdateError",
            ErrorCode::XdsMetadataUpdateOperationError => "XDSMetadataUpdateOperationError",
            ErrorCode::XdsMetadataVersionError => "XDSMetadataVersionError",
            ErrorCode::XdsPatientIdReconciliationError => "XDSPatientIDReconciliationError",
            ErrorCode::UnresolvedReferenceException => "UnresolvedReferenceException",
            ErrorCode::Other(code) => code,
        }
    }

    /// Parses an errorCode attribute; unknown codes become [`ErrorCode::Other`].
    pub fn parse(code: &str) -> ErrorCode {
        ErrorCode::KNOWN
            .iter()
            .find(|known| known.as_str() == code)
            .cloned()
            .unwrap_or_else(|| ErrorCode::Other(code.to_owned()))
    }

    /// What a submitting client should do (ITI-41/42/57 responses).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            ErrorCode::XdsRegistryBusy
            | ErrorCode::XdsRepositoryBusy
            | ErrorCode::XdsRegistryOutOfResources
            | ErrorCode::XdsRepositoryOutOfResources
            | ErrorCode::XdsRegistryNotAvailable
            | ErrorCode::XdsUnavailableCommunity => RetryClass::RetryWithBackoff,
            ErrorCode::XdsUnknownPatientId => RetryClass::ParkUntilIdentityFeed,
            // After a timeout our first attempt may have been registered.
            ErrorCode::XdsDuplicateUniqueIdInRegistry => RetryClass::VerifyByQuery,
            ErrorCode::DocumentQueued | ErrorCode::XdsExtraMetadataNotSaved => RetryClass::Accepted,
            // Internal errors of the peer: they may clear, so retry like a busy peer.
            ErrorCode::XdsRegistryError | ErrorCode::XdsRepositoryError => RetryClass::RetryWithBackoff,
            _ => RetryClass::Fatal,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_through_its_string() {
        for code in ErrorCode::KNOWN {
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("Nope"), ErrorCode::Other("Nope".to_owned()));
    }

    #[test]
    fn classes_follow_the_landscape_note() {
        assert_eq!(ErrorCode::XdsRegistryBusy.retry_class(), RetryClass::RetryWithBackoff);
        assert_eq!(ErrorCode::XdsUnknownPatientId.retry_class(), RetryClass::ParkUntilIdentityFeed);
        assert_eq!(ErrorCode::XdsDuplicateUniqueIdInRegistry.retry_class(), RetryClass::VerifyByQuery);
        assert_eq!(ErrorCode::XdsRegistryMetadataError.retry_class(), RetryClass::Fatal);
        assert_eq!(ErrorCode::XdsPatientIdDoesNotMatch.retry_class(), RetryClass::Fatal);
        assert_eq!(ErrorCode::XdsMissingDocument.retry_class(), RetryClass::Fatal);
    }
}
