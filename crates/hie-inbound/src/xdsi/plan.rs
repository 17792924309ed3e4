//! The decisions of a retrieval that need no I/O: which documents a request names, what each is
//! answered when it is refused, which transfer syntaxes are usable, and the response status.
//!
//! Every refusal a partner sees for a document it may not have (unknown, never registered,
//! replaced, deprecated, another series, a partner not allowed the transaction) is the same
//! [`unknown_document`] error, so an answer reveals nothing about what exists
//! (reliability-security 7, "Per-partner authorization").

use hie_xds::ErrorCode;
use hie_xds::messages::{
    RegistryError, ResponseStatus, RetrieveDocumentSetRequest, RetrieveImagingDocumentSetRequest, Severity,
};

/// The error code for an instance the PACS cannot give in any requested transfer syntax: DICOM
/// PS3.18 6.4.4 (the Web Services of RAD-69, RAD TF-3 4.69), "The requested instance(s) cannot
/// be provided in the requested format or transfer syntax". dcm4chee-arc answers it too.
pub const TRANSFER_SYNTAX_UNAVAILABLE: &str = "urn:dicom:wado:0007";

/// One document a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc<'r> {
    /// RAD-69: the Study and Series Instance UIDs; ITI-43: empty.
    pub study_instance_uid: &'r str,
    pub series_instance_uid: &'r str,
    /// RAD-69: the SOP Instance UID; ITI-43: the document uniqueId.
    pub document_unique_id: &'r str,
    pub repository_unique_id: &'r str,
    pub home_community_id: Option<&'r str>,
}

/// Who we are, for the address checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub repository_unique_id: String,
    /// `urn:oid:...`; checked only when configured.
    pub home_community_id: Option<String>,
}

/// The documents of a RAD-69 request in request order; a SOP Instance UID named twice is
/// answered once.
pub fn rad69_documents(request: &RetrieveImagingDocumentSetRequest) -> Vec<Doc<'_>> {
    let mut seen = std::collections::HashSet::new();
    let mut docs = Vec::new();
    for study in &request.studies {
        for series in &study.series {
            for document in &series.documents {
                if seen.insert(document.document_unique_id.as_str()) {
                    docs.push(Doc {
                        study_instance_uid: &study.study_instance_uid,
                        series_instance_uid: &series.series_instance_uid,
                        document_unique_id: &document.document_unique_id,
                        repository_unique_id: &document.repository_unique_id,
                        home_community_id: document.home_community_id.as_deref(),
                    });
                }
            }
        }
    }
    docs
}

/// The documents of an ITI-43 request in request order, each once.
pub fn iti43_documents(request: &RetrieveDocumentSetRequest) -> Vec<Doc<'_>> {
    let mut seen = std::collections::HashSet::new();
    request
        .documents
        .iter()
        .filter(|document| seen.insert(document.document_unique_id.as_str()))
        .map(|document| Doc {
            study_instance_uid: "",
            series_instance_uid: "",
            document_unique_id: &document.document_unique_id,
            repository_unique_id: &document.repository_unique_id,
            home_community_id: document.home_community_id.as_deref(),
        })
        .collect()
}

/// The refusal a document gets for its address: a repository that is not ours
/// (XDSUnknownRepositoryId), or a home community that is not ours when one is configured
/// (XDSUnknownCommunity). `None`: the address is ours.
pub fn address_error(doc: &Doc<'_>, identity: &Identity) -> Option<RegistryError> {
    if doc.repository_unique_id.trim() != identity.repository_unique_id {
        return Some(error(
            ErrorCode::XdsUnknownRepositoryId,
            format!(
                "Unknown repository {:?}: this Imaging Document Source is {}",
                clip(doc.repository_unique_id),
                identity.repository_unique_id
            ),
            doc.document_unique_id,
        ));
    }
    if let (Some(ours), Some(theirs)) = (&identity.home_community_id, doc.home_community_id)
        && theirs.trim() != ours
    {
        return Some(error(
            ErrorCode::XdsUnknownCommunity,
            format!("Unknown home community {:?}: this community is {ours}", clip(theirs)),
            doc.document_unique_id,
        ));
    }
    None
}

/// The one answer for a document the requester may not have, whatever the reason.
pub fn unknown_document(doc: &Doc<'_>) -> RegistryError {
    error(
        ErrorCode::XdsDocumentUniqueIdError,
        format!("No document {} is available from this repository", clip(doc.document_unique_id)),
        doc.document_unique_id,
    )
}

/// An authorized instance the PACS does not hold now.
pub fn missing_document(doc: &Doc<'_>) -> RegistryError {
    error(
        ErrorCode::XdsMissingDocument,
        format!("Document {} is not held by the imaging source", doc.document_unique_id),
        doc.document_unique_id,
    )
}

/// An authorized instance the PACS cannot give in any of the requested transfer syntaxes.
pub fn transfer_syntax_unavailable(doc: &Doc<'_>, requested: &[String]) -> RegistryError {
    error(
        ErrorCode::Other(TRANSFER_SYNTAX_UNAVAILABLE.to_owned()),
        format!(
            "Document {} cannot be provided in any requested transfer syntax ({})",
            doc.document_unique_id,
            if requested.is_empty() { "none given".to_owned() } else { clip(&requested.join(", ")).to_owned() }
        ),
        doc.document_unique_id,
    )
}

/// The PACS failed while the document was asked for or sent.
pub fn repository_error(doc: &Doc<'_>, why: &str) -> RegistryError {
    error(
        ErrorCode::XdsRepositoryError,
        format!("Document {} could not be retrieved: {}", doc.document_unique_id, clip(why)),
        doc.document_unique_id,
    )
}

/// The transfer syntaxes worth asking for: the requested list without blanks, malformed UIDs and
/// repeats, in the requester's order.
pub fn usable_transfer_syntaxes(requested: &[String]) -> Vec<String> {
    let mut usable: Vec<String> = Vec::new();
    for syntax in requested {
        let syntax = syntax.trim();
        let well_formed = !syntax.is_empty()
            && syntax.len() <= MAX_UID_LEN
            && syntax.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.');
        if well_formed && !usable.iter().any(|known| known == syntax) {
            usable.push(syntax.to_owned());
        }
    }
    usable
}

/// ITI TF-3 4.2.4.2 / RAD TF-3 4.69.4.2.3: Success when every document is returned, Failure
/// when none is, PartialSuccess otherwise.
pub fn status(n_returned: usize, n_refused: usize) -> ResponseStatus {
    match (n_returned, n_refused) {
        (_, 0) if n_returned > 0 => ResponseStatus::Success,
        (0, _) => ResponseStatus::Failure,
        _ => ResponseStatus::PartialSuccess,
    }
}

/// A UID that may be used in a store lookup or a PACS request: digits and dots, at most 64
/// characters (PS3.5 9.1). Anything else can name no document.
pub fn plausible_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= MAX_UID_LEN && uid.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.')
}

fn error(code: ErrorCode, context: String, location: &str) -> RegistryError {
    RegistryError { code, context, severity: Severity::Error, location: Some(clip(location).to_owned()) }
}

/// Peer-supplied text echoed into an answer is cut to [`MAX_ECHOED`] bytes.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_ECHOED {
        return text;
    }
    let mut end = MAX_ECHOED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// PS3.5 9.1: a UID is at most 64 characters.
const MAX_UID_LEN: usize = 64;
/// Bytes of a requester's value echoed back in an error.
const MAX_ECHOED: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;
    use hie_xds::messages::{DocumentRequest, SeriesRequest, StudyRequest};

    fn identity(home: Option<&str>) -> Identity {
        Identity { repository_unique_id: "1.2.3".to_owned(), home_community_id: home.map(str::to_owned) }
    }

    fn doc<'a>(repository: &'a str, home: Option<&'a str>) -> Doc<'a> {
        Doc {
            study_instance_uid: "1",
            series_instance_uid: "2",
            document_unique_id: "3",
            repository_unique_id: repository,
            home_community_id: home,
        }
    }

    #[test]
    fn addresses_are_checked_repository_first() {
        assert_eq!(address_error(&doc("1.2.3", None), &identity(None)), None);
        assert_eq!(address_error(&doc(" 1.2.3 ", Some("urn:oid:9")), &identity(None)), None, "no community configured");
        let error = address_error(&doc("1.2.4", Some("urn:oid:9")), &identity(Some("urn:oid:8"))).unwrap();
        assert_eq!((error.code, error.location.as_deref()), (ErrorCode::XdsUnknownRepositoryId, Some("3")));
        let error = address_error(&doc("1.2.3", Some("urn:oid:9")), &identity(Some("urn:oid:8"))).unwrap();
        assert_eq!(error.code, ErrorCode::XdsUnknownCommunity);
        assert_eq!(address_error(&doc("1.2.3", None), &identity(Some("urn:oid:8"))), None, "no community given");
    }

    #[test]
    fn unknown_and_forbidden_read_the_same() {
        let a = unknown_document(&doc("1.2.3", None));
        assert_eq!(a.code, ErrorCode::XdsDocumentUniqueIdError);
        assert_eq!(a.location.as_deref(), Some("3"));
        assert_eq!(a, unknown_document(&Doc { study_instance_uid: "9", ..doc("1.2.3", None) }));
    }

    #[test]
    fn requests_are_flattened_in_order_once_per_instance() {
        let document = |uid: &str| DocumentRequest {
            home_community_id: None,
            repository_unique_id: "1.2.3".to_owned(),
            document_unique_id: uid.to_owned(),
        };
        let request = RetrieveImagingDocumentSetRequest {
            studies: vec![StudyRequest {
                study_instance_uid: "1".to_owned(),
                series: vec![
                    SeriesRequest {
                        series_instance_uid: "1.1".to_owned(),
                        documents: vec![document("a"), document("b")],
                    },
                    SeriesRequest {
                        series_instance_uid: "1.2".to_owned(),
                        documents: vec![document("a"), document("c")],
                    },
                ],
            }],
            transfer_syntax_uids: Vec::new(),
        };
        let docs = rad69_documents(&request);
        let ids: Vec<(&str, &str)> = docs.iter().map(|doc| (doc.series_instance_uid, doc.document_unique_id)).collect();
        assert_eq!(ids, [("1.1", "a"), ("1.1", "b"), ("1.2", "c")]);
    }

    #[test]
    fn transfer_syntaxes_and_status() {
        let requested =
            ["".to_owned(), " 1.2.840.10008.1.2.1 ".to_owned(), "x".to_owned(), "1.2.840.10008.1.2.1".to_owned()];
        assert_eq!(usable_transfer_syntaxes(&requested), ["1.2.840.10008.1.2.1"]);
        assert_eq!(status(2, 0), ResponseStatus::Success);
        assert_eq!(status(2, 1), ResponseStatus::PartialSuccess);
        assert_eq!(status(0, 1), ResponseStatus::Failure);
        assert_eq!(status(0, 0), ResponseStatus::Failure);
        assert!(plausible_uid("1.2.3") && !plausible_uid("1.2'3") && !plausible_uid(""));
    }
}
