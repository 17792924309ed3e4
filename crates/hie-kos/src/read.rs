//! Reads any Key Object Selection document (ours or another source's) into a [`ManifestSummary`]:
//! the keys an XDS-I.b manifest is compared and published by.

use std::collections::BTreeSet;

use dicom_dictionary_std::{tags, uids};
use dicom_object::{InMemDicomObject, OpenFileOptions};

use crate::build::KosError;
use crate::element::{items, string};
use crate::evidence::InstanceRef;

/// A code sequence item: (value, scheme, meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRef {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

/// One Referenced Series item of the Current Requested Procedure Evidence Sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub retrieve_ae_title: Option<String>,
    pub retrieve_location_uid: Option<String>,
    pub instances: Vec<InstanceRef>,
}

/// One reference of the content tree (a child of the root container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentReference {
    /// Relationship Type (0040,A010), `CONTAINS` in a manifest.
    pub relationship_type: String,
    /// Value Type (0040,A040): `IMAGE`, `WAVEFORM`, `COMPOSITE`, or something else for non-reference items.
    pub value_type: String,
    /// `None` for items without a Referenced SOP Sequence (such as a TEXT description).
    pub instance: Option<InstanceRef>,
}

/// The keys of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSummary {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    /// Empty when the manifest carries none.
    pub patient_id: String,
    /// Empty when the manifest carries none.
    pub accession_number: String,
    /// Concept Name Code Sequence of the root: the document title.
    pub document_title: Option<CodeRef>,
    /// Content Template Sequence: (Mapping Resource, Template Identifier).
    pub template: Option<(String, String)>,
    /// Referenced series from the evidence sequence, in document order.
    pub series: Vec<ManifestSeries>,
    /// The content tree's references, in document order.
    pub content: Vec<ContentReference>,
}

impl ManifestSummary {
    /// Every (series, SOP class, SOP instance) the evidence references.
    pub fn referenced(&self) -> BTreeSet<(String, String, String)> {
        self.series
            .iter()
            .flat_map(|series| {
                series.instances.iter().map(|instance| {
                    (
                        series.series_instance_uid.clone(),
                        instance.sop_class_uid.clone(),
                        instance.sop_instance_uid.clone(),
                    )
                })
            })
            .collect()
    }

    /// Number of instances the evidence references.
    pub fn n_instances(&self) -> usize {
        self.series.iter().map(|series| series.instances.len()).sum()
    }
}

/// Parses Part 10 bytes (with or without preamble) and summarizes the manifest.
pub fn read_manifest(bytes: &[u8]) -> Result<ManifestSummary, KosError> {
    // The whole object is read, so the whole object is checked (pixel data fragments included).
    hie_dimse::bounds::check_part10(bytes, hie_dimse::bounds::Extent::Whole)?;
    let file = OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|source| KosError::Unreadable { source: Box::new(source) })?;
    summarize_manifest(&file)
}

/// Summarizes a parsed manifest.
pub fn summarize_manifest(kos: &InMemDicomObject) -> Result<ManifestSummary, KosError> {
    let sop_class_uid = string(kos, tags::SOP_CLASS_UID).unwrap_or_default();
    if sop_class_uid != uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE {
        return Err(KosError::NotAManifest { sop_class_uid });
    }
    let required =
        |tag, attribute| string(kos, tag).ok_or(KosError::Malformed { attribute, reason: "missing or empty" });
    let evidence = items(kos, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE);
    if evidence.is_empty() {
        return Err(KosError::Malformed {
            attribute: "Current Requested Procedure Evidence Sequence (0040,A375)",
            reason: "missing or empty",
        });
    }
    let mut series = Vec::new();
    for study in evidence {
        let study_instance_uid = string(study, tags::STUDY_INSTANCE_UID).unwrap_or_default();
        for series_item in items(study, tags::REFERENCED_SERIES_SEQUENCE) {
            series.push(ManifestSeries {
                study_instance_uid: study_instance_uid.clone(),
                series_instance_uid: string(series_item, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
                retrieve_ae_title: string(series_item, tags::RETRIEVE_AE_TITLE),
                retrieve_location_uid: string(series_item, tags::RETRIEVE_LOCATION_UID),
                instances: items(series_item, tags::REFERENCED_SOP_SEQUENCE).iter().map(instance_ref).collect(),
            });
        }
    }
    let content = items(kos, tags::CONTENT_SEQUENCE)
        .iter()
        .map(|item| ContentReference {
            relationship_type: string(item, tags::RELATIONSHIP_TYPE).unwrap_or_default(),
            value_type: string(item, tags::VALUE_TYPE).unwrap_or_default(),
            instance: items(item, tags::REFERENCED_SOP_SEQUENCE).first().map(instance_ref),
        })
        .collect();
    Ok(ManifestSummary {
        sop_instance_uid: required(tags::SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)")?,
        series_instance_uid: required(tags::SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)")?,
        study_instance_uid: required(tags::STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)")?,
        patient_id: string(kos, tags::PATIENT_ID).unwrap_or_default(),
        accession_number: string(kos, tags::ACCESSION_NUMBER).unwrap_or_default(),
        document_title: items(kos, tags::CONCEPT_NAME_CODE_SEQUENCE).first().map(|code| CodeRef {
            value: string(code, tags::CODE_VALUE).unwrap_or_default(),
            scheme: string(code, tags::CODING_SCHEME_DESIGNATOR).unwrap_or_default(),
            meaning: string(code, tags::CODE_MEANING).unwrap_or_default(),
        }),
        template: items(kos, tags::CONTENT_TEMPLATE_SEQUENCE).first().map(|template| {
            (
                string(template, tags::MAPPING_RESOURCE).unwrap_or_default(),
                string(template, tags::TEMPLATE_IDENTIFIER).unwrap_or_default(),
            )
        }),
        series,
        content,
    })
}

fn instance_ref(item: &InMemDicomObject) -> InstanceRef {
    InstanceRef {
        sop_class_uid: string(item, tags::REFERENCED_SOP_CLASS_UID).unwrap_or_default(),
        sop_instance_uid: string(item, tags::REFERENCED_SOP_INSTANCE_UID).unwrap_or_default(),
    }
}
