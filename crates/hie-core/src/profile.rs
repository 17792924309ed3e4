//! The affinity-domain profile: the codes and identifiers a domain prescribes for the metadata
//! of every document its members publish, and the mappings from what the images say (procedure
//! codes, modalities, body parts) to the domain's codes.
//!
//! The binary reads a profile file (`profiles/*.toml`, with an optional `codes.xml` code set) into
//! [`Profile`] and checks it once at start ([`Profile::check`]); the publishing pipeline then maps
//! each manifest through it ([`Profile::type_code`], [`Profile::event_codes`]) and refuses, by
//! name, anything that does not map. Nothing is ever sent half right.

use std::collections::BTreeMap;

use crate::oid::Oid;

/// A coded value as XDS metadata carries it (ITI TF-3 4.2.3.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code {
    pub code: String,
    /// The coding scheme (an OID or a scheme name).
    pub scheme: String,
    pub display: String,
}

/// A code as written in a profile or found in the images, before its display name is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeRef {
    pub code: String,
    pub scheme: String,
}

impl CodeRef {
    /// Parses `code^scheme`.
    pub fn parse(text: &str) -> Option<CodeRef> {
        let (code, scheme) = text.split_once('^')?;
        let (code, scheme) = (code.trim(), scheme.trim());
        (!code.is_empty() && !scheme.is_empty() && !scheme.contains('^'))
            .then(|| CodeRef { code: code.to_owned(), scheme: scheme.to_owned() })
    }
}

impl std::fmt::Display for CodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}^{}", self.code, self.scheme)
    }
}

/// The metadata attributes a profile governs, by their XDS names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodedAttribute {
    ClassCode,
    ConfidentialityCode,
    FormatCode,
    HealthcareFacilityTypeCode,
    PracticeSettingCode,
    TypeCode,
    EventCodeList,
    ContentTypeCode,
}

impl CodedAttribute {
    pub const ALL: [CodedAttribute; 8] = [
        CodedAttribute::ClassCode,
        CodedAttribute::ConfidentialityCode,
        CodedAttribute::FormatCode,
        CodedAttribute::HealthcareFacilityTypeCode,
        CodedAttribute::PracticeSettingCode,
        CodedAttribute::TypeCode,
        CodedAttribute::EventCodeList,
        CodedAttribute::ContentTypeCode,
    ];

    /// The name used in metadata, in `codes.xml` (`CodeType name`) and in errors.
    pub fn name(self) -> &'static str {
        match self {
            CodedAttribute::ClassCode => "classCode",
            CodedAttribute::ConfidentialityCode => "confidentialityCode",
            CodedAttribute::FormatCode => "formatCode",
            CodedAttribute::HealthcareFacilityTypeCode => "healthcareFacilityTypeCode",
            CodedAttribute::PracticeSettingCode => "practiceSettingCode",
            CodedAttribute::TypeCode => "typeCode",
            CodedAttribute::EventCodeList => "eventCodeList",
            CodedAttribute::ContentTypeCode => "contentTypeCode",
        }
    }

    pub fn from_name(name: &str) -> Option<CodedAttribute> {
        CodedAttribute::ALL.into_iter().find(|attribute| attribute.name() == name)
    }
}

/// The codes a domain allows per attribute. An attribute absent from the set is unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSet {
    allowed: BTreeMap<CodedAttribute, BTreeMap<CodeRef, String>>,
}

impl CodeSet {
    /// Adds an allowed code (with its display name) for `attribute`.
    pub fn allow(&mut self, attribute: CodedAttribute, code: CodeRef, display: String) {
        self.allowed.entry(attribute).or_default().insert(code, display);
    }

    /// Whether the set restricts `attribute`.
    pub fn restricts(&self, attribute: CodedAttribute) -> bool {
        self.allowed.contains_key(&attribute)
    }

    /// The display name of an allowed code; `None` when the attribute is restricted and the code
    /// is not among its values. An unrestricted attribute accepts any code (display `fallback`).
    pub fn resolve(&self, attribute: CodedAttribute, code: &CodeRef, fallback: &str) -> Option<Code> {
        let display = match self.allowed.get(&attribute) {
            Some(codes) => codes.get(code)?.clone(),
            None => fallback.to_owned(),
        };
        Some(Code { code: code.code.clone(), scheme: code.scheme.clone(), display })
    }

    /// Number of allowed codes over all attributes.
    pub fn len(&self) -> usize {
        self.allowed.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// DICOM's coding scheme for acquisition modalities (CID 29), as XDS-I.b eventCodeList uses it
/// (DICOM PS3.16; `1.2.840.10008.2.16.4` is the DCM scheme's OID).
pub const DCM_SCHEME: &str = "1.2.840.10008.2.16.4";
/// formatCode of an XDS-I.b manifest (RAD TF-3 4.68.4.1.2.3.2; RAD68-022): the KOS SOP class in
/// the DICOM UID registry scheme.
pub const KOS_FORMAT_CODE: &str = "1.2.840.10008.5.1.4.1.1.88.59";
pub const DICOM_UID_REGISTRY_SCHEME: &str = "1.2.840.10008.2.6.1";

/// An affinity domain's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// A name for logs and errors.
    pub name: String,
    /// The domain's patient ID assigning authority.
    pub patient_id_authority: Oid,
    /// SubmissionSet.sourceId: the OID of this source (ITI TF-3 4.2.3.3.9).
    pub source_id: Oid,
    /// homeCommunityId, as `urn:oid:...`, when the domain has one.
    pub home_community_id: Option<String>,
    /// Issuer OID of accession numbers whose images carry no Issuer of Accession Number.
    pub accession_issuer: Option<Oid>,
    /// authorInstitution (XON), when the domain wants one.
    pub author_institution: Option<String>,
    pub language_code: String,
    pub class_code: CodeRef,
    pub confidentiality_code: CodeRef,
    pub healthcare_facility_type_code: CodeRef,
    pub practice_setting_code: CodeRef,
    pub content_type_code: CodeRef,
    /// typeCode for a study whose procedure code maps to nothing; `None`: such a study is refused.
    pub type_code_default: Option<CodeRef>,
    /// Procedure Code (0008,1032) of the study -> typeCode.
    pub type_codes: BTreeMap<CodeRef, CodeRef>,
    /// Modality (0008,0060) -> eventCodeList entry. A modality not listed maps to
    /// `MODALITY^1.2.840.10008.2.16.4` (DICOM CID 29).
    pub modality_codes: BTreeMap<String, CodeRef>,
    /// Modalities that are not acquisitions (KO, PR, SR...): they contribute no event code.
    pub ignored_modalities: Vec<String>,
    /// Body Part Examined (0018,0015) -> anatomic region eventCodeList entry (DICOM CID 4).
    pub body_part_codes: BTreeMap<String, CodeRef>,
    /// The allowed codes (from the domain's `codes.xml`).
    pub codes: CodeSet,
    /// What a patient merge does to what was published for the merged patient.
    pub patient_merge: PatientMergePolicy,
}

/// What a patient merge (A40) does to the documents already registered for the prior patient
/// (`[patient_merge] published`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatientMergePolicy {
    /// XDS.b as specified: the registry applies the merge it is fed (ITI-8 A40; ITI TF-2a
    /// 3.8.4.2.3 moves the prior patient's documents to the survivor), so nothing is resent; a
    /// later version replaces the registered one by RPLC under the survivor.
    #[default]
    Registry,
    /// For registries that do not apply merges: a document registered under another patient than
    /// the one its next version goes under is deprecated (ITI-57) and the version registered as an
    /// original (ITI TF-3 4.2.2.2.2: a replacement has its original's patientId); a merge queues a new version
    /// of each study registered under the prior patient.
    Republish,
}

impl PatientMergePolicy {
    /// The profile's spelling (`published = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            PatientMergePolicy::Registry => "registry",
            PatientMergePolicy::Republish => "republish",
        }
    }

    pub fn from_name(name: &str) -> Option<PatientMergePolicy> {
        [PatientMergePolicy::Registry, PatientMergePolicy::Republish].into_iter().find(|policy| policy.as_str() == name)
    }
}

/// What a study says that the profile maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyFacts {
    /// Procedure Code Sequence items of the study.
    pub procedure_codes: Vec<CodeRef>,
    /// Distinct modalities of its series.
    pub modalities: Vec<String>,
    /// Distinct Body Part Examined values of its series.
    pub body_parts: Vec<String>,
}

/// Something that did not map, named so an integration engineer can fix the profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {reason}")]
pub struct Unmapped {
    /// The metadata attribute, e.g. `typeCode`.
    pub attribute: &'static str,
    pub reason: String,
}

/// The document codes of one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentCodes {
    pub class_code: Code,
    pub confidentiality_code: Code,
    pub format_code: Code,
    pub healthcare_facility_type_code: Code,
    pub practice_setting_code: Code,
    pub type_code: Code,
    pub event_codes: Vec<Code>,
    pub content_type_code: Code,
}

impl Profile {
    /// Checks what the profile prescribes against its own code set, reporting every problem:
    /// each configured code, mapping target and the KOS format code must be allowed.
    pub fn check(&self) -> Vec<Unmapped> {
        let mut problems = Vec::new();
        let mut check = |attribute: CodedAttribute, code: &CodeRef, what: &str| {
            if self.codes.resolve(attribute, code, "").is_none() {
                problems.push(Unmapped {
                    attribute: attribute.name(),
                    reason: format!("{what} {code} is not in the domain's code set"),
                });
            }
        };
        check(CodedAttribute::ClassCode, &self.class_code, "the class code");
        check(CodedAttribute::ConfidentialityCode, &self.confidentiality_code, "the confidentiality code");
        check(CodedAttribute::HealthcareFacilityTypeCode, &self.healthcare_facility_type_code, "the facility type");
        check(CodedAttribute::PracticeSettingCode, &self.practice_setting_code, "the practice setting");
        check(CodedAttribute::ContentTypeCode, &self.content_type_code, "the content type");
        check(CodedAttribute::FormatCode, &kos_format_code(), "the XDS-I.b manifest format");
        if let Some(default) = &self.type_code_default {
            check(CodedAttribute::TypeCode, default, "the default type code");
        }
        for (procedure, type_code) in &self.type_codes {
            check(CodedAttribute::TypeCode, type_code, &format!("the type code for procedure {procedure},"));
        }
        for (modality, code) in &self.modality_codes {
            check(CodedAttribute::EventCodeList, code, &format!("the event code for modality {modality},"));
        }
        for (body_part, code) in &self.body_part_codes {
            check(CodedAttribute::EventCodeList, code, &format!("the event code for body part {body_part},"));
        }
        problems
    }

    /// Every code of one manifest's document entry and submission set, or everything that did
    /// not map.
    pub fn document_codes(&self, facts: &StudyFacts) -> Result<DocumentCodes, Vec<Unmapped>> {
        let mut problems = Vec::new();
        let mut resolve = |attribute: CodedAttribute, code: &CodeRef| {
            self.codes.resolve(attribute, code, &code.code).ok_or_else(|| {
                problems.push(Unmapped {
                    attribute: attribute.name(),
                    reason: format!("{code} is not in the domain's code set"),
                })
            })
        };
        let class_code = resolve(CodedAttribute::ClassCode, &self.class_code);
        let confidentiality_code = resolve(CodedAttribute::ConfidentialityCode, &self.confidentiality_code);
        let format_code = self.codes.resolve(CodedAttribute::FormatCode, &kos_format_code(), "Key Object Selection");
        let healthcare_facility_type_code =
            resolve(CodedAttribute::HealthcareFacilityTypeCode, &self.healthcare_facility_type_code);
        let practice_setting_code = resolve(CodedAttribute::PracticeSettingCode, &self.practice_setting_code);
        let content_type_code = resolve(CodedAttribute::ContentTypeCode, &self.content_type_code);
        let type_code = match self.type_code(facts) {
            Ok(code) => resolve(CodedAttribute::TypeCode, &code),
            Err(unmapped) => {
                problems.push(unmapped);
                Err(())
            }
        };
        let event_codes = match self.event_codes(facts) {
            Ok(codes) => codes,
            Err(mut unmapped) => {
                problems.append(&mut unmapped);
                Vec::new()
            }
        };
        match (
            class_code,
            confidentiality_code,
            format_code,
            healthcare_facility_type_code,
            practice_setting_code,
            type_code,
            content_type_code,
        ) {
            (
                Ok(class_code),
                Ok(confidentiality_code),
                Some(format_code),
                Ok(facility),
                Ok(practice),
                Ok(type_code),
                Ok(content),
            ) if problems.is_empty() => Ok(DocumentCodes {
                class_code,
                confidentiality_code,
                format_code,
                healthcare_facility_type_code: facility,
                practice_setting_code: practice,
                type_code,
                event_codes,
                content_type_code: content,
            }),
            (_, _, format_code, ..) => {
                if format_code.is_none() {
                    problems.push(Unmapped {
                        attribute: CodedAttribute::FormatCode.name(),
                        reason: format!("{} is not in the domain's code set", kos_format_code()),
                    });
                }
                Err(problems)
            }
        }
    }

    /// typeCode: the mapping of the study's first mapped procedure code, else the default.
    pub fn type_code(&self, facts: &StudyFacts) -> Result<CodeRef, Unmapped> {
        if let Some(code) = facts.procedure_codes.iter().find_map(|procedure| self.type_codes.get(procedure)) {
            return Ok(code.clone());
        }
        self.type_code_default.clone().ok_or_else(|| Unmapped {
            attribute: CodedAttribute::TypeCode.name(),
            reason: if facts.procedure_codes.is_empty() {
                "the study has no procedure code and the profile has no type_code_default".to_owned()
            } else {
                let codes: Vec<String> = facts.procedure_codes.iter().map(ToString::to_string).collect();
                format!(
                    "procedure code(s) {} map to no type code and the profile has no type_code_default",
                    codes.join(", ")
                )
            },
        })
    }

    /// eventCodeList: one acquisition-modality code per distinct modality (RAD68-019: required if
    /// known), then one anatomic-region code per mapped body part; unmapped body parts are left
    /// out (the region is optional), a modality the code set does not allow is an error.
    pub fn event_codes(&self, facts: &StudyFacts) -> Result<Vec<Code>, Vec<Unmapped>> {
        let mut codes: Vec<Code> = Vec::new();
        let mut problems = Vec::new();
        for modality in &facts.modalities {
            let modality = modality.trim();
            if modality.is_empty() || self.ignored_modalities.iter().any(|ignored| ignored == modality) {
                continue;
            }
            let code = self
                .modality_codes
                .get(modality)
                .cloned()
                .unwrap_or_else(|| CodeRef { code: modality.to_owned(), scheme: DCM_SCHEME.to_owned() });
            match self.codes.resolve(CodedAttribute::EventCodeList, &code, modality) {
                Some(code) if !codes.contains(&code) => codes.push(code),
                Some(_) => {}
                None => problems.push(Unmapped {
                    attribute: CodedAttribute::EventCodeList.name(),
                    reason: format!("modality {modality} maps to {code}, which is not in the domain's code set"),
                }),
            }
        }
        for body_part in &facts.body_parts {
            let Some(code) = self.body_part_codes.get(body_part.trim()) else { continue };
            if let Some(code) = self.codes.resolve(CodedAttribute::EventCodeList, code, body_part)
                && !codes.contains(&code)
            {
                codes.push(code);
            }
        }
        if problems.is_empty() { Ok(codes) } else { Err(problems) }
    }
}

fn kos_format_code() -> CodeRef {
    CodeRef { code: KOS_FORMAT_CODE.to_owned(), scheme: DICOM_UID_REGISTRY_SCHEME.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> CodeRef {
        CodeRef::parse(text).unwrap()
    }

    fn profile() -> Profile {
        let mut codes = CodeSet::default();
        for (attribute, text, display) in [
            (CodedAttribute::ClassCode, "IMAGES^1.3.6.1.4.1.19376.1.2.6.1", "Images"),
            (CodedAttribute::ConfidentialityCode, "N^2.16.840.1.113883.5.25", "normal"),
            (CodedAttribute::FormatCode, "1.2.840.10008.5.1.4.1.1.88.59^1.2.840.10008.2.6.1", "KOS"),
            (CodedAttribute::HealthcareFacilityTypeCode, "22232009^2.16.840.1.113883.6.96", "Hospital"),
            (CodedAttribute::PracticeSettingCode, "309964003^2.16.840.1.113883.6.96", "Radiology"),
            (CodedAttribute::ContentTypeCode, "X^1.2.3", "Unspecified"),
            (CodedAttribute::TypeCode, "18748-4^2.16.840.1.113883.6.1", "Diagnostic imaging study"),
            (CodedAttribute::TypeCode, "36643-5^2.16.840.1.113883.6.1", "XR Chest 2V"),
            (CodedAttribute::EventCodeList, "CT^1.2.840.10008.2.16.4", "Computed Tomography"),
            (CodedAttribute::EventCodeList, "PT^1.2.840.10008.2.16.4", "Positron emission tomography"),
            (CodedAttribute::EventCodeList, "69536005^2.16.840.1.113883.6.96", "Head"),
        ] {
            codes.allow(attribute, code(text), display.to_owned());
        }
        Profile {
            name: "test".to_owned(),
            patient_id_authority: Oid::parse("1.2.3").unwrap(),
            source_id: Oid::parse("1.2.4").unwrap(),
            home_community_id: None,
            accession_issuer: None,
            author_institution: None,
            language_code: "en-US".to_owned(),
            class_code: code("IMAGES^1.3.6.1.4.1.19376.1.2.6.1"),
            confidentiality_code: code("N^2.16.840.1.113883.5.25"),
            healthcare_facility_type_code: code("22232009^2.16.840.1.113883.6.96"),
            practice_setting_code: code("309964003^2.16.840.1.113883.6.96"),
            content_type_code: code("X^1.2.3"),
            type_code_default: Some(code("18748-4^2.16.840.1.113883.6.1")),
            type_codes: BTreeMap::from([(code("CXR^99LOCAL"), code("36643-5^2.16.840.1.113883.6.1"))]),
            modality_codes: BTreeMap::new(),
            ignored_modalities: vec!["KO".to_owned(), "PR".to_owned()],
            body_part_codes: BTreeMap::from([("HEAD".to_owned(), code("69536005^2.16.840.1.113883.6.96"))]),
            codes,
            patient_merge: PatientMergePolicy::default(),
        }
    }

    #[test]
    fn merge_policies_read_by_their_names() {
        assert_eq!(PatientMergePolicy::from_name("registry"), Some(PatientMergePolicy::Registry));
        assert_eq!(PatientMergePolicy::from_name("republish"), Some(PatientMergePolicy::Republish));
        assert_eq!(PatientMergePolicy::from_name("Republish"), None);
        assert_eq!(PatientMergePolicy::default(), PatientMergePolicy::Registry);
    }

    #[test]
    fn codes_map_with_displays_from_the_code_set() {
        let facts = StudyFacts {
            procedure_codes: vec![code("OTHER^99LOCAL"), code("CXR^99LOCAL")],
            modalities: vec!["CT".to_owned(), "KO".to_owned(), "PT".to_owned(), "CT".to_owned()],
            body_parts: vec!["HEAD".to_owned(), "KNEE".to_owned()],
        };
        let codes = profile().document_codes(&facts).unwrap();
        assert_eq!(codes.type_code.code, "36643-5");
        assert_eq!(codes.type_code.display, "XR Chest 2V");
        let events: Vec<&str> = codes.event_codes.iter().map(|code| code.code.as_str()).collect();
        assert_eq!(events, ["CT", "PT", "69536005"], "KO ignored, CT once, the unmapped KNEE left out");
        assert_eq!(codes.format_code.display, "KOS");
        assert!(profile().check().is_empty());
    }

    #[test]
    fn what_does_not_map_is_named() {
        let mut profile = profile();
        profile.type_code_default = None;
        profile.practice_setting_code = code("NOPE^1.2");
        let facts = StudyFacts {
            procedure_codes: vec![code("OTHER^99LOCAL")],
            modalities: vec!["MR".to_owned()],
            body_parts: vec![],
        };
        let problems = profile.document_codes(&facts).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.starts_with("practiceSettingCode: NOPE^1.2 is not in")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("typeCode: procedure code(s) OTHER^99LOCAL map to no")), "{text:#?}");
        assert!(
            text.iter().any(|t| t.starts_with("eventCodeList: modality MR maps to MR^1.2.840.10008.2.16.4")),
            "{text:#?}"
        );
        assert_eq!(problems.len(), 3);
        assert_eq!(profile.check().len(), 1, "the profile's own practice setting code");
    }

    #[test]
    fn an_unrestricted_attribute_takes_any_code() {
        let mut profile = profile();
        profile.codes = CodeSet::default();
        let facts = StudyFacts { modalities: vec!["MR".to_owned()], ..StudyFacts::default() };
        let codes = profile.document_codes(&facts).unwrap();
        assert_eq!(codes.event_codes[0].display, "MR");
        assert_eq!(codes.type_code.code, "18748-4");
    }

    #[test]
    fn code_refs_parse_code_caret_scheme() {
        assert_eq!(CodeRef::parse("N^2.16.840.1.113883.5.25").unwrap().to_string(), "N^2.16.840.1.113883.5.25");
        for bad in ["N", "^1.2", "N^", "a^b^c"] {
            assert!(CodeRef::parse(bad).is_none(), "{bad}");
        }
    }
}
