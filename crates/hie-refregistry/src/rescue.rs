//! The one place that picks what a peer is told: XDS errorCodes for violations (ITI TF-3 Table
//! 4.2.4.1-2 and the Metadata Update table), RegistryResponse / AdhocQueryResponse /
//! RetrieveDocumentSetResponse for XDS-level outcomes, and SOAP faults with their HTTP status for
//! envelope-level problems (SOAP 1.2 Part 2 7.5.1.2: Sender is 400, the other codes 500). Each
//! refusal is logged here once, without patient identifiers.

use hie_xds::ebrim::EbrimErrorKind;
use hie_xds::messages::{
    AdhocQueryResponse, RegistryError, RegistryResponse, ResponseStatus, RetrieveDocumentSetResponse, Severity,
};
use hie_xds::soap::{Fault, FaultCode};
use hie_xds::{EbrimError, ErrorCode, RegistryObject, XdsError};

use crate::error::{Failure, Violation};
use crate::repository::Retrieved;

/// Which actor answers: it decides the code of an internal failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor {
    Registry,
    Repository,
}

/// The errorCode of a violation.
pub(crate) fn error_code(violation: &Violation) -> ErrorCode {
    match violation {
        Violation::Metadata { .. } => ErrorCode::XdsRegistryMetadataError,
        Violation::RepositoryMetadata { .. } => ErrorCode::XdsRepositoryMetadataError,
        Violation::UnknownPatient { .. } => ErrorCode::XdsUnknownPatientId,
        Violation::PatientMismatch { .. } => ErrorCode::XdsPatientIdDoesNotMatch,
        Violation::DuplicateUniqueIdInMessage { .. } => ErrorCode::XdsRegistryDuplicateUniqueIdInMessage,
        Violation::RepositoryDuplicateUniqueIdInMessage { .. } => ErrorCode::XdsRepositoryDuplicateUniqueIdInMessage,
        Violation::DuplicateUniqueIdInRegistry { .. } => ErrorCode::XdsDuplicateUniqueIdInRegistry,
        Violation::NonIdenticalHash { .. } => ErrorCode::XdsNonIdenticalHash,
        Violation::NonIdenticalSize { .. } => ErrorCode::XdsNonIdenticalSize,
        Violation::UnresolvedReference { .. } => ErrorCode::UnresolvedReferenceException,
        Violation::TargetNotApproved { .. } => ErrorCode::XdsRegistryDeprecatedDocumentError,
        Violation::MissingDocument { .. } => ErrorCode::XdsMissingDocument,
        Violation::MissingDocumentMetadata { .. } => ErrorCode::XdsMissingDocumentMetadata,
        Violation::UpdateOperation { .. } => ErrorCode::XdsMetadataUpdateOperationError,
        Violation::Update { .. } => ErrorCode::XdsMetadataUpdateError,
        Violation::Version { .. } => ErrorCode::XdsMetadataVersionError,
        Violation::UnknownStoredQuery { .. } => ErrorCode::XdsUnknownStoredQuery,
        Violation::MissingParameter { .. } => ErrorCode::XdsStoredQueryMissingParam,
        Violation::ParameterNumber { .. } => ErrorCode::XdsStoredQueryParamNumber,
        Violation::Parameter { .. } => ErrorCode::XdsRegistryError,
        Violation::TooManyResults { .. } => ErrorCode::XdsTooManyResults,
        Violation::ResultNotSinglePatient => ErrorCode::XdsResultNotSinglePatient,
        Violation::UnknownRepository { .. } => ErrorCode::XdsUnknownRepositoryId,
        Violation::UnknownCommunity { .. } => ErrorCode::XdsUnknownCommunity,
        Violation::UnknownDocument { .. } => ErrorCode::XdsDocumentUniqueIdError,
    }
}

/// The RegistryError of a violation: codeContext says what and where, location names the object
/// (the DocumentUniqueId for retrieves, RAD TF-3 4.69.4.2.3).
pub(crate) fn registry_error(violation: &Violation) -> RegistryError {
    let location = match violation {
        Violation::Metadata { object, .. }
        | Violation::UnknownPatient { object, .. }
        | Violation::PatientMismatch { object, .. }
        | Violation::UnresolvedReference { object, .. }
        | Violation::UpdateOperation { object, .. }
        | Violation::Update { object, .. }
        | Violation::Version { object, .. } => Some(object.clone()),
        Violation::RepositoryMetadata { document, .. } | Violation::MissingDocumentMetadata { document } => {
            Some(document.clone())
        }
        Violation::MissingDocument { entry } => Some(entry.clone()),
        Violation::TargetNotApproved { association, .. } => Some(association.clone()),
        Violation::DuplicateUniqueIdInMessage { unique_id }
        | Violation::RepositoryDuplicateUniqueIdInMessage { unique_id }
        | Violation::DuplicateUniqueIdInRegistry { unique_id }
        | Violation::NonIdenticalHash { unique_id }
        | Violation::NonIdenticalSize { unique_id } => Some(unique_id.clone()),
        Violation::UnknownRepository { document_unique_id, .. }
        | Violation::UnknownCommunity { document_unique_id, .. }
        | Violation::UnknownDocument { document_unique_id } => Some(document_unique_id.clone()),
        _ => None,
    };
    let context = match violation {
        // The submitter sent the id; naming it in the answer (never in the log) helps it.
        Violation::UnknownPatient { patient_id, .. } => format!("{violation}: {patient_id}"),
        _ => violation.to_string(),
    };
    RegistryError { code: error_code(violation), context, severity: Severity::Error, location }
}

/// The errors of a failed operation.
fn failure_errors(failure: &Failure, actor: Actor, transaction: &str) -> Vec<RegistryError> {
    match failure {
        Failure::Refused(violations) => {
            let codes: Vec<String> = violations.iter().map(|violation| error_code(violation).to_string()).collect();
            let first = violations.first().map(ToString::to_string).unwrap_or_default();
            tracing::info!(transaction, ?codes, %first, "XDS request refused");
            violations.iter().map(registry_error).collect()
        }
        Failure::Store(error) => {
            tracing::warn!(transaction, %error, "XDS request failed in the store");
            let busy = hie_store::refregistry::is_busy(error);
            let code = match (actor, busy) {
                (Actor::Registry, true) => ErrorCode::XdsRegistryBusy,
                (Actor::Registry, false) => ErrorCode::XdsRegistryError,
                (Actor::Repository, true) => ErrorCode::XdsRepositoryBusy,
                (Actor::Repository, false) => ErrorCode::XdsRepositoryError,
            };
            vec![RegistryError {
                code,
                context: "the registry could not store or read this; send it again later".to_owned(),
                severity: Severity::Error,
                location: None,
            }]
        }
    }
}

/// The answer to ITI-41, ITI-42 or ITI-57.
pub(crate) fn registry_response(result: Result<(), Failure>, actor: Actor, transaction: &str) -> RegistryResponse {
    match result {
        Ok(()) => {
            tracing::info!(transaction, "XDS submission registered");
            RegistryResponse::with_status(ResponseStatus::Success)
        }
        Err(failure) => RegistryResponse {
            status: ResponseStatus::Failure,
            errors: failure_errors(&failure, actor, transaction),
            ..RegistryResponse::default()
        },
    }
}

/// The answer to a submission whose body could not be read as metadata.
pub(crate) fn unreadable_submission(error: &EbrimError, transaction: &str) -> RegistryResponse {
    tracing::info!(transaction, %error, "XDS submission unreadable");
    RegistryResponse {
        status: ResponseStatus::Failure,
        errors: vec![RegistryError {
            code: ErrorCode::XdsRegistryMetadataError,
            context: error.to_string(),
            severity: Severity::Error,
            location: None,
        }],
        ..RegistryResponse::default()
    }
}

/// The answer to ITI-18.
pub(crate) fn query_response(result: Result<Vec<RegistryObject>, Failure>) -> AdhocQueryResponse {
    match result {
        Ok(objects) => AdhocQueryResponse {
            response: RegistryResponse::with_status(ResponseStatus::Success),
            total_result_count: None,
            objects,
        },
        Err(failure) => AdhocQueryResponse {
            response: RegistryResponse {
                status: ResponseStatus::Failure,
                errors: failure_errors(&failure, Actor::Registry, "ITI-18"),
                ..RegistryResponse::default()
            },
            total_result_count: None,
            objects: Vec::new(),
        },
    }
}

/// The answer to ITI-43: Success, PartialSuccess (some documents) or Failure (none).
pub(crate) fn retrieve_response(result: Result<Retrieved, Failure>) -> RetrieveDocumentSetResponse {
    match result {
        Ok(Retrieved { documents, missing }) => {
            let status = match (documents.is_empty(), missing.is_empty()) {
                (_, true) => ResponseStatus::Success,
                (false, false) => ResponseStatus::PartialSuccess,
                (true, false) => ResponseStatus::Failure,
            };
            if !missing.is_empty() {
                tracing::info!(n_missing = missing.len(), n_found = documents.len(), "ITI-43 documents not returned");
            }
            RetrieveDocumentSetResponse {
                response: RegistryResponse {
                    status,
                    errors: missing.iter().map(registry_error).collect(),
                    ..RegistryResponse::default()
                },
                documents,
            }
        }
        Err(failure) => RetrieveDocumentSetResponse {
            response: RegistryResponse {
                status: ResponseStatus::Failure,
                errors: failure_errors(&failure, Actor::Repository, "ITI-43"),
                ..RegistryResponse::default()
            },
            documents: Vec::new(),
        },
    }
}

/// The fault for a request refused before its body meant anything, and its HTTP status.
pub(crate) fn fault(error: &XdsError, endpoint: &str) -> (u16, Fault) {
    let fault = error.to_fault();
    tracing::info!(endpoint, code = fault.code.local_name(), %error, "SOAP request refused with a fault");
    let status = if fault.code == FaultCode::Sender { HTTP_BAD_REQUEST } else { HTTP_INTERNAL_SERVER_ERROR };
    (status, fault)
}

/// Whether a body error is about the packaging (XOP, base64) rather than the metadata: those are
/// the sender's SOAP-level fault, not an XDS answer.
pub(crate) fn is_packaging_error(error: &EbrimError) -> bool {
    matches!(
        error.kind,
        EbrimErrorKind::Mtom(_) | EbrimErrorKind::InvalidBase64 { .. } | EbrimErrorKind::InlineAndInclude { .. }
    )
}

const HTTP_BAD_REQUEST: u16 = 400;
const HTTP_INTERNAL_SERVER_ERROR: u16 = 500;
