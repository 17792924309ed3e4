//! The header collector on every fixture image, fed in the fragment sizes a peer might use: the
//! prefix is the data set up to its top-level Pixel Data, and with generated File Meta it reads
//! back (dicom-object) with the file's own UIDs and patient attributes. The File Meta alone, in
//! front of a whole data set (a RAD-69 part), is read by dcmtk's dcmdump.

use dicom_dictionary_std::tags;
use hie_dicom_net::{HeaderCollector, MetaIdentity, file_meta, part10_header};
use hie_testkit::fixtures::ALL;

#[test]
fn every_fixture_image_yields_its_header_and_no_pixel_data() {
    for study in ALL {
        for path in study.images() {
            let part = hie_testkit::part10::read(&path);
            let original = dicom_object::open_file(&path).unwrap();
            for chunk in [16_378, 1_000, 7] {
                let mut collector = HeaderCollector::new(&part.transfer_syntax_uid, 8 << 20).unwrap();
                for piece in part.data_set.chunks(chunk) {
                    collector.push(piece).unwrap();
                }
                assert!(collector.is_complete(), "{}: Pixel Data found", path.display());
                let prefix = collector.finish().unwrap();
                assert!(part.data_set.starts_with(&prefix), "{}", path.display());
                // What follows the prefix is the Pixel Data element itself.
                assert_eq!(&part.data_set[prefix.len()..prefix.len() + 4], &[0xE0, 0x7F, 0x10, 0x00]);
                let identity = MetaIdentity {
                    sop_class_uid: &part.sop_class_uid,
                    sop_instance_uid: &part.sop_instance_uid,
                    transfer_syntax_uid: &part.transfer_syntax_uid,
                    source_ae_title: "STORESCU",
                };
                let file = part10_header(&identity, &prefix);
                let header = dicom_object::OpenFileOptions::new().from_reader(&file[128..]).unwrap();
                assert!(header.element(tags::PIXEL_DATA).is_err(), "no pixel data kept");
                for tag in [tags::SOP_INSTANCE_UID, tags::STUDY_INSTANCE_UID, tags::PATIENT_ID, tags::PATIENT_NAME] {
                    assert_eq!(
                        header.element(tag).unwrap().to_str().unwrap(),
                        original.element(tag).unwrap().to_str().unwrap(),
                        "{} {tag}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn dcmdump_reads_the_file_meta_with_a_whole_data_set_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    for study in ALL {
        let path = &study.images()[0];
        let part = hie_testkit::part10::read(path);
        // No source AE title: RAD-69 parts leave (0002,0016) out.
        let identity = MetaIdentity {
            sop_class_uid: &part.sop_class_uid,
            sop_instance_uid: &part.sop_instance_uid,
            transfer_syntax_uid: &part.transfer_syntax_uid,
            source_ae_title: "",
        };
        let mut file = file_meta(&identity);
        assert_eq!(file.len() % 2, 0, "even length");
        file.extend_from_slice(&part.data_set);
        assert_eq!(file, part10_header(&identity, &part.data_set), "the same bytes either way");
        let reread = hie_testkit::part10::split(&file).unwrap();
        assert_eq!(reread.sop_instance_uid, part.sop_instance_uid);
        assert_eq!(reread.transfer_syntax_uid, part.transfer_syntax_uid);
        assert!(reread.data_set == part.data_set, "the data set follows unchanged");

        let written = dir.path().join(format!("{}.dcm", study.name));
        std::fs::write(&written, &file).unwrap();
        let output = hie_testkit::dcmtk("dcmdump", &["-M", "-Un", written.to_str().unwrap()]);
        let text = output.combined();
        assert!(output.success(), "{text}");
        assert!(text.contains(&format!("(0002,0003) UI [{}]", part.sop_instance_uid)), "{text}");
        assert!(text.contains(&format!("(0002,0010) UI [{}]", part.transfer_syntax_uid)), "{text}");
        assert!(text.contains(&format!("(0002,0012) UI [{}]", hie_dicom_net::IMPLEMENTATION_CLASS_UID)), "{text}");
        assert!(text.contains("(0002,0001) OB 00\\01"), "{text}");
        assert!(!text.contains("(0002,0016)"), "no source AE title: {text}");
        assert!(text.contains("(0008,0018) UI"), "the data set is read too: {text}");
    }
}
