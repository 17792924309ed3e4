//! The File Meta Information the broker writes in front of a DIMSE data set so that each RAD-69
//! part is a whole DICOM Part 10 file (PS3.10 7.1; RAD TF-3 4.69.4.2.2 returns Part 10 files).
//!
//! The group is Explicit VR Little Endian whatever the data set's transfer syntax (PS3.10 7.1),
//! preceded by the 128-byte preamble (zeros: no application profile, PS3.10 7.1) and `DICM`.

use bytes::{BufMut, Bytes, BytesMut};

/// The preamble (PS3.10 7.1): 128 bytes, zero when not used.
const PREAMBLE_LEN: usize = 128;
/// The DICOM prefix after the preamble.
const PREFIX: &[u8; 4] = b"DICM";
/// File Meta Information Version (0002,0001): OB, value 00 01 (PS3.10 7.1).
const META_VERSION: [u8; 2] = [0x00, 0x01];

/// The File Meta Information group (0002).
const GROUP: u16 = 0x0002;
/// File Meta Information Group Length (0002,0000).
const GROUP_LENGTH: u16 = 0x0000;
/// File Meta Information Version (0002,0001).
const VERSION: u16 = 0x0001;
/// Media Storage SOP Class UID (0002,0002).
const MEDIA_STORAGE_SOP_CLASS_UID: u16 = 0x0002;
/// Media Storage SOP Instance UID (0002,0003).
const MEDIA_STORAGE_SOP_INSTANCE_UID: u16 = 0x0003;
/// Transfer Syntax UID (0002,0010).
const TRANSFER_SYNTAX_UID: u16 = 0x0010;
/// Implementation Class UID (0002,0012).
const IMPLEMENTATION_CLASS_UID: u16 = 0x0012;
/// Implementation Version Name (0002,0013).
const IMPLEMENTATION_VERSION_NAME: u16 = 0x0013;

/// What the meta group names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax_uid: &'a str,
}

/// Preamble, prefix and the meta group, ready to be followed by the data set.
pub fn write(meta: &FileMeta<'_>) -> Bytes {
    let mut group = BytesMut::with_capacity(256);
    // OB: two reserved bytes and a 32-bit length (PS3.5 7.1.2).
    put_tag(&mut group, VERSION);
    group.put_slice(b"OB");
    group.put_u16_le(0);
    group.put_u32_le(META_VERSION.len() as u32);
    group.put_slice(&META_VERSION);
    put_text(&mut group, MEDIA_STORAGE_SOP_CLASS_UID, b"UI", meta.sop_class_uid, 0);
    put_text(&mut group, MEDIA_STORAGE_SOP_INSTANCE_UID, b"UI", meta.sop_instance_uid, 0);
    put_text(&mut group, TRANSFER_SYNTAX_UID, b"UI", meta.transfer_syntax_uid, 0);
    put_text(&mut group, IMPLEMENTATION_CLASS_UID, b"UI", hie_dicom_net::IMPLEMENTATION_CLASS_UID, 0);
    put_text(&mut group, IMPLEMENTATION_VERSION_NAME, b"SH", hie_dicom_net::IMPLEMENTATION_VERSION_NAME, b' ');
    let mut file = BytesMut::with_capacity(PREAMBLE_LEN + PREFIX.len() + 12 + group.len());
    file.put_bytes(0, PREAMBLE_LEN);
    file.put_slice(PREFIX);
    put_tag(&mut file, GROUP_LENGTH);
    file.put_slice(b"UL");
    file.put_u16_le(4);
    // The group holds six short elements of UIDs (at most 64 bytes each): far below u32::MAX.
    file.put_u32_le(u32::try_from(group.len()).unwrap_or(u32::MAX));
    file.put_slice(&group);
    file.freeze()
}

fn put_tag(buffer: &mut BytesMut, element: u16) {
    buffer.put_u16_le(GROUP);
    buffer.put_u16_le(element);
}

/// A text element with a 16-bit length, padded to an even length with `padding` (PS3.5 6.2: NUL
/// for UI, space for SH).
fn put_text(buffer: &mut BytesMut, element: u16, vr: &[u8; 2], value: &str, padding: u8) {
    let value = value.trim_end_matches(['\0', ' ']).as_bytes();
    let padded = value.len() + value.len() % 2;
    put_tag(buffer, element);
    buffer.put_slice(vr);
    // UIDs are at most 64 bytes and the version name 16 (PS3.5 6.2): the length fits 16 bits.
    buffer.put_u16_le(u16::try_from(padded).unwrap_or(u16::MAX));
    buffer.put_slice(value);
    if padded > value.len() {
        buffer.put_u8(padding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcmtk_reads_the_written_meta_with_a_data_set_behind_it() {
        // A real data set: a fixture's, taken from behind its own meta group.
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../hie-kos/test_data/studies/IDS-DEPT024-a/images/000000.dcm");
        let part = hie_testkit::part10::read(&fixture);
        let meta = FileMeta {
            sop_class_uid: &part.sop_class_uid,
            sop_instance_uid: &part.sop_instance_uid,
            transfer_syntax_uid: &part.transfer_syntax_uid,
        };
        let mut file = write(&meta).to_vec();
        assert_eq!(file.len() % 2, 0);
        file.extend_from_slice(&part.data_set);
        let reread = hie_testkit::part10::split(&file).unwrap();
        assert_eq!(
            (reread.sop_class_uid.as_str(), reread.transfer_syntax_uid.as_str()),
            (meta.sop_class_uid, meta.transfer_syntax_uid)
        );
        assert_eq!(reread.data_set, part.data_set);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("written.dcm");
        std::fs::write(&path, &file).unwrap();
        let output = std::process::Command::new("dcmdump")
            .args(["-M", "-Un"])
            .arg(&path)
            .output()
            .expect("dcmtk's dcmdump is installed (apt-get install dcmtk)");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
        assert!(text.contains(&format!("(0002,0003) UI [{}]", meta.sop_instance_uid)), "{text}");
        assert!(text.contains(&format!("(0002,0012) UI [{}]", hie_dicom_net::IMPLEMENTATION_CLASS_UID)), "{text}");
        assert!(text.contains("(0002,0001) OB 00\\01"), "{text}");
        assert!(text.contains("(0008,0018) UI"), "the data set is read too: {text}");
    }
}
