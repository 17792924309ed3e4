//! A submission's metadata checked on its own (before the database is asked anything) and turned
//! into a [`Plan`]: the rows to store, with symbolic ids replaced by new `urn:uuid:` ids (given
//! UUIDs are kept, in lower case), and the references to existing registry objects that
//! [`crate::register`] still has to check.
//!
//! The rules are ITI TF-3 4.2.3 (attributes), Table 4.3.1-3 (XDS Document Source column:
//! required attributes), 4.2.2 (associations) and 4.1.1 (a Document Registry refuses Limited
//! Metadata). Every violation found is reported, not only the first.

use std::collections::{HashMap, HashSet};

use hie_store::refregistry::{
    AssociationRow, CODE_AUTHOR_PERSON, CODE_CONFIDENTIALITY, CODE_EVENT, DocumentCode, DocumentRow, FolderRow,
    SubmissionSetRow,
};
use hie_xds::ebrim::{Classification, Code, ExternalIdentifier, write_registry_object};
use hie_xds::messages::SubmitObjectsRequest;
use hie_xds::vocabulary::*;
use hie_xds::xml::XmlWriter;
use hie_xds::{Association, DocumentEntry, Folder, RegistryObject, SubmissionSet};

use crate::config::RefRegistryConfig;
use crate::error::Violation;
use crate::ids::{self, PatientIdProblem};

/// Which transaction the submission came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// ITI-42 (also the registry half of ITI-41).
    Register,
    /// ITI-57 Update Document Set: new versions and availability status changes as well.
    Update,
}

/// What an association end names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    SubmissionSet,
    NewDocument,
    NewFolder,
    NewAssociation,
    /// A `urn:uuid:` id not in the submission: an object the registry must hold.
    Existing,
}

/// The association types this registry gives meaning to (ITI TF-3 4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    HasMember,
    /// RPLC, XFRM, APND, XFRM_RPLC: a new document about an existing Approved one.
    Lifecycle {
        replaces: bool,
    },
    Signs,
    /// ITI-57 UpdateAvailabilityStatus.
    AvailabilityStatus,
}

/// An association to store, with what its ends are.
#[derive(Debug, Clone)]
pub(crate) struct PlannedAssociation {
    pub row: AssociationRow,
    pub kind: Kind,
    pub source: End,
    pub target: End,
    pub original_status: Option<String>,
    pub new_status: Option<String>,
}

/// A DocumentEntry to store. `update_of` is the logical id of the document an ITI-57 versions,
/// with the PreviousVersion the submitter claims.
#[derive(Debug, Clone)]
pub(crate) struct PlannedDocument {
    pub row: DocumentRow,
    pub codes: Vec<DocumentCode>,
    pub update_of: Option<(String, String)>,
}

/// Everything a valid submission stores.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The canonical patientId of the submission.
    pub patient_id: String,
    pub submission_set: SubmissionSetRow,
    pub documents: Vec<PlannedDocument>,
    pub folders: Vec<FolderRow>,
    pub associations: Vec<PlannedAssociation>,
    /// Original id -> stored entryUUID, for every object of the submission.
    pub ids: HashMap<String, String>,
}

impl Plan {
    /// How the submitter named the object stored as `uuid` (its symbolic id, or the UUID).
    pub fn label(&self, uuid: &str) -> String {
        self.ids
            .iter()
            .find(|(_, stored)| stored.as_str() == uuid)
            .map(|(original, _)| original.clone())
            .unwrap_or_else(|| uuid.to_owned())
    }

    /// The uniqueIds and existing entryUUIDs this plan's checks depend on (advisory lock keys).
    pub fn lock_keys(&self) -> Vec<String> {
        // The patient too: a merge (ITI-8 A40) moving its metadata must not interleave.
        let mut keys = vec![format!("uid:{}", self.submission_set.unique_id), patient_lock_key(&self.patient_id)];
        keys.extend(self.documents.iter().map(|document| format!("uid:{}", document.row.unique_id)));
        keys.extend(
            self.documents
                .iter()
                .filter_map(|document| document.update_of.as_ref())
                .map(|(lid, _)| format!("obj:{lid}")),
        );
        keys.extend(self.folders.iter().map(|folder| format!("uid:{}", folder.unique_id)));
        for association in &self.associations {
            if association.target == End::Existing {
                keys.push(format!("obj:{}", association.row.target_uuid));
            }
            if association.source == End::Existing {
                keys.push(format!("obj:{}", association.row.source_uuid));
            }
        }
        keys
    }
}

/// The advisory lock key of a patient (PostgreSQL), shared by registrations and merges.
pub(crate) fn patient_lock_key(patient_id: &str) -> String {
    format!("pat:{patient_id}")
}

/// Checks a submission and plans what to store. `now_dtm` is the registry's clock as DTM (UTC),
/// `now` in microseconds.
pub(crate) fn plan(
    request: &SubmitObjectsRequest,
    mode: Mode,
    config: &RefRegistryConfig,
    now: i64,
    now_dtm: &str,
) -> Result<Plan, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut submission_sets = Vec::new();
    let mut documents = Vec::new();
    let mut folders = Vec::new();
    let mut associations = Vec::new();
    for object in &request.objects {
        match object {
            RegistryObject::SubmissionSet(submission_set) => submission_sets.push(submission_set),
            RegistryObject::DocumentEntry(entry) => documents.push(entry),
            RegistryObject::Folder(folder) => folders.push(folder),
            RegistryObject::Association(association) => associations.push(association),
            // References to existing objects: the associations that use them are checked.
            RegistryObject::ObjectRef { .. } => {}
            RegistryObject::Classification(classification) => violations.push(metadata(
                &classification.id,
                "a top-level Classification of another object is not supported (classify it inside the object)",
            )),
            _ => violations.push(metadata("RegistryObjectList", "holds an object type the registry does not take")),
        }
    }
    let submission_set = match submission_sets.as_slice() {
        [only] => *only,
        [] => {
            violations.push(metadata("SubmitObjectsRequest", "holds no SubmissionSet (ITI TF-3 4.2.1.1)"));
            return Err(violations);
        }
        _ => {
            violations.push(metadata("SubmitObjectsRequest", "holds more than one SubmissionSet"));
            return Err(violations);
        }
    };

    // Ids: a symbolic id gets a new UUID, a UUID is kept (lower case); each id once.
    let mut id_map: HashMap<String, String> = HashMap::new();
    let object_ids = std::iter::once(submission_set.id.as_str())
        .chain(documents.iter().map(|entry| entry.id.as_str()))
        .chain(folders.iter().map(|folder| folder.id.as_str()))
        .chain(associations.iter().map(|association| association.id.as_str()));
    for id in object_ids {
        let stored = if ids::is_uuid_form(id) {
            match ids::canonical_uuid(id) {
                Some(uuid) => uuid,
                None => {
                    violations.push(metadata(id, "the id has the urn:uuid: prefix but is not a UUID"));
                    // Mapped all the same, so its references do not add errors of their own.
                    ids::new_uuid()
                }
            }
        } else if id.is_empty() {
            violations.push(metadata("RegistryObjectList", "an object has an empty id"));
            continue;
        } else {
            ids::new_uuid()
        };
        if id_map.insert(id.to_owned(), stored).is_some() {
            violations.push(metadata(id, "the id is used by more than one object of the submission"));
        }
    }

    let patient_id = submission_set_patient(submission_set, config, &mut violations);
    let mut unique_ids: HashSet<String> = HashSet::new();
    let mut check_unique = |unique_id: &str, violations: &mut Vec<Violation>| {
        if !unique_ids.insert(unique_id.to_owned()) {
            violations.push(Violation::DuplicateUniqueIdInMessage { unique_id: unique_id.to_owned() });
        }
    };

    let submission_set_row = submission_set_row(submission_set, &id_map, patient_id.as_deref(), now, &mut violations);
    if let Some(row) = &submission_set_row {
        check_unique(&row.unique_id, &mut violations);
    }

    let mut planned_documents = Vec::with_capacity(documents.len());
    for entry in &documents {
        if let Some(document) = document_row(entry, mode, config, &id_map, patient_id.as_deref(), now, &mut violations)
        {
            check_unique(&document.row.unique_id, &mut violations);
            planned_documents.push(document);
        }
    }
    let mut planned_folders = Vec::with_capacity(folders.len());
    for folder in &folders {
        if let Some(row) = folder_row(folder, config, &id_map, patient_id.as_deref(), now, now_dtm, &mut violations) {
            check_unique(&row.unique_id, &mut violations);
            planned_folders.push(row);
        }
    }

    let ends: HashMap<&str, End> = std::iter::once((submission_set.id.as_str(), End::SubmissionSet))
        .chain(documents.iter().map(|entry| (entry.id.as_str(), End::NewDocument)))
        .chain(folders.iter().map(|folder| (folder.id.as_str(), End::NewFolder)))
        .chain(associations.iter().map(|association| (association.id.as_str(), End::NewAssociation)))
        .collect();
    let mut planned_associations = Vec::with_capacity(associations.len());
    for association in &associations {
        if let Some(planned) = association_row(association, mode, &id_map, &ends, now, &mut violations) {
            planned_associations.push(planned);
        }
    }
    let mut lids = HashSet::new();
    for document in &planned_documents {
        if !lids.insert(document.row.lid.as_str()) {
            violations.push(Violation::Update {
                object: document.row.entry_uuid.clone(),
                problem: "two DocumentEntries of the submission share a lid (logicalID)".to_owned(),
            });
        }
    }
    check_membership(submission_set, &documents, &folders, &planned_associations, &id_map, &mut violations);
    attach_previous_versions(&mut planned_documents, &associations, &id_map, &mut violations);

    match (submission_set_row, patient_id) {
        (Some(submission_set), Some(patient_id)) if violations.is_empty() => {
            for document in &mut planned_documents {
                document.row.submission_set_uuid = submission_set.entry_uuid.clone();
            }
            Ok(Plan {
                patient_id,
                submission_set,
                documents: planned_documents,
                folders: planned_folders,
                associations: planned_associations,
                ids: id_map,
            })
        }
        _ => Err(violations),
    }
}

fn metadata(object: &str, problem: &str) -> Violation {
    Violation::Metadata { object: object.to_owned(), problem: problem.to_owned() }
}

fn missing(object: &str, attribute: &str) -> Violation {
    Violation::Metadata { object: object.to_owned(), problem: format!("{attribute} is required and missing") }
}

/// The SubmissionSet's patientId, canonical; every other object must carry the same.
fn submission_set_patient(
    submission_set: &SubmissionSet,
    config: &RefRegistryConfig,
    violations: &mut Vec<Violation>,
) -> Option<String> {
    let Some(value) = &submission_set.patient_id else {
        violations.push(missing(&submission_set.id, "XDSSubmissionSet.patientId"));
        return None;
    };
    check_patient(&submission_set.id, value, config, violations)
}

fn check_patient(
    object: &str,
    value: &str,
    config: &RefRegistryConfig,
    violations: &mut Vec<Violation>,
) -> Option<String> {
    match ids::canonical_patient_id(value, &config.patient_id_authority) {
        Ok(patient_id) => Some(patient_id),
        Err(PatientIdProblem::Malformed) => {
            violations.push(metadata(object, "patientId is not a CX id^^^&OID&ISO (ITI TF-3 4.2.3.2.16)"));
            None
        }
        Err(PatientIdProblem::OtherDomain) => {
            violations.push(Violation::UnknownPatient {
                object: object.to_owned(),
                patient_id: value.to_owned(),
                merged: false,
            });
            None
        }
    }
}

/// An object's patientId must be the SubmissionSet's (ITI TF-3 4.2.3.2.16, 4.2.3.3.6).
fn same_patient(
    object: &str,
    value: Option<&String>,
    submission_patient: Option<&str>,
    config: &RefRegistryConfig,
    violations: &mut Vec<Violation>,
) -> Option<String> {
    let Some(value) = value else {
        violations.push(missing(object, "patientId"));
        return None;
    };
    let patient_id = check_patient(object, value, config, violations)?;
    if let Some(submission_patient) = submission_patient
        && submission_patient != patient_id
    {
        violations
            .push(Violation::PatientMismatch { object: object.to_owned(), other: "the SubmissionSet".to_owned() });
    }
    Some(patient_id)
}

fn dtm(object: &str, attribute: &str, value: Option<&String>, violations: &mut Vec<Violation>) -> Option<String> {
    let value = value?;
    let padded = ids::padded_dtm(value);
    if padded.is_none() {
        violations.push(metadata(object, &format!("{attribute} {value:?} is not a DTM (YYYY[MM[DD[hh[mm[ss]]]]])")));
    }
    padded
}

fn submission_set_row(
    submission_set: &SubmissionSet,
    id_map: &HashMap<String, String>,
    patient_id: Option<&str>,
    now: i64,
    violations: &mut Vec<Violation>,
) -> Option<SubmissionSetRow> {
    let object = submission_set.id.as_str();
    let n_before = violations.len();
    if has_limited_metadata_marker(&submission_set.extra_classifications, SUBMISSION_SET_LIMITED_METADATA_NODE) {
        violations.push(metadata(object, LIMITED_METADATA_REFUSED));
    }
    let required = [
        ("XDSSubmissionSet.uniqueId", submission_set.unique_id.is_some()),
        ("XDSSubmissionSet.sourceId", submission_set.source_id.is_some()),
        ("submissionTime", submission_set.submission_time.is_some()),
        ("contentTypeCode", submission_set.content_type_code.is_some()),
    ];
    for (attribute, present) in required {
        if !present {
            violations.push(missing(object, attribute));
        }
    }
    let submission_time = dtm(object, "submissionTime", submission_set.submission_time.as_ref(), violations);
    let uuid = id_map.get(object)?;
    let (Some(unique_id), Some(source_id), Some(patient_id)) =
        (&submission_set.unique_id, &submission_set.source_id, patient_id)
    else {
        return None;
    };
    if violations.len() > n_before {
        return None;
    }
    let mut stored = submission_set.clone();
    stored.id = uuid.clone();
    stored.status = Some(STATUS_APPROVED.to_owned());
    stored.lid = Some(uuid.clone());
    remap_extras(&mut stored.extra_classifications, &mut stored.extra_external_identifiers, object, uuid);
    let code = submission_set.content_type_code.as_ref();
    Some(SubmissionSetRow {
        entry_uuid: uuid.clone(),
        unique_id: unique_id.trim().to_owned(),
        source_id: source_id.trim().to_owned(),
        patient_id: patient_id.to_owned(),
        status: STATUS_APPROVED.to_owned(),
        submission_time,
        content_type_code: code.map(|code| code.code.clone()),
        content_type_scheme: code.map(|code| code.scheme.clone()),
        author_person: submission_set.authors.iter().find_map(|author| author.person.clone()),
        ebrim: serialize(&RegistryObject::SubmissionSet(stored)),
        created_at: now,
    })
}

#[allow(clippy::too_many_arguments, reason = "one call site; the arguments are the submission's context")]
fn document_row(
    entry: &DocumentEntry,
    mode: Mode,
    config: &RefRegistryConfig,
    id_map: &HashMap<String, String>,
    submission_patient: Option<&str>,
    now: i64,
    violations: &mut Vec<Violation>,
) -> Option<PlannedDocument> {
    let object = entry.id.as_str();
    let n_before = violations.len();
    if has_limited_metadata_marker(&entry.extra_classifications, DOCUMENT_LIMITED_METADATA_NODE) {
        violations.push(metadata(object, LIMITED_METADATA_REFUSED));
    }
    let patient_id = same_patient(object, entry.patient_id.as_ref(), submission_patient, config, violations);
    match entry.object_type.as_str() {
        OBJECT_TYPE_STABLE_DOCUMENT => {}
        OBJECT_TYPE_ON_DEMAND_DOCUMENT => {
            violations.push(metadata(object, "On-Demand DocumentEntries are registered by ITI-61, not supported here"))
        }
        "" => violations.push(missing(object, "objectType")),
        _ => violations.push(metadata(object, "objectType is not a DocumentEntry type")),
    }
    let required_text = [
        ("XDSDocumentEntry.uniqueId", entry.unique_id.is_some()),
        ("creationTime", entry.creation_time.is_some()),
        ("languageCode", entry.language_code.is_some()),
        ("sourcePatientId", entry.source_patient_id.is_some()),
        ("hash", entry.hash.is_some()),
        ("size", entry.size.is_some()),
        ("repositoryUniqueId", entry.repository_unique_id.is_some()),
    ];
    for (attribute, present) in required_text {
        if !present {
            violations.push(missing(object, attribute));
        }
    }
    let required_codes = [
        ("classCode", entry.class_code.is_some()),
        ("typeCode", entry.type_code.is_some()),
        ("formatCode", entry.format_code.is_some()),
        ("healthcareFacilityTypeCode", entry.healthcare_facility_type_code.is_some()),
        ("practiceSettingCode", entry.practice_setting_code.is_some()),
        ("confidentialityCode", !entry.confidentiality_codes.is_empty()),
    ];
    for (attribute, present) in required_codes {
        if !present {
            violations.push(missing(object, attribute));
        }
    }
    if entry.mime_type.trim().is_empty() {
        violations.push(missing(object, "mimeType"));
    }
    let creation_time = dtm(object, "creationTime", entry.creation_time.as_ref(), violations);
    let service_start_time = dtm(object, "serviceStartTime", entry.service_start_time.as_ref(), violations);
    let service_stop_time = dtm(object, "serviceStopTime", entry.service_stop_time.as_ref(), violations);
    let hash = entry.hash.as_ref().map(|hash| hash.trim().to_ascii_lowercase());
    if let Some(hash) = &hash
        && !(hash.len() == SHA1_HEX_LENGTH && hash.bytes().all(|byte| byte.is_ascii_hexdigit()))
    {
        violations.push(metadata(object, "hash is not a SHA-1 in hexadecimal (ITI TF-3 4.2.3.2.11)"));
    }
    let size = entry.size.as_ref().and_then(|size| {
        let parsed = size.trim().parse::<i64>().ok().filter(|size| *size >= 0);
        if parsed.is_none() {
            violations.push(metadata(object, "size is not a number of bytes"));
        }
        parsed
    });
    let uuid = id_map.get(object)?;
    let mut update_of = None;
    let lid = match entry.lid.as_deref() {
        None => uuid.clone(),
        Some(lid) => match ids::canonical_uuid(lid) {
            None => {
                violations.push(metadata(object, "lid (logicalID) is not a UUID (ITI TF-3 4.2.3.2.12)"));
                return None;
            }
            Some(lid) if lid == *uuid => lid,
            Some(lid) => {
                if mode == Mode::Register {
                    violations.push(metadata(
                        object,
                        "lid differs from the id: only Update Document Set (ITI-57) submits a new version",
                    ));
                }
                // The PreviousVersion comes from the HasMember association (attach_previous_versions).
                update_of = Some((lid.clone(), String::new()));
                lid
            }
        },
    };
    let (Some(unique_id), Some(patient_id)) = (&entry.unique_id, patient_id) else {
        return None;
    };
    if violations.len() > n_before {
        return None;
    }
    let mut stored = entry.clone();
    stored.id = uuid.clone();
    stored.lid = Some(lid.clone());
    stored.status = Some(STATUS_APPROVED.to_owned());
    stored.hash = hash.clone();
    remap_extras(&mut stored.extra_classifications, &mut stored.extra_external_identifiers, object, uuid);
    let mut codes = Vec::new();
    for code in &entry.event_codes {
        codes.push(document_code(CODE_EVENT, code));
    }
    for code in &entry.confidentiality_codes {
        codes.push(document_code(CODE_CONFIDENTIALITY, code));
    }
    for person in entry.authors.iter().filter_map(|author| author.person.as_ref()) {
        codes.push(DocumentCode { kind: CODE_AUTHOR_PERSON, code: person.clone(), scheme: String::new() });
    }
    let code_parts =
        |code: &Option<Code>| (code.as_ref().map(|c| c.code.clone()), code.as_ref().map(|c| c.scheme.clone()));
    let (class_code, class_scheme) = code_parts(&entry.class_code);
    let (type_code, type_scheme) = code_parts(&entry.type_code);
    let (format_code, format_scheme) = code_parts(&entry.format_code);
    let (facility_code, facility_scheme) = code_parts(&entry.healthcare_facility_type_code);
    let (practice_code, practice_scheme) = code_parts(&entry.practice_setting_code);
    let row = DocumentRow {
        entry_uuid: uuid.clone(),
        unique_id: unique_id.trim().to_owned(),
        lid,
        version: 1,
        status: STATUS_APPROVED.to_owned(),
        patient_id,
        object_type: entry.object_type.clone(),
        mime_type: entry.mime_type.trim().to_owned(),
        hash,
        size,
        repository_unique_id: entry.repository_unique_id.as_ref().map(|id| id.trim().to_owned()),
        creation_time,
        service_start_time,
        service_stop_time,
        class_code,
        class_scheme,
        type_code,
        type_scheme,
        format_code,
        format_scheme,
        facility_code,
        facility_scheme,
        practice_code,
        practice_scheme,
        // Filled in once the SubmissionSet's uuid is known (the caller's plan holds both).
        submission_set_uuid: String::new(),
        ebrim: serialize(&RegistryObject::DocumentEntry(stored)),
        created_at: now,
    };
    Some(PlannedDocument { row, codes, update_of })
}

fn document_code(kind: &'static str, code: &Code) -> DocumentCode {
    DocumentCode { kind, code: code.code.clone(), scheme: code.scheme.clone() }
}

fn folder_row(
    folder: &Folder,
    config: &RefRegistryConfig,
    id_map: &HashMap<String, String>,
    submission_patient: Option<&str>,
    now: i64,
    now_dtm: &str,
    violations: &mut Vec<Violation>,
) -> Option<FolderRow> {
    let object = folder.id.as_str();
    let n_before = violations.len();
    let patient_id = same_patient(object, folder.patient_id.as_ref(), submission_patient, config, violations);
    if folder.unique_id.is_none() {
        violations.push(missing(object, "XDSFolder.uniqueId"));
    }
    if folder.codes.is_empty() {
        violations.push(missing(object, "codeList"));
    }
    let uuid = id_map.get(object)?;
    if folder.lid.as_deref().is_some_and(|lid| ids::canonical_uuid(lid).as_deref() != Some(uuid.as_str())) {
        violations.push(metadata(object, "lid differs from the id: Folder updates are not supported"));
    }
    let (Some(unique_id), Some(patient_id)) = (&folder.unique_id, patient_id) else {
        return None;
    };
    if violations.len() > n_before {
        return None;
    }
    let mut stored = folder.clone();
    stored.id = uuid.clone();
    stored.lid = Some(uuid.clone());
    stored.status = Some(STATUS_APPROVED.to_owned());
    // The registry keeps lastUpdateTime (ITI TF-3 4.2.3.4.4); a submitted value is replaced.
    stored.last_update_time = Some(now_dtm.to_owned());
    remap_extras(&mut stored.extra_classifications, &mut stored.extra_external_identifiers, object, uuid);
    Some(FolderRow {
        entry_uuid: uuid.clone(),
        unique_id: unique_id.trim().to_owned(),
        lid: uuid.clone(),
        version: 1,
        patient_id,
        status: STATUS_APPROVED.to_owned(),
        last_update_time: now_dtm.to_owned(),
        ebrim: serialize(&RegistryObject::Folder(stored)),
        created_at: now,
    })
}

fn association_row(
    association: &Association,
    mode: Mode,
    id_map: &HashMap<String, String>,
    ends: &HashMap<&str, End>,
    now: i64,
    violations: &mut Vec<Violation>,
) -> Option<PlannedAssociation> {
    let object = association.id.as_str();
    let n_before = violations.len();
    let resolve = |reference: &str, violations: &mut Vec<Violation>| -> Option<(String, End)> {
        if let (Some(uuid), Some(end)) = (id_map.get(reference), ends.get(reference)) {
            return Some((uuid.clone(), *end));
        }
        match ids::canonical_uuid(reference) {
            Some(uuid) => Some((uuid, End::Existing)),
            None => {
                violations.push(Violation::UnresolvedReference {
                    object: object.to_owned(),
                    reference: reference.to_owned(),
                });
                None
            }
        }
    };
    let source = resolve(&association.source_object, violations);
    let target = resolve(&association.target_object, violations);
    let (Some((source_uuid, source)), Some((target_uuid, target))) = (source, target) else {
        return None;
    };
    let kind = match association.association_type.as_str() {
        ASSOCIATION_HAS_MEMBER => Kind::HasMember,
        ASSOCIATION_RPLC | ASSOCIATION_XFRM_RPLC => Kind::Lifecycle { replaces: true },
        ASSOCIATION_XFRM | ASSOCIATION_APND => Kind::Lifecycle { replaces: false },
        ASSOCIATION_SIGNS => Kind::Signs,
        ASSOCIATION_UPDATE_AVAILABILITY_STATUS => Kind::AvailabilityStatus,
        other => {
            violations.push(metadata(object, &format!("associationType {other} is not supported by this registry")));
            return None;
        }
    };
    match kind {
        Kind::HasMember => match (source, target) {
            (End::SubmissionSet, End::NewDocument) => {
                if association.submission_set_status.as_deref() != Some(SUBMISSION_SET_STATUS_ORIGINAL) {
                    violations.push(metadata(
                        object,
                        "a HasMember to a new DocumentEntry needs SubmissionSetStatus Original",
                    ));
                }
            }
            (End::SubmissionSet, End::Existing) => {
                if association.submission_set_status.as_deref() != Some(SUBMISSION_SET_STATUS_REFERENCE) {
                    violations.push(metadata(
                        object,
                        "a HasMember to a registered object needs SubmissionSetStatus Reference",
                    ));
                }
            }
            (End::SubmissionSet, End::NewFolder | End::NewAssociation) => {}
            (End::NewFolder | End::Existing, End::NewDocument | End::Existing) => {}
            _ => violations.push(metadata(object, "HasMember must go from the SubmissionSet or a Folder to a member")),
        },
        Kind::Lifecycle { .. } => {
            if source != End::NewDocument || target != End::Existing {
                violations.push(metadata(
                    object,
                    "RPLC, XFRM, APND and XFRM_RPLC go from a new DocumentEntry to a registered one",
                ));
            }
        }
        Kind::Signs => {
            if source != End::NewDocument || !matches!(target, End::NewDocument | End::Existing) {
                violations.push(metadata(object, "signs goes from a new DocumentEntry to a DocumentEntry"));
            }
        }
        Kind::AvailabilityStatus => {
            if mode != Mode::Update {
                violations.push(metadata(object, "UpdateAvailabilityStatus belongs to Update Document Set (ITI-57)"));
            } else if source != End::SubmissionSet || target != End::Existing {
                violations.push(metadata(
                    object,
                    "UpdateAvailabilityStatus goes from the SubmissionSet to a registered object",
                ));
            } else {
                for (slot, value) in
                    [(SLOT_ORIGINAL_STATUS, &association.original_status), (SLOT_NEW_STATUS, &association.new_status)]
                {
                    match value.as_deref() {
                        Some(STATUS_APPROVED | STATUS_DEPRECATED) => {}
                        Some(_) => violations.push(metadata(object, &format!("{slot} must be Approved or Deprecated"))),
                        None => violations.push(missing(object, slot)),
                    }
                }
            }
        }
    }
    let uuid = id_map.get(object)?;
    if violations.len() > n_before {
        return None;
    }
    let mut stored = association.clone();
    stored.id = uuid.clone();
    stored.source_object = source_uuid.clone();
    stored.target_object = target_uuid.clone();
    stored.status = Some(STATUS_APPROVED.to_owned());
    stored.lid = Some(uuid.clone());
    Some(PlannedAssociation {
        row: AssociationRow {
            entry_uuid: uuid.clone(),
            association_type: association.association_type.clone(),
            source_uuid,
            target_uuid,
            status: STATUS_APPROVED.to_owned(),
            ebrim: serialize(&RegistryObject::Association(stored)),
            created_at: now,
        },
        kind,
        source,
        target,
        original_status: association.original_status.clone(),
        new_status: association.new_status.clone(),
    })
}

/// Every new DocumentEntry and Folder must be a member of the SubmissionSet (ITI TF-3 4.2.2.1).
fn check_membership(
    submission_set: &SubmissionSet,
    documents: &[&DocumentEntry],
    folders: &[&Folder],
    associations: &[PlannedAssociation],
    id_map: &HashMap<String, String>,
    violations: &mut Vec<Violation>,
) {
    let Some(submission_set_uuid) = id_map.get(&submission_set.id) else {
        return;
    };
    let members: HashSet<&str> = associations
        .iter()
        .filter(|association| {
            association.kind == Kind::HasMember && association.row.source_uuid == *submission_set_uuid
        })
        .map(|association| association.row.target_uuid.as_str())
        .collect();
    let objects =
        documents.iter().map(|entry| entry.id.as_str()).chain(folders.iter().map(|folder| folder.id.as_str()));
    for object in objects {
        if id_map.get(object).is_some_and(|uuid| !members.contains(uuid.as_str())) {
            violations.push(metadata(object, "is not a member (HasMember) of the SubmissionSet"));
        }
    }
}

/// ITI-57: the PreviousVersion of a new version is on the SubmissionSet's HasMember to it.
fn attach_previous_versions(
    documents: &mut [PlannedDocument],
    associations: &[&Association],
    id_map: &HashMap<String, String>,
    violations: &mut Vec<Violation>,
) {
    for document in documents.iter_mut() {
        let Some((_, previous)) = &mut document.update_of else {
            continue;
        };
        let found = associations.iter().find_map(|association| {
            let targets_it = id_map.get(&association.target_object) == Some(&document.row.entry_uuid);
            (association.association_type == ASSOCIATION_HAS_MEMBER && targets_it)
                .then(|| association.previous_version.clone())
                .flatten()
        });
        match found {
            Some(version) => *previous = version,
            None => violations.push(Violation::Update {
                object: document.row.entry_uuid.clone(),
                problem: "a new version needs PreviousVersion on its HasMember association".to_owned(),
            }),
        }
    }
}

fn has_limited_metadata_marker(classifications: &[Classification], node: &str) -> bool {
    classifications.iter().any(|classification| classification.node.as_deref() == Some(node))
}

/// Verbatim classifications and identifiers that pointed at the object's old id follow it.
fn remap_extras(
    classifications: &mut [Classification],
    identifiers: &mut [ExternalIdentifier],
    old_id: &str,
    new_id: &str,
) {
    for classification in classifications {
        if classification.classified_object == old_id {
            classification.classified_object = new_id.to_owned();
        }
    }
    for identifier in identifiers {
        if identifier.registry_object == old_id {
            identifier.registry_object = new_id.to_owned();
        }
    }
}

/// One registry object as the XML a RegistryObjectList holds (`rim:` prefix, undeclared).
pub(crate) fn serialize(object: &RegistryObject) -> String {
    let mut writer = XmlWriter::without_declaration(SERIALIZED_CAPACITY);
    write_registry_object(&mut writer, object);
    // The writer only emits text it escaped from Strings, so the bytes are UTF-8.
    String::from_utf8_lossy(&writer.into_inner()).into_owned()
}

/// ITI TF-3 4.1.1 (Limited Metadata): a Document Registry does not accept it.
const LIMITED_METADATA_REFUSED: &str =
    "is labelled Limited Metadata, which a Document Registry does not accept (ITI TF-3 4.1.1)";
/// The Limited Metadata classification node of a DocumentEntry (ITI TF-3 4.2.5.2).
const DOCUMENT_LIMITED_METADATA_NODE: &str = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85";
/// The Limited Metadata classification node of a SubmissionSet (ITI TF-3 4.2.5.2).
const SUBMISSION_SET_LIMITED_METADATA_NODE: &str = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707";
/// Hex digits of a SHA-1.
const SHA1_HEX_LENGTH: usize = 40;
/// Initial buffer of one serialized object.
const SERIALIZED_CAPACITY: usize = 4096;
