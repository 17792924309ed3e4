//! One test per item of the KOS checklist (landscape-and-requirements.md 3.1), on the fixture
//! studies and on a synthetic study that mixes image, waveform and other SOP classes.

use std::collections::BTreeSet;

use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use hie_kos::evidence::PATIENT_AND_STUDY_TAGS;
use hie_kos::{
    InMemDicomObject, KosError, RootedUids, StudyEvidence, StudyEvidenceBuilder, UidSource, ValueType, build_kos,
    is_valid_uid, read_manifest, to_part10_bytes,
};

use crate::support::{
    REPOSITORY_UNIQUE_ID, RETRIEVE_AE_TITLE, UID_ROOT, assert_dciodvfy_clean, build, evidence_for, instance_files,
    options, study_dirs, test_data, uids,
};

fn study(name: &str) -> StudyEvidence {
    evidence_for(&test_data().join("studies").join(name))
}

fn str_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_owned()
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element(tag).unwrap().items().unwrap()
}

const STUDY_UID: &str = "1.2.826.0.1.3680043.10.999.7.1";

/// A study with an MR image, an ECG waveform, a GSPS, an Enhanced SR and a Segmentation, in two
/// series, added out of order and with a duplicate.
fn mixed_study() -> StudyEvidence {
    let instances = [
        ("1.2.826.0.1.3680043.10.999.7.1.2", "MR", uids::MR_IMAGE_STORAGE, "1.2.826.0.1.3680043.10.999.7.1.2.10"),
        ("1.2.826.0.1.3680043.10.999.7.1.2", "MR", uids::MR_IMAGE_STORAGE, "1.2.826.0.1.3680043.10.999.7.1.2.9"),
        (
            "1.2.826.0.1.3680043.10.999.7.1.3",
            "ECG",
            uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
            "1.2.826.0.1.3680043.10.999.7.1.3.1",
        ),
        (
            "1.2.826.0.1.3680043.10.999.7.1.3",
            "PR",
            uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
            "1.2.826.0.1.3680043.10.999.7.1.3.2",
        ),
        ("1.2.826.0.1.3680043.10.999.7.1.3", "SR", uids::ENHANCED_SR_STORAGE, "1.2.826.0.1.3680043.10.999.7.1.3.3"),
        ("1.2.826.0.1.3680043.10.999.7.1.3", "SEG", uids::SEGMENTATION_STORAGE, "1.2.826.0.1.3680043.10.999.7.1.3.4"),
        ("1.2.826.0.1.3680043.10.999.7.1.2", "MR", uids::MR_IMAGE_STORAGE, "1.2.826.0.1.3680043.10.999.7.1.2.9"),
    ];
    let mut builder = StudyEvidenceBuilder::for_study(STUDY_UID);
    for (series_uid, modality, sop_class, sop_instance) in instances {
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, sop_class),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop_instance),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, "ACC-7"),
            DataElement::new(tags::MODALITY, VR::CS, modality),
            DataElement::new(tags::PATIENT_NAME, VR::PN, "Müller^Jürgen"),
            DataElement::new(tags::PATIENT_ID, VR::LO, "MRN-7"),
            DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, "HOSP"),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, STUDY_UID),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
            DataElement::new(
                tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![InMemDicomObject::from_element_iter([
                    DataElement::new(tags::LOCAL_NAMESPACE_ENTITY_ID, VR::UT, "RIS"),
                    DataElement::new(tags::UNIVERSAL_ENTITY_ID, VR::UT, "1.2.826.0.1.3680043.10.999.5"),
                    DataElement::new(tags::UNIVERSAL_ENTITY_ID_TYPE, VR::CS, "ISO"),
                ])]),
            ),
        ]);
        builder.add_object(&obj).unwrap();
    }
    assert_eq!(builder.n_duplicates(), 1);
    builder.build().unwrap()
}

#[test]
fn sop_class_modality_and_a_new_series() {
    for dir in study_dirs() {
        let evidence = evidence_for(&dir);
        let kos = build(&evidence);
        assert_eq!(str_of(&kos, tags::SOP_CLASS_UID), "1.2.840.10008.5.1.4.1.1.88.59");
        assert_eq!(kos.meta().media_storage_sop_class_uid(), "1.2.840.10008.5.1.4.1.1.88.59");
        assert_eq!(kos.meta().transfer_syntax().trim_end_matches('\0'), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(str_of(&kos, tags::MODALITY), "KO");
        let series_uid = str_of(&kos, tags::SERIES_INSTANCE_UID);
        for series in &evidence.series {
            assert_ne!(series.series_instance_uid, series_uid);
        }
        assert_ne!(series_uid, str_of(&kos, tags::SOP_INSTANCE_UID));
        assert_eq!(str_of(&kos, tags::SERIES_NUMBER), "999");
        assert_eq!(str_of(&kos, tags::INSTANCE_NUMBER), "1");
        assert!(items(&kos, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE).is_empty());
    }
}

#[test]
fn document_title_is_manifest() {
    let kos = build(&mixed_study());
    let title = &items(&kos, tags::CONCEPT_NAME_CODE_SEQUENCE)[0];
    assert_eq!(str_of(title, tags::CODE_VALUE), "113030");
    assert_eq!(str_of(title, tags::CODING_SCHEME_DESIGNATOR), "DCM");
    assert_eq!(str_of(title, tags::CODE_MEANING), "Manifest");
}

#[test]
fn tid_2010_root_container_separate() {
    let kos = build(&mixed_study());
    assert_eq!(str_of(&kos, tags::VALUE_TYPE), "CONTAINER");
    assert_eq!(str_of(&kos, tags::CONTINUITY_OF_CONTENT), "SEPARATE");
    let template = &items(&kos, tags::CONTENT_TEMPLATE_SEQUENCE)[0];
    assert_eq!(str_of(template, tags::MAPPING_RESOURCE), "DCMR");
    assert_eq!(str_of(template, tags::TEMPLATE_IDENTIFIER), "2010");
}

#[test]
fn one_contains_item_per_instance_with_value_type_by_sop_class() {
    let evidence = mixed_study();
    let summary = read_manifest(&to_part10_bytes(&build(&evidence)).unwrap()).unwrap();
    let by_class: BTreeSet<(String, String)> = summary
        .content
        .iter()
        .map(|item| {
            assert_eq!(item.relationship_type, "CONTAINS");
            (item.instance.as_ref().unwrap().sop_class_uid.clone(), item.value_type.clone())
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (uids::MR_IMAGE_STORAGE, "IMAGE"),
        (uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE, "WAVEFORM"),
        (uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE, "COMPOSITE"),
        (uids::ENHANCED_SR_STORAGE, "COMPOSITE"),
        (uids::SEGMENTATION_STORAGE, "COMPOSITE"),
    ]
    .into_iter()
    .map(|(class, value_type)| (class.to_owned(), value_type.to_owned()))
    .collect();
    assert_eq!(by_class, expected);
    assert_eq!(summary.content.len(), 6);
    assert_eq!(ValueType::for_sop_class(uids::MR_IMAGE_STORAGE), ValueType::Image);
}

#[test]
fn mixed_study_passes_dciodvfy() {
    let bytes = to_part10_bytes(&build(&mixed_study())).unwrap();
    assert_dciodvfy_clean("mixed", &bytes);
}

/// 2,000 instances in 8 series of image, waveform and other classes, with an order, its issuer and
/// Latin-1 names: the largest shape the manifest writer meets, through dciodvfy and read back.
#[test]
fn a_large_mixed_study_passes_dciodvfy() {
    let template = mixed_study();
    let classes: Vec<&str> =
        template.series.iter().flat_map(|series| &series.instances).map(|i| i.sop_class_uid.as_str()).collect();
    let mut builder = StudyEvidenceBuilder::for_study(STUDY_UID);
    for index in 0..2_000 {
        let series = format!("{STUDY_UID}.{}", index % 8 + 1);
        let mut header = hie_kos::from_instance_header(&InMemDicomObject::from_element_iter([
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, classes[index % classes.len()]),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, format!("{series}.{}", index + 1).as_str()),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, STUDY_UID),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()),
            DataElement::new(tags::PATIENT_NAME, VR::PN, "Müller^Jürgen"),
            DataElement::new(tags::PATIENT_ID, VR::LO, "MRN-7"),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, "ACC-7"),
        ]))
        .unwrap();
        header.requests = template.requests.clone();
        builder.add_header(header).unwrap();
    }
    let evidence = builder.build().unwrap();
    let bytes = to_part10_bytes(&build(&evidence)).unwrap();
    assert_dciodvfy_clean("2,000 mixed", &bytes);
    let summary = read_manifest(&bytes).unwrap();
    assert_eq!(summary.content.len(), 2_000);
    assert_eq!(summary.series.len(), 8);
    assert_eq!(summary.n_instances(), 2_000);
}

#[test]
fn evidence_holds_every_instance_and_every_content_reference() {
    for evidence in [mixed_study(), study("IDS-DEPT002-a")] {
        let summary = read_manifest(&to_part10_bytes(&build(&evidence)).unwrap()).unwrap();
        let expected: BTreeSet<(String, String, String)> = evidence
            .series
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
            .collect();
        assert_eq!(summary.referenced(), expected);
        assert_eq!(summary.n_instances(), expected.len(), "no instance listed twice");
        assert!(summary.series.iter().all(|series| series.study_instance_uid == evidence.study_instance_uid));
        // Orphan check both ways: content references == evidence references.
        let content: BTreeSet<(String, String)> = summary
            .content
            .iter()
            .map(|item| {
                let instance = item.instance.clone().unwrap();
                (instance.sop_class_uid, instance.sop_instance_uid)
            })
            .collect();
        let evidence_refs: BTreeSet<(String, String)> =
            expected.iter().map(|(_, class, instance)| (class.clone(), instance.clone())).collect();
        assert_eq!(content, evidence_refs);
    }
}

#[test]
fn retrieve_ae_title_and_location_on_every_series_item() {
    for evidence in [mixed_study(), study("IDS-DEPT002-a"), study("IDS-DEPT024-a")] {
        let kos = build(&evidence);
        let study_item = &items(&kos, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)[0];
        let series_items = items(study_item, tags::REFERENCED_SERIES_SEQUENCE);
        assert_eq!(series_items.len(), evidence.series.len());
        for series in series_items {
            assert_eq!(str_of(series, tags::RETRIEVE_AE_TITLE), RETRIEVE_AE_TITLE);
            assert_eq!(str_of(series, tags::RETRIEVE_LOCATION_UID), REPOSITORY_UNIQUE_ID);
        }
    }
}

#[test]
fn referenced_request_sequence_when_orders_are_known() {
    // The dcm4che series has a Request Attributes Sequence (Requested Procedure ID RP1026).
    let evidence = study("dcm4che-MR-series");
    assert_eq!(evidence.requests.len(), 1, "{:?}", evidence.requests);
    let kos = build(&evidence);
    let request = &items(&kos, tags::REFERENCED_REQUEST_SEQUENCE)[0];
    assert_eq!(str_of(request, tags::ACCESSION_NUMBER), "MOF5026");
    assert_eq!(str_of(request, tags::REQUESTED_PROCEDURE_ID), "RP1026");
    assert_eq!(str_of(request, tags::STUDY_INSTANCE_UID), evidence.study_instance_uid);

    // Accession with its issuer, no Request Attributes Sequence.
    let kos = build(&mixed_study());
    let request = &items(&kos, tags::REFERENCED_REQUEST_SEQUENCE)[0];
    assert_eq!(str_of(request, tags::ACCESSION_NUMBER), "ACC-7");
    let issuer = &items(request, tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE)[0];
    assert_eq!(str_of(issuer, tags::UNIVERSAL_ENTITY_ID), "1.2.826.0.1.3680043.10.999.5");
    assert_eq!(str_of(issuer, tags::UNIVERSAL_ENTITY_ID_TYPE), "ISO");

    // No order known: no sequence (it is Type 1C, an empty one would be an error).
    let mut evidence = mixed_study();
    evidence.requests.clear();
    assert!(build(&evidence).get(tags::REFERENCED_REQUEST_SEQUENCE).is_none());
}

#[test]
fn patient_and_study_attributes_are_copied_unchanged() {
    for dir in study_dirs() {
        let evidence = evidence_for(&dir);
        let kos = build(&evidence);
        // Compare against the first image of the first series, as the builder keeps that one.
        let first = &evidence.series[0].instances[0].sop_instance_uid;
        let image = instance_files(&dir)
            .into_iter()
            .map(|file| hie_kos::read_instance_header(&std::fs::read(file).unwrap()).unwrap())
            .find(|obj| str_of(obj, tags::SOP_INSTANCE_UID) == *first)
            .unwrap();
        let mut n_copied = 0;
        for &tag in PATIENT_AND_STUDY_TAGS {
            if let Some(element) = image.get(tag) {
                if tag == tags::PROCEDURE_CODE_SEQUENCE && kos.get(tag).is_none() {
                    // Dropped only when no item is a complete code (IDS-DEPT002-a has one empty item).
                    assert!(element.items().unwrap().iter().all(|item| item.get(tags::CODE_MEANING).is_none()));
                    continue;
                }
                assert_eq!(kos.element(tag).unwrap().value(), element.value(), "{} {tag}", dir.display());
                n_copied += 1;
            }
        }
        assert!(n_copied >= 10, "{}: {n_copied}", dir.display());
        assert_eq!(str_of(&kos, tags::STUDY_INSTANCE_UID), str_of(&image, tags::STUDY_INSTANCE_UID));
    }
}

#[test]
fn specific_character_set_follows_the_images() {
    let evidence = mixed_study();
    let bytes = to_part10_bytes(&build(&evidence)).unwrap();
    // ISO_IR 100: "ü" is one byte 0xFC, not UTF-8.
    assert!(bytes.windows(7).any(|window| window == b"M\xfcller^"), "Latin-1 patient name");
    let kos = hie_kos::read_instance_header(&bytes).unwrap();
    assert_eq!(str_of(&kos, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 100");
    assert_eq!(str_of(&kos, tags::PATIENT_NAME), "Müller^Jürgen");

    let mut evidence = study("dcm4che-MR-series");
    assert!(evidence.patient_and_study.get(tags::SPECIFIC_CHARACTER_SET).is_none());
    assert!(build(&evidence).get(tags::SPECIFIC_CHARACTER_SET).is_none());
    evidence.patient_and_study = InMemDicomObject::new_empty();
    assert!(build(&evidence).get(tags::SPECIFIC_CHARACTER_SET).is_none());
}

#[test]
fn type_2_attributes_are_present_when_unknown() {
    let mut evidence = mixed_study();
    evidence.patient_and_study = InMemDicomObject::new_empty();
    let kos = build(&evidence);
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_SEX,
        tags::STUDY_DATE,
        tags::STUDY_TIME,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::STUDY_ID,
        tags::ACCESSION_NUMBER,
    ] {
        assert!(kos.element(tag).unwrap().value().to_str().unwrap().is_empty(), "{tag}");
    }
    assert_eq!(str_of(&kos, tags::MANUFACTURER), "hie-edge");
    assert_dciodvfy_clean("no patient/study attributes", &to_part10_bytes(&kos).unwrap());
}

#[test]
fn no_pixel_waveform_or_overlay_data() {
    for dir in study_dirs() {
        let kos = build(&evidence_for(&dir));
        for tag in kos.tags() {
            assert!(
                !(0x6000..=0x60FF).contains(&tag.group()) && tag.group() != 0x5400 && tag.group() < 0x7FE0,
                "{} {tag}",
                dir.display()
            );
        }
        assert!(kos.get(tags::COMPLETION_FLAG).is_none() && kos.get(tags::VERIFICATION_FLAG).is_none());
    }
}

#[test]
fn uids_are_well_formed_at_most_64_and_under_the_root() {
    let kos = build(&mixed_study());
    for uid in [str_of(&kos, tags::SERIES_INSTANCE_UID), str_of(&kos, tags::SOP_INSTANCE_UID)] {
        assert!(is_valid_uid(&uid) && uid.len() <= 64 && uid.starts_with(&format!("{UID_ROOT}.")), "{uid}");
    }
    let mut generator = RootedUids::new("1.3.6.1.4.1.21367.201599.99").unwrap();
    let generated: BTreeSet<String> = (0..10_000).map(|_| generator.next_uid()).collect();
    assert_eq!(generated.len(), 10_000);
    assert!(generated.iter().all(|uid| is_valid_uid(uid)));
}

#[test]
fn a_uid_source_that_repeats_an_image_uid_is_refused() {
    struct Repeats(String);
    impl UidSource for Repeats {
        fn next_uid(&mut self) -> String {
            self.0.clone()
        }
    }
    let evidence = mixed_study();
    let image_series = evidence.series[0].series_instance_uid.clone();
    let result = build_kos(&evidence, &options(), &mut Repeats(image_series));
    assert!(matches!(result, Err(KosError::BadGeneratedUid { .. })), "{result:?}");
    let result = build_kos(&evidence, &options(), &mut Repeats("1.2.3".to_owned()));
    assert!(matches!(result, Err(KosError::BadGeneratedUid { reason: "handed out twice", .. })), "{result:?}");
}

#[test]
fn invalid_options_are_refused_with_the_option_named() {
    let evidence = mixed_study();
    type Spoil = fn(&mut hie_kos::KosOptions);
    let cases: [(&str, Spoil); 5] = [
        ("retrieve_ae_title", |options| options.retrieve_ae_title = "A_TITLE_LONGER_THAN_16".to_owned()),
        ("retrieve_location_uid", |options| options.retrieve_location_uid = "1.2.03".to_owned()),
        ("content_date", |options| options.content_date = "2026-11-28".to_owned()),
        ("content_time", |options| options.content_time = "1015".to_owned()),
        ("manufacturer", |options| options.manufacturer = "a\\b".to_owned()),
    ];
    for (name, spoil) in cases {
        let mut options = options();
        spoil(&mut options);
        match build_kos(&evidence, &options, &mut uids()) {
            Err(KosError::InvalidOption { option, .. }) => assert_eq!(option, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn output_is_deterministic_and_independent_of_arrival_order() {
    let dir = test_data().join("studies/IDS-DEPT002-a");
    let forward = evidence_for(&dir);
    let mut builder = StudyEvidenceBuilder::new();
    for file in instance_files(&dir).into_iter().rev() {
        builder.add_part10(&std::fs::read(file).unwrap()).unwrap();
    }
    let backward = builder.build().unwrap();
    let bytes = |evidence: &StudyEvidence| to_part10_bytes(&build(evidence)).unwrap();
    assert_eq!(bytes(&forward), bytes(&backward));
    // Numeric-aware order: instance ...9 before ...10.
    let instances: Vec<&str> =
        forward.series.iter().flat_map(|series| &series.instances).map(|i| i.sop_instance_uid.as_str()).collect();
    let position = |suffix: &str| instances.iter().position(|uid| uid.ends_with(suffix)).unwrap();
    assert!(position(".9") < position(".10"));
}

#[test]
fn empty_evidence_is_refused() {
    assert!(matches!(StudyEvidenceBuilder::new().build(), Err(hie_kos::EvidenceError::NoInstances)));
    let mut evidence = mixed_study();
    evidence.series.clear();
    assert!(matches!(build_kos(&evidence, &options(), &mut uids()), Err(KosError::NoInstances)));
}
