//! Small helpers over `InMemDicomObject`: read a trimmed string, make elements and sequences.
//! Shared by `evidence`, `build` and `read` so that padding rules live in one place.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;

/// The element's value as one string, with DICOM padding (trailing spaces and NULs) removed.
/// `None` when absent, empty, or not textual.
pub fn string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.value().to_str().ok()?;
    // Leading spaces are significant for some VRs but never for the UIDs and codes we read;
    // trailing padding is never significant (PS3.5 6.2).
    let trimmed = value.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The items of a sequence element; empty when absent or not a sequence.
pub fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|element| element.value().items()).unwrap_or(&[])
}

pub(crate) fn text(tag: Tag, vr: VR, value: &str) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

pub(crate) fn empty(tag: Tag, vr: VR) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

pub(crate) fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}
