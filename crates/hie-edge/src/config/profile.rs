//! Affinity-domain profiles (`[affinity_domain] profile`): a TOML file of prescribed codes,
//! identifiers and mapping tables, plus the domain's allowed code set in the `codes.xml` format
//! the NIST XDS toolkit and registries use (`<Codes><CodeType name=...><Code code= codingScheme=
//! display=/>`), read into [`hie_core::profile::Profile`] and checked before anything is sent.
//!
//! Every problem is reported with its key (`profile.document.class_code`), like the rest of the
//! configuration.

use std::collections::BTreeMap;
use std::path::Path;

use hie_core::Oid;
use hie_core::profile::{CodeRef, CodeSet, CodedAttribute, PatientMergePolicy, Profile};
use quick_xml::events::Event;
use serde::Deserialize;

use super::Problem;

/// Largest codes.xml read (the NIST one is 150 KB).
const MAX_CODES_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    patient_id_authority: String,
    source_id: String,
    home_community_id: Option<String>,
    accession_issuer: Option<String>,
    author_institution: Option<String>,
    #[serde(default = "default_language")]
    language_code: String,
    /// The allowed code set, relative to the profile file.
    codes: Option<String>,
    document: RawDocument,
    submission_set: RawSubmissionSet,
    #[serde(default)]
    type_codes: BTreeMap<String, String>,
    #[serde(default)]
    event_codes: RawEventCodes,
    #[serde(default)]
    patient_merge: RawPatientMerge,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    class_code: String,
    confidentiality_code: String,
    healthcare_facility_type_code: String,
    practice_setting_code: String,
    type_code_default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmissionSet {
    content_type_code: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventCodes {
    #[serde(default)]
    modalities: BTreeMap<String, String>,
    #[serde(default = "default_ignored_modalities")]
    ignored_modalities: Vec<String>,
    #[serde(default)]
    body_parts: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatientMerge {
    /// `registry` (the default) or `republish`.
    published: Option<String>,
}

fn default_language() -> String {
    "en-US".to_owned()
}

/// Modalities of objects that are not acquisitions (DICOM CID 33 minus CID 29): the manifest's own
/// KO, presentation states, reports, registrations, segmentations, documents, plans.
fn default_ignored_modalities() -> Vec<String> {
    ["KO", "PR", "SR", "REG", "SEG", "DOC", "PLAN", "RWV", "FID", "RESP"].map(str::to_owned).to_vec()
}

/// Reads and checks the profile at `path`. Problems name keys under `profile.`.
pub fn load(path: &Path) -> Result<Profile, Vec<Problem>> {
    let problem = |key: &str, message: String| Problem { key: format!("profile.{key}"), message };
    let text = std::fs::read_to_string(path)
        .map_err(|error| vec![problem("(file)", format!("cannot read {}: {error}", path.display()))])?;
    let raw: RawProfile = toml::from_str(&text)
        .map_err(|error| vec![problem("(file)", format!("{}: {}", path.display(), error.to_string().trim()))])?;
    let mut problems = Vec::new();

    let oid = |key: &str, text: &str, problems: &mut Vec<Problem>| match Oid::parse(text) {
        Ok(oid) => Some(oid),
        Err(error) => {
            problems.push(problem(key, format!("{text:?} is not an OID: {error}")));
            None
        }
    };
    let patient_id_authority = oid("patient_id_authority", &raw.patient_id_authority, &mut problems);
    let source_id = oid("source_id", &raw.source_id, &mut problems);
    let accession_issuer =
        raw.accession_issuer.as_deref().and_then(|text| oid("accession_issuer", text, &mut problems));
    if let Some(home) = &raw.home_community_id
        && home.strip_prefix("urn:oid:").is_none_or(|rest| Oid::parse(rest).is_err())
    {
        problems.push(problem("home_community_id", format!("{home:?} must be urn:oid:<OID>")));
    }
    let code = |key: &str, text: &str, problems: &mut Vec<Problem>| match CodeRef::parse(text) {
        Some(code) => Some(code),
        None => {
            problems.push(problem(key, format!("{text:?} must be code^scheme")));
            None
        }
    };
    let class_code = code("document.class_code", &raw.document.class_code, &mut problems);
    let confidentiality_code = code("document.confidentiality_code", &raw.document.confidentiality_code, &mut problems);
    let facility =
        code("document.healthcare_facility_type_code", &raw.document.healthcare_facility_type_code, &mut problems);
    let practice = code("document.practice_setting_code", &raw.document.practice_setting_code, &mut problems);
    let type_code_default = raw
        .document
        .type_code_default
        .as_deref()
        .and_then(|text| code("document.type_code_default", text, &mut problems));
    let patient_merge = match raw.patient_merge.published.as_deref() {
        None => PatientMergePolicy::default(),
        Some(name) => PatientMergePolicy::from_name(name).unwrap_or_else(|| {
            problems
                .push(problem("patient_merge.published", format!("{name:?} must be \"registry\" or \"republish\"")));
            PatientMergePolicy::default()
        }),
    };
    let content_type_code =
        code("submission_set.content_type_code", &raw.submission_set.content_type_code, &mut problems);
    let mut type_codes = BTreeMap::new();
    for (procedure, type_code) in &raw.type_codes {
        let key = format!("type_codes.{procedure:?}");
        if let (Some(procedure), Some(type_code)) =
            (code(&key, procedure, &mut problems), code(&key, type_code, &mut problems))
        {
            type_codes.insert(procedure, type_code);
        }
    }
    let table = |section: &str, entries: &BTreeMap<String, String>, problems: &mut Vec<Problem>| {
        let mut mapped = BTreeMap::new();
        for (from, to) in entries {
            if let Some(to) = code(&format!("event_codes.{section}.{from}"), to, problems) {
                mapped.insert(from.trim().to_owned(), to);
            }
        }
        mapped
    };
    let modality_codes = table("modalities", &raw.event_codes.modalities, &mut problems);
    let body_part_codes = table("body_parts", &raw.event_codes.body_parts, &mut problems);
    let codes = match &raw.codes {
        None => CodeSet::default(),
        Some(file) => {
            let codes_path = path.parent().unwrap_or(Path::new(".")).join(file);
            read_codes_xml(&codes_path).unwrap_or_else(|message| {
                problems.push(problem("codes", message));
                CodeSet::default()
            })
        }
    };

    let (
        Some(patient_id_authority),
        Some(source_id),
        Some(class_code),
        Some(confidentiality_code),
        Some(healthcare_facility_type_code),
        Some(practice_setting_code),
        Some(content_type_code),
    ) = (patient_id_authority, source_id, class_code, confidentiality_code, facility, practice, content_type_code)
    else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let profile = Profile {
        name: raw.name,
        patient_id_authority,
        source_id,
        home_community_id: raw.home_community_id,
        accession_issuer,
        author_institution: raw.author_institution,
        language_code: raw.language_code,
        class_code,
        confidentiality_code,
        healthcare_facility_type_code,
        practice_setting_code,
        content_type_code,
        type_code_default,
        type_codes,
        modality_codes,
        ignored_modalities: raw.event_codes.ignored_modalities,
        body_part_codes,
        codes,
        patient_merge,
    };
    let unmapped = profile.check();
    if unmapped.is_empty() {
        Ok(profile)
    } else {
        Err(unmapped.into_iter().map(|unmapped| problem(unmapped.attribute, unmapped.reason)).collect())
    }
}

/// Reads a `codes.xml`: the code types we govern are kept, others (mimeType, folderCodeList, ...)
/// skipped.
pub fn read_codes_xml(path: &Path) -> Result<CodeSet, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if metadata.len() > MAX_CODES_BYTES {
        return Err(format!("{} is larger than {MAX_CODES_BYTES} bytes", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut codes = CodeSet::default();
    let mut current: Option<CodedAttribute> = None;
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|error| format!("{}: not well-formed XML at byte {position}: {error}", path.display()))?;
        match event {
            Event::DocType(_) => return Err(format!("{}: a DOCTYPE is not allowed", path.display())),
            Event::Start(element) | Event::Empty(element) if element.name().as_ref() == "CodeType" => {
                current = attribute(&element, "name").as_deref().and_then(CodedAttribute::from_name);
            }
            Event::Start(element) | Event::Empty(element) if element.name().as_ref() == "Code" => {
                let Some(attribute_kind) = current else { continue };
                let (Some(code), Some(scheme)) = (attribute(&element, "code"), attribute(&element, "codingScheme"))
                else {
                    return Err(format!(
                        "{}: a Code of {} at byte {position} lacks code or codingScheme",
                        path.display(),
                        attribute_kind.name()
                    ));
                };
                let display = attribute(&element, "display").unwrap_or_else(|| code.clone());
                codes.allow(attribute_kind, CodeRef { code, scheme }, display);
            }
            Event::End(element) if element.name().as_ref() == "CodeType" => current = None,
            Event::Eof => break,
            _ => {}
        }
    }
    if codes.is_empty() {
        return Err(format!("{}: no code of any metadata attribute", path.display()));
    }
    Ok(codes)
}

fn attribute(element: &quick_xml::events::BytesStart<'_>, name: &str) -> Option<String> {
    element.try_get_attribute(name).ok().flatten().and_then(|attribute| {
        attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|value| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles")
    }

    #[test]
    fn every_shipped_profile_loads_and_checks() {
        let mut n = 0;
        for entry in std::fs::read_dir(profiles_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "toml") {
                let profile = load(&path).unwrap_or_else(|problems| panic!("{}: {problems:#?}", path.display()));
                assert!(!profile.codes.is_empty(), "{}: ships a code set", path.display());
                n += 1;
            }
        }
        assert!(n >= 2, "ihe-default and at least one more realistic profile");
    }

    #[test]
    fn the_ihe_default_profile_maps_a_pet_study() {
        let profile = load(&profiles_dir().join("ihe-default.toml")).unwrap();
        assert_eq!(profile.patient_merge, PatientMergePolicy::Registry);
        let regional = load(&profiles_dir().join("example-regional.toml")).unwrap();
        assert_eq!(regional.patient_merge, PatientMergePolicy::Republish);
        let facts = hie_core::profile::StudyFacts {
            procedure_codes: vec![],
            modalities: vec!["PT".to_owned(), "KO".to_owned()],
            body_parts: vec![],
        };
        let codes = profile.document_codes(&facts).unwrap();
        assert_eq!((codes.class_code.code.as_str(), codes.class_code.display.as_str()), ("IMAGES", "Images"));
        assert_eq!(codes.format_code.code, hie_core::profile::KOS_FORMAT_CODE);
        assert_eq!(codes.event_codes.len(), 1);
        assert_eq!(codes.event_codes[0].code, "PT");
    }

    #[test]
    fn problems_name_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let codes = dir.path().join("codes.xml");
        std::fs::write(
            &codes,
            r#"<Codes><CodeType name="classCode"><Code code="IMAGES" codingScheme="1.3.6.1.4.1.19376.1.2.6.1" display="Images"/></CodeType></Codes>"#,
        )
        .unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            r#"
name = "broken"
patient_id_authority = "not an oid"
source_id = "1.2.3"
home_community_id = "1.2.3"
codes = "codes.xml"
[document]
class_code = "IMAGES"
confidentiality_code = "N^2.16.840.1.113883.5.25"
healthcare_facility_type_code = "22232009^2.16.840.1.113883.6.96"
practice_setting_code = "309964003^2.16.840.1.113883.6.96"
[submission_set]
content_type_code = "X^1"
"#,
        )
        .unwrap();
        let problems: Vec<String> = load(&path).unwrap_err().iter().map(ToString::to_string).collect();
        for expected in [
            "profile.patient_id_authority: \"not an oid\" is not an OID",
            "profile.home_community_id: \"1.2.3\" must be urn:oid:<OID>",
            "profile.document.class_code: \"IMAGES\" must be code^scheme",
        ] {
            assert!(problems.iter().any(|problem| problem.starts_with(expected)), "{expected}: {problems:#?}");
        }
        // A merge policy that is neither of the two.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}[patient_merge]\npublished = \"resend\"\n")).unwrap();
        let problems: Vec<String> = load(&path).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(
            problems.iter().any(|problem| problem
                .starts_with("profile.patient_merge.published: \"resend\" must be \"registry\" or \"republish\"")),
            "{problems:#?}"
        );
        // An unknown key is a problem too.
        std::fs::write(&path, "name = \"x\"\ncolour = \"blue\"\n").unwrap();
        let problems: Vec<String> = load(&path).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(problems[0].contains("colour"), "{problems:#?}");
    }

    #[test]
    fn a_code_set_without_the_prescribed_codes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("codes.xml"),
            r#"<?xml version="1.0"?><Codes><CodeType name="classCode"><Code code="REPORTS" codingScheme="1.3.6.1.4.1.19376.1.2.6.1" display="Reports"/></CodeType><CodeType name="mimeType"><Code code="application/dicom"/></CodeType></Codes>"#,
        )
        .unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            r#"
name = "strict"
patient_id_authority = "1.2.3"
source_id = "1.2.4"
codes = "codes.xml"
[document]
class_code = "IMAGES^1.3.6.1.4.1.19376.1.2.6.1"
confidentiality_code = "N^2.16.840.1.113883.5.25"
healthcare_facility_type_code = "22232009^2.16.840.1.113883.6.96"
practice_setting_code = "309964003^2.16.840.1.113883.6.96"
[submission_set]
content_type_code = "X^1"
"#,
        )
        .unwrap();
        let problems: Vec<String> = load(&path).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            ["profile.classCode: the class code IMAGES^1.3.6.1.4.1.19376.1.2.6.1 is not in the domain's code set"]
        );
    }

    #[test]
    fn a_doctype_in_codes_xml_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.xml");
        std::fs::write(&path, "<!DOCTYPE x [<!ENTITY a \"b\">]><Codes/>").unwrap();
        assert!(read_codes_xml(&path).unwrap_err().contains("DOCTYPE"));
    }
}
