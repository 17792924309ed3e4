//! Identifier data sets (the keys of C-FIND, C-GET and C-MOVE, and the matches of C-FIND):
//! encoding with dicom-object in the presentation context's transfer syntax, and decoding what a
//! peer sent only after a bounded pre-scan.
//!
//! Why the pre-scan: dicom-parser 0.10 reserves and zero-fills a value's declared length before
//! reading it, so one lying length in a C-FIND response would make it allocate up to 4 GiB; and
//! dicom-object builds nested sequences recursively, so deep nesting could exhaust a task's stack.
//! [`check_lengths`] walks the elements flat, in O(n) and with a fixed-size stack, refusing any
//! length that runs past its container and any nesting deeper than [`MAX_DEPTH`]. dicom-object is
//! then run under `catch_unwind`, since it still has known panics on malformed input.
//! (hie-kos has the same pre-scan for Part 10 files; this one takes a bare data set.)

use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use hie_dimse::uids;

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
    check_lengths(bytes, Encoding::of(ts_uid))?;
    catch_unwind(AssertUnwindSafe(|| InMemDicomObject::read_dataset_with_ts(bytes, ts)))
        .map_err(|_| "the data set decoder panicked".to_owned())?
        .map_err(|error| error.to_string())
}

/// How element headers are encoded (PS3.5 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Encoding {
    fn of(ts_uid: &str) -> Encoding {
        match ts_uid.trim_end_matches(['\0', ' ']) {
            uids::IMPLICIT_VR_LITTLE_ENDIAN => Encoding::ImplicitLittle,
            EXPLICIT_VR_BIG_ENDIAN => Encoding::ExplicitBig,
            // Every other transfer syntax encodes its data set in Explicit VR Little Endian.
            _ => Encoding::ExplicitLittle,
        }
    }
}

/// Checks that every declared length fits in its container and the nesting stays within
/// [`MAX_DEPTH`]; allocates nothing.
pub(crate) fn check_lengths(bytes: &[u8], encoding: Encoding) -> Result<(), String> {
    // End offset of each open sequence or item; `OPEN_ENDED` for undefined lengths.
    let mut open = [0usize; MAX_DEPTH];
    let mut depth = 0usize;
    let mut position = 0usize;
    while position < bytes.len() {
        while depth > 0 && open[depth - 1] != OPEN_ENDED && position >= open[depth - 1] {
            depth -= 1;
        }
        let header = Header::read(bytes, position, encoding)?;
        position += header.len;
        let container_end = if depth > 0 && open[depth - 1] != OPEN_ENDED { open[depth - 1] } else { bytes.len() };
        let undefined = header.length == UNDEFINED_LENGTH;
        if !undefined && header.length as usize > container_end.saturating_sub(position) {
            return Err(format!(
                "element {} at byte {} declares {} bytes but only {} remain in its container",
                header.tag,
                position - header.len,
                header.length,
                container_end.saturating_sub(position)
            ));
        }
        let end = if undefined { OPEN_ENDED } else { position + header.length as usize };
        match header.tag {
            ITEM => {
                if depth == MAX_DEPTH {
                    return Err(format!("data set nested deeper than {MAX_DEPTH} levels"));
                }
                open[depth] = end;
                depth += 1;
            }
            ITEM_DELIMITATION | SEQUENCE_DELIMITATION => {
                if depth == 0 || open[depth - 1] != OPEN_ENDED {
                    return Err(format!("delimiter {} at byte {} closes nothing", header.tag, position - header.len));
                }
                depth -= 1;
            }
            tags::PIXEL_DATA if undefined => position = skip_fragments(bytes, position, encoding)?,
            _ if header.vr == VR::SQ || undefined => {
                if undefined && header.vr == VR::UN && encoding != Encoding::ImplicitLittle {
                    return Err(format!("element {} is UN of undefined length, which we do not decode", header.tag));
                }
                if depth == MAX_DEPTH {
                    return Err(format!("data set nested deeper than {MAX_DEPTH} levels"));
                }
                open[depth] = end;
                depth += 1;
            }
            _ => position = end,
        }
    }
    Ok(())
}

/// Skips the items of encapsulated pixel data (PS3.5 A.4) up to and including the sequence
/// delimiter; returns the offset after it.
fn skip_fragments(bytes: &[u8], mut position: usize, encoding: Encoding) -> Result<usize, String> {
    loop {
        let header = Header::read(bytes, position, encoding)?;
        position += header.len;
        match header.tag {
            SEQUENCE_DELIMITATION => return Ok(position),
            ITEM if header.length != UNDEFINED_LENGTH && header.length as usize <= bytes.len() - position => {
                position += header.length as usize;
            }
            tag => return Err(format!("bad pixel data fragment {tag} at byte {}", position - header.len)),
        }
    }
}

struct Header {
    tag: Tag,
    vr: VR,
    length: u32,
    /// Header size in bytes.
    len: usize,
}

impl Header {
    fn read(bytes: &[u8], at: usize, encoding: Encoding) -> Result<Header, String> {
        let truncated = || format!("element header truncated at byte {at}");
        let u16_at = |offset: usize| -> Result<u16, String> {
            let pair: [u8; 2] = bytes.get(offset..offset + 2).and_then(|s| s.try_into().ok()).ok_or_else(truncated)?;
            Ok(if encoding == Encoding::ExplicitBig { u16::from_be_bytes(pair) } else { u16::from_le_bytes(pair) })
        };
        let u32_at = |offset: usize| -> Result<u32, String> {
            let quad: [u8; 4] = bytes.get(offset..offset + 4).and_then(|s| s.try_into().ok()).ok_or_else(truncated)?;
            Ok(if encoding == Encoding::ExplicitBig { u32::from_be_bytes(quad) } else { u32::from_le_bytes(quad) })
        };
        let tag = Tag(u16_at(at)?, u16_at(at + 2)?);
        // PS3.5 7.5: item and delimiter headers have no VR in any transfer syntax.
        if tag.group() == ITEM_GROUP {
            return Ok(Header { tag, vr: VR::UN, length: u32_at(at + 4)?, len: 8 });
        }
        if encoding == Encoding::ImplicitLittle {
            let vr = StandardDataDictionary.by_tag(tag).map_or(VR::UN, |entry| entry.vr.relaxed());
            return Ok(Header { tag, vr, length: u32_at(at + 4)?, len: 8 });
        }
        let code: [u8; 2] = bytes.get(at + 4..at + 6).and_then(|s| s.try_into().ok()).ok_or_else(truncated)?;
        let vr = VR::from_binary(code).unwrap_or(VR::UN);
        // PS3.5 Table 7.1-1: these VRs have 2 reserved bytes and a 32-bit length.
        if matches!(
            vr,
            VR::OB
                | VR::OD
                | VR::OF
                | VR::OL
                | VR::OV
                | VR::OW
                | VR::SQ
                | VR::SV
                | VR::UC
                | VR::UN
                | VR::UR
                | VR::UT
                | VR::UV
        ) {
            Ok(Header { tag, vr, length: u32_at(at + 8)?, len: 12 })
        } else {
            Ok(Header { tag, vr, length: u32::from(u16_at(at + 6)?), len: 8 })
        }
    }
}

/// Deeper nesting than this is refused (real identifiers nest two or three levels).
pub(crate) const MAX_DEPTH: usize = 32;
/// PS3.5 7.1.1: undefined length.
const UNDEFINED_LENGTH: u32 = u32::MAX;
const OPEN_ENDED: usize = usize::MAX;
/// PS3.5 7.5: Item (FFFE,E000).
const ITEM: Tag = Tag(0xFFFE, 0xE000);
/// PS3.5 7.5: Item Delimitation Item (FFFE,E00D).
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
/// PS3.5 7.5: Sequence Delimitation Item (FFFE,E0DD).
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
/// PS3.5 7.5: items and delimiters are in group FFFE.
const ITEM_GROUP: u16 = 0xFFFE;
/// Explicit VR Big Endian (PS3.5 A.3, retired but still met).
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, dicom_value};

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

    #[test]
    fn lying_lengths_and_deep_nesting_are_refused_before_decoding() {
        let mut bytes = encode(&identifier(), uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
        // (0010,0010) LO with a length far past the end.
        bytes.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'L', b'O', 0xFF, 0x7F]);
        let error = decode(&bytes, uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap_err();
        assert!(error.contains("declares 32767 bytes"), "{error}");

        // (0008,1115) SQ OB-style header with a 4 GiB length.
        let evil = [0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF];
        assert!(check_lengths(&evil, Encoding::ExplicitLittle).is_err());

        let mut deep = Vec::new();
        for _ in 0..(MAX_DEPTH + 1) {
            // An undefined-length sequence (0008,1115) holding an undefined-length item.
            deep.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let error = check_lengths(&deep, Encoding::ImplicitLittle).unwrap_err();
        assert!(error.contains("nested deeper"), "{error}");
    }

    #[test]
    fn nested_defined_lengths_must_fit_their_container() {
        // Sequence of 16 bytes holding an item that claims 100.
        let bytes = [
            0x08, 0x00, 0x15, 0x11, 16, 0, 0, 0, // (0008,1115) implicit, 16 bytes
            0xFE, 0xFF, 0x00, 0xE0, 100, 0, 0, 0, // item of 100 bytes
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(check_lengths(&bytes, Encoding::ImplicitLittle).unwrap_err().contains("in its container"));
    }
}
