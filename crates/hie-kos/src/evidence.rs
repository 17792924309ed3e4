//! What a manifest is built from, independent of where it came from (a PACS query, C-STORE
//! arrivals, a folder): [`StudyEvidence`] and the [`StudyEvidenceBuilder`] that accumulates
//! instance headers into it.
//!
//! Only the identifying UIDs are required of an instance. Images that violate their IOD (missing
//! Type 1 attributes, odd values) are still evidence: real archives hold them and the manifest
//! must reference what the archive holds. An object without readable UIDs is refused with an
//! [`EvidenceError`]; the builder counts it as skipped and carries on.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use hie_dimse::bounds::{Extent, LengthError, check_part10};

use crate::element::{items, string};
use crate::uid::{compare_uids, is_referenceable_uid};

/// One referenced instance (Referenced SOP Sequence item).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceRef {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// Identifies a series and carries what the XDS eventCodeList is made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub series_instance_uid: String,
    /// Modality (0008,0060) of the images; empty when the images lack it.
    pub modality: String,
    /// Body Part Examined (0018,0015); empty when the images lack it.
    pub body_part_examined: String,
}

/// The instances of one series, sorted by SOP Instance UID (numeric-aware).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesEvidence {
    pub series_instance_uid: String,
    pub modality: String,
    pub body_part_examined: String,
    pub instances: Vec<InstanceRef>,
}

/// Issuer of Accession Number Sequence (0008,0051) item (HL7 v2 HD: namespace, universal id, type).
/// Empty strings where the images leave a component out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Issuer {
    pub local_namespace_entity_id: String,
    pub universal_entity_id: String,
    pub universal_entity_id_type: String,
}

/// An order the study fulfils, for the Referenced Request Sequence (0040,A370).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestRef {
    /// Accession Number (0008,0050); empty when unknown.
    pub accession_number: String,
    pub issuer_of_accession_number: Option<Issuer>,
    /// Requested Procedure ID (0040,1001); empty when unknown.
    pub requested_procedure_id: String,
    /// Requested Procedure Description (0032,1060); empty when unknown.
    pub requested_procedure_description: String,
}

/// Everything a manifest for one study is built from.
#[derive(Debug, Clone)]
pub struct StudyEvidence {
    pub study_instance_uid: String,
    /// Patient- and study-level attributes copied unchanged from one image (see
    /// [`PATIENT_AND_STUDY_TAGS`]), including Specific Character Set when the images have one.
    pub patient_and_study: InMemDicomObject,
    /// Sorted by Series Instance UID (numeric-aware).
    pub series: Vec<SeriesEvidence>,
    /// Orders the study fulfils; empty when none is known.
    pub requests: Vec<RequestRef>,
}

impl StudyEvidence {
    /// Number of referenced instances over all series.
    pub fn n_instances(&self) -> usize {
        self.series.iter().map(|series| series.instances.len()).sum()
    }
}

/// What one instance header contributes to the evidence.
#[derive(Debug, Clone)]
pub struct InstanceHeader {
    pub study_instance_uid: String,
    pub series: SeriesKey,
    pub instance: InstanceRef,
    pub patient_and_study: InMemDicomObject,
    pub requests: Vec<RequestRef>,
}

/// Why an object can't be evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// Not a DICOM Part 10 object, or cut short before the end of its header.
    #[error("not a readable DICOM Part 10 object: {source}")]
    Unreadable {
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// A declared element length runs past its container or the end of the bytes (corrupted or
    /// cut short), or the structure is one the pre-scan refuses (nesting too deep, a stray
    /// delimiter, a header cut short).
    #[error("not a readable DICOM Part 10 object: {0}")]
    LengthBeyondEnd(#[from] LengthError),
    /// A UID the manifest needs is absent or empty.
    #[error("{attribute} is missing or empty")]
    MissingUid { attribute: &'static str },
    /// A UID the manifest needs holds something that can't be a UID.
    #[error("{attribute} is not a UID: {value:?}")]
    MalformedUid { attribute: &'static str, value: String },
    /// The instance belongs to another study than the one being accumulated.
    #[error("instance belongs to study {found}, not {expected}")]
    OtherStudy { expected: String, found: String },
    /// No instance was accumulated.
    #[error("no instance to reference")]
    NoInstances,
}

/// Parses a DICOM Part 10 object (with or without the 128-byte preamble) up to, not including,
/// Pixel Data: everything a manifest needs, without the bulk. Declared lengths are checked against
/// the bytes first, up to where the reader stops ([`hie_dimse::bounds`], [`Extent::BeforePixelData`]),
/// so a corrupted length costs no allocation.
pub fn read_instance_header(bytes: &[u8]) -> Result<InMemDicomObject, EvidenceError> {
    check_part10(bytes, Extent::BeforePixelData)?;
    let file = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map_err(|source| EvidenceError::Unreadable { source: Box::new(source) })?;
    Ok(file.into_inner())
}

/// Extracts what the manifest needs from one instance's header.
pub fn from_instance_header(obj: &InMemDicomObject) -> Result<InstanceHeader, EvidenceError> {
    let study_instance_uid = required_uid(obj, tags::STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)")?;
    let series_instance_uid = required_uid(obj, tags::SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)")?;
    let sop_class_uid = required_uid(obj, tags::SOP_CLASS_UID, "SOP Class UID (0008,0016)")?;
    let sop_instance_uid = required_uid(obj, tags::SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)")?;
    let mut patient_and_study = InMemDicomObject::new_empty();
    for &tag in PATIENT_AND_STUDY_TAGS {
        if let Some(element) = obj.get(tag) {
            patient_and_study.put(element.clone());
        }
    }
    Ok(InstanceHeader {
        study_instance_uid,
        series: SeriesKey {
            series_instance_uid,
            modality: string(obj, tags::MODALITY).unwrap_or_default(),
            body_part_examined: string(obj, tags::BODY_PART_EXAMINED).unwrap_or_default(),
        },
        instance: InstanceRef { sop_class_uid, sop_instance_uid },
        patient_and_study,
        requests: requests_from_header(obj),
    })
}

/// Whether [`StudyEvidenceBuilder::add_header`] took a new instance or one it already had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// Same SOP Instance UID as an instance already accumulated; the first one is kept.
    Duplicate,
}

/// Accumulates instance headers of one study into [`StudyEvidence`]: dedupes by SOP Instance UID,
/// sorts series and instances by UID, keeps the patient/study attributes of the instance that
/// sorts first (so the result does not depend on arrival order), and unions the requests.
#[derive(Debug, Default)]
pub struct StudyEvidenceBuilder {
    study_instance_uid: Option<String>,
    series: BTreeMap<UidKey, SeriesAccumulator>,
    seen: HashSet<String>,
    patient_and_study: Option<(UidKey, UidKey, InMemDicomObject)>,
    requests: BTreeSet<RequestRef>,
    n_duplicates: usize,
    n_skipped: usize,
}

impl StudyEvidenceBuilder {
    /// A builder that adopts the study of the first instance added.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder for a known study; instances of other studies are refused.
    pub fn for_study(study_instance_uid: impl Into<String>) -> Self {
        Self { study_instance_uid: Some(study_instance_uid.into()), ..Self::default() }
    }

    /// Adds a Part 10 object given as bytes. An unreadable object is counted as skipped.
    pub fn add_part10(&mut self, bytes: &[u8]) -> Result<Added, EvidenceError> {
        let obj = read_instance_header(bytes).inspect_err(|_| self.n_skipped += 1)?;
        self.add_object(&obj)
    }

    /// Adds a parsed object (a file's data set, a C-STORE data set, a C-FIND/QIDO result with the
    /// instance-level UIDs). An object without the UIDs is counted as skipped.
    pub fn add_object(&mut self, obj: &InMemDicomObject) -> Result<Added, EvidenceError> {
        let header = from_instance_header(obj).inspect_err(|_| self.n_skipped += 1)?;
        self.add_header(header)
    }

    /// Adds an instance header. An instance of another study is counted as skipped.
    pub fn add_header(&mut self, header: InstanceHeader) -> Result<Added, EvidenceError> {
        match &self.study_instance_uid {
            Some(expected) if *expected != header.study_instance_uid => {
                self.n_skipped += 1;
                return Err(EvidenceError::OtherStudy { expected: expected.clone(), found: header.study_instance_uid });
            }
            Some(_) => {}
            None => self.study_instance_uid = Some(header.study_instance_uid.clone()),
        }
        if !self.seen.insert(header.instance.sop_instance_uid.clone()) {
            self.n_duplicates += 1;
            return Ok(Added::Duplicate);
        }
        let series_key = UidKey(header.series.series_instance_uid.clone());
        let instance_key = UidKey(header.instance.sop_instance_uid.clone());
        let sorts_first = self
            .patient_and_study
            .as_ref()
            .is_none_or(|(series, instance, _)| (&series_key, &instance_key) < (series, instance));
        if sorts_first {
            self.patient_and_study = Some((series_key.clone(), instance_key.clone(), header.patient_and_study));
        }
        let series = self.series.entry(series_key).or_insert_with(|| SeriesAccumulator {
            modality: String::new(),
            body_part_examined: String::new(),
            instances: BTreeMap::new(),
        });
        if series.modality.is_empty() {
            series.modality = header.series.modality;
        }
        if series.body_part_examined.is_empty() {
            series.body_part_examined = header.series.body_part_examined;
        }
        series.instances.insert(instance_key, header.instance.sop_class_uid);
        self.requests.extend(header.requests);
        Ok(Added::New)
    }

    /// Instances accumulated so far.
    pub fn n_instances(&self) -> usize {
        self.seen.len()
    }

    /// Objects refused so far (unreadable, without UIDs, or of another study).
    pub fn n_skipped(&self) -> usize {
        self.n_skipped
    }

    /// Instances added again with a SOP Instance UID already seen.
    pub fn n_duplicates(&self) -> usize {
        self.n_duplicates
    }

    /// The evidence; fails only when no instance was accumulated.
    pub fn build(self) -> Result<StudyEvidence, EvidenceError> {
        let (Some(study_instance_uid), Some((_, _, patient_and_study))) =
            (self.study_instance_uid, self.patient_and_study)
        else {
            return Err(EvidenceError::NoInstances);
        };
        let series = self
            .series
            .into_iter()
            .map(|(series_uid, accumulated)| SeriesEvidence {
                series_instance_uid: series_uid.0,
                modality: accumulated.modality,
                body_part_examined: accumulated.body_part_examined,
                instances: accumulated
                    .instances
                    .into_iter()
                    .map(|(instance_uid, sop_class_uid)| InstanceRef {
                        sop_class_uid,
                        sop_instance_uid: instance_uid.0,
                    })
                    .collect(),
            })
            .collect();
        Ok(StudyEvidence {
            study_instance_uid,
            patient_and_study,
            series,
            requests: self.requests.into_iter().collect(),
        })
    }
}

/// Patient- and study-level attributes a manifest copies unchanged from the images (IHE RAD TF-3
/// 4.68.4.1.2: "shall not change"). From the modules the KOS IOD (PS3.3 A.35.4) shares with the
/// images: Patient (C.7.1.1), General Study (C.7.2.1), Patient Study (C.7.2.2), plus Specific
/// Character Set (SOP Common) because the copied text is encoded in it. Clinical Trial modules are
/// left out: their Type 1 attributes are conditional on each other, and a partial copy would make
/// the manifest invalid where the images are.
pub const PATIENT_AND_STUDY_TAGS: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    // Patient
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::TYPE_OF_PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_BIRTH_TIME,
    tags::PATIENT_SEX,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::OTHER_PATIENT_NAMES,
    tags::PATIENT_COMMENTS,
    tags::PATIENT_SPECIES_DESCRIPTION,
    tags::PATIENT_IDENTITY_REMOVED,
    tags::DEIDENTIFICATION_METHOD,
    // General Study
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::REFERRING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
    tags::STUDY_DESCRIPTION,
    tags::PHYSICIANS_OF_RECORD,
    tags::NAME_OF_PHYSICIANS_READING_STUDY,
    tags::PROCEDURE_CODE_SEQUENCE,
    // Patient Study
    tags::ADMITTING_DIAGNOSES_DESCRIPTION,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::OCCUPATION,
    tags::ADDITIONAL_PATIENT_HISTORY,
    tags::ADMISSION_ID,
];

/// Orders from the header: one per Request Attributes Sequence (0040,0275) item, taking Accession
/// Number and its issuer from the item or else from the data set; without that sequence, one
/// order for a non-empty Accession Number (an accession number names an imaging service request).
fn requests_from_header(obj: &InMemDicomObject) -> Vec<RequestRef> {
    let accession_number = string(obj, tags::ACCESSION_NUMBER).unwrap_or_default();
    let issuer = issuer(obj);
    let request_items = items(obj, tags::REQUEST_ATTRIBUTES_SEQUENCE);
    let mut requests: Vec<RequestRef> = request_items
        .iter()
        .map(|item| RequestRef {
            accession_number: string(item, tags::ACCESSION_NUMBER).unwrap_or_else(|| accession_number.clone()),
            issuer_of_accession_number: self::issuer(item).or_else(|| issuer.clone()),
            requested_procedure_id: string(item, tags::REQUESTED_PROCEDURE_ID).unwrap_or_default(),
            requested_procedure_description: string(item, tags::REQUESTED_PROCEDURE_DESCRIPTION).unwrap_or_default(),
        })
        .filter(|request| !request.accession_number.is_empty() || !request.requested_procedure_id.is_empty())
        .collect();
    if request_items.is_empty() && !accession_number.is_empty() {
        requests.push(RequestRef {
            accession_number,
            issuer_of_accession_number: issuer,
            requested_procedure_id: String::new(),
            requested_procedure_description: String::new(),
        });
    }
    requests
}

fn issuer(obj: &InMemDicomObject) -> Option<Issuer> {
    let item = items(obj, tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE).first()?;
    let issuer = Issuer {
        local_namespace_entity_id: string(item, tags::LOCAL_NAMESPACE_ENTITY_ID).unwrap_or_default(),
        universal_entity_id: string(item, tags::UNIVERSAL_ENTITY_ID).unwrap_or_default(),
        universal_entity_id_type: string(item, tags::UNIVERSAL_ENTITY_ID_TYPE).unwrap_or_default(),
    };
    (issuer != Issuer::default()).then_some(issuer)
}

fn required_uid(obj: &InMemDicomObject, tag: Tag, attribute: &'static str) -> Result<String, EvidenceError> {
    let value = string(obj, tag).ok_or(EvidenceError::MissingUid { attribute })?;
    if is_referenceable_uid(&value) { Ok(value) } else { Err(EvidenceError::MalformedUid { attribute, value }) }
}

/// A UID as a map key, in [`compare_uids`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UidKey(String);

impl Ord for UidKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_uids(&self.0, &other.0)
    }
}

impl PartialOrd for UidKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug)]
struct SeriesAccumulator {
    modality: String,
    body_part_examined: String,
    /// SOP Instance UID -> SOP Class UID.
    instances: BTreeMap<UidKey, String>,
}
