//! Splitting a DICOM Part 10 file (PS3.10 7.1) into its file meta information and its data set,
//! by hand (the meta group is always Explicit VR Little Endian), so that tests can compare the
//! data sets two peers received byte for byte, whatever each wrote in its meta.

use std::path::Path;

/// A Part 10 file's identity and its data set bytes, exactly as stored after the meta group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part10 {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub data_set: Vec<u8>,
}

/// Reads `path`; panics with the path when it is not a Part 10 file.
pub fn read(path: &Path) -> Part10 {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    split(&bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Splits Part 10 bytes (preamble and "DICM" first).
pub fn split(bytes: &[u8]) -> Result<Part10, String> {
    if bytes.get(128..132) != Some(b"DICM") {
        return Err("no DICM prefix at byte 128".to_owned());
    }
    let mut at = 132;
    let mut part = Part10 {
        sop_class_uid: String::new(),
        sop_instance_uid: String::new(),
        transfer_syntax_uid: String::new(),
        data_set: Vec::new(),
    };
    while let Some(header) = bytes.get(at..at + 8) {
        let group = u16::from_le_bytes([header[0], header[1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([header[2], header[3]]);
        let vr = [header[4], header[5]];
        let (len, header_len) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"UT" | b"SQ" | b"UC" | b"UR") {
            let quad = bytes.get(at + 8..at + 12).ok_or("meta element header cut short")?;
            (u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]) as usize, 12)
        } else {
            (u16::from_le_bytes([header[6], header[7]]) as usize, 8)
        };
        let value = bytes.get(at + header_len..at + header_len + len).ok_or("meta element value cut short")?;
        let text = || String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_owned();
        match element {
            0x0002 => part.sop_class_uid = text(),
            0x0003 => part.sop_instance_uid = text(),
            0x0010 => part.transfer_syntax_uid = text(),
            _ => {}
        }
        at += header_len + len;
    }
    part.data_set = bytes[at..].to_vec();
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_set_starts_after_the_meta_group() {
        let file = &crate::fixtures::DCM4CHE_MR_SERIES.images()[0];
        let part = read(file);
        assert_eq!(part.transfer_syntax_uid, "1.2.840.10008.1.2");
        assert_eq!(part.sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
        // The first element of the data set is in group 0008.
        assert_eq!(&part.data_set[..2], &[0x08, 0x00]);
        assert!(split(b"not dicom").is_err());
    }
}
