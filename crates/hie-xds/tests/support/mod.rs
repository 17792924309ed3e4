//! Sample messages for the tests and the benchmark: a RAD-68 submission with codes taken from
//! the NIST affinity-domain code set (test_data/codes/nist-codes.xml), and one value of every
//! other message type with every typed field filled.

#![allow(dead_code)] // reason: each test binary uses a different subset

use std::path::Path;

use hie_xds::ebrim::{Author, Classification, Code, ExternalIdentifier, Localized, Slot};
use hie_xds::messages::*;
use hie_xds::vocabulary::*;
use hie_xds::xml::{self, Limits};
use hie_xds::{Association, DocumentEntry, Folder, RegistryObject, SubmissionSet};

/// A code of the NIST code set: attribute name (CodeType@name) and code value.
pub fn code(attribute: &str, value: &str) -> Code {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/codes/nist-codes.xml")).unwrap();
    let document = xml::parse(&bytes, &Limits::DEFAULT).unwrap();
    let code_type = document
        .root()
        .children()
        .find(|child| child.local() == "CodeType" && child.attribute("name") == Some(attribute))
        .unwrap_or_else(|| panic!("no CodeType {attribute}"));
    let found = code_type
        .children()
        .find(|child| child.attribute("code") == Some(value))
        .unwrap_or_else(|| panic!("{attribute} has no code {value}"));
    Code::new(value, found.attribute("codingScheme").unwrap(), found.attribute("display").unwrap())
}

pub const PATIENT_ID: &str = "IDS-AD001-a^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO";

/// A RAD-68 Provide and Register of one KOS (`kos` bytes), as the broker will send it.
pub fn kos_submission(kos: Vec<u8>) -> ProvideAndRegisterRequest {
    let entry = DocumentEntry {
        id: "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30".to_owned(),
        object_type: OBJECT_TYPE_STABLE_DOCUMENT.to_owned(),
        mime_type: "application/dicom".to_owned(),
        title: vec![Localized::new("Imaging manifest <CT & abdomen>")],
        comments: vec![Localized {
            value: "Commentaire \"é\"".to_owned(),
            lang: Some("fr-FR".to_owned()),
            charset: Some("UTF-8".to_owned()),
        }],
        creation_time: Some("20240102030405".to_owned()),
        language_code: Some("en-US".to_owned()),
        service_start_time: Some("20240102".to_owned()),
        service_stop_time: Some("20240102".to_owned()),
        source_patient_id: Some("MRN123^^^&1.2.3.4&ISO".to_owned()),
        source_patient_info: vec![
            "PID-3|MRN123^^^&1.2.3.4&ISO".to_owned(),
            "PID-5|Doe^Jane".to_owned(),
            "PID-7|19700101".to_owned(),
            "PID-8|F".to_owned(),
        ],
        hash: Some("da39a3ee5e6b4b0d3255bfef95601890afd80709".to_owned()),
        size: Some("1024".to_owned()),
        repository_unique_id: Some("1.3.6.1.4.1.21367.13.71.101".to_owned()),
        reference_ids: vec![
            "ACC1^^^&1.2.3.4.5&ISO^urn:ihe:iti:xds:2013:accession".to_owned(),
            "1.2.3.4.5.6^^^^urn:ihe:iti:xds:2016:studyInstanceUID".to_owned(),
        ],
        class_code: Some(code("classCode", "IMAGES")),
        confidentiality_codes: vec![code("confidentialityCode", "N")],
        format_code: Some(code("formatCode", "1.2.840.10008.5.1.4.1.1.88.59")),
        healthcare_facility_type_code: Some(code("healthcareFacilityTypeCode", "22232009")),
        practice_setting_code: Some(code("practiceSettingCode", "309964003")),
        type_code: Some(code("typeCode", "18748-4")),
        event_codes: vec![code("eventCodeList", "CT"), code("eventCodeList", "MR")],
        authors: vec![Author {
            person: Some("^Welby^Marcus^^^Dr".to_owned()),
            institutions: vec!["Hospital^^^^^^^^^1.2.3.4.5".to_owned()],
            roles: vec!["Radiologist".to_owned()],
            specialties: vec!["Radiology".to_owned()],
            telecommunications: vec![],
            extra_slots: vec![],
        }],
        patient_id: Some(PATIENT_ID.to_owned()),
        unique_id: Some("1.2.3.4.5.6.7.8".to_owned()),
        extra_slots: vec![Slot::new("urn:example:custom", &["a", "b"])],
        ..DocumentEntry::default()
    };
    let submission_set = SubmissionSet {
        id: "urn:uuid:4bb2a1a4-2ab4-4d5f-b9a5-7c5ef7c8a001".to_owned(),
        title: vec![Localized::new("KOS for study 1.2.3.4.5.6")],
        submission_time: Some("20240102030506".to_owned()),
        intended_recipients: vec!["Some Hospital^^^^^^^^^1.2.3.9.1".to_owned()],
        content_type_code: Some(code("contentTypeCode", "22232009")),
        authors: vec![Author { institutions: vec!["Hospital^^^^^^^^^1.2.3.4.5".to_owned()], ..Author::default() }],
        patient_id: Some(PATIENT_ID.to_owned()),
        source_id: Some("1.3.6.1.4.1.21367.13.80.110".to_owned()),
        unique_id: Some("1.2.3.4.5.6.7.9".to_owned()),
        ..SubmissionSet::default()
    };
    let association =
        Association::has_member("urn:uuid:4bb2a1a4-2ab4-4d5f-b9a5-7c5ef7c8a002", &submission_set.id, &entry.id);
    ProvideAndRegisterRequest {
        documents: vec![Document { id: entry.id.clone(), content: kos, mime_type: entry.mime_type.clone() }],
        submission: SubmitObjectsRequest {
            request_slots: vec![],
            objects: vec![
                RegistryObject::SubmissionSet(submission_set),
                RegistryObject::DocumentEntry(entry),
                RegistryObject::Association(association),
            ],
        },
    }
}

/// An ITI-42 Register with a folder, a replacement (RPLC) and extras kept verbatim.
pub fn register_with_folder_and_replacement() -> SubmitObjectsRequest {
    let pnr = kos_submission(Vec::new());
    let mut objects = pnr.submission.objects;
    objects.push(RegistryObject::Folder(Folder {
        id: "Folder01".to_owned(),
        title: vec![Localized::new("Imaging")],
        last_update_time: Some("20240102030506".to_owned()),
        codes: vec![code("folderCodeList", "Referrals")],
        patient_id: Some(PATIENT_ID.to_owned()),
        unique_id: Some("1.2.3.4.5.6.7.10".to_owned()),
        extra_classifications: vec![Classification {
            id: "cl-x".to_owned(),
            scheme: Some("urn:uuid:00000000-0000-0000-0000-000000000001".to_owned()),
            classified_object: "Folder01".to_owned(),
            node_representation: Some("X".to_owned()),
            ..Classification::default()
        }],
        extra_external_identifiers: vec![ExternalIdentifier {
            id: "ei-x".to_owned(),
            scheme: "urn:uuid:00000000-0000-0000-0000-000000000002".to_owned(),
            registry_object: "Folder01".to_owned(),
            value: "v".to_owned(),
            name: vec![],
        }],
        ..Folder::default()
    }));
    objects.push(RegistryObject::Association(Association {
        id: "rplc01".to_owned(),
        association_type: ASSOCIATION_RPLC.to_owned(),
        source_object: "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30".to_owned(),
        target_object: "urn:uuid:11111111-2222-3333-4444-555555555555".to_owned(),
        ..Association::default()
    }));
    objects
        .push(RegistryObject::ObjectRef { id: "urn:uuid:11111111-2222-3333-4444-555555555555".to_owned(), home: None });
    SubmitObjectsRequest { request_slots: vec![Slot::new("urn:example:request", &["1"])], objects }
}

/// An ITI-57 deprecation: a SubmissionSet and an UpdateAvailabilityStatus association.
pub fn deprecation() -> SubmitObjectsRequest {
    let submission_set = SubmissionSet {
        id: "SubmissionSet01".to_owned(),
        submission_time: Some("20240102030506".to_owned()),
        authors: vec![Author { person: Some("^Admin^^^^".to_owned()), ..Author::default() }],
        content_type_code: Some(code("contentTypeCode", "22232009")),
        patient_id: Some(PATIENT_ID.to_owned()),
        source_id: Some("1.3.6.1.4.1.21367.13.80.110".to_owned()),
        unique_id: Some("1.2.3.4.5.6.7.11".to_owned()),
        ..SubmissionSet::default()
    };
    let update = Association {
        id: "update01".to_owned(),
        association_type: ASSOCIATION_UPDATE_AVAILABILITY_STATUS.to_owned(),
        source_object: "SubmissionSet01".to_owned(),
        target_object: "urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30".to_owned(),
        original_status: Some(STATUS_APPROVED.to_owned()),
        new_status: Some(STATUS_DEPRECATED.to_owned()),
        ..Association::default()
    };
    SubmitObjectsRequest {
        request_slots: vec![],
        objects: vec![RegistryObject::SubmissionSet(submission_set), RegistryObject::Association(update)],
    }
}

/// An ITI-18 FindDocuments for approved entries of a patient.
pub fn find_documents() -> AdhocQueryRequest {
    AdhocQueryRequest {
        query_id: QUERY_FIND_DOCUMENTS.to_owned(),
        home: None,
        return_type: ReturnType::LeafClass,
        return_composed_objects: true,
        parameters: vec![
            Slot::new(PARAM_DOCUMENT_ENTRY_PATIENT_ID, &[&quote_query_value(PATIENT_ID)]),
            Slot::new(PARAM_DOCUMENT_ENTRY_STATUS, &[&quote_query_list(&[STATUS_APPROVED])]),
        ],
    }
}

/// An ITI-18 LeafClass answer holding the KOS entry as a registry returns it.
pub fn query_response() -> AdhocQueryResponse {
    let mut objects = kos_submission(Vec::new()).submission.objects;
    for object in &mut objects {
        match object {
            RegistryObject::DocumentEntry(entry) => {
                entry.status = Some(STATUS_APPROVED.to_owned());
                entry.lid = Some(entry.id.clone());
                entry.version = Some("1".to_owned());
            }
            RegistryObject::SubmissionSet(submission_set) => submission_set.status = Some(STATUS_APPROVED.to_owned()),
            RegistryObject::Association(association) => association.status = Some(STATUS_APPROVED.to_owned()),
            _ => {}
        }
    }
    AdhocQueryResponse {
        response: RegistryResponse::with_status(ResponseStatus::Success),
        total_result_count: None,
        objects,
    }
}

/// A RegistryResponse with one error and one warning.
pub fn failure_response() -> RegistryResponse {
    RegistryResponse {
        status: ResponseStatus::Failure,
        request_id: None,
        response_slots: vec![],
        errors: vec![
            RegistryError {
                code: hie_xds::ErrorCode::XdsUnknownPatientId,
                context: "Patient ID IDS-AD001-a is not known".to_owned(),
                severity: Severity::Error,
                location: Some("urn:uuid:94f30df9-d945-485e-9dbe-e61a63270c30".to_owned()),
            },
            RegistryError {
                code: hie_xds::ErrorCode::XdsExtraMetadataNotSaved,
                context: "urn:example:custom not saved".to_owned(),
                severity: Severity::Warning,
                location: None,
            },
        ],
    }
}

/// A RAD-69 request for two instances of one series.
pub fn rad69_request() -> RetrieveImagingDocumentSetRequest {
    let document = |uid: &str| DocumentRequest {
        home_community_id: Some("urn:oid:1.3.6.1.4.1.21367.13.70.101".to_owned()),
        repository_unique_id: "1.3.6.1.4.1.21367.13.71.101".to_owned(),
        document_unique_id: uid.to_owned(),
    };
    RetrieveImagingDocumentSetRequest {
        studies: vec![StudyRequest {
            study_instance_uid: "1.2.3.4.5.6".to_owned(),
            series: vec![SeriesRequest {
                series_instance_uid: "1.2.3.4.5.6.1".to_owned(),
                documents: vec![document("1.2.3.4.5.6.1.1"), document("1.2.3.4.5.6.1.2")],
            }],
        }],
        transfer_syntax_uids: vec!["1.2.840.10008.1.2.1".to_owned(), "1.2.840.10008.1.2".to_owned()],
    }
}

/// The RAD-69 answer: PartialSuccess, one instance returned, one error located at its UID.
pub fn rad69_response(instance: Vec<u8>) -> RetrieveDocumentSetResponse {
    RetrieveDocumentSetResponse {
        response: RegistryResponse {
            status: ResponseStatus::PartialSuccess,
            errors: vec![RegistryError {
                code: hie_xds::ErrorCode::XdsMissingDocument,
                context: "instance 1.2.3.4.5.6.1.2 is not available".to_owned(),
                severity: Severity::Error,
                location: Some("1.2.3.4.5.6.1.2".to_owned()),
            }],
            ..RegistryResponse::default()
        },
        documents: vec![DocumentResponse {
            home_community_id: Some("urn:oid:1.3.6.1.4.1.21367.13.70.101".to_owned()),
            repository_unique_id: "1.3.6.1.4.1.21367.13.71.101".to_owned(),
            document_unique_id: "1.2.3.4.5.6.1.1".to_owned(),
            mime_type: "application/dicom".to_owned(),
            document: instance,
            ..DocumentResponse::default()
        }],
    }
}

/// An ITI-43 request.
pub fn iti43_request() -> RetrieveDocumentSetRequest {
    RetrieveDocumentSetRequest { documents: rad69_request().studies[0].series[0].documents.clone() }
}
