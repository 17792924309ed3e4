//! The manifest's Part 10 bytes, written straight from the object in Explicit VR Little Endian
//! (DICOM PS3.5 7.1.2, A.2), byte for byte what dicom-object's writer gives for it.
//!
//! Why not dicom-object's writer: it turns the object into a token stream first, cloning every
//! value and collecting each element's tokens, at about 4 µs per referenced instance (each one
//! appears twice, in the evidence and in the content tree): 8 ms of a 2,000-instance manifest.
//! This writer walks the object once and appends to one buffer.
//!
//! What "byte for byte" takes (dicom-parser 0.10 `DataSetWriter` with its default options, and
//! `StatefulEncoder`), and is copied here rule by rule:
//! - elements in tag order; every sequence and item written with undefined length and closed by
//!   its delimiter (PS3.5 7.5.2), whatever length the object remembers;
//! - text (a `Str` or `Strs` value, whatever the VR) joined by backslashes, encoded with the
//!   default repertoire for AE, AS, CS, DA, DS, DT, IS, TM and UI and with the current Specific
//!   Character Set for every other VR, padded to even length with NUL for UI and a space
//!   otherwise (PS3.5 6.2);
//! - the character set is the default until a Specific Character Set (0008,0005) is written,
//!   anywhere in the stream (nested items included), and stays whatever that named after it;
//! - binary values through dicom-encoding's own Explicit VR Little Endian primitive encoder, with
//!   the header length `calculate_byte_len` rounded up to even and one pad byte (a space for DA,
//!   DT and TM, NUL otherwise) after an odd value; DS and IS held as numbers written as text.
//!
//! File Meta Information comes from dicom-object's own writer (a few elements). Whatever this
//! writer does not reproduce (another transfer syntax, encapsulated pixel data, a VR SQ element
//! holding a primitive value, a value too long for its VR's 16-bit length, text the character set
//! can't represent) goes to dicom-object's writer whole, so its bytes or its error are the
//! answer. Two shapes would panic there (a sequence under another VR; a date, time or tag list
//! under DS or IS); this writer refuses them with an error instead.
//! `tests::direct_is_the_reference_*` prove the equality, and that manifests never take the
//! detour.

use dicom_core::header::{HasLength, Header};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::encode::Encode;
use dicom_encoding::encode::explicit_le::ExplicitVRLittleEndianEncoder;
use dicom_encoding::text::{DefaultCharacterSetCodec, SpecificCharacterSet, TextCodec};
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, InMemDicomObject};
// PS3.5 Table 7.1-2, the same list dicom-encoding's explicit VR writer and reader use.
use hie_dimse::bounds::has_short_length;

use crate::build::KosError;

/// The object as a DICOM Part 10 file: preamble, `DICM`, file meta group, data set.
pub(crate) fn part10(kos: &FileDicomObject<InMemDicomObject>) -> Result<Vec<u8>, KosError> {
    match direct(kos) {
        Ok(bytes) => Ok(bytes),
        Err(Stop::UseReference) => reference(kos),
        Err(Stop::Refuse(refusal)) => Err(KosError::Encode { source: Box::new(refusal) }),
    }
}

/// What dicom-object's writer gives for `kos`.
pub(crate) fn reference(kos: &FileDicomObject<InMemDicomObject>) -> Result<Vec<u8>, KosError> {
    let mut bytes = Vec::new();
    kos.write_all(&mut bytes).map_err(|source| KosError::Encode { source: Box::new(source) })?;
    Ok(bytes)
}

/// An object the reference writer would panic on (dicom-parser 0.10 `unreachable!`s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unencodable {
    /// Sequence items under a VR other than SQ.
    #[error("element {tag} holds sequence items but has VR {vr}")]
    SequenceUnderVr { tag: Tag, vr: VR },
    /// A date, time or attribute tag list under DS or IS, which are written as text.
    #[error("element {tag} has VR {vr} but holds a value with no decimal text form")]
    NotANumber { tag: Tag, vr: VR },
}

/// Why the direct path stopped.
#[derive(Debug)]
enum Stop {
    /// Something only the reference writer reproduces: its bytes, or its error, are the answer.
    UseReference,
    /// Something the reference writer would panic on.
    Refuse(Unencodable),
}

fn direct(kos: &FileDicomObject<InMemDicomObject>) -> Result<Vec<u8>, Stop> {
    if kos.meta().transfer_syntax() != uids::EXPLICIT_VR_LITTLE_ENDIAN {
        return Err(Stop::UseReference);
    }
    let mut writer = Writer { out: Vec::with_capacity(INITIAL_CAPACITY), charset: SpecificCharacterSet::default() };
    writer.out.extend_from_slice(&[0; PREAMBLE_LEN]);
    writer.out.extend_from_slice(MAGIC);
    kos.meta().write(&mut writer.out).map_err(|_| Stop::UseReference)?;
    writer.object(kos)?;
    Ok(writer.out)
}

struct Writer {
    out: Vec<u8>,
    /// The Specific Character Set in force for text of the VRs that use it.
    charset: SpecificCharacterSet,
}

impl Writer {
    fn object(&mut self, object: &InMemDicomObject) -> Result<(), Stop> {
        for element in object {
            self.element(element)?;
        }
        Ok(())
    }

    fn element(&mut self, element: &InMemElement) -> Result<(), Stop> {
        let (tag, vr) = (element.tag(), element.vr());
        match element.value() {
            Value::Sequence(sequence) if vr == VR::SQ => {
                self.header(tag, VR::SQ, UNDEFINED_LENGTH);
                for item in sequence.items() {
                    self.item_header(ITEM, UNDEFINED_LENGTH);
                    self.object(item)?;
                    self.item_header(ITEM_DELIMITATION, 0);
                }
                self.item_header(SEQUENCE_DELIMITATION, 0);
                Ok(())
            }
            Value::Sequence(_) => Err(Stop::Refuse(Unencodable::SequenceUnderVr { tag, vr })),
            // The reference writes these as encapsulated pixel data (or drops them): not ours.
            Value::Primitive(_) if vr == VR::SQ => Err(Stop::UseReference),
            Value::Primitive(_) if tag == tags::PIXEL_DATA && element.length().is_undefined() => {
                Err(Stop::UseReference)
            }
            Value::Primitive(PrimitiveValue::Str(text)) => self.text(tag, vr, std::slice::from_ref(text)),
            Value::Primitive(PrimitiveValue::Strs(texts)) => self.text(tag, vr, texts),
            Value::Primitive(value) => self.binary(tag, vr, value),
            Value::PixelSequence(_) => Err(Stop::UseReference),
        }
    }

    /// PS3.5 6.2: values joined by `\`, padded to even length.
    fn text(&mut self, tag: Tag, vr: VR, texts: &[String]) -> Result<(), Stop> {
        let start = self.out.len();
        self.header(tag, vr, 0);
        let value_start = self.out.len();
        for (index, text) in texts.iter().enumerate() {
            if index > 0 {
                self.out.push(b'\\');
            }
            if uses_default_repertoire(vr) {
                // The default repertoire's codec is ISO 8859-1, the identity on ASCII.
                if text.is_ascii() {
                    self.out.extend_from_slice(text.as_bytes());
                } else {
                    let encoded = DefaultCharacterSetCodec.encode(text).map_err(|_| Stop::UseReference)?;
                    self.out.extend_from_slice(&encoded);
                }
            } else if text.is_ascii()
                && (self.charset == SpecificCharacterSet::ISO_IR_6 || self.charset == SpecificCharacterSet::ISO_IR_192)
            {
                // ISO 8859-1 and UTF-8 are both the identity on ASCII.
                self.out.extend_from_slice(text.as_bytes());
            } else {
                let encoded = self.charset.encode(text).map_err(|_| Stop::UseReference)?;
                self.out.extend_from_slice(&encoded);
            }
        }
        if (self.out.len() - value_start) % 2 == 1 {
            self.out.push(if vr == VR::UI { b'\0' } else { b' ' });
        }
        let length = self.out.len() - value_start;
        self.patch_length(start, vr, length)?;
        if tag == tags::SPECIFIC_CHARACTER_SET {
            // Like the reference: the first value names the set; an unknown name changes nothing.
            if let Some(charset) = texts.first().and_then(|code| SpecificCharacterSet::from_code(code)) {
                self.charset = charset;
            }
        }
        Ok(())
    }

    fn binary(&mut self, tag: Tag, vr: VR, value: &PrimitiveValue) -> Result<(), Stop> {
        let start = self.out.len();
        if matches!(vr, VR::DS | VR::IS) {
            // Numbers under a decimal-string VR are written as their text.
            let text = match value {
                PrimitiveValue::Empty => String::new(),
                PrimitiveValue::Date(_)
                | PrimitiveValue::DateTime(_)
                | PrimitiveValue::Time(_)
                | PrimitiveValue::Tags(_) => return Err(Stop::Refuse(Unencodable::NotANumber { tag, vr })),
                _ => value.to_str().into_owned(),
            };
            self.header(tag, vr, 0);
            self.out.extend_from_slice(text.as_bytes());
            if text.len() % 2 == 1 {
                self.out.push(b' ');
            }
            return self.patch_length(start, vr, even_len(text.len()));
        }
        self.header(tag, vr, 0);
        let written = ExplicitVRLittleEndianEncoder::default()
            .encode_primitive(&mut self.out, value)
            .map_err(|_| Stop::UseReference)?;
        if written % 2 == 1 {
            self.out.push(if matches!(vr, VR::DA | VR::DT | VR::TM) { b' ' } else { 0 });
        }
        // The reference declares the length it computes, not the one it writes (they agree for
        // every value type but stay separate here as there).
        self.patch_length(start, vr, even_len(value.calculate_byte_len()))
    }

    /// PS3.5 Table 7.1-1 and 7.1-2: tag, VR, then a 16-bit length, or 2 reserved bytes and a
    /// 32-bit length.
    fn header(&mut self, tag: Tag, vr: VR, length: u32) {
        self.out.extend_from_slice(&tag.group().to_le_bytes());
        self.out.extend_from_slice(&tag.element().to_le_bytes());
        self.out.extend_from_slice(&vr.to_bytes());
        if has_short_length(vr) {
            // Only called with 0 or a checked length for these (`patch_length`).
            self.out.extend_from_slice(&(length as u16).to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0, 0]);
            self.out.extend_from_slice(&length.to_le_bytes());
        }
    }

    /// Writes the value length into the header at `start`.
    fn patch_length(&mut self, start: usize, vr: VR, length: usize) -> Result<(), Stop> {
        if has_short_length(vr) {
            // The reference refuses such a value (WriteHeaderTooLong); let it say so.
            let length = u16::try_from(length).map_err(|_| Stop::UseReference)?;
            self.out[start + 6..start + 8].copy_from_slice(&length.to_le_bytes());
        } else {
            let length = u32::try_from(length).map_err(|_| Stop::UseReference)?;
            self.out[start + 8..start + 12].copy_from_slice(&length.to_le_bytes());
        }
        Ok(())
    }

    /// PS3.5 7.5: items and delimiters are a tag and a 32-bit length, no VR.
    fn item_header(&mut self, tag: Tag, length: u32) {
        self.out.extend_from_slice(&tag.group().to_le_bytes());
        self.out.extend_from_slice(&tag.element().to_le_bytes());
        self.out.extend_from_slice(&length.to_le_bytes());
    }
}

/// PS3.5 6.1.2.1 (and dicom-parser's `convert_text_untrailed`): these VRs never take the Specific
/// Character Set.
fn uses_default_repertoire(vr: VR) -> bool {
    matches!(vr, VR::AE | VR::AS | VR::CS | VR::DA | VR::DS | VR::DT | VR::IS | VR::TM | VR::UI)
}

fn even_len(length: usize) -> usize {
    length + length % 2
}

/// PS3.10 7.1: 128 bytes of preamble, then `DICM`.
const PREAMBLE_LEN: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";
/// PS3.5 7.1.1: undefined length.
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
/// PS3.5 7.5: Item (FFFE,E000).
const ITEM: Tag = Tag(0xFFFE, 0xE000);
/// PS3.5 7.5: Item Delimitation Item (FFFE,E00D).
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
/// PS3.5 7.5: Sequence Delimitation Item (FFFE,E0DD).
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
/// A small manifest fits without growing; a large one doubles a few times.
const INITIAL_CAPACITY: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use dicom_core::DataElement;
    use dicom_core::value::{C, DataSetSequence, DicomDate, DicomTime};
    use dicom_object::meta::FileMetaTableBuilder;
    use proptest::prelude::*;

    use super::*;
    use crate::evidence::{InstanceHeader, InstanceRef, Issuer, RequestRef, SeriesKey, StudyEvidenceBuilder};
    use crate::{KosOptions, StudyEvidence, UidSource, build_kos};

    /// The direct path must answer alone (no detour) and equal the reference.
    fn assert_direct_is_reference(kos: &FileDicomObject<InMemDicomObject>) -> Result<(), TestCaseError> {
        let direct = match direct(kos) {
            Ok(bytes) => bytes,
            Err(stop) => return Err(TestCaseError::fail(format!("the manifest took a detour: {stop:?}"))),
        };
        let reference = reference(kos).map_err(|error| TestCaseError::fail(error.to_string()))?;
        if direct != reference {
            let at =
                direct.iter().zip(&reference).position(|(a, b)| a != b).unwrap_or(direct.len().min(reference.len()));
            return Err(TestCaseError::fail(format!(
                "bytes differ at {at} (direct {} bytes, reference {}): direct {:02x?}, reference {:02x?}",
                direct.len(),
                reference.len(),
                &direct[at.saturating_sub(16)..(at + 16).min(direct.len())],
                &reference[at.saturating_sub(16)..(at + 16).min(reference.len())],
            )));
        }
        Ok(())
    }

    struct Counter(u64);
    impl UidSource for Counter {
        fn next_uid(&mut self) -> String {
            self.0 += 1;
            format!("2.25.{}", self.0)
        }
    }

    /// SOP classes of every value type (IMAGE, WAVEFORM, COMPOSITE, and a private one).
    const SOP_CLASSES: [&str; 9] = [
        uids::MR_IMAGE_STORAGE,
        uids::CT_IMAGE_STORAGE,
        uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
        uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
        uids::BASIC_VOICE_AUDIO_WAVEFORM_STORAGE,
        uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
        uids::ENHANCED_SR_STORAGE,
        uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
        "1.2.826.0.1.3680043.10.999.1.1",
    ];

    /// Which character set the patient and study attributes are in, and text it can carry.
    #[derive(Debug, Clone, Copy)]
    enum Charset {
        Absent,
        Latin1,
        Utf8,
    }

    impl Charset {
        fn code(self) -> Option<&'static str> {
            match self {
                Charset::Absent => None,
                Charset::Latin1 => Some("ISO_IR 100"),
                Charset::Utf8 => Some("ISO_IR 192"),
            }
        }

        /// Text of 0..=max characters the set can encode, odd and even lengths.
        fn text(self, max: usize) -> impl Strategy<Value = String> {
            let pattern = match self {
                // The default repertoire's codec is ISO 8859-1 too, so Latin-1 is fine there.
                Charset::Absent | Charset::Latin1 => format!("[A-Za-z0-9 ^.äöüßé-]{{0,{max}}}"),
                Charset::Utf8 => format!("[A-Za-z0-9 ^.äöü漢字-]{{0,{max}}}"),
            };
            proptest::string::string_regex(&pattern).unwrap()
        }
    }

    fn uid() -> impl Strategy<Value = String> {
        // Components of 1 to 6 digits give odd and even lengths.
        proptest::collection::vec("[1-9][0-9]{0,5}", 1..6)
            .prop_map(|parts| format!("1.2.826.0.1.3680043.10.999.{}", parts.join(".")))
    }

    fn code_item(complete: bool) -> InMemDicomObject {
        let mut item = InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, "P5-0905"),
            DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "SRT"),
        ]);
        if complete {
            item.put(DataElement::new(tags::CODE_MEANING, VR::LO, "MRI of brain"));
        }
        item
    }

    prop_compose! {
        fn patient_and_study()(
            charset in prop_oneof![Just(Charset::Absent), Just(Charset::Latin1), Just(Charset::Utf8)],
            multi_valued_charset in any::<bool>(),
        )(
            name in charset.text(40),
            other_names in proptest::collection::vec(charset.text(12), 0..3),
            patient_id in "[A-Z0-9-]{1,16}",
            issuer in proptest::option::of(charset.text(20)),
            birth_date in prop_oneof![Just(String::new()), Just("19700101".to_owned())],
            sex in prop_oneof![Just("M"), Just("F"), Just("O"), Just("")],
            study_time in prop_oneof![Just("101500"), Just("101500.1"), Just("1015")],
            description in proptest::option::of(charset.text(64)),
            size_as_number in proptest::option::of(0.5f64..2.5),
            weight in proptest::option::of("[0-9]{1,3}"),
            other_ids in proptest::collection::vec(("[A-Z0-9]{1,9}", charset.text(9)), 0..3),
            codes in proptest::collection::vec(any::<bool>(), 0..3),
            charset in Just(charset),
            multi_valued_charset in Just(multi_valued_charset),
        ) -> InMemDicomObject {
            let mut object = InMemDicomObject::new_empty();
            if let Some(code) = charset.code() {
                if multi_valued_charset {
                    object.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::Strs([code.to_owned(), String::new()].into_iter().collect())));
                } else {
                    object.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, code));
                }
            }
            object.put(DataElement::new(tags::PATIENT_NAME, VR::PN, name.as_str()));
            if !other_names.is_empty() {
                object.put(DataElement::new(tags::OTHER_PATIENT_NAMES, VR::PN, PrimitiveValue::Strs(other_names.into_iter().collect())));
            }
            object.put(DataElement::new(tags::PATIENT_ID, VR::LO, patient_id.as_str()));
            if let Some(issuer) = issuer {
                object.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, issuer.as_str()));
            }
            object.put(DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, birth_date.as_str()));
            object.put(DataElement::new(tags::PATIENT_SEX, VR::CS, sex));
            object.put(DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::Date(C::from_elem(DicomDate::from_ymd(2026, 12, 1).unwrap(), 1))));
            object.put(DataElement::new(tags::STUDY_TIME, VR::TM, study_time));
            if let Some(description) = description {
                object.put(DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, description.as_str()));
            }
            if let Some(size) = size_as_number {
                // A number held as a number under DS: written as its text.
                object.put(DataElement::new(tags::PATIENT_SIZE, VR::DS, PrimitiveValue::F64(C::from_elem(size, 1))));
            }
            if let Some(weight) = weight {
                object.put(DataElement::new(tags::PATIENT_WEIGHT, VR::DS, weight.as_str()));
            }
            if !other_ids.is_empty() {
                let items = other_ids.into_iter().map(|(id, issuer)| InMemDicomObject::from_element_iter([
                    DataElement::new(tags::PATIENT_ID, VR::LO, id.as_str()),
                    DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, issuer.as_str()),
                ])).collect::<Vec<_>>();
                object.put(DataElement::new(tags::OTHER_PATIENT_I_DS_SEQUENCE, VR::SQ, DataSetSequence::from(items)));
            }
            if !codes.is_empty() {
                let items = codes.into_iter().map(code_item).collect::<Vec<_>>();
                object.put(DataElement::new(tags::PROCEDURE_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(items)));
            }
            object
        }
    }

    fn request() -> impl Strategy<Value = RequestRef> {
        (
            "[A-Z0-9]{0,16}",
            proptest::option::of(("[A-Z]{0,9}", proptest::option::of(uid()))),
            "[A-Z0-9]{0,16}",
            "[A-Za-z ]{0,40}",
        )
            .prop_map(|(accession_number, issuer, requested_procedure_id, requested_procedure_description)| {
                RequestRef {
                    accession_number,
                    issuer_of_accession_number: issuer.map(|(namespace, universal)| Issuer {
                        local_namespace_entity_id: namespace,
                        universal_entity_id_type: if universal.is_some() { "ISO".to_owned() } else { String::new() },
                        universal_entity_id: universal.unwrap_or_default(),
                    }),
                    requested_procedure_id,
                    requested_procedure_description,
                }
            })
    }

    prop_compose! {
        fn evidence()(
            n_instances in prop_oneof![1usize..20, 1usize..=2_000],
            n_series in 1usize..8,
            study in uid(),
            patient_and_study in patient_and_study(),
            classes in proptest::collection::vec(0..SOP_CLASSES.len(), 1..16),
            instance_suffix in "[0-9]{0,3}",
            requests in proptest::collection::vec(request(), 0..3),
        ) -> StudyEvidence {
            let mut builder = StudyEvidenceBuilder::for_study(study.as_str());
            for index in 0..n_instances {
                let series = format!("{study}.{}", index % n_series + 1);
                builder.add_header(InstanceHeader {
                    study_instance_uid: study.clone(),
                    series: SeriesKey { series_instance_uid: series.clone(), modality: "OT".to_owned(), body_part_examined: String::new() },
                    instance: InstanceRef {
                        sop_class_uid: SOP_CLASSES[classes[index % classes.len()]].to_owned(),
                        sop_instance_uid: format!("{series}.{}{instance_suffix}", index + 1),
                    },
                    patient_and_study: patient_and_study.clone(),
                    requests: if index == 0 { requests.clone() } else { Vec::new() },
                }).unwrap();
            }
            builder.build().unwrap()
        }
    }

    prop_compose! {
        fn options()(
            ae in "[A-Z][A-Z0-9_]{0,15}",
            location in uid(),
            time in prop_oneof![Just("120000"), Just("120000.5"), Just("120000.123456")],
            institution in proptest::option::of("[A-Za-z ]{1,30}"),
            description in proptest::option::of("[A-Za-z ]{0,30}"),
            software in "[0-9.]{0,9}",
            series_number in any::<u32>(),
            instance_number in 1u32..100,
        ) -> KosOptions {
            let mut options = KosOptions::new(ae, location, "20261201", time);
            options.institution_name = institution;
            options.series_description = description;
            options.software_versions = software;
            options.series_number = series_number;
            options.instance_number = instance_number;
            options
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Manifests of 1 to 2,000 instances, every value type, any options: the direct bytes are
        /// the reference's, and no manifest needs the detour.
        #[test]
        fn direct_is_the_reference_for_generated_manifests(evidence in evidence(), options in options()) {
            let kos = build_kos(&evidence, &options, &mut Counter(0)).unwrap();
            assert_direct_is_reference(&kos)?;
        }
    }

    #[test]
    fn direct_is_the_reference_for_the_fixture_studies() {
        let studies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/studies");
        let mut n_studies = 0;
        for study in std::fs::read_dir(studies).unwrap() {
            let mut builder = StudyEvidenceBuilder::new();
            let mut stack = vec![study.unwrap().path()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.file_name().is_some_and(|name| name != "kos.dcm") {
                        builder.add_part10(&std::fs::read(&path).unwrap()).unwrap();
                    }
                }
            }
            let evidence = builder.build().unwrap();
            let kos =
                build_kos(&evidence, &KosOptions::new("HIE_EDGE", "1.2.3.4", "20261201", "120000"), &mut Counter(0))
                    .unwrap();
            assert_direct_is_reference(&kos).unwrap();
            n_studies += 1;
        }
        assert_eq!(n_studies, 3);
    }

    /// Any value type under any VR, nested sequences, character sets changed inside items: the
    /// same bytes, or an error on both paths.
    fn any_value(vr: VR) -> BoxedStrategy<PrimitiveValue> {
        let text = prop_oneof!["[ -~]{0,20}", "[a-zäöüß ]{0,9}", "[漢字a]{0,5}"];
        let mut choices = vec![
            text.clone().prop_map(|text| PrimitiveValue::from(text.as_str())).boxed(),
            proptest::collection::vec(text, 0..4)
                .prop_map(|texts| PrimitiveValue::Strs(texts.into_iter().collect()))
                .boxed(),
            Just(PrimitiveValue::Empty).boxed(),
            proptest::collection::vec(any::<u8>(), 0..9)
                .prop_map(|bytes| PrimitiveValue::U8(bytes.into_iter().collect()))
                .boxed(),
            proptest::collection::vec(any::<u16>(), 0..4)
                .prop_map(|values| PrimitiveValue::U16(values.into_iter().collect()))
                .boxed(),
            proptest::collection::vec(any::<i32>(), 0..4)
                .prop_map(|values| PrimitiveValue::I32(values.into_iter().collect()))
                .boxed(),
            proptest::collection::vec(-1e6f64..1e6, 0..3)
                .prop_map(|values| PrimitiveValue::F64(values.into_iter().collect()))
                .boxed(),
            proptest::collection::vec(any::<f32>(), 0..3)
                .prop_map(|values| PrimitiveValue::F32(values.into_iter().collect()))
                .boxed(),
        ];
        if !matches!(vr, VR::DS | VR::IS) {
            // The reference panics on these under DS and IS (tested on their own below).
            choices.push(
                (1900u16..2100, 1u8..13, 1u8..29)
                    .prop_map(|(y, m, d)| PrimitiveValue::Date(C::from_elem(DicomDate::from_ymd(y, m, d).unwrap(), 1)))
                    .boxed(),
            );
            choices.push(
                (0u8..24, 0u8..60, 0u8..60)
                    .prop_map(|(h, m, s)| PrimitiveValue::Time(C::from_elem(DicomTime::from_hms(h, m, s).unwrap(), 1)))
                    .boxed(),
            );
            choices.push(
                proptest::collection::vec((any::<u16>(), any::<u16>()), 0..3)
                    .prop_map(|pairs| PrimitiveValue::Tags(pairs.into_iter().map(|(g, e)| Tag(g, e)).collect()))
                    .boxed(),
            );
        }
        proptest::strategy::Union::new(choices).boxed()
    }

    const VRS: [VR; 26] = [
        VR::AE,
        VR::AS,
        VR::AT,
        VR::CS,
        VR::DA,
        VR::DS,
        VR::DT,
        VR::FD,
        VR::FL,
        VR::IS,
        VR::LO,
        VR::LT,
        VR::OB,
        VR::OD,
        VR::OF,
        VR::OW,
        VR::PN,
        VR::SH,
        VR::SL,
        VR::SS,
        VR::ST,
        VR::TM,
        VR::UC,
        VR::UI,
        VR::UN,
        VR::UT,
    ];

    fn any_element() -> BoxedStrategy<InMemElement> {
        let charset = prop_oneof![Just("ISO_IR 100"), Just("ISO_IR 192"), Just("ISO_IR 144"), Just("BOGUS"), Just("")]
            .prop_map(|code| DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, code));
        let primitive = (0..VRS.len(), 0x0009u16..0x0040, any::<u16>()).prop_flat_map(|(vr, group, element)| {
            any_value(VRS[vr]).prop_map(move |value| DataElement::new(Tag(group, element), VRS[vr], value))
        });
        let leaf = prop_oneof![1 => charset, 6 => primitive].boxed();
        leaf.prop_recursive(3, 24, 4, |element| {
            (0x0040u16..0x0050, any::<u16>(), proptest::collection::vec(proptest::collection::vec(element, 0..4), 0..3))
                .prop_map(|(group, tag_element, items)| {
                    let items = items.into_iter().map(InMemDicomObject::from_element_iter).collect::<Vec<_>>();
                    DataElement::new(Tag(group, tag_element), VR::SQ, DataSetSequence::from(items))
                })
        })
        .boxed()
    }

    fn file(elements: Vec<InMemElement>) -> FileDicomObject<InMemDicomObject> {
        let mut object = InMemDicomObject::from_element_iter(elements);
        object.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE));
        object.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1"));
        object.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn direct_is_the_reference_for_any_object(elements in proptest::collection::vec(any_element(), 0..12)) {
            let kos = file(elements);
            match (part10(&kos), reference(&kos)) {
                (Ok(direct), Ok(reference)) => prop_assert_eq!(direct, reference),
                (Err(_), Err(_)) => {}
                (direct, reference) => prop_assert!(false, "direct {direct:?} but reference {reference:?}"),
            }
        }
    }

    #[test]
    fn what_the_direct_path_does_not_write_goes_to_the_reference() {
        let cases = [
            // Text the default repertoire can't hold: both refuse.
            DataElement::new(tags::PATIENT_NAME, VR::PN, "漢字"),
            // A VR SQ element holding bytes.
            DataElement::new(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, PrimitiveValue::U8(C::from_slice(&[1, 2, 3]))),
            // Too long for a 16-bit length.
            DataElement::new(tags::PATIENT_COMMENTS, VR::LT, "x".repeat(70_000).as_str()),
        ];
        for element in cases {
            let kos = file(vec![element.clone()]);
            assert!(matches!(direct(&kos), Err(Stop::UseReference)), "{element:?}");
            match (part10(&kos), reference(&kos)) {
                (Ok(direct), Ok(reference)) => assert_eq!(direct, reference),
                (Err(_), Err(_)) => {}
                (direct, reference) => panic!("{element:?}: direct {direct:?}, reference {reference:?}"),
            }
        }
        let implicit = file(Vec::new()).into_inner();
        let implicit =
            implicit.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::IMPLICIT_VR_LITTLE_ENDIAN)).unwrap();
        assert!(matches!(direct(&implicit), Err(Stop::UseReference)));
        assert_eq!(part10(&implicit).unwrap(), reference(&implicit).unwrap());
    }

    #[test]
    fn what_the_reference_would_panic_on_is_refused() {
        let under_un = DataElement::new(
            tags::REFERENCED_SERIES_SEQUENCE,
            VR::UN,
            DataSetSequence::from(vec![InMemDicomObject::new_empty()]),
        );
        let date_as_ds = DataElement::new(
            tags::PATIENT_WEIGHT,
            VR::DS,
            PrimitiveValue::Date(C::from_elem(DicomDate::from_ymd(2026, 1, 1).unwrap(), 1)),
        );
        for element in [under_un, date_as_ds] {
            let error = part10(&file(vec![element])).unwrap_err();
            assert!(matches!(error, KosError::Encode { .. }), "{error}");
        }
    }
}
