//! A bounded pre-scan of Part 10 bytes: every declared element length must fit in the bytes that
//! are there, before dicom-object reads them.
//!
//! dicom-parser 0.10 reserves and zero-fills a value's declared length before reading it
//! (`stateful/decode.rs`, `try_reserve_exact` + `resize`), so one corrupted length field makes it
//! allocate and clear up to 4 GiB (measured: up to 50 s per object in a debug build). Objects
//! reach us from the network (C-STORE, WADO) and from patient media, so the length is checked
//! here first, in O(n) and without allocation.
//!
//! The walk is flat: sequences and items are descended, not skipped, so nested lengths are
//! checked too. It stops (accepting the rest) at Pixel Data that is encapsulated or cut short,
//! since headers are read only up to Pixel Data, and at UN elements of undefined length (their
//! content is implicit VR and is not worth a second walker). Without a file meta group it accepts
//! and leaves the refusal to dicom-object.

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags, uids};

/// A declared length runs past the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("element {tag} at byte {offset} declares {declared} bytes but only {available} remain")]
pub struct LengthError {
    pub tag: Tag,
    pub offset: usize,
    pub declared: u32,
    pub available: usize,
}

/// Checks every declared length in a Part 10 object (with or without the 128-byte preamble).
pub fn check_declared_lengths(bytes: &[u8]) -> Result<(), LengthError> {
    let start = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.get(..4) == Some(b"DICM") {
        4
    } else {
        return Ok(());
    };
    let mut walker = Walker { bytes, position: start, encoding: Encoding::ExplicitLittle };
    let mut transfer_syntax = String::new();
    // File meta group: always explicit VR little endian (PS3.10 7.1).
    while let Some(header) = walker.peek_group().filter(|&group| group == 0x0002).and_then(|_| walker.header()) {
        let header = header?;
        let value = walker.value(&header)?;
        if header.tag == tags::TRANSFER_SYNTAX_UID {
            transfer_syntax = String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_owned();
        }
    }
    walker.encoding = match transfer_syntax.as_str() {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => Encoding::ImplicitLittle,
        EXPLICIT_VR_BIG_ENDIAN => Encoding::ExplicitBig,
        // Deflated data sets can't be walked; dicom-object refuses them without its feature.
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => return Ok(()),
        _ => Encoding::ExplicitLittle,
    };
    while let Some(header) = walker.header() {
        let header = header?;
        if header.tag == tags::PIXEL_DATA && (header.length == UNDEFINED || header.length as usize > walker.remaining())
        {
            return Ok(());
        }
        let descend = header.length == UNDEFINED || header.vr == VR::SQ || header.tag.group() == 0xFFFE;
        if header.length == UNDEFINED && header.vr == VR::UN {
            return Ok(());
        }
        if !descend {
            walker.value(&header)?;
        }
    }
    Ok(())
}

const UNDEFINED: u32 = u32::MAX;
/// Explicit VR Big Endian: retired (PS3.5 A.3) but still found on old media.
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ExplicitLittle,
    ExplicitBig,
    ImplicitLittle,
}

#[derive(Debug)]
struct Header {
    tag: Tag,
    vr: VR,
    length: u32,
    offset: usize,
}

struct Walker<'a> {
    bytes: &'a [u8],
    position: usize,
    encoding: Encoding,
}

impl<'a> Walker<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let pair: [u8; 2] = self.bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if self.encoding == Encoding::ExplicitBig { u16::from_be_bytes(pair) } else { u16::from_le_bytes(pair) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let quad: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.encoding == Encoding::ExplicitBig { u32::from_be_bytes(quad) } else { u32::from_le_bytes(quad) })
    }

    fn peek_group(&self) -> Option<u16> {
        self.u16_at(self.position)
    }

    /// The next element header, `None` at the end (a header cut short is left to dicom-object,
    /// which reports it without a large allocation).
    fn header(&mut self) -> Option<Result<Header, LengthError>> {
        let offset = self.position;
        let tag = Tag(self.u16_at(offset)?, self.u16_at(offset + 2)?);
        let (vr, length, header_len) = if tag.group() == 0xFFFE {
            (VR::UN, self.u32_at(offset + 4)?, 8)
        } else if self.encoding == Encoding::ImplicitLittle {
            let vr = StandardDataDictionary.by_tag(tag).map_or(VR::UN, |entry| entry.vr.relaxed());
            (vr, self.u32_at(offset + 4)?, 8)
        } else {
            let code: [u8; 2] = self.bytes.get(offset + 4..offset + 6)?.try_into().ok()?;
            let vr = VR::from_binary(code).unwrap_or(VR::UN);
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
                (vr, self.u32_at(offset + 8)?, 12)
            } else {
                (vr, u32::from(self.u16_at(offset + 6)?), 8)
            }
        };
        self.position = offset + header_len;
        if length != UNDEFINED && length as usize > self.remaining() {
            return Some(Err(LengthError { tag, offset, declared: length, available: self.remaining() }));
        }
        Some(Ok(Header { tag, vr, length, offset }))
    }

    fn value(&mut self, header: &Header) -> Result<&'a [u8], LengthError> {
        if header.length == UNDEFINED {
            return Ok(&[]);
        }
        let end = self.position + header.length as usize;
        let value = self.bytes.get(self.position..end).ok_or(LengthError {
            tag: header.tag,
            offset: header.offset,
            declared: header.length,
            available: self.remaining(),
        })?;
        self.position = end;
        Ok(value)
    }
}
