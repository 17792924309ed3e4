//! Typed submissions for the rule tests: a complete DocumentEntry, SubmissionSet and Folder of a
//! patient, so each test breaks exactly one rule, and helpers that send them and read answers.
#![allow(dead_code)] // reason: each test binary uses a different part of this module

use hie_refregistry::{REGISTRY_PATH, REPOSITORY_PATH};
use hie_xds::messages::{
    AdhocQueryRequest, AdhocQueryResponse, Document, ProvideAndRegisterRequest, RegistryResponse, ResponseStatus,
    ReturnType, SubmitObjectsRequest,
};
use hie_xds::vocabulary::*;
use hie_xds::{Association, Code, DocumentEntry, ErrorCode, Folder, RegistryObject, SubmissionSet, actions};

use crate::support::Harness;

pub fn code(value: &str) -> Code {
    Code::new(value, "2.16.840.1.113883.6.1", value)
}

/// A DocumentEntry with every attribute an ITI-42 requires.
pub fn entry(id: &str, unique_id: &str, patient_id: &str) -> DocumentEntry {
    DocumentEntry {
        id: id.to_owned(),
        object_type: OBJECT_TYPE_STABLE_DOCUMENT.to_owned(),
        mime_type: "application/dicom".to_owned(),
        creation_time: Some("20240102030405".to_owned()),
        language_code: Some("en-US".to_owned()),
        service_start_time: Some("20240101".to_owned()),
        source_patient_id: Some("MRN1^^^&1.2.3.4&ISO".to_owned()),
        hash: Some(hie_refregistry::sha1_hex(unique_id.as_bytes())),
        size: Some(unique_id.len().to_string()),
        repository_unique_id: Some(crate::support::REPOSITORY.to_owned()),
        class_code: Some(Code::new("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images")),
        confidentiality_codes: vec![Code::new("N", "2.16.840.1.113883.5.25", "Normal")],
        format_code: Some(Code::new("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1", "KOS")),
        healthcare_facility_type_code: Some(Code::new("22232009", "2.16.840.1.113883.6.96", "Hospital")),
        practice_setting_code: Some(Code::new("394914008", "2.16.840.1.113883.6.96", "Radiology")),
        type_code: Some(Code::new("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study")),
        event_codes: vec![Code::new("CT", "1.2.840.10008.2.16.4", "CT")],
        patient_id: Some(patient_id.to_owned()),
        unique_id: Some(unique_id.to_owned()),
        ..DocumentEntry::default()
    }
}

/// A SubmissionSet with every attribute required.
pub fn submission_set(id: &str, unique_id: &str, patient_id: &str) -> SubmissionSet {
    SubmissionSet {
        id: id.to_owned(),
        submission_time: Some("20240102030405".to_owned()),
        content_type_code: Some(Code::new("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images")),
        patient_id: Some(patient_id.to_owned()),
        source_id: Some("1.2.3.4.5.6".to_owned()),
        unique_id: Some(unique_id.to_owned()),
        ..SubmissionSet::default()
    }
}

/// A Folder with every attribute required.
pub fn folder(id: &str, unique_id: &str, patient_id: &str) -> Folder {
    Folder {
        id: id.to_owned(),
        title: vec![hie_xds::ebrim::Localized::new("Imaging")],
        codes: vec![Code::new("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images")],
        patient_id: Some(patient_id.to_owned()),
        unique_id: Some(unique_id.to_owned()),
        ..Folder::default()
    }
}

pub fn association(id: &str, kind: &str, source: &str, target: &str) -> Association {
    Association {
        id: id.to_owned(),
        association_type: kind.to_owned(),
        source_object: source.to_owned(),
        target_object: target.to_owned(),
        ..Association::default()
    }
}

/// A SubmissionSet `SS` (uniqueId `set_unique_id`) holding entries as Original members.
pub fn submission(set_unique_id: &str, patient_id: &str, entries: Vec<DocumentEntry>) -> SubmitObjectsRequest {
    let mut objects = vec![RegistryObject::SubmissionSet(submission_set("SS", set_unique_id, patient_id))];
    for (index, entry) in entries.into_iter().enumerate() {
        objects.push(RegistryObject::Association(Association::has_member(&format!("HM{index}"), "SS", &entry.id)));
        objects.push(RegistryObject::DocumentEntry(entry));
    }
    SubmitObjectsRequest { request_slots: vec![], objects }
}

pub async fn register(harness: &Harness, request: &SubmitObjectsRequest) -> RegistryResponse {
    harness.soap(REGISTRY_PATH, actions::ITI42_REQUEST, request).await.xds()
}

pub async fn update(harness: &Harness, request: &SubmitObjectsRequest) -> RegistryResponse {
    harness.soap(REGISTRY_PATH, actions::ITI57_REQUEST, request).await.xds()
}

/// ITI-41 with each entry's Document (its uniqueId's bytes, matching `entry`'s hash and size).
pub fn provide(request: SubmitObjectsRequest) -> ProvideAndRegisterRequest {
    let documents = request
        .objects
        .iter()
        .filter_map(|object| match object {
            RegistryObject::DocumentEntry(entry) => Some(Document {
                id: entry.id.clone(),
                content: entry.unique_id.clone().unwrap_or_default().into_bytes(),
                mime_type: entry.mime_type.clone(),
            }),
            _ => None,
        })
        .collect();
    ProvideAndRegisterRequest { submission: request, documents }
}

pub async fn provide_and_register(harness: &Harness, request: &ProvideAndRegisterRequest) -> RegistryResponse {
    harness.mtom(REPOSITORY_PATH, actions::ITI41_REQUEST, request).await.xds()
}

pub async fn query(harness: &Harness, request: &AdhocQueryRequest) -> AdhocQueryResponse {
    harness.soap(REGISTRY_PATH, actions::ITI18_REQUEST, request).await.xds()
}

/// A stored query; each parameter is one Slot with one Value (lists are written `('a','b')`).
pub fn stored_query(id: &str, return_type: ReturnType, parameters: &[(&str, &str)]) -> AdhocQueryRequest {
    AdhocQueryRequest {
        query_id: id.to_owned(),
        home: None,
        return_type,
        return_composed_objects: true,
        parameters: parameters.iter().map(|(name, value)| hie_xds::ebrim::Slot::new(name, &[value])).collect(),
    }
}

pub fn assert_success(response: &RegistryResponse) {
    assert_eq!(response.status, ResponseStatus::Success, "{:#?}", response.errors);
}

/// The response is a Failure whose errors include `code`; returns the matching error's context.
#[track_caller]
pub fn assert_refused(response: &RegistryResponse, code: ErrorCode) -> String {
    assert_eq!(response.status, ResponseStatus::Failure, "expected {code}");
    response
        .errors
        .iter()
        .find(|error| error.code == code)
        .unwrap_or_else(|| panic!("expected {code}, got {:#?}", response.errors))
        .context
        .clone()
}
