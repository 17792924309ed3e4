//! Reading the File Meta Information of a DICOM Part 10 file (PS3.10 7.1) from its first bytes:
//! what a retrieval needs to announce an instance (SOP class, SOP instance, transfer syntax)
//! before passing its bytes on untouched. The data set itself is never parsed.
//!
//! The meta group is always Explicit VR Little Endian (PS3.10 7.1) and starts with its group
//! length (0002,0000), so its end is known after the first element; reading stops there.

/// The 128-byte preamble and the `DICM` prefix (PS3.10 7.1).
const PREAMBLE_LEN: usize = 128;
const PREFIX: &[u8; 4] = b"DICM";
/// Largest File Meta Information group accepted: a real one is a few hundred bytes.
pub const MAX_META_BYTES: usize = 64 * 1024;

/// File Meta Information Group Length (0002,0000), UL.
const GROUP_LENGTH: u16 = 0x0000;
/// Media Storage SOP Class UID (0002,0002).
const MEDIA_STORAGE_SOP_CLASS_UID: u16 = 0x0002;
/// Media Storage SOP Instance UID (0002,0003).
const MEDIA_STORAGE_SOP_INSTANCE_UID: u16 = 0x0003;
/// Transfer Syntax UID (0002,0010).
const TRANSFER_SYNTAX_UID: u16 = 0x0010;
/// The File Meta Information group.
const META_GROUP: u16 = 0x0002;

/// What the meta group says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Bytes from the start of the file to the end of the meta group.
    pub len: usize,
}

/// Why the bytes are not a Part 10 file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileMetaError {
    #[error("no DICM prefix after the 128-byte preamble")]
    NoPrefix,
    #[error("the meta group does not start with its group length (0002,0000)")]
    NoGroupLength,
    #[error("a meta group of {0} bytes is larger than {MAX_META_BYTES}")]
    TooLarge(usize),
    #[error("a meta element runs past the group length")]
    Malformed,
    #[error("the meta group lacks {0}")]
    Missing(&'static str),
}

/// Reads the meta group from the first bytes of a file: `Ok(None)` while more bytes are needed.
pub fn read(bytes: &[u8]) -> Result<Option<FileMeta>, FileMetaError> {
    let group_start = PREAMBLE_LEN + PREFIX.len();
    // The group length element: tag (4), VR "UL" (2), length (2), value (4).
    let Some(first) = bytes.get(PREAMBLE_LEN..group_start + 12) else {
        if bytes.len() >= group_start && &bytes[PREAMBLE_LEN..group_start] != PREFIX {
            return Err(FileMetaError::NoPrefix);
        }
        return Ok(None);
    };
    if &first[..4] != PREFIX {
        return Err(FileMetaError::NoPrefix);
    }
    let element = &first[4..];
    if u16::from_le_bytes([element[0], element[1]]) != META_GROUP
        || u16::from_le_bytes([element[2], element[3]]) != GROUP_LENGTH
        || &element[4..6] != b"UL"
    {
        return Err(FileMetaError::NoGroupLength);
    }
    let group_length = u32::from_le_bytes([element[8], element[9], element[10], element[11]]);
    let group_length = usize::try_from(group_length).map_err(|_| FileMetaError::TooLarge(usize::MAX))?;
    if group_length > MAX_META_BYTES {
        return Err(FileMetaError::TooLarge(group_length));
    }
    let end = group_start + 12 + group_length;
    let Some(group) = bytes.get(group_start + 12..end) else { return Ok(None) };
    let mut meta = FileMeta {
        sop_class_uid: String::new(),
        sop_instance_uid: String::new(),
        transfer_syntax_uid: String::new(),
        len: end,
    };
    let mut at = 0;
    while at < group.len() {
        let header = group.get(at..at + 8).ok_or(FileMetaError::Malformed)?;
        let element = u16::from_le_bytes([header[2], header[3]]);
        let vr = [header[4], header[5]];
        // PS3.5 7.1.2: these VRs have a reserved field and a 32-bit length.
        let (len, header_len) = if matches!(
            &vr,
            b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
        ) {
            let quad = group.get(at + 8..at + 12).ok_or(FileMetaError::Malformed)?;
            (usize::try_from(u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]])).unwrap_or(usize::MAX), 12)
        } else {
            (usize::from(u16::from_le_bytes([header[6], header[7]])), 8)
        };
        let value_end = (at + header_len).checked_add(len).ok_or(FileMetaError::Malformed)?;
        let value = group.get(at + header_len..value_end).ok_or(FileMetaError::Malformed)?;
        let text = || String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_owned();
        match element {
            MEDIA_STORAGE_SOP_CLASS_UID => meta.sop_class_uid = text(),
            MEDIA_STORAGE_SOP_INSTANCE_UID => meta.sop_instance_uid = text(),
            TRANSFER_SYNTAX_UID => meta.transfer_syntax_uid = text(),
            _ => {}
        }
        at = value_end;
    }
    for (value, name) in [
        (&meta.sop_class_uid, "Media Storage SOP Class UID"),
        (&meta.sop_instance_uid, "Media Storage SOP Instance UID"),
        (&meta.transfer_syntax_uid, "Transfer Syntax UID"),
    ] {
        if value.is_empty() {
            return Err(FileMetaError::Missing(name));
        }
    }
    Ok(Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hie-kos/test_data/studies/IDS-DEPT024-a/images");
        std::fs::read(dir.join("000000.dcm")).unwrap()
    }

    #[test]
    fn the_meta_of_a_real_file_is_read_from_its_first_bytes_only() {
        let file = fixture();
        let whole = read(&file).unwrap().unwrap();
        assert_eq!(whole.sop_class_uid, "1.2.840.10008.5.1.4.1.1.128");
        assert_eq!(whole.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        assert!(whole.sop_instance_uid.starts_with("1.3.6.1.4.1.21367.201599.3.201604020956016."));
        // Group 0008 follows the meta group.
        assert_eq!(&file[whole.len..whole.len + 2], &[0x08, 0x00]);
        for cut in [0, 100, 131, 132, 140, whole.len - 1] {
            assert_eq!(read(&file[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(read(&file[..whole.len]), Ok(Some(whole)));
    }

    #[test]
    fn what_is_not_part_10_is_refused() {
        assert_eq!(read(&[0_u8; 200]), Err(FileMetaError::NoPrefix));
        let mut file = fixture();
        // A group length that claims more than any meta group holds.
        file[140..144].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&file), Err(FileMetaError::TooLarge(_))));
        let mut file = fixture();
        file[132] = 0x08;
        assert_eq!(read(&file), Err(FileMetaError::NoGroupLength));
    }
}
