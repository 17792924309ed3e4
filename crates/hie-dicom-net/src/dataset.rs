//! Identifier data sets (the keys of C-FIND, C-GET and C-MOVE, and the matches of C-FIND):
//! encoding with dicom-object in the presentation context's transfer syntax, and decoding what a
//! peer sent only after a bounded pre-scan.
//!
//! Why the pre-scan: dicom-parser 0.10 reserves and zero-fills a value's declared length before
//! reading it, so one lying length in a C-FIND response would make it allocate up to 4 GiB; and
//! dicom-object builds nested sequences recursively, so deep nesting could exhaust a task's stack.
//! [`hie_dimse::bounds::check_data_set`] walks the elements flat, in O(n) and with a fixed-size
//! stack, refusing any length that runs past its container and any nesting deeper than
//! [`hie_dimse::bounds::MAX_DEPTH`] (the same pre-scan hie-kos runs on Part 10 files).
//! dicom-object is then run under `catch_unwind`, since it still has known panics on malformed
//! input.

use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use hie_dimse::bounds::{Encoding, Extent, check_data_set};

/// Whether we know the transfer syntax (a registry entry, with or without a pixel codec: we pass
/// pixel data through and never decode it).
pub(crate) fn is_known_transfer_syntax(uid: &str) -> bool {
    TransferSyntaxRegistry.get(uid).is_some()
}

/// Encodes an identifier in the transfer syntax `ts_uid`.
pub(crate) fn encode(object: &InMemDicomObject, ts_uid: &str) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| format!("unknown transfer syntax {ts_uid}"))?;
    let mut out = Vec::new();
    object.write_dataset_with_ts(&mut out, ts).map_err(|error| error.to_string())?;
    Ok(out)
}

/// Decodes a data set a peer sent in the transfer syntax `ts_uid`.
pub(crate) fn decode(bytes: &[u8], ts_uid: &str) -> Result<InMemDicomObject, String> {
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| format!("unknown transfer syntax {ts_uid}"))?;
    if !ts.can_decode_dataset() {
        return Err(format!("cannot decode a data set in {}", ts.name()));
    }
    let encoding =
        Encoding::of_transfer_syntax(ts_uid).ok_or_else(|| format!("cannot check a data set in {}", ts.name()))?;
    check_data_set(bytes, encoding, Extent::Whole).map_err(|error| error.to_string())?;
    catch_unwind(AssertUnwindSafe(|| InMemDicomObject::read_dataset_with_ts(bytes, ts)))
        .map_err(|_| "the data set decoder panicked".to_owned())?
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
    use dicom_dictionary_std::tags;
    use hie_dimse::uids;

    fn identifier() -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        object.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("STUDY")));
        object.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("P1")));
        object.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::Empty));
        object.put(DataElement::new(tags::MODALITIES_IN_STUDY, VR::CS, dicom_value!(Strs, ["MR", "KO"])));
        object
    }

    #[test]
    fn identifiers_round_trip_in_both_little_endian_syntaxes() {
        for ts in [uids::IMPLICIT_VR_LITTLE_ENDIAN, uids::EXPLICIT_VR_LITTLE_ENDIAN] {
            let bytes = encode(&identifier(), ts).unwrap();
            let decoded = decode(&bytes, ts).unwrap();
            assert_eq!(decoded.element(tags::PATIENT_ID).unwrap().to_str().unwrap(), "P1");
            assert_eq!(decoded.element(tags::MODALITIES_IN_STUDY).unwrap().to_multi_str().unwrap().len(), 2);
        }
    }

    /// The pre-scan's own cases are in hie-dimse (`bounds::tests`); these check that decoding runs
    /// it in the context's transfer syntax before dicom-object sees the bytes.
    #[test]
    fn lying_lengths_and_deep_nesting_are_refused_before_decoding() {
        let mut bytes = encode(&identifier(), uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
        // (0010,0010) LO with a length far past the end.
        bytes.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'L', b'O', 0xFF, 0x7F]);
        let error = decode(&bytes, uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
        assert!(error.contains("declares 32767 bytes"), "{error}");

        let mut deep = Vec::new();
        for _ in 0..=hie_dimse::bounds::MAX_DEPTH {
            // An undefined-length sequence (0008,1115) holding an undefined-length item.
            deep.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let error = decode(&deep, uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
        assert!(error.contains("nested deeper"), "{error}");
    }

    #[test]
    fn nested_defined_lengths_must_fit_their_container() {
        // Sequence of 16 bytes holding an item that claims 100, in Implicit VR Little Endian.
        let mut bytes = vec![
            0x08, 0x00, 0x15, 0x11, 16, 0, 0, 0, // (0008,1115) implicit, 16 bytes
            0xFE, 0xFF, 0x00, 0xE0, 100, 0, 0, 0, // item of 100 bytes
        ];
        bytes.extend_from_slice(&[0; 104]);
        assert!(decode(&bytes, uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap_err().contains("in its container"));
    }
}
