//! Big studies for tests and benchmarks: N instances cloned from one fixture file, with a new
//! Study Instance UID, a new Series Instance UID per `instances_per_series`, new SOP Instance
//! UIDs and Instance Numbers (the same as `dcmodify -gst/-gse/-gin`, but in-process: 2,000
//! instances of a 40 KB PET image take about a second). Everything else, pixel data included,
//! is the fixture's.
//!
//! UIDs are UUID-derived (PS3.5 B.2: `2.25.` and a random 128-bit number), so generated studies
//! never collide, across runs or with the fixtures.
//!
//! [`generate_study_with`] also gives the clones another patient, accession number or procedure
//! code, or adds them as new series to an existing study (a later arrival).

use std::path::{Path, PathBuf};

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// One generated instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedInstance {
    pub path: PathBuf,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
}

/// A generated study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedStudy {
    pub study_instance_uid: String,
    pub series_instance_uids: Vec<String>,
    pub sop_class_uid: String,
    pub instances: Vec<GeneratedInstance>,
}

impl GeneratedStudy {
    /// The instance files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.instances.iter().map(|instance| instance.path.clone()).collect()
    }
}

/// What generated instances say beside their new UIDs; `None` keeps the template's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyOverrides {
    /// Put the new series in this study rather than a new one (a later arrival to it).
    pub study_instance_uid: Option<String>,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub accession_number: Option<String>,
    /// The Procedure Code Sequence (0008,1032) as one item: code value, coding scheme designator,
    /// code meaning.
    pub procedure_code: Option<(String, String, String)>,
}

/// Writes `n_instances` copies of `template` into `out_dir` (created if missing) as one new
/// study; panics on I/O errors (test setup).
pub fn generate_study(
    template: &Path,
    n_instances: usize,
    instances_per_series: usize,
    out_dir: &Path,
) -> GeneratedStudy {
    generate_study_with(template, n_instances, instances_per_series, out_dir, &StudyOverrides::default())
}

/// [`generate_study`] with `overrides` applied to every instance.
pub fn generate_study_with(
    template: &Path,
    n_instances: usize,
    instances_per_series: usize,
    out_dir: &Path,
    overrides: &StudyOverrides,
) -> GeneratedStudy {
    std::fs::create_dir_all(out_dir).unwrap_or_else(|error| panic!("{}: {error}", out_dir.display()));
    let mut original =
        dicom_object::open_file(template).unwrap_or_else(|error| panic!("{}: {error}", template.display()));
    let sop_class_uid = original.meta().media_storage_sop_class_uid().trim_end_matches('\0').to_owned();
    for (tag, vr, value) in [
        (tags::PATIENT_ID, VR::LO, &overrides.patient_id),
        (tags::PATIENT_NAME, VR::PN, &overrides.patient_name),
        (tags::ACCESSION_NUMBER, VR::SH, &overrides.accession_number),
    ] {
        if let Some(value) = value {
            original.put(DataElement::new(tag, vr, PrimitiveValue::from(value.as_str())));
        }
    }
    if let Some((code, scheme, meaning)) = &overrides.procedure_code {
        let item = InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code.as_str())),
            DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from(scheme.as_str())),
            DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning.as_str())),
        ]);
        original.put(DataElement::new(tags::PROCEDURE_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![item])));
    }
    let study_instance_uid = overrides.study_instance_uid.clone().unwrap_or_else(new_uid);
    let mut series_instance_uids = Vec::new();
    let mut instances = Vec::with_capacity(n_instances);
    let per_series = instances_per_series.max(1);
    for index in 0..n_instances {
        if index % per_series == 0 {
            series_instance_uids.push(new_uid());
        }
        let series_instance_uid = series_instance_uids.last().cloned().unwrap_or_default();
        let sop_instance_uid = new_uid();
        let mut object = original.clone();
        object.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(study_instance_uid.as_str()),
        ));
        object.put(DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(series_instance_uid.as_str()),
        ));
        object.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop_instance_uid.as_str())));
        let number = (index % per_series + 1).to_string();
        object.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from(number.as_str())));
        object.update_meta(|meta| meta.media_storage_sop_instance_uid = sop_instance_uid.clone());
        let path = out_dir.join(format!("{index:06}.dcm"));
        object.write_to_file(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        instances.push(GeneratedInstance { path, series_instance_uid, sop_instance_uid });
    }
    GeneratedStudy { study_instance_uid, series_instance_uids, sop_class_uid, instances }
}

/// A new UUID-derived UID (PS3.5 B.2).
pub fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::IDS_DEPT024_A;

    #[test]
    fn clones_get_new_uids_and_keep_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let template = &IDS_DEPT024_A.images()[0];
        let study = generate_study(template, 5, 2, dir.path());
        assert_eq!(study.instances.len(), 5);
        assert_eq!(study.series_instance_uids.len(), 3, "2 + 2 + 1 instances");
        assert_ne!(study.study_instance_uid, IDS_DEPT024_A.study_instance_uid);
        let original = crate::part10::read(template);
        for instance in &study.instances {
            let part = crate::part10::read(&instance.path);
            assert_eq!(part.sop_instance_uid, instance.sop_instance_uid, "file meta follows the new UID");
            assert_eq!(part.sop_class_uid, original.sop_class_uid);
            let object = dicom_object::open_file(&instance.path).unwrap();
            let uid = |tag| object.element(tag).unwrap().to_str().unwrap().trim_end_matches('\0').to_owned();
            assert_eq!(uid(tags::STUDY_INSTANCE_UID), study.study_instance_uid);
            assert_eq!(uid(tags::SERIES_INSTANCE_UID), instance.series_instance_uid);
            assert_eq!(uid(tags::SOP_INSTANCE_UID), instance.sop_instance_uid);
            assert!(instance.sop_instance_uid.len() <= 64 && instance.sop_instance_uid.starts_with("2.25."));
        }
        let unique: std::collections::BTreeSet<_> = study.instances.iter().map(|i| &i.sop_instance_uid).collect();
        assert_eq!(unique.len(), 5);
    }

    #[test]
    fn overrides_give_another_patient_a_procedure_code_or_a_later_series() {
        let dir = tempfile::tempdir().unwrap();
        let template = &IDS_DEPT024_A.images()[0];
        let overrides = StudyOverrides {
            study_instance_uid: Some(IDS_DEPT024_A.study_instance_uid.to_owned()),
            patient_id: Some("GEN-7".to_owned()),
            patient_name: Some("Gen^Seven".to_owned()),
            accession_number: Some("ACC7".to_owned()),
            procedure_code: Some(("IMG".to_owned(), "99SEH".to_owned(), "Imaging".to_owned())),
        };
        let study = generate_study_with(template, 2, 2, dir.path(), &overrides);
        assert_eq!(study.study_instance_uid, IDS_DEPT024_A.study_instance_uid, "a later series of the study");
        let object = dicom_object::open_file(&study.instances[1].path).unwrap();
        let text = |tag| object.element(tag).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_owned();
        assert_eq!(text(tags::PATIENT_ID), "GEN-7");
        assert_eq!(text(tags::PATIENT_NAME), "Gen^Seven");
        assert_eq!(text(tags::ACCESSION_NUMBER), "ACC7");
        let items = object.element(tags::PROCEDURE_CODE_SEQUENCE).unwrap().items().unwrap();
        assert_eq!(items.len(), 1);
        let code = items[0].element(tags::CODE_VALUE).unwrap().to_str().unwrap();
        assert_eq!(code.trim(), "IMG");
        assert_ne!(study.series_instance_uids[0], IDS_DEPT024_A.study_instance_uid);
    }
}
