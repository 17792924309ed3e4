//! Builds the XDS-I.b manifest: a Key Object Selection document (DICOM PS3.3 A.35.4) following
//! IHE RAD TF-3 4.68.4.1.2 and TID 2010, from [`StudyEvidence`], and writes it as Part 10 bytes.
//!
//! What goes in, module by module (KOS IOD, PS3.3 Table A.35.4-1):
//! - Patient, General Study, Patient Study: copied unchanged from the images
//!   ([`crate::evidence::PATIENT_AND_STUDY_TAGS`]); Type 2 attributes the images lack are present
//!   and empty. One exception: Procedure Code Sequence (Type 3) keeps only complete code items,
//!   and is left out when none is, so that an image's broken optional code does not make the
//!   manifest invalid.
//! - Key Object Document Series (C.17.6.1): Modality `KO`, a new Series Instance UID (never one of
//!   the images', NIST ids_2018-4800), Series Number, empty Referenced Performed Procedure Step
//!   Sequence.
//! - General Equipment (C.7.5.1): Manufacturer (Type 2, dciodvfy errors without it), optional
//!   Institution Name, Software Versions.
//! - Key Object Document (C.17.6.2): Instance Number, Content Date/Time, Referenced Request
//!   Sequence when orders are known, Current Requested Procedure Evidence Sequence with every
//!   instance and, on each series item, Retrieve AE Title and Retrieve Location UID.
//! - SR Document Content (C.17.3): root CONTAINER (113030, DCM, "Manifest"), SEPARATE, TID 2010,
//!   one CONTAINS item per instance with the value type of [`ValueType::for_sop_class`].
//! - SOP Common: Key Object Selection Document Storage, a new SOP Instance UID.
//!
//! Transfer syntax Explicit VR Little Endian; no pixel, waveform or overlay data.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

use crate::element::{empty, items, sequence, string, text};
use crate::evidence::{PATIENT_AND_STUDY_TAGS, RequestRef, StudyEvidence};
use crate::uid::{UidSource, is_valid_uid};
use crate::value_type::ValueType;

/// How the manifest describes itself and where its instances are retrieved from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KosOptions {
    /// Retrieve AE Title (0008,0054) on every Referenced Series item: the AE that serves the
    /// instances (ours when retrieval goes through the broker).
    pub retrieve_ae_title: String,
    /// Retrieve Location UID (0040,E011) on every Referenced Series item: the Imaging Document
    /// Source's repositoryUniqueId (NIST ids_2018-4800).
    pub retrieve_location_uid: String,
    /// Content Date (0008,0023), `YYYYMMDD`. Given by the caller so that output is deterministic.
    pub content_date: String,
    /// Content Time (0008,0033), `HHMMSS` with optional `.FFFFFF`.
    pub content_time: String,
    /// Manufacturer (0008,0070).
    pub manufacturer: String,
    /// Software Versions (0018,1020); left out when empty.
    pub software_versions: String,
    /// Institution Name (0008,0080); left out when `None`.
    pub institution_name: Option<String>,
    /// Series Description (0008,103E); left out when `None`.
    pub series_description: Option<String>,
    /// Series Number (0020,0011).
    pub series_number: u32,
    /// Instance Number (0020,0013); a replacement manifest may count up.
    pub instance_number: u32,
}

impl KosOptions {
    /// Options with the defaults: manufacturer `hie-edge`, this crate's version, series 999
    /// (away from the images' own series numbers), instance 1.
    pub fn new(
        retrieve_ae_title: impl Into<String>,
        retrieve_location_uid: impl Into<String>,
        content_date: impl Into<String>,
        content_time: impl Into<String>,
    ) -> Self {
        Self {
            retrieve_ae_title: retrieve_ae_title.into(),
            retrieve_location_uid: retrieve_location_uid.into(),
            content_date: content_date.into(),
            content_time: content_time.into(),
            manufacturer: "hie-edge".to_owned(),
            software_versions: env!("CARGO_PKG_VERSION").to_owned(),
            institution_name: None,
            series_description: None,
            series_number: 999,
            instance_number: 1,
        }
    }

    fn validate(&self) -> Result<(), KosError> {
        let invalid = |option, reason: &str| Err(KosError::InvalidOption { option, reason: reason.to_owned() });
        let ae = self.retrieve_ae_title.trim();
        if ae.is_empty() || ae.len() > 16 || !ae.bytes().all(|byte| (0x20..0x7f).contains(&byte) && byte != b'\\') {
            return invalid("retrieve_ae_title", "1 to 16 printable ASCII characters, no backslash (PS3.5 6.2 AE)");
        }
        if !is_valid_uid(&self.retrieve_location_uid) {
            return invalid("retrieve_location_uid", "not a valid UID (digits and dots, at most 64 characters)");
        }
        let date = self.content_date.as_bytes();
        if date.len() != 8 || !date.iter().all(u8::is_ascii_digit) {
            return invalid("content_date", "expected YYYYMMDD (PS3.5 6.2 DA)");
        }
        let (whole, fraction) = self.content_time.split_once('.').unwrap_or((&self.content_time, "0"));
        let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.len() != 6 || !digits(whole) || fraction.is_empty() || fraction.len() > 6 || !digits(fraction) {
            return invalid("content_time", "expected HHMMSS or HHMMSS.FFFFFF (PS3.5 6.2 TM)");
        }
        for (option, value) in
            [("manufacturer", Some(&self.manufacturer)), ("institution_name", self.institution_name.as_ref())]
        {
            if value.is_some_and(|value| value.len() > 64 || value.contains('\\')) {
                return invalid(option, "at most 64 characters, no backslash (PS3.5 6.2 LO)");
            }
        }
        Ok(())
    }
}

/// Why a manifest can't be built, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KosError {
    /// Our configuration: an option that would make the manifest invalid.
    #[error("KOS option {option}: {reason}")]
    InvalidOption { option: &'static str, reason: String },
    /// The evidence references no instance.
    #[error("the study evidence references no instance")]
    NoInstances,
    /// The evidence's Study Instance UID can't be written.
    #[error("Study Instance UID {uid:?} is not a UID")]
    MalformedStudyUid { uid: String },
    /// The UID source handed out something unusable (invalid, or already used in the study).
    #[error("UID source gave {uid:?}, which is {reason}")]
    BadGeneratedUid { uid: String, reason: &'static str },
    /// Encoding the object failed (for example text that the character set can't represent).
    #[error("could not encode the manifest: {source}")]
    Encode {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bytes are not a readable DICOM Part 10 object.
    #[error("not a readable DICOM Part 10 object: {source}")]
    Unreadable {
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// A declared element length runs past its container or the end of the bytes (corrupted or
    /// cut short), or the structure is one the pre-scan refuses (see [`hie_dimse::bounds`]).
    #[error("not a readable DICOM Part 10 object: {0}")]
    LengthBeyondEnd(#[from] hie_dimse::bounds::LengthError),
    /// A readable object, but not a Key Object Selection document.
    #[error("not a Key Object Selection document (SOP Class UID {sop_class_uid:?})")]
    NotAManifest { sop_class_uid: String },
    /// A Key Object Selection document that lacks what every manifest has.
    #[error("malformed manifest: {attribute}: {reason}")]
    Malformed { attribute: &'static str, reason: &'static str },
}

/// Builds the manifest for one study. Draws two UIDs from `uids`: the new series, then the SOP
/// instance.
pub fn build_kos(
    evidence: &StudyEvidence,
    options: &KosOptions,
    uids: &mut impl UidSource,
) -> Result<FileDicomObject<InMemDicomObject>, KosError> {
    options.validate()?;
    if evidence.n_instances() == 0 {
        return Err(KosError::NoInstances);
    }
    if !crate::uid::is_referenceable_uid(&evidence.study_instance_uid) {
        return Err(KosError::MalformedStudyUid { uid: evidence.study_instance_uid.clone() });
    }
    let series_instance_uid = generated_uid(uids, evidence)?;
    let sop_instance_uid = generated_uid(uids, evidence)?;
    if sop_instance_uid == series_instance_uid {
        return Err(KosError::BadGeneratedUid { uid: sop_instance_uid, reason: "handed out twice" });
    }

    let mut kos = InMemDicomObject::new_empty();
    for &tag in PATIENT_AND_STUDY_TAGS {
        if let Some(element) = evidence.patient_and_study.get(tag) {
            if CODE_SEQUENCES.contains(&tag) {
                // A Type 3 code sequence whose items are not codes (the NIST MR images carry one
                // empty item) would be an error in the manifest; keep only the real codes.
                let codes: Vec<InMemDicomObject> = items(&evidence.patient_and_study, tag)
                    .iter()
                    .filter(|item| is_complete_code(item))
                    .cloned()
                    .collect();
                if !codes.is_empty() {
                    kos.put(sequence(tag, codes));
                }
                continue;
            }
            kos.put(element.clone());
        }
    }
    for (tag, vr) in TYPE_2_PATIENT_AND_STUDY {
        if kos.get(tag).is_none() {
            kos.put(empty(tag, vr));
        }
    }
    kos.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &evidence.study_instance_uid));

    // Key Object Document Series
    kos.put(text(tags::MODALITY, VR::CS, "KO"));
    kos.put(text(tags::SERIES_INSTANCE_UID, VR::UI, &series_instance_uid));
    kos.put(text(tags::SERIES_NUMBER, VR::IS, &options.series_number.to_string()));
    if let Some(description) = &options.series_description {
        kos.put(text(tags::SERIES_DESCRIPTION, VR::LO, description));
    }
    kos.put(sequence(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, Vec::new()));

    // General Equipment
    kos.put(text(tags::MANUFACTURER, VR::LO, &options.manufacturer));
    if let Some(institution) = &options.institution_name {
        kos.put(text(tags::INSTITUTION_NAME, VR::LO, institution));
    }
    if !options.software_versions.is_empty() {
        kos.put(text(tags::SOFTWARE_VERSIONS, VR::LO, &options.software_versions));
    }

    // Key Object Document
    kos.put(text(tags::INSTANCE_NUMBER, VR::IS, &options.instance_number.to_string()));
    kos.put(text(tags::CONTENT_DATE, VR::DA, &options.content_date));
    kos.put(text(tags::CONTENT_TIME, VR::TM, &options.content_time));
    if !evidence.requests.is_empty() {
        let requests = evidence.requests.iter().map(|request| request_item(request, evidence)).collect();
        kos.put(sequence(tags::REFERENCED_REQUEST_SEQUENCE, requests));
    }
    kos.put(sequence(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, vec![evidence_item(evidence, options)]));

    // SR Document Content
    kos.put(text(tags::VALUE_TYPE, VR::CS, "CONTAINER"));
    kos.put(sequence(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(MANIFEST_TITLE)]));
    kos.put(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    kos.put(sequence(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
            text(tags::TEMPLATE_IDENTIFIER, VR::CS, "2010"),
        ])],
    ));
    let content = evidence.series.iter().flat_map(|series| &series.instances).map(|instance| {
        InMemDicomObject::from_element_iter([
            text(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
            text(tags::VALUE_TYPE, VR::CS, ValueType::for_sop_class(&instance.sop_class_uid).as_str()),
            sequence(
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_item(&instance.sop_class_uid, &instance.sop_instance_uid)],
            ),
        ])
    });
    kos.put(sequence(tags::CONTENT_SEQUENCE, content.collect()));

    // SOP Common
    kos.put(text(tags::SOP_CLASS_UID, VR::UI, uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE));
    kos.put(text(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance_uid));

    kos.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|source| KosError::Encode { source: Box::new(source) })
}

/// The manifest as a DICOM Part 10 file: preamble, `DICM`, file meta group, data set; the bytes
/// dicom-object's writer gives, written directly by this crate (several times faster).
pub fn to_part10_bytes(kos: &FileDicomObject<InMemDicomObject>) -> Result<Vec<u8>, KosError> {
    crate::encode::part10(kos)
}

/// Document title, CID 7010: (113030, DCM, "Manifest") as IHE XDS-I.b uses it; the IOCM titles
/// (113001, 113037, 113039) are not manifests.
const MANIFEST_TITLE: (&str, &str, &str) = ("113030", "DCM", "Manifest");

/// Copied Type 3 code sequences (Basic Code Sequence Macro items) that are filtered to complete codes.
const CODE_SEQUENCES: [dicom_core::Tag; 1] = [tags::PROCEDURE_CODE_SEQUENCE];

/// PS3.3 Table 8.8-1: a code has a Coding Scheme Designator, a Code Meaning and one of Code Value,
/// Long Code Value or URN Code Value.
fn is_complete_code(item: &InMemDicomObject) -> bool {
    let has = |tag| string(item, tag).is_some();
    has(tags::CODING_SCHEME_DESIGNATOR)
        && has(tags::CODE_MEANING)
        && (has(tags::CODE_VALUE) || has(tags::LONG_CODE_VALUE) || has(tags::URN_CODE_VALUE))
}

/// Type 2 attributes of the Patient and General Study modules: present, empty when unknown.
const TYPE_2_PATIENT_AND_STUDY: [(dicom_core::Tag, VR); 9] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
];

fn generated_uid(uids: &mut impl UidSource, evidence: &StudyEvidence) -> Result<String, KosError> {
    let uid = uids.next_uid();
    if !is_valid_uid(&uid) {
        return Err(KosError::BadGeneratedUid { uid, reason: "not a valid UID" });
    }
    let in_use = uid == evidence.study_instance_uid
        || evidence.series.iter().any(|series| {
            series.series_instance_uid == uid
                || series.instances.iter().any(|instance| instance.sop_instance_uid == uid)
        });
    if in_use {
        return Err(KosError::BadGeneratedUid { uid, reason: "already used in the study" });
    }
    Ok(uid)
}

/// Hierarchical SOP Instance Reference Macro (PS3.3 Table C.17-3), one study, with the Hierarchical
/// Series Reference's Retrieve AE Title and Retrieve Location UID on each series.
fn evidence_item(evidence: &StudyEvidence, options: &KosOptions) -> InMemDicomObject {
    let series_items = evidence
        .series
        .iter()
        .map(|series| {
            InMemDicomObject::from_element_iter([
                text(tags::RETRIEVE_AE_TITLE, VR::AE, options.retrieve_ae_title.trim()),
                sequence(
                    tags::REFERENCED_SOP_SEQUENCE,
                    series
                        .instances
                        .iter()
                        .map(|instance| sop_item(&instance.sop_class_uid, &instance.sop_instance_uid))
                        .collect(),
                ),
                text(tags::SERIES_INSTANCE_UID, VR::UI, &series.series_instance_uid),
                text(tags::RETRIEVE_LOCATION_UID, VR::UI, &options.retrieve_location_uid),
            ])
        })
        .collect();
    InMemDicomObject::from_element_iter([
        sequence(tags::REFERENCED_SERIES_SEQUENCE, series_items),
        text(tags::STUDY_INSTANCE_UID, VR::UI, &evidence.study_instance_uid),
    ])
}

/// Referenced Request Sequence item (PS3.3 C.17.6.2, Referenced Request Macro): the Type 2
/// attributes present, empty where the images did not say.
fn request_item(request: &RequestRef, evidence: &StudyEvidence) -> InMemDicomObject {
    let mut item = InMemDicomObject::from_element_iter([
        text(tags::STUDY_INSTANCE_UID, VR::UI, &evidence.study_instance_uid),
        sequence(tags::REFERENCED_STUDY_SEQUENCE, Vec::new()),
        text(tags::ACCESSION_NUMBER, VR::SH, &request.accession_number),
        empty(tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST, VR::LO),
        empty(tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST, VR::LO),
        text(tags::REQUESTED_PROCEDURE_ID, VR::SH, &request.requested_procedure_id),
        text(tags::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO, &request.requested_procedure_description),
        sequence(tags::REQUESTED_PROCEDURE_CODE_SEQUENCE, Vec::new()),
    ]);
    if let Some(issuer) = &request.issuer_of_accession_number {
        let mut issuer_item = InMemDicomObject::new_empty();
        if !issuer.local_namespace_entity_id.is_empty() {
            issuer_item.put(text(tags::LOCAL_NAMESPACE_ENTITY_ID, VR::UT, &issuer.local_namespace_entity_id));
        }
        if !issuer.universal_entity_id.is_empty() {
            issuer_item.put(text(tags::UNIVERSAL_ENTITY_ID, VR::UT, &issuer.universal_entity_id));
            issuer_item.put(text(tags::UNIVERSAL_ENTITY_ID_TYPE, VR::CS, &issuer.universal_entity_id_type));
        }
        item.put(sequence(tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE, vec![issuer_item]));
    }
    item
}

fn sop_item(sop_class_uid: &str, sop_instance_uid: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, sop_class_uid),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop_instance_uid),
    ])
}

fn code_item((value, scheme, meaning): (&str, &str, &str)) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}
