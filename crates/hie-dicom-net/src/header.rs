//! The header of a streamed instance: [`HeaderCollector`] keeps a C-STORE data set only up to
//! its top-level Pixel Data (7FE0,0010), scanning the elements as the fragments arrive, so that
//! what a manifest needs (UIDs, patient and study attributes) is kept and the pixel data never
//! is; [`part10_header`] puts File Meta Information (PS3.10 7.1) in front of that prefix, so it
//! reads back as an ordinary Part 10 object. [`file_meta`] is that File Meta alone, for a data
//! set that streams behind it (RAD-69 parts of DIMSE retrievals).
//!
//! The scan walks element headers only (PS3.5 7.1): defined-length values, sequences and items
//! are skipped whole; undefined-length sequences and items are entered (their elements are not
//! top level) and left at their delimiters (PS3.5 7.5), with a fixed depth bound. Explicit and
//! Implicit VR Little Endian are read, and every transfer syntax whose data set is Explicit VR
//! Little Endian (the encapsulated ones). Deflated Explicit VR Little Endian (the data set is
//! deflated, PS3.5 A.5) and the retired Explicit VR Big Endian are refused: a listener should
//! not accept them in negotiation ([`UNREADABLE_TRANSFER_SYNTAXES`]).
//!
//! Bounded: at most `max_bytes` are kept before Pixel Data appears (plus one fragment while it
//! is scanned); a lying length makes the scan skip past what arrives, so the data set ends inside
//! an element and [`HeaderCollector::finish`] reports it malformed. Nothing is allocated from a
//! declared length.

use std::fmt;

use hie_dimse::uids;

use crate::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Transfer syntaxes whose data sets the collector cannot scan; refuse them in negotiation.
pub const UNREADABLE_TRANSFER_SYNTAXES: &[&str] = &[DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN];

/// Why a header could not be collected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The data set is in a transfer syntax the scan does not read (see the module doc).
    #[error("transfer syntax {0} is not read (deflated or big endian data set)")]
    UnreadableTransferSyntax(String),
    /// More than `max` bytes came before Pixel Data (or before the end, for an object without).
    #[error("the header before Pixel Data exceeds {max} bytes")]
    TooLarge { max: usize },
    /// The element structure is broken (the sender's fault); says what and where.
    #[error("malformed data set: {0}")]
    Malformed(String),
}

/// Keeps the prefix of a data set before its top-level Pixel Data. See the module doc.
#[derive(Debug)]
pub struct HeaderCollector {
    encoding: Encoding,
    max_bytes: usize,
    /// Every byte received so far, up to the end of the prefix once it is known.
    bytes: Vec<u8>,
    /// Offset of the next element header to read (may lie beyond `bytes` while a value is
    /// skipped).
    position: usize,
    /// Open undefined-length sequences and items.
    stack: Vec<Frame>,
    /// Set once a top-level element at or after (7FE0,0000) was found: the prefix ends there.
    end: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
}

/// An open undefined-length container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A sequence (or encapsulated pixel data): holds items, ends at a Sequence Delimitation Item.
    Sequence(Encoding),
    /// An item: holds elements, ends at an Item Delimitation Item.
    Item(Encoding),
}

impl Frame {
    fn encoding(self) -> Encoding {
        match self {
            Frame::Sequence(encoding) | Frame::Item(encoding) => encoding,
        }
    }
}

impl HeaderCollector {
    /// A collector for a data set in `transfer_syntax_uid`, keeping at most `max_bytes`.
    pub fn new(transfer_syntax_uid: &str, max_bytes: usize) -> Result<HeaderCollector, HeaderError> {
        let transfer_syntax = transfer_syntax_uid.trim_end_matches(['\0', ' ']);
        let encoding = match transfer_syntax {
            uids::IMPLICIT_VR_LITTLE_ENDIAN => Encoding::ImplicitLittle,
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN | EXPLICIT_VR_BIG_ENDIAN => {
                return Err(HeaderError::UnreadableTransferSyntax(transfer_syntax.to_owned()));
            }
            // PS3.5 A.4: every other standard transfer syntax encodes the data set in Explicit
            // VR Little Endian (the compressed ones encapsulate only the pixel data).
            _ => Encoding::ExplicitLittle,
        };
        Ok(HeaderCollector { encoding, max_bytes, bytes: Vec::new(), position: 0, stack: Vec::new(), end: None })
    }

    /// Takes the next fragment of the data set.
    pub fn push(&mut self, fragment: &[u8]) -> Result<(), HeaderError> {
        if self.end.is_some() {
            return Ok(());
        }
        self.bytes.extend_from_slice(fragment);
        self.scan()?;
        if let Some(end) = self.end {
            self.bytes.truncate(end);
            self.bytes.shrink_to_fit();
        } else if self.bytes.len() > self.max_bytes {
            return Err(HeaderError::TooLarge { max: self.max_bytes });
        }
        Ok(())
    }

    /// Whether the top-level Pixel Data was found (the rest of the data set is not needed).
    pub fn is_complete(&self) -> bool {
        self.end.is_some()
    }

    /// The data set is complete: the prefix before Pixel Data, or the whole data set for an
    /// object without one, once its structure checks out.
    pub fn finish(self) -> Result<Vec<u8>, HeaderError> {
        if self.end.is_some() {
            return Ok(self.bytes);
        }
        if self.position > self.bytes.len() {
            return Err(HeaderError::Malformed(format!(
                "the data set ends at byte {} inside an element whose value runs to byte {}",
                self.bytes.len(),
                self.position
            )));
        }
        if self.position < self.bytes.len() {
            return Err(HeaderError::Malformed(format!(
                "the data set ends inside an element header at byte {}",
                self.position
            )));
        }
        if !self.stack.is_empty() {
            return Err(HeaderError::Malformed(format!(
                "the data set ends inside {} undefined-length sequence(s) or item(s)",
                self.stack.len()
            )));
        }
        Ok(self.bytes)
    }

    /// Reads every complete element header available.
    fn scan(&mut self) -> Result<(), HeaderError> {
        loop {
            let at = self.position;
            let Some(header) = self.header_at(at)? else { return Ok(()) };
            let top_level = self.stack.is_empty();
            if header.tag.0 == ITEM_GROUP {
                self.delimiter_or_item(&header, at)?;
                continue;
            }
            if matches!(self.stack.last(), Some(Frame::Sequence(_))) {
                return Err(HeaderError::Malformed(format!(
                    "element {} at byte {at} inside a sequence, where only items may be",
                    header.tag
                )));
            }
            if top_level && header.tag >= PIXEL_DATA_GROUP_START {
                self.end = Some(at);
                return Ok(());
            }
            if header.length == UNDEFINED_LENGTH {
                let inner = match (header.vr, self.current_encoding()) {
                    // PS3.5 7.5.1: in Implicit VR an undefined length marks a sequence.
                    (_, Encoding::ImplicitLittle) => Encoding::ImplicitLittle,
                    (Some(VR_SQ), encoding) => encoding,
                    // PS3.5 6.2.2 note: UN of undefined length holds a sequence in Implicit VR.
                    (Some(VR_UN), _) => Encoding::ImplicitLittle,
                    // Encapsulated pixel data inside an item (an icon image): fragments as items.
                    (Some(VR_OB | VR_OW), encoding) => encoding,
                    (vr, _) => {
                        return Err(HeaderError::Malformed(format!(
                            "element {} ({}) at byte {at} has an undefined length, which only sequences may have",
                            header.tag,
                            vr.map(|vr| String::from_utf8_lossy(&vr).into_owned()).unwrap_or_default()
                        )));
                    }
                };
                self.open(Frame::Sequence(inner), at)?;
                self.position = at + header.len;
            } else {
                self.position = at.saturating_add(header.len).saturating_add(header.length as usize);
            }
        }
    }

    /// An item or a delimiter (group FFFE, PS3.5 7.5).
    fn delimiter_or_item(&mut self, header: &ElementHeader, at: usize) -> Result<(), HeaderError> {
        let misplaced = || HeaderError::Malformed(format!("{} at byte {at} where it closes nothing", header.tag));
        match (header.tag.1, self.stack.last().copied()) {
            (ITEM, Some(Frame::Sequence(encoding))) => {
                if header.length == UNDEFINED_LENGTH {
                    self.open(Frame::Item(encoding), at)?;
                    self.position = at + header.len;
                } else {
                    self.position = at.saturating_add(header.len).saturating_add(header.length as usize);
                }
            }
            (ITEM_DELIMITATION, Some(Frame::Item(_))) | (SEQUENCE_DELIMITATION, Some(Frame::Sequence(_))) => {
                self.stack.pop();
                self.position = at + header.len;
            }
            _ => return Err(misplaced()),
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, at: usize) -> Result<(), HeaderError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(HeaderError::Malformed(format!(
                "sequences nested deeper than {MAX_DEPTH} levels at byte {at}"
            )));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn current_encoding(&self) -> Encoding {
        self.stack.last().map_or(self.encoding, |frame| frame.encoding())
    }

    /// The element header at `at`, or `None` until its bytes have arrived.
    fn header_at(&self, at: usize) -> Result<Option<ElementHeader>, HeaderError> {
        let Some(short) = self.bytes.get(at..at.saturating_add(SHORT_HEADER)) else { return Ok(None) };
        let tag = Tag(u16::from_le_bytes([short[0], short[1]]), u16::from_le_bytes([short[2], short[3]]));
        // PS3.5 7.5: items and delimiters carry no VR in any transfer syntax.
        if tag.0 == ITEM_GROUP || self.current_encoding() == Encoding::ImplicitLittle {
            let length = u32::from_le_bytes([short[4], short[5], short[6], short[7]]);
            return Ok(Some(ElementHeader { tag, vr: None, length, len: SHORT_HEADER }));
        }
        let vr = [short[4], short[5]];
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(HeaderError::Malformed(format!("element {tag} at byte {at} has no valid VR ({vr:02X?})")));
        }
        if LONG_LENGTH_VRS.contains(&vr) {
            let Some(long) = self.bytes.get(at..at.saturating_add(LONG_HEADER)) else { return Ok(None) };
            let length = u32::from_le_bytes([long[8], long[9], long[10], long[11]]);
            return Ok(Some(ElementHeader { tag, vr: Some(vr), length, len: LONG_HEADER }));
        }
        let length = u32::from(u16::from_le_bytes([short[6], short[7]]));
        Ok(Some(ElementHeader { tag, vr: Some(vr), length, len: SHORT_HEADER }))
    }
}

/// A data element tag (group, element), ordered as the standard orders data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tag(u16, u16);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:04X},{:04X})", self.0, self.1)
    }
}

struct ElementHeader {
    tag: Tag,
    /// `None` in Implicit VR and for items and delimiters.
    vr: Option<[u8; 2]>,
    length: u32,
    /// Header size in bytes.
    len: usize,
}

/// The identity a generated File Meta Information carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaIdentity<'a> {
    /// Media Storage SOP Class UID (0002,0002): the C-STORE's Affected SOP Class UID.
    pub sop_class_uid: &'a str,
    /// Media Storage SOP Instance UID (0002,0003).
    pub sop_instance_uid: &'a str,
    /// Transfer Syntax UID (0002,0010): the presentation context's.
    pub transfer_syntax_uid: &'a str,
    /// Source Application Entity Title (0002,0016): who sent it; left out when not a valid AE.
    pub source_ae_title: &'a str,
}

/// The 128-byte preamble, `DICM` and the File Meta Information (PS3.10 7.1) in Explicit VR
/// Little Endian with our implementation identity: what goes in front of a data set to make it a
/// Part 10 object. A data set that streams (a RAD-69 part) follows it unchanged; one in memory is
/// joined to it by [`part10_header`]. The one writer of File Meta in hie-edge.
pub fn file_meta(identity: &MetaIdentity<'_>) -> Vec<u8> {
    write_file_meta(identity, 0)
}

/// A DICOM Part 10 object (PS3.10 7.1): [`file_meta`], then `data_set` unchanged.
pub fn part10_header(identity: &MetaIdentity<'_>, data_set: &[u8]) -> Vec<u8> {
    let mut out = write_file_meta(identity, data_set.len());
    out.extend_from_slice(data_set);
    out
}

/// [`file_meta`] in a buffer with room for `room` more bytes.
fn write_file_meta(identity: &MetaIdentity<'_>, room: usize) -> Vec<u8> {
    let mut meta = Vec::with_capacity(META_CAPACITY);
    // PS3.10 Table 7.1-1: File Meta Information Version (0002,0001), OB (two reserved bytes and
    // a 32-bit length, PS3.5 7.1.2), value 00 01.
    meta.extend_from_slice(&META_GROUP.to_le_bytes());
    meta.extend_from_slice(&META_FILE_META_INFORMATION_VERSION.to_le_bytes());
    meta.extend_from_slice(b"OB\0\0");
    meta.extend_from_slice(&(META_VERSION.len() as u32).to_le_bytes());
    meta.extend_from_slice(&META_VERSION);
    put_text(&mut meta, META_MEDIA_STORAGE_SOP_CLASS_UID, *b"UI", identity.sop_class_uid, 0);
    put_text(&mut meta, META_MEDIA_STORAGE_SOP_INSTANCE_UID, *b"UI", identity.sop_instance_uid, 0);
    put_text(&mut meta, META_TRANSFER_SYNTAX_UID, *b"UI", identity.transfer_syntax_uid, 0);
    put_text(&mut meta, META_IMPLEMENTATION_CLASS_UID, *b"UI", IMPLEMENTATION_CLASS_UID, 0);
    put_text(&mut meta, META_IMPLEMENTATION_VERSION_NAME, *b"SH", IMPLEMENTATION_VERSION_NAME, b' ');
    let source = identity.source_ae_title.trim();
    if crate::client::check_ae_title("source", source).is_ok() {
        put_text(&mut meta, META_SOURCE_APPLICATION_ENTITY_TITLE, *b"AE", source, b' ');
    }
    let mut out = Vec::with_capacity(PREAMBLE_LEN + MAGIC.len() + GROUP_LENGTH_ELEMENT_LEN + meta.len() + room);
    out.resize(PREAMBLE_LEN, 0);
    out.extend_from_slice(MAGIC);
    // (0002,0000) File Meta Information Group Length, UL: the bytes of the elements after it.
    out.extend_from_slice(&META_GROUP.to_le_bytes());
    out.extend_from_slice(&META_GROUP_LENGTH.to_le_bytes());
    out.extend_from_slice(b"UL");
    out.extend_from_slice(&4_u16.to_le_bytes());
    // Six short elements of at most 64 bytes each: far below u32::MAX.
    out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&meta);
    out
}

/// One meta element with a short (16-bit) length, its value padded to even length with `pad`.
fn put_text(out: &mut Vec<u8>, element: u16, vr: [u8; 2], value: &str, pad: u8) {
    let value = value.trim_end_matches(['\0', ' ']).as_bytes();
    let padded = value.len() + value.len() % 2;
    out.extend_from_slice(&META_GROUP.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&vr);
    out.extend_from_slice(&u16::try_from(padded).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(value);
    if padded > value.len() {
        out.push(pad);
    }
}

/// A header larger than this before Pixel Data is refused by default: real ones are a few KiB
/// to a few hundred KiB (large private groups, embedded reports).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024 * 1024;
/// Deflated Explicit VR Little Endian (PS3.5 A.5).
pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (PS3.5 A.3, retired).
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
/// Deeper nesting of undefined-length sequences is refused (real headers nest two or three): the
/// bound of the declared-length pre-scan that reads these headers back.
pub const MAX_DEPTH: usize = hie_dimse::bounds::MAX_DEPTH;
/// PS3.5 7.1.1: undefined length.
const UNDEFINED_LENGTH: u32 = u32::MAX;
/// PS3.5 7.5: items and delimiters are in group FFFE.
const ITEM_GROUP: u16 = 0xFFFE;
/// Item (FFFE,E000).
const ITEM: u16 = 0xE000;
/// Item Delimitation Item (FFFE,E00D).
const ITEM_DELIMITATION: u16 = 0xE00D;
/// Sequence Delimitation Item (FFFE,E0DD).
const SEQUENCE_DELIMITATION: u16 = 0xE0DD;
/// The first tag of the pixel data group: the header ends at the first top-level element from
/// here on (PS3.3 C.7.6.3: Pixel Data (7FE0,0010) and its float variants, offset tables).
const PIXEL_DATA_GROUP_START: Tag = Tag(0x7FE0, 0x0000);
/// PS3.5 Table 7.1-1: these VRs have 2 reserved bytes and a 32-bit length.
const LONG_LENGTH_VRS: &[[u8; 2]] =
    &[*b"OB", *b"OD", *b"OF", *b"OL", *b"OV", *b"OW", *b"SQ", *b"SV", *b"UC", *b"UN", *b"UR", *b"UT", *b"UV"];
const VR_SQ: [u8; 2] = *b"SQ";
const VR_UN: [u8; 2] = *b"UN";
const VR_OB: [u8; 2] = *b"OB";
const VR_OW: [u8; 2] = *b"OW";
/// Tag, VR and 16-bit length; or tag and 32-bit length (Implicit VR, items).
const SHORT_HEADER: usize = 8;
/// Tag, VR, 2 reserved bytes and a 32-bit length.
const LONG_HEADER: usize = 12;
/// PS3.10 7.1: the preamble.
const PREAMBLE_LEN: usize = 128;
/// PS3.10 7.1: the DICOM prefix.
const MAGIC: &[u8] = b"DICM";
/// (0002,0000) UL: tag, VR, length, 4-byte value.
const GROUP_LENGTH_ELEMENT_LEN: usize = 12;
const META_GROUP: u16 = 0x0002;
const META_GROUP_LENGTH: u16 = 0x0000;
const META_FILE_META_INFORMATION_VERSION: u16 = 0x0001;
/// File Meta Information Version value (PS3.10 7.1): version 1 as the bit in the second byte.
const META_VERSION: [u8; 2] = [0x00, 0x01];
const META_MEDIA_STORAGE_SOP_CLASS_UID: u16 = 0x0002;
const META_MEDIA_STORAGE_SOP_INSTANCE_UID: u16 = 0x0003;
const META_TRANSFER_SYNTAX_UID: u16 = 0x0010;
const META_IMPLEMENTATION_CLASS_UID: u16 = 0x0012;
const META_IMPLEMENTATION_VERSION_NAME: u16 = 0x0013;
const META_SOURCE_APPLICATION_ENTITY_TITLE: u16 = 0x0016;
/// A meta group with four UIDs is about 250 bytes.
const META_CAPACITY: usize = 320;

#[cfg(test)]
mod tests {
    use super::*;

    /// (0010,0010) PN "DOE^J" in explicit VR.
    const NAME_EXPLICIT: [u8; 14] = [0x10, 0x00, 0x10, 0x00, b'P', b'N', 6, 0, b'D', b'O', b'E', b'^', b'J', b' '];

    fn collect(ts: &str, bytes: &[u8], chunk: usize) -> Result<Vec<u8>, HeaderError> {
        let mut collector = HeaderCollector::new(ts, 1 << 20)?;
        for piece in bytes.chunks(chunk.max(1)) {
            collector.push(piece)?;
        }
        collector.finish()
    }

    #[test]
    fn the_prefix_stops_at_top_level_pixel_data_in_any_chunking() {
        let mut data = NAME_EXPLICIT.to_vec();
        // (0008,1115) SQ undefined length, one undefined-length item holding (7FE0,0010) OB of
        // 2 bytes (not top level), item delimiter, sequence delimiter.
        data.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 2, 0, 0, 0, 7, 7]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        data.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let prefix_len = data.len();
        // Top-level Pixel Data with a length far beyond what follows: never read.
        data.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0x00, 0x00, 0x00, 0x40, 1, 2, 3, 4]);
        for chunk in [1, 3, 7, 1000] {
            let prefix = collect(uids::EXPLICIT_VR_LITTLE_ENDIAN, &data, chunk).unwrap();
            assert_eq!(prefix, data[..prefix_len], "chunk {chunk}");
        }
    }

    #[test]
    fn implicit_vr_sequences_and_objects_without_pixel_data() {
        let mut data = Vec::new();
        // (0010,0010) implicit, 4 bytes.
        data.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 4, 0, 0, 0, b'A', b'^', b'B', b' ']);
        // (0040,A730) undefined length (a sequence in implicit VR), item of defined length 8
        // holding (0040,A010) of 0 bytes, then the sequence delimiter.
        data.extend_from_slice(&[0x40, 0x00, 0x30, 0xA7, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0]);
        data.extend_from_slice(&[0x40, 0x00, 0x10, 0xA0, 0, 0, 0, 0]);
        data.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(collect(uids::IMPLICIT_VR_LITTLE_ENDIAN, &data, 5).unwrap(), data);
    }

    #[test]
    fn lying_lengths_deep_nesting_and_stray_delimiters_are_malformed() {
        let mut lying = NAME_EXPLICIT.to_vec();
        lying.extend_from_slice(&[0x10, 0x00, 0x20, 0x00, b'L', b'O', 0xFF, 0x7F, b'x', b'y']);
        let error = collect(uids::EXPLICIT_VR_LITTLE_ENDIAN, &lying, 4).unwrap_err();
        assert!(matches!(&error, HeaderError::Malformed(text) if text.contains("inside an element")), "{error}");

        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let error = collect(uids::IMPLICIT_VR_LITTLE_ENDIAN, &deep, 64).unwrap_err();
        assert!(matches!(&error, HeaderError::Malformed(text) if text.contains("nested deeper")), "{error}");

        let stray = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        assert!(matches!(collect(uids::IMPLICIT_VR_LITTLE_ENDIAN, &stray, 8), Err(HeaderError::Malformed(_))));
        let garbage = [0x10, 0x00, 0x10, 0x00, 0x01, 0x02, 0, 0];
        assert!(matches!(collect(uids::EXPLICIT_VR_LITTLE_ENDIAN, &garbage, 8), Err(HeaderError::Malformed(_))));
        let mut unclosed = NAME_EXPLICIT.to_vec();
        unclosed.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(collect(uids::EXPLICIT_VR_LITTLE_ENDIAN, &unclosed, 8), Err(HeaderError::Malformed(_))));
    }

    #[test]
    fn the_cap_and_unreadable_transfer_syntaxes_are_refused() {
        let mut collector = HeaderCollector::new(uids::EXPLICIT_VR_LITTLE_ENDIAN, 16).unwrap();
        collector.push(&NAME_EXPLICIT).unwrap();
        assert_eq!(collector.push(&NAME_EXPLICIT), Err(HeaderError::TooLarge { max: 16 }));
        for ts in UNREADABLE_TRANSFER_SYNTAXES {
            assert!(matches!(HeaderCollector::new(ts, 16), Err(HeaderError::UnreadableTransferSyntax(_))));
        }
    }

    #[test]
    fn the_generated_file_meta_reads_back() {
        let identity = MetaIdentity {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4",
            sop_instance_uid: "1.2.3.4.5",
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            source_ae_title: "MODALITY",
        };
        let mut data = vec![0x08, 0x00, 0x16, 0x00, b'U', b'I', 26, 0];
        data.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.4\0");
        data.extend_from_slice(&[0x08, 0x00, 0x18, 0x00, b'U', b'I', 10, 0]);
        data.extend_from_slice(b"1.2.3.4.5\0");
        data.extend_from_slice(&NAME_EXPLICIT);
        let file = part10_header(&identity, &data);
        let object = dicom_object::OpenFileOptions::new().from_reader(&file[PREAMBLE_LEN..]).unwrap();
        assert_eq!(object.meta().media_storage_sop_instance_uid(), "1.2.3.4.5");
        assert_eq!(object.meta().transfer_syntax(), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(object.meta().source_application_entity_title.as_deref().map(str::trim), Some("MODALITY"));
        let name = object.element(dicom_dictionary_std::tags::PATIENT_NAME).unwrap().to_str().unwrap();
        assert_eq!(name.trim(), "DOE^J");
        assert!(file.ends_with(&data), "the data set follows unchanged");
    }
}
