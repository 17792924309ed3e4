//! The declared-length pre-scan: every length a DICOM data set declares must fit in what holds
//! it, before dicom-parser reads it. One implementation for Part 10 files (hie-kos: instance
//! headers, manifests) and bare data sets (hie-dicom-net: C-FIND/C-GET/C-MOVE identifiers).
//!
//! Why: dicom-parser 0.10 reserves and zero-fills a value's declared length before reading it
//! (`stateful/decode.rs`, `try_reserve_exact` + `resize`; encapsulated fragments alike in
//! `dataset/read.rs`), so one lying length makes it allocate and clear up to 4 GiB (measured: up
//! to 50 s per object in a debug build); and dicom-object builds nested sequences recursively,
//! so deep nesting could exhaust a stack. Objects reach us from the network (C-STORE, C-FIND,
//! WADO) and from patient media.
//!
//! The walk mirrors what the parser will read, in O(n), without allocation and with a fixed-size
//! stack:
//! - element headers by PS3.5 7.1 (Table 7.1-1 and 7.1-2 for explicit VR; the standard
//!   dictionary's VR for implicit VR, Pixel Data and Overlay Data as OW, as dicom-encoding does);
//!   items and delimiters (group FFFE) without VR in every encoding (PS3.5 7.5);
//! - a defined length must fit in the nearest enclosing defined-length sequence or item, or in the
//!   bytes ([`LengthError::BeyondContainer`]), and so must a header ([`LengthError::HeaderCutShort`]);
//! - sequences (VR SQ) and every other element of undefined length are entered, as the parser
//!   enters them (an undefined-length UN included: it reads its content in the same transfer
//!   syntax), at most [`MAX_DEPTH`] deep; a delimiter must close an undefined-length container;
//! - encapsulated Pixel Data (undefined length, at any depth) is a run of defined-length items up
//!   to its Sequence Delimitation Item (PS3.5 A.4);
//! - fewer than 4 bytes left at the end are the end (the parser ends gracefully when a tag is cut
//!   off); open undefined-length containers at the end are left to the parser, which ends there.
//!
//! [`Extent::BeforePixelData`] stops at the first top-level element at or after Pixel Data, which
//! is where dicom-object's `read_until(PIXEL_DATA)` stops reading (a header kept up to Pixel Data,
//! a file cut inside its pixel data). A Part 10 file without `DICM` and a deflated data set are
//! accepted unwalked: the reader refuses them (no file meta; the workspace leaves dicom-rs's
//! deflate support out).

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags, uids};

/// How element headers are encoded (PS3.5 7.1; A.1, A.2, A.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    ImplicitVrLittleEndian,
    ExplicitVrLittleEndian,
    /// Retired (PS3.5 A.3) but still found on old media.
    ExplicitVrBigEndian,
}

impl Encoding {
    /// How a data set in `transfer_syntax_uid` is encoded (trailing padding ignored): every
    /// transfer syntax but the two named encodes its data set in Explicit VR Little Endian.
    /// `None` for Deflated Explicit VR Little Endian, whose data set is compressed (PS3.5 A.5).
    pub fn of_transfer_syntax(transfer_syntax_uid: &str) -> Option<Encoding> {
        match transfer_syntax_uid.trim_end_matches(['\0', ' ']) {
            uids::IMPLICIT_VR_LITTLE_ENDIAN => Some(Encoding::ImplicitVrLittleEndian),
            EXPLICIT_VR_BIG_ENDIAN => Some(Encoding::ExplicitVrBigEndian),
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => None,
            _ => Some(Encoding::ExplicitVrLittleEndian),
        }
    }
}

/// How much of the data set the reader that follows parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// All of it, encapsulated pixel data included (`read_dataset_with_ts`, or a file opened
    /// without `read_until`).
    Whole,
    /// Up to, not including, the first top-level element at or after Pixel Data (7FE0,0010),
    /// as `OpenFileOptions::read_until(PIXEL_DATA)` reads.
    BeforePixelData,
}

/// Why a data set is refused before parsing. Always the sender's (or the medium's) fault; the
/// offset is from the start of the bytes given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LengthError {
    /// A declared length runs past its container or the end of the bytes.
    #[error("element {tag} at byte {offset} declares {declared} bytes but only {available} remain in its container")]
    BeyondContainer { tag: Tag, offset: usize, declared: u32, available: usize },
    /// An element header does not fit in its container or the bytes.
    #[error("element header at byte {offset} is cut short ({available} bytes remain in its container)")]
    HeaderCutShort { offset: usize, available: usize },
    /// Sequences and items nested deeper than [`MAX_DEPTH`].
    #[error("data set nested deeper than {max} levels at byte {offset}")]
    TooDeep { offset: usize, max: usize },
    /// An item or sequence delimiter with no undefined-length container open.
    #[error("delimiter {tag} at byte {offset} closes nothing")]
    StrayDelimiter { tag: Tag, offset: usize },
    /// Inside encapsulated pixel data, something other than a defined-length item or the
    /// sequence delimiter.
    #[error("encapsulated pixel data: {tag} at byte {offset} is not a fragment of defined length")]
    BadFragment { tag: Tag, offset: usize },
}

/// Checks a bare data set (no preamble, no file meta group) in `encoding`.
pub fn check_data_set(bytes: &[u8], encoding: Encoding, extent: Extent) -> Result<(), LengthError> {
    walk(bytes, 0, encoding, extent)
}

/// Checks a Part 10 object, with or without its 128-byte preamble: the file meta group (always
/// Explicit VR Little Endian, PS3.10 7.1), then the data set in the transfer syntax it names.
pub fn check_part10(bytes: &[u8], extent: Extent) -> Result<(), LengthError> {
    let start = if bytes.get(PREAMBLE_LEN..PREAMBLE_LEN + MAGIC.len()) == Some(MAGIC) {
        PREAMBLE_LEN + MAGIC.len()
    } else if bytes.get(..MAGIC.len()) == Some(MAGIC) {
        MAGIC.len()
    } else {
        return Ok(());
    };
    // Where the data set starts is where dicom-object's `FileMetaTable::read_from` stops: after
    // (0002,0000) with a 4-byte value, it reads elements of any group until their bytes reach the
    // group length (the last may end beyond it). Stopping at the first element outside group 2
    // instead let a corrupted meta tag hide the data set dicom-object then read, and a length
    // there it allocated (1.5 GB from two flipped bytes).
    let meta = Reader { bytes, encoding: Encoding::ExplicitVrLittleEndian };
    let first = meta.header(start, bytes.len())?;
    if first.tag != tags::FILE_META_INFORMATION_GROUP_LENGTH || first.length != 4 {
        // dicom-object refuses such a file before it reads a value; a length it could not hold
        // is named all the same.
        let available = bytes.len() - (start + first.len);
        if first.length as usize > available {
            return Err(LengthError::BeyondContainer {
                tag: first.tag,
                offset: start,
                declared: first.length,
                available,
            });
        }
        return Ok(());
    }
    let Some(group_length) = meta.u32_at(start + first.len) else {
        return Err(LengthError::HeaderCutShort { offset: start, available: bytes.len() - start });
    };
    let mut position = start + first.len + 4;
    let mut read: u32 = 0;
    let mut transfer_syntax: &[u8] = &[];
    while read < group_length {
        let header = meta.header(position, bytes.len())?;
        if header.length == UNDEFINED_LENGTH {
            // Refused by dicom-object too, before any value is read.
            return Ok(());
        }
        position += header.len;
        let available = bytes.len() - position;
        if header.length as usize > available {
            return Err(LengthError::BeyondContainer {
                tag: header.tag,
                offset: position - header.len,
                declared: header.length,
                available,
            });
        }
        let value = &bytes[position..position + header.length as usize];
        if header.tag == tags::TRANSFER_SYNTAX_UID {
            transfer_syntax = value;
        }
        position += header.length as usize;
        read = read.saturating_add(u32::try_from(header.len).unwrap_or(u32::MAX)).saturating_add(header.length);
    }
    match Encoding::of_transfer_syntax(&String::from_utf8_lossy(transfer_syntax)) {
        Some(encoding) => walk(bytes, position, encoding, extent),
        None => Ok(()),
    }
}

/// Deeper nesting than this is refused (real objects nest a few levels; identifiers two or three).
pub const MAX_DEPTH: usize = 32;

/// An open sequence or item.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Where it ends, `None` for an undefined length (it ends at its delimiter).
    end: Option<usize>,
    /// The end of the nearest enclosing defined-length container (or of the bytes): nothing
    /// inside may run past it.
    limit: usize,
}

fn walk(bytes: &[u8], start: usize, encoding: Encoding, extent: Extent) -> Result<(), LengthError> {
    let reader = Reader { bytes, encoding };
    let mut levels = [Level { end: None, limit: 0 }; MAX_DEPTH];
    let mut depth = 0usize;
    let mut position = start;
    loop {
        while depth > 0 && levels[depth - 1].end.is_some_and(|end| position >= end) {
            depth -= 1;
        }
        if position >= bytes.len() {
            return Ok(());
        }
        let limit = if depth > 0 { levels[depth - 1].limit } else { bytes.len() };
        if limit == bytes.len() && bytes.len() - position < TAG_LEN {
            // dicom-parser takes a tag cut off by the end of the bytes as the end of the data set.
            return Ok(());
        }
        let offset = position;
        if extent == Extent::BeforePixelData && depth == 0 {
            // The reader stops at this tag; nothing after it, its own header included, is read.
            let tag = reader.u16_at(offset).zip(reader.u16_at(offset + 2)).map(|(group, element)| Tag(group, element));
            if tag.is_some_and(|tag| tag >= tags::PIXEL_DATA) {
                return Ok(());
            }
        }
        let header = reader.header(offset, limit)?;
        position += header.len;
        let undefined = header.length == UNDEFINED_LENGTH;
        if !undefined && header.length as usize > limit - position {
            return Err(LengthError::BeyondContainer {
                tag: header.tag,
                offset,
                declared: header.length,
                available: limit - position,
            });
        }
        let end = (!undefined).then(|| position + header.length as usize);
        match header.tag {
            ITEM_DELIMITATION | SEQUENCE_DELIMITATION => {
                if depth == 0 || levels[depth - 1].end.is_some() {
                    return Err(LengthError::StrayDelimiter { tag: header.tag, offset });
                }
                depth -= 1;
            }
            tags::PIXEL_DATA if undefined => position = skip_fragments(&reader, position, limit)?,
            _ if header.tag == ITEM || header.vr == VR::SQ || undefined => {
                if depth == MAX_DEPTH {
                    return Err(LengthError::TooDeep { offset, max: MAX_DEPTH });
                }
                levels[depth] = Level { end, limit: end.unwrap_or(limit) };
                depth += 1;
            }
            _ => position = end.unwrap_or(position),
        }
    }
}

/// Skips the items of encapsulated pixel data (PS3.5 A.4) up to and including its sequence
/// delimiter; returns the offset after it.
fn skip_fragments(reader: &Reader<'_>, mut position: usize, limit: usize) -> Result<usize, LengthError> {
    loop {
        let offset = position;
        let header = reader.header(offset, limit)?;
        position += header.len;
        match header.tag {
            SEQUENCE_DELIMITATION => return Ok(position),
            ITEM if header.length != UNDEFINED_LENGTH => {
                let available = limit - position;
                if header.length as usize > available {
                    return Err(LengthError::BeyondContainer {
                        tag: header.tag,
                        offset,
                        declared: header.length,
                        available,
                    });
                }
                position += header.length as usize;
            }
            tag => return Err(LengthError::BadFragment { tag, offset }),
        }
    }
}

#[derive(Debug)]
struct Header {
    tag: Tag,
    vr: VR,
    length: u32,
    /// Header size in bytes.
    len: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    encoding: Encoding,
}

impl Reader<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let pair: [u8; 2] = self.bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self.encoding {
            Encoding::ExplicitVrBigEndian => u16::from_be_bytes(pair),
            _ => u16::from_le_bytes(pair),
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let quad: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self.encoding {
            Encoding::ExplicitVrBigEndian => u32::from_be_bytes(quad),
            _ => u32::from_le_bytes(quad),
        })
    }

    /// The element header at `at`, which must end by `limit`.
    fn header(&self, at: usize, limit: usize) -> Result<Header, LengthError> {
        let cut_short = || LengthError::HeaderCutShort { offset: at, available: limit.saturating_sub(at) };
        let fits = |len: usize| at + len <= limit;
        if !fits(TAG_LEN) {
            return Err(cut_short());
        }
        let tag = Tag(self.u16_at(at).ok_or_else(cut_short)?, self.u16_at(at + 2).ok_or_else(cut_short)?);
        let (vr, length, len) = if tag.group() == ITEM_GROUP {
            (VR::UN, self.u32_at(at + 4), SHORT_HEADER_LEN)
        } else if self.encoding == Encoding::ImplicitVrLittleEndian {
            // As dicom-encoding's implicit VR decoder resolves it.
            let vr = if tag == tags::PIXEL_DATA || (tag.group() >> 8 == OVERLAY_GROUP_HIGH && tag.element() == 0x3000) {
                VR::OW
            } else {
                StandardDataDictionary.by_tag(tag).map_or(VR::UN, |entry| entry.vr.relaxed())
            };
            (vr, self.u32_at(at + 4), SHORT_HEADER_LEN)
        } else {
            let code: [u8; 2] =
                self.bytes.get(at + 4..at + 6).and_then(|code| code.try_into().ok()).ok_or_else(cut_short)?;
            let vr = VR::from_binary(code).unwrap_or(VR::UN);
            if has_short_length(vr) {
                (vr, self.u16_at(at + 6).map(u32::from), SHORT_HEADER_LEN)
            } else {
                (vr, self.u32_at(at + 8), LONG_HEADER_LEN)
            }
        };
        if !fits(len) {
            return Err(cut_short());
        }
        Ok(Header { tag, vr, length: length.ok_or_else(cut_short)?, len })
    }
}

/// PS3.5 7.1.2, Table 7.1-2: the VRs with a 16-bit value length in explicit VR; every other VR,
/// an unknown one included (read as UN), has 2 reserved bytes and a 32-bit length (Table 7.1-1).
pub fn has_short_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::AT
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::FL
            | VR::FD
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::SL
            | VR::SS
            | VR::ST
            | VR::TM
            | VR::UI
            | VR::UL
            | VR::US
    )
}

/// PS3.10 7.1: 128 bytes of preamble, then `DICM`, then group 0002.
const PREAMBLE_LEN: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";
/// Explicit VR Big Endian (PS3.5 A.3, retired).
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
/// PS3.5 7.1.1: undefined length.
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
/// PS3.5 7.5: Item (FFFE,E000).
const ITEM: Tag = Tag(0xFFFE, 0xE000);
/// PS3.5 7.5: Item Delimitation Item (FFFE,E00D).
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
/// PS3.5 7.5: Sequence Delimitation Item (FFFE,E0DD).
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
/// PS3.5 7.5: items and delimiters are in group FFFE.
const ITEM_GROUP: u16 = 0xFFFE;
/// PS3.5 C.9 (Overlay Data, 60xx,3000): the high byte of the repeating overlay groups.
const OVERLAY_GROUP_HIGH: u16 = 0x60;
const TAG_LEN: usize = 4;
/// Tag + length (implicit VR, items, delimiters), or tag + VR + 16-bit length.
const SHORT_HEADER_LEN: usize = 8;
/// Tag + VR + 2 reserved bytes + 32-bit length.
const LONG_HEADER_LEN: usize = 12;

#[cfg(test)]
mod tests {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_object::InMemDicomObject;
    use proptest::prelude::*;

    use super::*;

    const LITTLE: Encoding = Encoding::ExplicitVrLittleEndian;

    /// An Explicit VR Little Endian element.
    fn element(tag: Tag, vr: VR, value: &[u8]) -> Vec<u8> {
        element_declaring(tag, vr, value.len() as u32, value)
    }

    fn element_declaring(tag: Tag, vr: VR, length: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.group().to_le_bytes());
        out.extend_from_slice(&tag.element().to_le_bytes());
        out.extend_from_slice(&vr.to_bytes());
        if has_short_length(vr) {
            out.extend_from_slice(&(length as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&length.to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    /// An item or delimiter header (any encoding but big endian).
    fn item_header(tag: Tag, length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.group().to_le_bytes());
        out.extend_from_slice(&tag.element().to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out
    }

    /// A sequence of `items` (each a data set's bytes), with defined or undefined lengths.
    fn sequence(tag: Tag, vr: VR, items: &[Vec<u8>], defined: bool) -> Vec<u8> {
        let mut content = Vec::new();
        for item in items {
            if defined {
                content.extend(item_header(ITEM, item.len() as u32));
                content.extend_from_slice(item);
            } else {
                content.extend(item_header(ITEM, UNDEFINED_LENGTH));
                content.extend_from_slice(item);
                content.extend(item_header(ITEM_DELIMITATION, 0));
            }
        }
        if defined {
            element(tag, vr, &content)
        } else {
            content.extend(item_header(SEQUENCE_DELIMITATION, 0));
            element_declaring(tag, vr, UNDEFINED_LENGTH, &content)
        }
    }

    fn patient_id() -> Vec<u8> {
        element(tags::PATIENT_ID, VR::LO, b"P1")
    }

    /// Preamble, magic, a file meta group naming `transfer_syntax`, then `data_set`.
    fn part10(transfer_syntax: &str, data_set: &[u8], preamble: bool) -> Vec<u8> {
        let mut out = if preamble { vec![0; PREAMBLE_LEN] } else { Vec::new() };
        out.extend_from_slice(MAGIC);
        let mut uid = transfer_syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let meta = element(tags::TRANSFER_SYNTAX_UID, VR::UI, &uid);
        out.extend(element(tags::FILE_META_INFORMATION_GROUP_LENGTH, VR::UL, &(meta.len() as u32).to_le_bytes()));
        out.extend(meta);
        out.extend_from_slice(data_set);
        out
    }

    #[test]
    fn lying_lengths_and_deep_nesting_are_refused() {
        // (0010,0010) LO with a length far past the end.
        let mut bytes = patient_id();
        bytes.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'L', b'O', 0xFF, 0x7F]);
        let error = check_data_set(&bytes, LITTLE, Extent::Whole).unwrap_err();
        assert!(error.to_string().contains("declares 32767 bytes"), "{error}");
        assert_eq!(
            error,
            LengthError::BeyondContainer { tag: tags::PATIENT_NAME, offset: 10, declared: 32767, available: 0 }
        );

        // (0008,1115) SQ with a 4 GiB length.
        let evil = [0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF];
        assert!(matches!(check_data_set(&evil, LITTLE, Extent::Whole), Err(LengthError::BeyondContainer { .. })));

        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            // An undefined-length (0008,1115) holding an undefined-length item, implicit VR.
            deep.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            deep.extend(item_header(ITEM, UNDEFINED_LENGTH));
        }
        let error = check_data_set(&deep, Encoding::ImplicitVrLittleEndian, Extent::Whole).unwrap_err();
        assert!(error.to_string().contains("nested deeper"), "{error}");
        // 16 levels (8 sequences with their items) is fine.
        assert_eq!(check_data_set(&deep[..16 * 8], Encoding::ImplicitVrLittleEndian, Extent::Whole), Ok(()));
    }

    #[test]
    fn the_meta_group_ends_where_its_group_length_says_whatever_its_tags() {
        const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
        // A data set element after the meta group declaring far more than there is.
        let mut lying = patient_id();
        lying.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'L', b'O', 0xFF, 0x7F]);
        let mut file = part10(EXPLICIT_LE, &lying, true);
        for extent in [Extent::Whole, Extent::BeforePixelData] {
            assert!(matches!(check_part10(&file, extent), Err(LengthError::BeyondContainer { .. })), "{extent:?}");
        }
        // The meta group's second element corrupted into another group (past Pixel Data's): the
        // reader still takes the group length's worth as meta, finds the transfer syntax, and reads
        // the data set after it, so the lying length must still be found before Pixel Data.
        let meta_start = PREAMBLE_LEN + MAGIC.len() + 12;
        file[meta_start + 1] = 0x80;
        for extent in [Extent::Whole, Extent::BeforePixelData] {
            assert!(matches!(check_part10(&file, extent), Err(LengthError::BeyondContainer { .. })), "{extent:?}");
        }
        // A meta element running past the end.
        let cut = &file[..meta_start + 10];
        assert!(check_part10(cut, Extent::Whole).is_err());
        // No group length first: dicom-object refuses the file itself, without reading values.
        let mut no_length = Vec::from(*MAGIC);
        no_length.extend(element(tags::TRANSFER_SYNTAX_UID, VR::UI, b"1.2.840.10008.1.2.1\0"));
        no_length.extend_from_slice(&lying);
        assert_eq!(check_part10(&no_length, Extent::Whole), Ok(()));
    }

    #[test]
    fn nested_defined_lengths_must_fit_their_container() {
        // A sequence of 16 bytes holding an item that claims 100 (implicit VR).
        let mut bytes = vec![0x08, 0x00, 0x15, 0x11, 16, 0, 0, 0];
        bytes.extend(item_header(ITEM, 100));
        bytes.extend_from_slice(&[0; 104]);
        let error = check_data_set(&bytes, Encoding::ImplicitVrLittleEndian, Extent::Whole).unwrap_err();
        assert!(error.to_string().contains("in its container"), "{error}");

        // An undefined-length item inside a defined-length sequence: its elements are bounded by
        // the sequence, the nearest defined container.
        let mut item = item_header(ITEM, UNDEFINED_LENGTH);
        item.extend(element_declaring(tags::PATIENT_ID, VR::LO, 40, b"P1"));
        let mut bytes = element(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, &item);
        bytes.extend_from_slice(&[b' '; 64]);
        assert!(matches!(
            check_data_set(&bytes, LITTLE, Extent::Whole),
            Err(LengthError::BeyondContainer { tag: tags::PATIENT_ID, available: 2, .. })
        ));
        // A header that starts in its item and ends after it.
        let mut item = patient_id();
        item.extend_from_slice(&[0x10, 0x00]);
        let mut bytes = sequence(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, &[item], true);
        bytes.extend(patient_id());
        assert!(matches!(check_data_set(&bytes, LITTLE, Extent::Whole), Err(LengthError::HeaderCutShort { .. })));
    }

    #[test]
    fn well_formed_nesting_passes_in_either_length_form() {
        for defined in [true, false] {
            let inner = sequence(tags::REFERENCED_SOP_SEQUENCE, VR::SQ, &[patient_id(), Vec::new()], defined);
            let mut item = patient_id();
            item.extend(inner);
            let mut bytes = patient_id();
            bytes.extend(sequence(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, &[item.clone(), item], !defined));
            bytes.extend(element(tags::SOP_INSTANCE_UID, VR::UI, b"1.2\0"));
            assert_eq!(check_data_set(&bytes, LITTLE, Extent::Whole), Ok(()), "defined {defined}");
        }
    }

    #[test]
    fn stray_delimiters_are_refused() {
        let mut bytes = patient_id();
        bytes.extend(item_header(ITEM_DELIMITATION, 0));
        assert!(matches!(
            check_data_set(&bytes, LITTLE, Extent::Whole),
            Err(LengthError::StrayDelimiter { offset: 10, .. })
        ));
        // A delimiter inside a defined-length item closes nothing either.
        let mut item = patient_id();
        item.extend(item_header(ITEM_DELIMITATION, 0));
        let bytes = sequence(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, &[item], true);
        assert!(matches!(check_data_set(&bytes, LITTLE, Extent::Whole), Err(LengthError::StrayDelimiter { .. })));
    }

    #[test]
    fn a_cut_off_tag_is_the_end_but_a_cut_header_is_refused() {
        let mut bytes = patient_id();
        for extra in 1..TAG_LEN {
            bytes.push(0x10);
            assert_eq!(check_data_set(&bytes, LITTLE, Extent::Whole), Ok(()), "{extra} trailing bytes");
        }
        bytes.extend_from_slice(&[0x00, b'L', b'O']);
        assert!(matches!(
            check_data_set(&bytes, LITTLE, Extent::Whole),
            Err(LengthError::HeaderCutShort { offset: 10, available: 6 })
        ));
        // Open undefined-length containers at the end are the parser's to end.
        let open = element_declaring(
            tags::REFERENCED_SERIES_SEQUENCE,
            VR::SQ,
            UNDEFINED_LENGTH,
            &item_header(ITEM, UNDEFINED_LENGTH),
        );
        assert_eq!(check_data_set(&open, LITTLE, Extent::Whole), Ok(()));
    }

    #[test]
    fn an_undefined_length_un_is_walked_as_the_parser_reads_it() {
        // dicom-parser enters any undefined-length element as a sequence in the same syntax.
        let mut item = patient_id();
        let good = sequence(Tag(0x0009, 0x1010), VR::UN, std::slice::from_ref(&item), false);
        assert_eq!(check_data_set(&good, LITTLE, Extent::Whole), Ok(()));
        item.extend(element_declaring(tags::PATIENT_NAME, VR::PN, 0xF000, b""));
        let lying = sequence(Tag(0x0009, 0x1010), VR::UN, &[item], false);
        assert!(matches!(
            check_data_set(&lying, LITTLE, Extent::Whole),
            Err(LengthError::BeyondContainer { tag: tags::PATIENT_NAME, declared: 0xF000, .. })
        ));
    }

    /// Pixel data of `declared` bytes with only `present` of them there.
    fn with_pixel_data(declared: u32, present: usize) -> Vec<u8> {
        let mut bytes = patient_id();
        bytes.extend(element_declaring(tags::PIXEL_DATA, VR::OW, declared, &vec![0; present]));
        bytes
    }

    fn with_fragments(fragments: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = patient_id();
        bytes.extend(element_declaring(tags::PIXEL_DATA, VR::OB, UNDEFINED_LENGTH, b""));
        for fragment in fragments {
            bytes.extend_from_slice(fragment);
        }
        bytes.extend(item_header(SEQUENCE_DELIMITATION, 0));
        bytes
    }

    #[test]
    fn pixel_data_is_checked_only_when_the_reader_reads_it() {
        let cut_short = with_pixel_data(1_000_000, 16);
        assert_eq!(check_data_set(&cut_short, LITTLE, Extent::BeforePixelData), Ok(()));
        assert!(matches!(
            check_data_set(&cut_short, LITTLE, Extent::Whole),
            Err(LengthError::BeyondContainer { tag: tags::PIXEL_DATA, declared: 1_000_000, available: 16, .. })
        ));
        assert_eq!(check_data_set(&with_pixel_data(16, 16), LITTLE, Extent::Whole), Ok(()));
        // A header kept up to Pixel Data may end inside the Pixel Data header.
        let header_cut = &with_pixel_data(16, 0)[..patient_id().len() + 6];
        assert_eq!(check_data_set(header_cut, LITTLE, Extent::BeforePixelData), Ok(()));

        let mut offset_table = item_header(ITEM, 0);
        let mut fragment = item_header(ITEM, 4);
        fragment.extend_from_slice(&[1, 2, 3, 4]);
        let good = with_fragments(&[offset_table.clone(), fragment.clone()]);
        assert_eq!(check_data_set(&good, LITTLE, Extent::Whole), Ok(()));
        offset_table = item_header(ITEM, 0x7000_0000);
        let lying = with_fragments(&[offset_table, fragment]);
        assert_eq!(check_data_set(&lying, LITTLE, Extent::BeforePixelData), Ok(()));
        assert!(matches!(
            check_data_set(&lying, LITTLE, Extent::Whole),
            Err(LengthError::BeyondContainer { tag: ITEM, .. })
        ));
        let undefined = with_fragments(&[item_header(ITEM, UNDEFINED_LENGTH)]);
        assert!(matches!(check_data_set(&undefined, LITTLE, Extent::Whole), Err(LengthError::BadFragment { .. })));

        // Nested encapsulated pixel data (an icon) is read in either extent.
        let icon = sequence(tags::ICON_IMAGE_SEQUENCE, VR::SQ, &[lying[patient_id().len()..].to_vec()], false);
        let mut bytes = patient_id();
        bytes.extend(icon);
        assert!(check_data_set(&bytes, LITTLE, Extent::BeforePixelData).is_err());
    }

    #[test]
    fn part10_files_are_walked_in_the_transfer_syntax_their_meta_names() {
        let lying = {
            let mut bytes = patient_id();
            bytes.extend(element_declaring(tags::PATIENT_NAME, VR::PN, 0x7FFF, b"A^B "));
            bytes
        };
        for preamble in [true, false] {
            assert_eq!(
                check_part10(&part10(uids::EXPLICIT_VR_LITTLE_ENDIAN, &patient_id(), preamble), Extent::Whole),
                Ok(())
            );
            let file = part10(uids::EXPLICIT_VR_LITTLE_ENDIAN, &lying, preamble);
            let error = check_part10(&file, Extent::Whole).unwrap_err();
            // Offsets count from the start of the file.
            let expected = file.len() - lying.len() + patient_id().len();
            assert!(matches!(error, LengthError::BeyondContainer { offset, .. } if offset == expected), "{error:?}");
        }
        // Implicit VR: the same bytes mean something else, and the lie is found there too.
        let mut implicit = vec![0x10, 0x00, 0x20, 0x00, 2, 0, 0, 0, b'P', b'1'];
        implicit.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 0xFF, 0x7F, 0, 0]);
        let file = part10(uids::IMPLICIT_VR_LITTLE_ENDIAN, &implicit, true);
        assert!(matches!(
            check_part10(&file, Extent::Whole),
            Err(LengthError::BeyondContainer { declared: 0x7FFF, .. })
        ));
        // Big endian.
        let big = [0x00, 0x10, 0x00, 0x10, b'P', b'N', 0x7F, 0xFF];
        let file = part10(EXPLICIT_VR_BIG_ENDIAN, &big, true);
        assert!(matches!(
            check_part10(&file, Extent::Whole),
            Err(LengthError::BeyondContainer { declared: 0x7FFF, .. })
        ));
        // Deflated data sets and bytes without DICM are the reader's to refuse.
        assert_eq!(
            check_part10(&part10(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, &lying, true), Extent::Whole),
            Ok(())
        );
        assert_eq!(check_part10(&lying, Extent::Whole), Ok(()));
    }

    #[test]
    fn a_lying_file_meta_length_is_refused() {
        let mut file = part10(uids::EXPLICIT_VR_LITTLE_ENDIAN, &patient_id(), true);
        // The Transfer Syntax UID's 16-bit length, made huge.
        let at = PREAMBLE_LEN + MAGIC.len() + 12 + 6;
        file[at..at + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
        assert!(matches!(
            check_part10(&file, Extent::Whole),
            Err(LengthError::BeyondContainer { tag: tags::TRANSFER_SYNTAX_UID, .. })
        ));
        // An undefined length in the meta group is a length too (it holds no sequence).
        let mut file = vec![0; PREAMBLE_LEN];
        file.extend_from_slice(MAGIC);
        file.extend(element_declaring(Tag(0x0002, 0x0001), VR::OB, UNDEFINED_LENGTH, &[0, 1]));
        assert!(matches!(check_part10(&file, Extent::Whole), Err(LengthError::BeyondContainer { .. })));
    }

    #[test]
    fn encodings_follow_the_transfer_syntax() {
        assert_eq!(Encoding::of_transfer_syntax("1.2.840.10008.1.2\0"), Some(Encoding::ImplicitVrLittleEndian));
        assert_eq!(Encoding::of_transfer_syntax(uids::JPEG_BASELINE8_BIT), Some(Encoding::ExplicitVrLittleEndian));
        assert_eq!(Encoding::of_transfer_syntax(EXPLICIT_VR_BIG_ENDIAN), Some(Encoding::ExplicitVrBigEndian));
        assert_eq!(Encoding::of_transfer_syntax(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN), None);
    }

    /// Objects with nested sequences and every kind of value.
    fn object() -> impl Strategy<Value = InMemDicomObject> {
        let leaf = prop_oneof![
            "[ -~]{0,15}".prop_map(|text| DataElement::new(tags::PATIENT_NAME, VR::PN, text.as_str())),
            "[0-9.]{0,20}".prop_map(|uid| DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, uid.as_str())),
            proptest::collection::vec(any::<u16>(), 0..5).prop_map(|values| DataElement::new(
                tags::ROWS,
                VR::US,
                PrimitiveValue::U16(values.into_iter().collect())
            )),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|bytes| DataElement::new(
                Tag(0x0009, 0x1002),
                VR::OB,
                PrimitiveValue::U8(bytes.into_iter().collect())
            )),
        ];
        let element = leaf.prop_recursive(4, 32, 4, |element| {
            (any::<u8>(), proptest::collection::vec(proptest::collection::vec(element, 0..4), 0..3)).prop_map(
                |(which, items)| {
                    let tag = [tags::REFERENCED_SERIES_SEQUENCE, tags::REFERENCED_SOP_SEQUENCE, tags::CONTENT_SEQUENCE]
                        [which as usize % 3];
                    let items = items.into_iter().map(InMemDicomObject::from_element_iter).collect::<Vec<_>>();
                    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
                },
            )
        });
        proptest::collection::vec(element, 0..8).prop_map(InMemDicomObject::from_element_iter)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// What dicom-object writes, in either little endian syntax, always passes.
        #[test]
        fn what_dicom_object_writes_passes(object in object(), implicit in any::<bool>()) {
            let (uid, encoding) = if implicit {
                (uids::IMPLICIT_VR_LITTLE_ENDIAN, Encoding::ImplicitVrLittleEndian)
            } else {
                (uids::EXPLICIT_VR_LITTLE_ENDIAN, LITTLE)
            };
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uid).unwrap();
            let mut bytes = Vec::new();
            object.write_dataset_with_ts(&mut bytes, ts).unwrap();
            prop_assert_eq!(check_data_set(&bytes, encoding, Extent::Whole), Ok(()));
            prop_assert_eq!(check_data_set(&bytes, encoding, Extent::BeforePixelData), Ok(()));
        }

        /// Any prefix of a good data set passes or fails, without panicking.
        #[test]
        fn cuts_of_a_good_data_set_never_panic(object in object(), cut in any::<prop::sample::Index>()) {
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
            let mut bytes = Vec::new();
            object.write_dataset_with_ts(&mut bytes, ts).unwrap();
            if !bytes.is_empty() {
                let cut = cut.index(bytes.len());
                let _ = check_data_set(&bytes[..cut], LITTLE, Extent::Whole);
            }
        }
    }
}
