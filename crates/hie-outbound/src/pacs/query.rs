//! What the query adapters (DIMSE C-FIND, QIDO-RS) ask a PACS for, and how its answers are
//! cleaned before they become evidence.

use std::collections::HashMap;

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use hie_kos::evidence::PATIENT_AND_STUDY_TAGS;

/// The instance-level keys a study's evidence needs, besides the patient and study attributes
/// the manifest copies ([`PATIENT_AND_STUDY_TAGS`]).
const INSTANCE_TAGS: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::MODALITY,
    tags::BODY_PART_EXAMINED,
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
];

/// Every attribute an instance-level query for a study's evidence asks for.
pub const EVIDENCE_TAGS: &[Tag] = &concat_tags();

const fn concat_tags() -> [Tag; PATIENT_AND_STUDY_TAGS.len() + INSTANCE_TAGS.len()] {
    let mut all = [Tag(0, 0); PATIENT_AND_STUDY_TAGS.len() + INSTANCE_TAGS.len()];
    let mut n = 0;
    while n < PATIENT_AND_STUDY_TAGS.len() {
        all[n] = PATIENT_AND_STUDY_TAGS[n];
        n += 1;
    }
    let mut m = 0;
    while m < INSTANCE_TAGS.len() {
        all[n + m] = INSTANCE_TAGS[m];
        m += 1;
    }
    all
}

/// Type 2 attributes of the manifest's Patient and General Study modules (PS3.3 C.7.1.1,
/// C.7.2.1): present even when empty, so an empty answer for them is kept.
const TYPE_2_TAGS: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
];

/// A query answer carries every key that was asked for, empty where the images have no value
/// (PS3.4 C.4.1.1.3.2: a return key is zero length when the SCP has none). The images don't have
/// those attributes at all, so the empty ones are dropped, except the manifest's Type 2
/// attributes, which it carries empty anyway. That way a manifest built from a query says what
/// one built from the images says.
pub fn clean_query_result(object: &mut InMemDicomObject) {
    let empty: Vec<Tag> = object
        .iter()
        .filter(|element| is_empty_value(element.value()))
        .map(|element| element.header().tag)
        .filter(|tag| !TYPE_2_TAGS.contains(tag))
        .collect();
    for tag in empty {
        object.remove_element(tag);
    }
}

/// An attribute's value as text, trimmed of padding; `None` when absent or empty.
pub fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

/// Number of Series Related Instances (0020,1209) by Series Instance UID, from SERIES-level
/// answers (C-FIND or QIDO-RS); series without a readable count are left out.
pub fn counts_by_series(answers: &[InMemDicomObject]) -> HashMap<String, usize> {
    answers
        .iter()
        .filter_map(|series| {
            let uid = text(series, tags::SERIES_INSTANCE_UID)?;
            let n = text(series, tags::NUMBER_OF_SERIES_RELATED_INSTANCES)?.parse().ok()?;
            Some((uid, n))
        })
        .collect()
}

fn is_empty_value(value: &dicom_core::value::Value<InMemDicomObject>) -> bool {
    match value {
        dicom_core::value::Value::Primitive(primitive) => primitive.is_empty(),
        dicom_core::value::Value::Sequence(sequence) => sequence.items().is_empty(),
        dicom_core::value::Value::PixelSequence(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};

    use super::*;

    #[test]
    fn empty_keys_are_dropped_but_type_2_ones_kept() {
        let mut object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("P1")),
            DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::Empty),
            DataElement::new(tags::REFERRING_PHYSICIAN_NAME, VR::PN, PrimitiveValue::Empty),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("CT head")),
        ]);
        clean_query_result(&mut object);
        let kept: Vec<Tag> = object.iter().map(|element| element.header().tag).collect();
        assert_eq!(kept, [tags::REFERRING_PHYSICIAN_NAME, tags::STUDY_DESCRIPTION, tags::PATIENT_ID]);
    }

    #[test]
    fn series_counts_are_read_trimmed_and_series_without_one_left_out() {
        let series = |uid: &str, count: Option<&str>| {
            let mut object = InMemDicomObject::from_element_iter([DataElement::new(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(uid),
            )]);
            if let Some(count) = count {
                object.put(DataElement::new(
                    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
                    VR::IS,
                    PrimitiveValue::from(count),
                ));
            }
            object
        };
        let counts =
            counts_by_series(&[series("1.2.3\0", Some(" 500 ")), series("1.2.4", None), series("1.2.5", Some("x"))]);
        assert_eq!(counts, HashMap::from([("1.2.3".to_owned(), 500)]));
    }

    #[test]
    fn the_evidence_query_asks_for_every_copied_attribute_and_the_uids() {
        for tag in PATIENT_AND_STUDY_TAGS.iter().chain(INSTANCE_TAGS) {
            assert!(EVIDENCE_TAGS.contains(tag), "{tag}");
        }
        assert_eq!(EVIDENCE_TAGS.len(), PATIENT_AND_STUDY_TAGS.len() + INSTANCE_TAGS.len());
    }
}
