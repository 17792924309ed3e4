//! The header collector on every fixture image, fed in the fragment sizes a peer might use: the
//! prefix is the data set up to its top-level Pixel Data, and with generated File Meta it reads
//! back (dicom-object) with the file's own UIDs and patient attributes.

use dicom_dictionary_std::tags;
use hie_dicom_net::{HeaderCollector, MetaIdentity, part10_header};
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
