//! XDS metadata for a manifest (RAD TF-3 4.68.4.1.2.3; ITI TF-3 4.2.3.2, 4.2.3.3): the
//! DocumentEntry and SubmissionSet of one manifest version, built from the KOS itself, what the
//! manifest table keeps beside it (modalities, body parts), the patient's identifiers and the
//! affinity-domain profile.
//!
//! - patientId (DocumentEntry and SubmissionSet, the same): the affinity-domain ID from the
//!   identity store; sourcePatientId: the local ID the images carry; sourcePatientInfo: PID-3/5/7/8.
//! - uniqueId: the KOS SOP Instance UID; mimeType application/dicom; formatCode the KOS class.
//! - referenceIdList: the accession (with its issuer OID) and the Study Instance UID.
//! - serviceStartTime from Study Date/Time; creationTime from the manifest's Content Date/Time.
//! - typeCode, eventCodeList and every other code through the profile; what does not map is
//!   reported by name and nothing is built.

use dicom_dictionary_std::tags;
use hie_core::profile::{CodeRef, DocumentCodes, Profile, StudyFacts, Unmapped};
use hie_kos::InMemDicomObject;
use hie_kos::element::{items, string};
use hie_xds::ebrim::{Association, Author, Code, DocumentEntry, Localized, RegistryObject, SubmissionSet};
use hie_xds::messages::SubmitObjectsRequest;
use hie_xds::vocabulary::{ASSOCIATION_RPLC, OBJECT_TYPE_STABLE_DOCUMENT};
use sha1::{Digest, Sha1};

/// The manifest being published.
#[derive(Debug, Clone)]
pub struct ManifestDocument<'a> {
    /// The KOS, DICOM Part 10.
    pub kos: &'a [u8],
    /// Distinct modalities of the referenced series.
    pub modalities: Vec<String>,
    /// Distinct Body Part Examined values.
    pub body_parts: Vec<String>,
}

/// The identifiers a submission was given when it was queued.
#[derive(Debug, Clone, Copy)]
pub struct SubmissionIds<'a> {
    pub document_entry_uuid: &'a str,
    pub submission_set_uuid: &'a str,
    pub submission_set_unique_id: &'a str,
}

/// How the metadata is written for the transaction that carries it.
#[derive(Debug, Clone, Copy)]
pub struct Carrier<'a> {
    /// ITI-42 (the broker is the repository): repositoryUniqueId, hash and size are ours to give.
    /// ITI-41: the repository sets them.
    pub register_only: bool,
    pub repository_unique_id: &'a str,
    /// submissionTime, UTC DTM.
    pub submission_time: &'a str,
    /// The entryUUID of the registered document this one replaces (RPLC), if any.
    pub replaces: Option<&'a str>,
}

/// The patient, as the registry and as the hospital know them.
#[derive(Debug, Clone, Copy)]
pub struct PatientIds<'a> {
    /// The affinity-domain CX (`id^^^&oid&ISO`).
    pub affinity: &'a str,
    /// The local CX the images carry.
    pub source: &'a str,
}

/// Why metadata can't be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The manifest bytes are not a readable KOS.
    #[error("the manifest is unreadable: {0}")]
    Unreadable(String),
    /// A required attribute is missing from the manifest.
    #[error("the manifest lacks {0}")]
    Missing(&'static str),
    /// The profile maps something to nothing.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unmapped(Vec<Unmapped>),
}

/// What the metadata needs from the KOS.
#[derive(Debug, Clone, Default)]
pub struct KosFacts {
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021) and its qualifiers' universal entity ID, if any.
    pub patient_id_issuer: String,
    pub patient_id_issuer_oid: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub accession_number: String,
    /// The accession number's issuer OID from the images (Issuer of Accession Number Sequence).
    pub accession_issuer_oid: String,
    pub study_date: String,
    pub study_time: String,
    /// Timezone Offset From UTC (0008,0201), `+HHMM`/`-HHMM`, if the images say.
    pub timezone_offset: String,
    pub study_description: String,
    pub content_date: String,
    pub content_time: String,
    pub procedure_codes: Vec<CodeRef>,
}

/// Reads what the metadata needs from the manifest's bytes.
pub fn kos_facts(kos: &[u8]) -> Result<KosFacts, MetadataError> {
    let object = hie_kos::read_instance_header(kos).map_err(|error| MetadataError::Unreadable(error.to_string()))?;
    let text = |tag| string(&object, tag).unwrap_or_default();
    let qualifier = items(&object, tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE)
        .first()
        .and_then(|item| string(item, tags::UNIVERSAL_ENTITY_ID))
        .unwrap_or_default();
    let accession_issuer_oid = items(&object, tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE)
        .first()
        .filter(|item| string(item, tags::UNIVERSAL_ENTITY_ID_TYPE).is_none_or(|kind| kind == "ISO"))
        .and_then(|item| string(item, tags::UNIVERSAL_ENTITY_ID))
        .unwrap_or_default();
    let facts = KosFacts {
        sop_instance_uid: text(tags::SOP_INSTANCE_UID),
        study_instance_uid: text(tags::STUDY_INSTANCE_UID),
        patient_id: text(tags::PATIENT_ID),
        patient_id_issuer: text(tags::ISSUER_OF_PATIENT_ID),
        patient_id_issuer_oid: qualifier,
        patient_name: text(tags::PATIENT_NAME),
        birth_date: text(tags::PATIENT_BIRTH_DATE),
        sex: text(tags::PATIENT_SEX),
        accession_number: text(tags::ACCESSION_NUMBER),
        accession_issuer_oid,
        study_date: text(tags::STUDY_DATE),
        study_time: text(tags::STUDY_TIME),
        timezone_offset: text(tags::TIMEZONE_OFFSET_FROM_UTC),
        study_description: text(tags::STUDY_DESCRIPTION),
        content_date: text(tags::CONTENT_DATE),
        content_time: text(tags::CONTENT_TIME),
        procedure_codes: procedure_codes(&object),
    };
    for (value, name) in [
        (&facts.sop_instance_uid, "SOP Instance UID (0008,0018)"),
        (&facts.study_instance_uid, "Study Instance UID (0020,000D)"),
        (&facts.patient_id, "Patient ID (0010,0020)"),
    ] {
        if value.is_empty() {
            return Err(MetadataError::Missing(name));
        }
    }
    Ok(facts)
}

/// The SubmitObjectsRequest of one manifest version: SubmissionSet, DocumentEntry, HasMember and,
/// when replacing, the RPLC association.
pub fn submission(
    manifest: &ManifestDocument<'_>,
    facts: &KosFacts,
    ids: SubmissionIds<'_>,
    patient: PatientIds<'_>,
    profile: &Profile,
    carrier: Carrier<'_>,
) -> Result<SubmitObjectsRequest, MetadataError> {
    let study_facts = StudyFacts {
        procedure_codes: facts.procedure_codes.clone(),
        modalities: manifest.modalities.clone(),
        body_parts: manifest.body_parts.clone(),
    };
    let codes = profile.document_codes(&study_facts).map_err(MetadataError::Unmapped)?;
    let entry = document_entry(manifest, facts, ids, patient, profile, &codes, carrier)?;
    let submission_set = SubmissionSet {
        id: ids.submission_set_uuid.to_owned(),
        title: vec![Localized::new("Imaging manifest")],
        submission_time: Some(carrier.submission_time.to_owned()),
        content_type_code: Some(code(&codes.content_type_code)),
        authors: author(profile).into_iter().collect(),
        patient_id: Some(patient.affinity.to_owned()),
        source_id: Some(profile.source_id.to_string()),
        unique_id: Some(ids.submission_set_unique_id.to_owned()),
        ..SubmissionSet::default()
    };
    let mut objects = vec![
        RegistryObject::SubmissionSet(submission_set),
        RegistryObject::DocumentEntry(entry),
        RegistryObject::Association(Association::has_member(
            &super::urn_uuid(),
            ids.submission_set_uuid,
            ids.document_entry_uuid,
        )),
    ];
    if let Some(replaced) = carrier.replaces {
        objects.push(RegistryObject::Association(Association {
            id: super::urn_uuid(),
            association_type: ASSOCIATION_RPLC.to_owned(),
            source_object: ids.document_entry_uuid.to_owned(),
            target_object: replaced.to_owned(),
            ..Association::default()
        }));
    }
    Ok(SubmitObjectsRequest { request_slots: Vec::new(), objects })
}

fn document_entry(
    manifest: &ManifestDocument<'_>,
    facts: &KosFacts,
    ids: SubmissionIds<'_>,
    patient: PatientIds<'_>,
    profile: &Profile,
    codes: &DocumentCodes,
    carrier: Carrier<'_>,
) -> Result<DocumentEntry, MetadataError> {
    let mut reference_ids = Vec::new();
    let accession_issuer = if facts.accession_issuer_oid.is_empty() {
        profile.accession_issuer.as_ref().map(ToString::to_string).unwrap_or_default()
    } else {
        facts.accession_issuer_oid.clone()
    };
    // NIST ids_2018-4800 requires the accession's assigning authority OID; without one the
    // accession is left out rather than sent unqualified.
    if !facts.accession_number.is_empty() && !accession_issuer.is_empty() {
        reference_ids.push(format!(
            "{}^^^&{accession_issuer}&ISO^urn:ihe:iti:xds:2013:accession",
            escape_component(&facts.accession_number)
        ));
    }
    reference_ids.push(format!("{}^^^^urn:ihe:iti:xds:2016:studyInstanceUID", facts.study_instance_uid));
    let mut source_patient_info = vec![format!("PID-3|{}", patient.source)];
    if !facts.patient_name.is_empty() {
        source_patient_info.push(format!("PID-5|{}", xpn_from_pn(&facts.patient_name)));
    }
    if !facts.birth_date.is_empty() {
        source_patient_info.push(format!("PID-7|{}", escape_component(&facts.birth_date)));
    }
    if !facts.sex.is_empty() {
        source_patient_info.push(format!("PID-8|{}", escape_component(&facts.sex)));
    }
    let title = if facts.study_description.is_empty() {
        "Imaging manifest".to_owned()
    } else {
        format!("Imaging manifest: {}", facts.study_description)
    };
    let (hash, size, repository) = if carrier.register_only {
        let digest = Sha1::digest(manifest.kos);
        (
            Some(digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>()),
            Some(manifest.kos.len().to_string()),
            Some(carrier.repository_unique_id.to_owned()),
        )
    } else {
        (None, None, None)
    };
    Ok(DocumentEntry {
        id: ids.document_entry_uuid.to_owned(),
        object_type: OBJECT_TYPE_STABLE_DOCUMENT.to_owned(),
        mime_type: "application/dicom".to_owned(),
        title: vec![Localized::new(&title)],
        creation_time: dtm(&facts.content_date, &facts.content_time, "+0000"),
        language_code: Some(profile.language_code.clone()),
        service_start_time: dtm(&facts.study_date, &facts.study_time, &facts.timezone_offset),
        source_patient_id: Some(patient.source.to_owned()),
        source_patient_info,
        hash,
        size,
        repository_unique_id: repository,
        reference_ids,
        class_code: Some(code(&codes.class_code)),
        confidentiality_codes: vec![code(&codes.confidentiality_code)],
        format_code: Some(code(&codes.format_code)),
        healthcare_facility_type_code: Some(code(&codes.healthcare_facility_type_code)),
        practice_setting_code: Some(code(&codes.practice_setting_code)),
        type_code: Some(code(&codes.type_code)),
        event_codes: codes.event_codes.iter().map(code).collect(),
        authors: author(profile).into_iter().collect(),
        patient_id: Some(patient.affinity.to_owned()),
        unique_id: Some(facts.sop_instance_uid.clone()),
        ..DocumentEntry::default()
    })
}

/// An affinity-domain patient ID as XDS metadata writes it (ITI TF-3 4.2.3.2.16): `id^^^&oid&ISO`,
/// CX.1 and CX.4 only, the ID escaped.
pub fn affinity_cx(id: &str, authority_oid: &str) -> String {
    format!("{}^^^&{authority_oid}&ISO", escape_component(id))
}

/// The local CX of the images' patient: Patient ID with its issuer (namespace and OID when the
/// images carry them, else `local` as the configured authority), escaped.
pub fn source_patient_cx(facts: &KosFacts, local: &hie_core::AssigningAuthority) -> String {
    let (namespace, oid) = if facts.patient_id_issuer.is_empty() && facts.patient_id_issuer_oid.is_empty() {
        (local.namespace_id.as_str(), local.universal_id.as_str())
    } else {
        (facts.patient_id_issuer.as_str(), facts.patient_id_issuer_oid.as_str())
    };
    let authority = match (namespace.is_empty(), oid.is_empty()) {
        (_, false) => format!("{}&{oid}&ISO", escape_component(namespace)),
        (false, true) => escape_component(namespace),
        (true, true) => String::new(),
    };
    format!("{}^^^{authority}", escape_component(&facts.patient_id))
}

fn author(profile: &Profile) -> Option<Author> {
    profile
        .author_institution
        .as_ref()
        .map(|institution| Author { institutions: vec![institution.clone()], ..Author::default() })
}

fn code(code: &hie_core::profile::Code) -> Code {
    Code::new(&code.code, &code.scheme, &code.display)
}

fn procedure_codes(object: &InMemDicomObject) -> Vec<CodeRef> {
    items(object, tags::PROCEDURE_CODE_SEQUENCE)
        .iter()
        .filter_map(|item| {
            let code = string(item, tags::CODE_VALUE)?;
            let scheme = string(item, tags::CODING_SCHEME_DESIGNATOR)?;
            Some(CodeRef { code, scheme })
        })
        .collect()
}

/// A DICOM DA + TM as an XDS DTM in UTC (ITI TF-3 4.2.3.1.7), to the second. Without a timezone
/// offset the time can't be placed in UTC, so only the date is given (DTM allows it).
fn dtm(date: &str, time: &str, offset: &str) -> Option<String> {
    if date.len() != 8 || !date.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let digits: String = time.chars().take_while(char::is_ascii_digit).take(6).collect();
    let Some(offset_minutes) = parse_offset(offset) else {
        return Some(date.to_owned());
    };
    if digits.len() < 4 {
        return Some(date.to_owned());
    }
    let field = |from: usize, to: usize| digits.get(from..to).and_then(|part| part.parse::<i64>().ok()).unwrap_or(0);
    let (hour, minute, second) = (field(0, 2), field(2, 4), field(4, 6));
    let year: i64 = date[..4].parse().ok()?;
    let month: u32 = date[4..6].parse().ok()?;
    let day: u32 = date[6..8].parse().ok()?;
    let days = days_from_civil(year, month, day);
    let local_secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    let utc_secs = u64::try_from(local_secs - offset_minutes * 60).ok()?;
    Some(hie_core::clock::hl7_timestamp(utc_secs))
}

fn parse_offset(offset: &str) -> Option<i64> {
    let (sign, rest) = match offset.as_bytes().first()? {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => return None,
    };
    if rest.len() != 4 || !rest.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = rest[..2].parse().ok()?;
    let minutes: i64 = rest[2..].parse().ok()?;
    Some(sign * (hours * 60 + minutes))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A DICOM PN (family^given^middle^prefix^suffix) as an HL7 XPN (family^given^middle^suffix^prefix),
/// alphabetic representation only, escaped.
fn xpn_from_pn(name: &str) -> String {
    let alphabetic = name.split('=').next().unwrap_or_default();
    let parts: Vec<String> = alphabetic.split('^').map(escape_component).collect();
    let part = |index: usize| parts.get(index).cloned().unwrap_or_default();
    let xpn = [part(0), part(1), part(2), part(4), part(3)].join("^");
    xpn.trim_end_matches('^').to_owned()
}

/// HL7 escaping of one component's text (the default separators).
fn escape_component(text: &str) -> String {
    hie_hl7::escape::encode(text, &hie_hl7::message::Separators::default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_from_dicom_dates_times_and_offsets() {
        assert_eq!(dtm("20150324", "115143.000000", "+0100").as_deref(), Some("20150324105143"));
        assert_eq!(dtm("20150324", "001000", "+0200").as_deref(), Some("20150323221000"));
        assert_eq!(dtm("20150324", "2330", "-0100").as_deref(), Some("20150325003000"));
        assert_eq!(dtm("20150324", "115143", "").as_deref(), Some("20150324"), "no offset: the date alone");
        assert_eq!(dtm("2015", "115143", "+0000"), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn person_names_become_xpn() {
        assert_eq!(xpn_from_pn("Pet^Scout^a"), "Pet^Scout^a");
        assert_eq!(xpn_from_pn("Doe^John^Q^Dr^Jr"), "Doe^John^Q^Jr^Dr");
        assert_eq!(xpn_from_pn("Yamada^Tarou=山田^太郎"), "Yamada^Tarou");
        assert_eq!(xpn_from_pn("A|B^C"), "A\\F\\B^C");
    }

    #[test]
    fn affinity_ids_carry_only_the_id_and_the_oid() {
        assert_eq!(affinity_cx("AD|7", "1.3.6.1.4.1.21367.13.20.1000"), "AD\\F\\7^^^&1.3.6.1.4.1.21367.13.20.1000&ISO");
    }

    #[test]
    fn the_source_patient_cx_uses_the_images_issuer_or_the_local_authority() {
        let local = hie_core::AssigningAuthority {
            namespace_id: "HOSP".to_owned(),
            universal_id: "1.2.3".to_owned(),
            universal_id_type: "ISO".to_owned(),
        };
        let mut facts = KosFacts { patient_id: "P1".to_owned(), ..KosFacts::default() };
        assert_eq!(source_patient_cx(&facts, &local), "P1^^^HOSP&1.2.3&ISO");
        facts.patient_id_issuer = "RIS".to_owned();
        assert_eq!(source_patient_cx(&facts, &local), "P1^^^RIS");
        facts.patient_id_issuer_oid = "1.9".to_owned();
        assert_eq!(source_patient_cx(&facts, &local), "P1^^^RIS&1.9&ISO");
    }
}
