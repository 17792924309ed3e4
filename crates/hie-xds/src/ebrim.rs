//! The typed XDS metadata model over ebRIM 3.0 and its XML: [`SubmissionSet`], [`Folder`],
//! [`DocumentEntry`], [`Association`], with [`Code`], [`Slot`], [`Classification`],
//! [`ExternalIdentifier`] and [`Localized`] strings.
//!
//! Each object is read in two steps: the ebRIM structure common to every RegistryObject
//! ([`Common`], rim.xsd `RegistryObjectType`, with its element order checked), then the XDS
//! meaning of its slots, classifications and external identifiers (ITI TF-3 4.2.3 and Table
//! 4.2.5-1 for the scheme UUIDs in [`crate::vocabulary`]). Anything the typed fields do not hold
//! is kept in `extra_*` fields, so typed -> XML -> typed is the identity.
//!
//! Writers emit elements in rim.xsd order with the `rim:` prefix, which the enclosing message
//! declares. Classification and ExternalIdentifier ids are not part of the typed model: the
//! writer derives them from the owner's id.

use crate::vocabulary::*;
use crate::xml::{Element, Position, XML_NAMESPACE, XmlWriter};

/// Why metadata or a message could not be read. The sender is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata refused at {position}: {kind}")]
pub struct EbrimError {
    /// What is wrong.
    pub kind: EbrimErrorKind,
    /// Where (the start tag of the element concerned).
    pub position: Position,
}

/// What is wrong with metadata or a message body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EbrimErrorKind {
    /// The element is not the one expected here.
    #[error("expected {expected}, found {found}")]
    UnexpectedElement { expected: &'static str, found: String },
    /// A required child element is missing.
    #[error("{parent} has no {missing}")]
    MissingElement { parent: String, missing: &'static str },
    /// A required attribute is missing.
    #[error("{element} has no {attribute} attribute")]
    MissingAttribute { element: String, attribute: &'static str },
    /// Children out of the schema's order, or repeated where the schema allows one.
    #[error("{element} is out of order or repeated in {parent}")]
    OutOfOrder { parent: String, element: String },
    /// A value the schema or the profile does not allow.
    #[error("{what}: {value:?} is not allowed")]
    InvalidValue { what: &'static str, value: String },
    /// A registry object type this codec does not read.
    #[error("unsupported registry object {found}")]
    UnsupportedObject { found: String },
    /// A RegistryPackage classified neither as SubmissionSet nor as Folder.
    #[error("RegistryPackage {id} is classified neither as SubmissionSet nor as Folder")]
    UnclassifiedPackage { id: String },
    /// Base64 content that does not decode.
    #[error("content of {element} is not base64")]
    InvalidBase64 { element: &'static str },
    /// A document with both inline base64 text and an xop:Include.
    #[error("Document {id} has both base64 text and an xop:Include")]
    InlineAndInclude { id: String },
    /// An xop:Include that does not resolve.
    #[error(transparent)]
    Mtom(#[from] crate::mtom::MtomError),
}

impl EbrimError {
    pub(crate) fn at(element: Element<'_>, kind: EbrimErrorKind) -> EbrimError {
        EbrimError { kind, position: element.position() }
    }
}

/// A coded value: code, coding scheme and display name (ITI TF-3 4.2.3.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Code {
    /// nodeRepresentation.
    pub code: String,
    /// The codingScheme slot.
    pub scheme: String,
    /// Name/LocalizedString value.
    pub display: String,
}

impl Code {
    /// A code.
    pub fn new(code: &str, scheme: &str, display: &str) -> Code {
        Code { code: code.to_owned(), scheme: scheme.to_owned(), display: display.to_owned() }
    }
}

/// A LocalizedString (rim.xsd `LocalizedStringType`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Localized {
    /// The text.
    pub value: String,
    /// xml:lang, if given.
    pub lang: Option<String>,
    /// charset, if given.
    pub charset: Option<String>,
}

impl Localized {
    /// A string with no language.
    pub fn new(value: &str) -> Localized {
        Localized { value: value.to_owned(), lang: None, charset: None }
    }
}

/// A Slot: a name and its values (rim.xsd `SlotType1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Slot {
    /// name.
    pub name: String,
    /// slotType, if given.
    pub slot_type: Option<String>,
    /// ValueList/Value texts.
    pub values: Vec<String>,
}

impl Slot {
    /// A slot with values.
    pub fn new(name: &str, values: &[&str]) -> Slot {
        Slot {
            name: name.to_owned(),
            slot_type: None,
            values: values.iter().map(|value| (*value).to_owned()).collect(),
        }
    }
}

/// A Classification kept as such (one the typed fields do not interpret).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    /// id.
    pub id: String,
    /// classificationScheme (external classification).
    pub scheme: Option<String>,
    /// classificationNode (internal classification).
    pub node: Option<String>,
    /// classifiedObject.
    pub classified_object: String,
    /// nodeRepresentation.
    pub node_representation: Option<String>,
    /// Name.
    pub name: Vec<Localized>,
    /// Slots.
    pub slots: Vec<Slot>,
}

/// An ExternalIdentifier kept as such.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExternalIdentifier {
    /// id.
    pub id: String,
    /// identificationScheme.
    pub scheme: String,
    /// registryObject.
    pub registry_object: String,
    /// value.
    pub value: String,
    /// Name.
    pub name: Vec<Localized>,
}

/// An author (ITI TF-3 4.2.3.1.4): a Classification with the author scheme and these slots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Author {
    /// authorPerson (XCN).
    pub person: Option<String>,
    /// authorInstitution (XON), repeatable.
    pub institutions: Vec<String>,
    /// authorRole.
    pub roles: Vec<String>,
    /// authorSpecialty.
    pub specialties: Vec<String>,
    /// authorTelecommunication (XTN).
    pub telecommunications: Vec<String>,
    /// Other slots of the author classification.
    pub extra_slots: Vec<Slot>,
}

/// A DocumentEntry: an ExtrinsicObject (ITI TF-3 4.2.3.2, 4.2.5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentEntry {
    /// id: entryUUID or a symbolic id in a submission.
    pub id: String,
    /// lid (logical id), if given.
    pub lid: Option<String>,
    /// home (homeCommunityId), if given.
    pub home: Option<String>,
    /// status, if given (registries set it).
    pub status: Option<String>,
    /// objectType: stable or on-demand document; empty when a peer omitted it.
    pub object_type: String,
    /// mimeType.
    pub mime_type: String,
    /// VersionInfo/@versionName, if given.
    pub version: Option<String>,
    /// Name: title.
    pub title: Vec<Localized>,
    /// Description: comments.
    pub comments: Vec<Localized>,
    /// creationTime (DTM).
    pub creation_time: Option<String>,
    /// languageCode.
    pub language_code: Option<String>,
    /// serviceStartTime.
    pub service_start_time: Option<String>,
    /// serviceStopTime.
    pub service_stop_time: Option<String>,
    /// sourcePatientId (CX).
    pub source_patient_id: Option<String>,
    /// sourcePatientInfo (PID-x|value lines).
    pub source_patient_info: Vec<String>,
    /// hash (SHA-1 hex).
    pub hash: Option<String>,
    /// size in bytes, as written.
    pub size: Option<String>,
    /// repositoryUniqueId.
    pub repository_unique_id: Option<String>,
    /// URI.
    pub uri: Option<String>,
    /// legalAuthenticator (XCN).
    pub legal_authenticator: Option<String>,
    /// urn:ihe:iti:xds:2013:referenceIdList (CXi values).
    pub reference_ids: Vec<String>,
    /// classCode.
    pub class_code: Option<Code>,
    /// confidentialityCode (repeatable).
    pub confidentiality_codes: Vec<Code>,
    /// formatCode.
    pub format_code: Option<Code>,
    /// healthcareFacilityTypeCode.
    pub healthcare_facility_type_code: Option<Code>,
    /// practiceSettingCode.
    pub practice_setting_code: Option<Code>,
    /// typeCode.
    pub type_code: Option<Code>,
    /// eventCodeList.
    pub event_codes: Vec<Code>,
    /// author (repeatable).
    pub authors: Vec<Author>,
    /// patientId (CX, affinity domain).
    pub patient_id: Option<String>,
    /// uniqueId (for a KOS: its SOP Instance UID).
    pub unique_id: Option<String>,
    /// Slots not listed above, or repeated.
    pub extra_slots: Vec<Slot>,
    /// Classifications not listed above, or repeated.
    pub extra_classifications: Vec<Classification>,
    /// External identifiers not listed above, or repeated.
    pub extra_external_identifiers: Vec<ExternalIdentifier>,
}

/// A SubmissionSet: a RegistryPackage classified by [`SUBMISSION_SET_NODE`] (ITI TF-3 4.2.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubmissionSet {
    /// id.
    pub id: String,
    /// lid.
    pub lid: Option<String>,
    /// home.
    pub home: Option<String>,
    /// status.
    pub status: Option<String>,
    /// VersionInfo/@versionName.
    pub version: Option<String>,
    /// Name: title.
    pub title: Vec<Localized>,
    /// Description: comments.
    pub comments: Vec<Localized>,
    /// submissionTime.
    pub submission_time: Option<String>,
    /// intendedRecipient (repeatable).
    pub intended_recipients: Vec<String>,
    /// contentTypeCode.
    pub content_type_code: Option<Code>,
    /// author (repeatable).
    pub authors: Vec<Author>,
    /// patientId.
    pub patient_id: Option<String>,
    /// sourceId (OID).
    pub source_id: Option<String>,
    /// uniqueId (OID).
    pub unique_id: Option<String>,
    /// Slots not listed above.
    pub extra_slots: Vec<Slot>,
    /// Classifications not listed above.
    pub extra_classifications: Vec<Classification>,
    /// External identifiers not listed above.
    pub extra_external_identifiers: Vec<ExternalIdentifier>,
}

/// A Folder: a RegistryPackage classified by [`FOLDER_NODE`] (ITI TF-3 4.2.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Folder {
    /// id.
    pub id: String,
    /// lid.
    pub lid: Option<String>,
    /// home.
    pub home: Option<String>,
    /// status.
    pub status: Option<String>,
    /// VersionInfo/@versionName.
    pub version: Option<String>,
    /// Name: title.
    pub title: Vec<Localized>,
    /// Description: comments.
    pub comments: Vec<Localized>,
    /// lastUpdateTime.
    pub last_update_time: Option<String>,
    /// codeList (repeatable).
    pub codes: Vec<Code>,
    /// patientId.
    pub patient_id: Option<String>,
    /// uniqueId.
    pub unique_id: Option<String>,
    /// Slots not listed above.
    pub extra_slots: Vec<Slot>,
    /// Classifications not listed above.
    pub extra_classifications: Vec<Classification>,
    /// External identifiers not listed above.
    pub extra_external_identifiers: Vec<ExternalIdentifier>,
}

/// An Association (ITI TF-3 4.2.2): HasMember, RPLC, ITI-57 UpdateAvailabilityStatus, ...
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Association {
    /// id.
    pub id: String,
    /// lid.
    pub lid: Option<String>,
    /// home.
    pub home: Option<String>,
    /// status.
    pub status: Option<String>,
    /// associationType.
    pub association_type: String,
    /// sourceObject.
    pub source_object: String,
    /// targetObject.
    pub target_object: String,
    /// SubmissionSetStatus (HasMember from a SubmissionSet): Original or Reference.
    pub submission_set_status: Option<String>,
    /// OriginalStatus (UpdateAvailabilityStatus).
    pub original_status: Option<String>,
    /// NewStatus (UpdateAvailabilityStatus).
    pub new_status: Option<String>,
    /// PreviousVersion (ITI-57 HasMember of an update).
    pub previous_version: Option<String>,
    /// Slots not listed above.
    pub extra_slots: Vec<Slot>,
    /// Classifications (e.g. associationDocumentation).
    pub extra_classifications: Vec<Classification>,
}

impl Association {
    /// A HasMember association from a SubmissionSet with SubmissionSetStatus Original.
    pub fn has_member(id: &str, submission_set: &str, member: &str) -> Association {
        Association {
            id: id.to_owned(),
            association_type: ASSOCIATION_HAS_MEMBER.to_owned(),
            source_object: submission_set.to_owned(),
            target_object: member.to_owned(),
            submission_set_status: Some(SUBMISSION_SET_STATUS_ORIGINAL.to_owned()),
            ..Association::default()
        }
    }
}

/// One entry of a RegistryObjectList.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant, reason = "a list holds a few objects; boxing would burden every match on them")]
pub enum RegistryObject {
    /// A SubmissionSet.
    SubmissionSet(SubmissionSet),
    /// A Folder.
    Folder(Folder),
    /// A DocumentEntry.
    DocumentEntry(DocumentEntry),
    /// An Association.
    Association(Association),
    /// A top-level Classification other than the SubmissionSet/Folder marker.
    Classification(Classification),
    /// An ObjectRef (query responses with returnType ObjectRef; references in submissions).
    ObjectRef {
        /// id.
        id: String,
        /// home.
        home: Option<String>,
    },
}

/// The ebRIM structure common to every RegistryObject (rim.xsd `RegistryObjectType`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    /// id.
    pub id: String,
    /// home.
    pub home: Option<String>,
    /// lid.
    pub lid: Option<String>,
    /// objectType.
    pub object_type: Option<String>,
    /// status.
    pub status: Option<String>,
    /// Slots.
    pub slots: Vec<Slot>,
    /// Name.
    pub name: Vec<Localized>,
    /// Description.
    pub description: Vec<Localized>,
    /// VersionInfo/@versionName.
    pub version: Option<String>,
    /// Nested classifications.
    pub classifications: Vec<Classification>,
    /// Nested external identifiers.
    pub external_identifiers: Vec<ExternalIdentifier>,
}

/// Rank of each RegistryObjectType child in rim.xsd's sequence; `None` for a child the type
/// does not have. `extension` names the one extra child a subtype adds at the end.
fn child_rank(child: Element<'_>, extension: Option<&str>) -> Option<u8> {
    if child.namespace() != Some(NS_RIM) {
        return None;
    }
    match child.local() {
        "Slot" => Some(0),
        "Name" => Some(1),
        "Description" => Some(2),
        "VersionInfo" => Some(3),
        "Classification" => Some(4),
        "ExternalIdentifier" => Some(5),
        other if Some(other) == extension => Some(6),
        _ => None,
    }
}

/// Reads the common part of a RegistryObject; `extension` is the subtype's extra child.
pub fn read_common(element: Element<'_>, extension: Option<&str>) -> Result<Common, EbrimError> {
    let mut common = Common {
        id: required_attribute(element, "id")?.to_owned(),
        home: optional_attribute(element, "home"),
        lid: optional_attribute(element, "lid"),
        object_type: optional_attribute(element, "objectType"),
        status: optional_attribute(element, "status"),
        ..Common::default()
    };
    let mut last_rank = 0u8;
    let mut seen_single = [false; 4];
    for child in element.children() {
        let Some(rank) = child_rank(child, extension) else {
            return Err(EbrimError::at(
                child,
                EbrimErrorKind::OutOfOrder { parent: element.expanded_name(), element: child.expanded_name() },
            ));
        };
        let single = matches!(rank, 1..=3 | 6);
        let slot_index = usize::from(rank.min(3));
        if rank < last_rank || (single && rank != 6 && std::mem::replace(&mut seen_single[slot_index], true)) {
            return Err(EbrimError::at(
                child,
                EbrimErrorKind::OutOfOrder { parent: element.expanded_name(), element: child.expanded_name() },
            ));
        }
        last_rank = rank;
        match rank {
            0 => common.slots.push(read_slot(child)?),
            1 => common.name = read_localized(child)?,
            2 => common.description = read_localized(child)?,
            3 => common.version = optional_attribute(child, "versionName"),
            4 => common.classifications.push(read_classification(child)?),
            5 => common.external_identifiers.push(read_external_identifier(child)?),
            _ => {}
        }
    }
    Ok(common)
}

/// Reads a rim:Slot.
pub fn read_slot(element: Element<'_>) -> Result<Slot, EbrimError> {
    let name = required_attribute(element, "name")?.to_owned();
    let value_list = element.child(NS_RIM, "ValueList").ok_or_else(|| {
        EbrimError::at(
            element,
            EbrimErrorKind::MissingElement { parent: element.expanded_name(), missing: "rim:ValueList" },
        )
    })?;
    let values = value_list.children_named(NS_RIM, "Value").map(|value| value.trimmed_text().to_owned()).collect();
    Ok(Slot { name, slot_type: optional_attribute(element, "slotType"), values })
}

fn read_localized(element: Element<'_>) -> Result<Vec<Localized>, EbrimError> {
    element
        .children_named(NS_RIM, "LocalizedString")
        .map(|localized| {
            Ok(Localized {
                value: required_attribute(localized, "value")?.to_owned(),
                lang: localized.attribute_ns(XML_NAMESPACE, "lang").map(str::to_owned),
                charset: optional_attribute(localized, "charset"),
            })
        })
        .collect()
}

/// Reads a rim:Classification.
pub fn read_classification(element: Element<'_>) -> Result<Classification, EbrimError> {
    let common = read_common(element, None)?;
    Ok(Classification {
        id: common.id,
        scheme: optional_attribute(element, "classificationScheme"),
        node: optional_attribute(element, "classificationNode"),
        classified_object: required_attribute(element, "classifiedObject")?.to_owned(),
        node_representation: optional_attribute(element, "nodeRepresentation"),
        name: common.name,
        slots: common.slots,
    })
}

/// Reads a rim:ExternalIdentifier.
pub fn read_external_identifier(element: Element<'_>) -> Result<ExternalIdentifier, EbrimError> {
    let common = read_common(element, None)?;
    Ok(ExternalIdentifier {
        id: common.id,
        scheme: required_attribute(element, "identificationScheme")?.to_owned(),
        registry_object: required_attribute(element, "registryObject")?.to_owned(),
        value: required_attribute(element, "value")?.to_owned(),
        name: common.name,
    })
}

/// Reads a rim:RegistryObjectList. Top-level Classifications that mark a RegistryPackage as
/// SubmissionSet or Folder are folded into that package.
pub fn read_registry_object_list(element: Element<'_>) -> Result<Vec<RegistryObject>, EbrimError> {
    let mut markers: Vec<(String, &'static str)> = Vec::new();
    for child in element.children() {
        if child.is(NS_RIM, "Classification")
            && let Some(kind) = child.attribute("classificationNode").and_then(package_kind)
            && let Some(classified) = child.attribute("classifiedObject")
        {
            markers.push((classified.to_owned(), kind));
        }
    }
    let mut objects = Vec::with_capacity(element.n_children());
    for child in element.children() {
        if child.namespace() != Some(NS_RIM) {
            return Err(EbrimError::at(child, EbrimErrorKind::UnsupportedObject { found: child.expanded_name() }));
        }
        let object = match child.local() {
            "ExtrinsicObject" => RegistryObject::DocumentEntry(read_document_entry(child)?),
            "RegistryPackage" => read_package(child, &markers)?,
            "Association" => RegistryObject::Association(read_association(child)?),
            "Classification" => {
                if child.attribute("classificationNode").and_then(package_kind).is_some() {
                    continue;
                }
                RegistryObject::Classification(read_classification(child)?)
            }
            "ObjectRef" => RegistryObject::ObjectRef {
                id: required_attribute(child, "id")?.to_owned(),
                home: optional_attribute(child, "home"),
            },
            _ => return Err(EbrimError::at(child, EbrimErrorKind::UnsupportedObject { found: child.expanded_name() })),
        };
        objects.push(object);
    }
    Ok(objects)
}

fn package_kind(node: &str) -> Option<&'static str> {
    match node {
        SUBMISSION_SET_NODE => Some(SUBMISSION_SET_NODE),
        FOLDER_NODE => Some(FOLDER_NODE),
        _ => None,
    }
}

fn read_package(element: Element<'_>, markers: &[(String, &'static str)]) -> Result<RegistryObject, EbrimError> {
    let mut common = read_common(element, Some("RegistryObjectList"))?;
    let mut kind = markers.iter().find(|(id, _)| *id == common.id).map(|(_, kind)| *kind);
    if let Some(index) = common
        .classifications
        .iter()
        .position(|classification| classification.node.as_deref().and_then(package_kind).is_some())
    {
        let marker = common.classifications.remove(index);
        kind = marker.node.as_deref().and_then(package_kind);
    }
    match kind {
        Some(SUBMISSION_SET_NODE) => Ok(RegistryObject::SubmissionSet(submission_set_from(common))),
        Some(_) => Ok(RegistryObject::Folder(folder_from(common))),
        None => Err(EbrimError::at(element, EbrimErrorKind::UnclassifiedPackage { id: common.id })),
    }
}

/// Reads a DocumentEntry from a rim:ExtrinsicObject.
pub fn read_document_entry(element: Element<'_>) -> Result<DocumentEntry, EbrimError> {
    let mut common = read_common(element, Some("ContentVersionInfo"))?;
    // An absent objectType is tolerated (some registries omit it in query responses) and kept
    // empty; any other value but the two DocumentEntry types is refused.
    let object_type = common.object_type.take().unwrap_or_default();
    if !object_type.is_empty()
        && object_type != OBJECT_TYPE_STABLE_DOCUMENT
        && object_type != OBJECT_TYPE_ON_DEMAND_DOCUMENT
    {
        return Err(EbrimError::at(
            element,
            EbrimErrorKind::InvalidValue { what: "ExtrinsicObject objectType", value: object_type },
        ));
    }
    let mut entry = DocumentEntry {
        id: common.id,
        lid: common.lid,
        home: common.home,
        status: common.status,
        object_type,
        mime_type: optional_attribute(element, "mimeType").unwrap_or_else(|| DEFAULT_MIME_TYPE.to_owned()),
        version: common.version,
        title: common.name,
        comments: common.description,
        ..DocumentEntry::default()
    };
    let mut slots = SlotTaker(common.slots);
    entry.creation_time = slots.single("creationTime");
    entry.language_code = slots.single("languageCode");
    entry.service_start_time = slots.single("serviceStartTime");
    entry.service_stop_time = slots.single("serviceStopTime");
    entry.source_patient_id = slots.single("sourcePatientId");
    entry.source_patient_info = slots.list("sourcePatientInfo");
    entry.hash = slots.single("hash");
    entry.size = slots.single("size");
    entry.repository_unique_id = slots.single("repositoryUniqueId");
    entry.uri = slots.single("URI");
    entry.legal_authenticator = slots.single("legalAuthenticator");
    entry.reference_ids = slots.list(SLOT_REFERENCE_ID_LIST);
    entry.extra_slots = slots.0;
    let mut classifications = ClassificationTaker(common.classifications);
    entry.class_code = classifications.code(DE_CLASS_CODE);
    entry.confidentiality_codes = classifications.codes(DE_CONFIDENTIALITY_CODE);
    entry.format_code = classifications.code(DE_FORMAT_CODE);
    entry.healthcare_facility_type_code = classifications.code(DE_HEALTHCARE_FACILITY_TYPE_CODE);
    entry.practice_setting_code = classifications.code(DE_PRACTICE_SETTING_CODE);
    entry.type_code = classifications.code(DE_TYPE_CODE);
    entry.event_codes = classifications.codes(DE_EVENT_CODE);
    entry.authors = classifications.authors(DE_AUTHOR);
    entry.extra_classifications = classifications.0;
    let mut identifiers = IdentifierTaker(common.external_identifiers);
    entry.patient_id = identifiers.value(DE_PATIENT_ID);
    entry.unique_id = identifiers.value(DE_UNIQUE_ID);
    entry.extra_external_identifiers = identifiers.0;
    Ok(entry)
}

fn submission_set_from(common: Common) -> SubmissionSet {
    let mut slots = SlotTaker(common.slots);
    let mut classifications = ClassificationTaker(common.classifications);
    let mut identifiers = IdentifierTaker(common.external_identifiers);
    SubmissionSet {
        id: common.id,
        lid: common.lid,
        home: common.home,
        status: common.status,
        version: common.version,
        title: common.name,
        comments: common.description,
        submission_time: slots.single("submissionTime"),
        intended_recipients: slots.list("intendedRecipient"),
        content_type_code: classifications.code(SS_CONTENT_TYPE_CODE),
        authors: classifications.authors(SS_AUTHOR),
        patient_id: identifiers.value(SS_PATIENT_ID),
        source_id: identifiers.value(SS_SOURCE_ID),
        unique_id: identifiers.value(SS_UNIQUE_ID),
        extra_slots: slots.0,
        extra_classifications: classifications.0,
        extra_external_identifiers: identifiers.0,
    }
}

fn folder_from(common: Common) -> Folder {
    let mut slots = SlotTaker(common.slots);
    let mut classifications = ClassificationTaker(common.classifications);
    let mut identifiers = IdentifierTaker(common.external_identifiers);
    Folder {
        id: common.id,
        lid: common.lid,
        home: common.home,
        status: common.status,
        version: common.version,
        title: common.name,
        comments: common.description,
        last_update_time: slots.single("lastUpdateTime"),
        codes: classifications.codes(FOLDER_CODE_LIST),
        patient_id: identifiers.value(FOLDER_PATIENT_ID),
        unique_id: identifiers.value(FOLDER_UNIQUE_ID),
        extra_slots: slots.0,
        extra_classifications: classifications.0,
        extra_external_identifiers: identifiers.0,
    }
}

/// Reads a rim:Association.
pub fn read_association(element: Element<'_>) -> Result<Association, EbrimError> {
    let common = read_common(element, None)?;
    let mut slots = SlotTaker(common.slots);
    Ok(Association {
        id: common.id,
        lid: common.lid,
        home: common.home,
        status: common.status,
        association_type: required_attribute(element, "associationType")?.to_owned(),
        source_object: required_attribute(element, "sourceObject")?.to_owned(),
        target_object: required_attribute(element, "targetObject")?.to_owned(),
        submission_set_status: slots.single(SLOT_SUBMISSION_SET_STATUS),
        original_status: slots.single(SLOT_ORIGINAL_STATUS),
        new_status: slots.single(SLOT_NEW_STATUS),
        previous_version: slots.single(SLOT_PREVIOUS_VERSION),
        extra_slots: slots.0,
        extra_classifications: common.classifications,
    })
}

/// Takes typed slots out of a list, leaving the rest.
struct SlotTaker(Vec<Slot>);

impl SlotTaker {
    /// The first slot `name` with exactly one value.
    fn single(&mut self, name: &str) -> Option<String> {
        let index =
            self.0.iter().position(|slot| slot.name == name && slot.values.len() == 1 && slot.slot_type.is_none())?;
        self.0.remove(index).values.pop()
    }

    /// The values of the first slot `name`.
    fn list(&mut self, name: &str) -> Vec<String> {
        match self.0.iter().position(|slot| slot.name == name && !slot.values.is_empty() && slot.slot_type.is_none()) {
            Some(index) => self.0.remove(index).values,
            None => Vec::new(),
        }
    }
}

/// Takes typed classifications out of a list, leaving the rest.
struct ClassificationTaker(Vec<Classification>);

impl ClassificationTaker {
    fn take(&mut self, scheme: &str, shape: fn(&Classification) -> bool) -> Option<Classification> {
        let index = self
            .0
            .iter()
            .position(|classification| classification.scheme.as_deref() == Some(scheme) && shape(classification))?;
        Some(self.0.remove(index))
    }

    fn code(&mut self, scheme: &str) -> Option<Code> {
        self.take(scheme, is_code_shaped).map(|classification| code_of(&classification))
    }

    fn codes(&mut self, scheme: &str) -> Vec<Code> {
        std::iter::from_fn(|| self.code(scheme)).collect()
    }

    fn authors(&mut self, scheme: &str) -> Vec<Author> {
        std::iter::from_fn(|| self.take(scheme, is_author_shaped)).map(author_of).collect()
    }
}

/// A coded classification: nodeRepresentation, exactly the codingScheme slot with one value,
/// a Name with at most one string, no node. Anything else is kept verbatim. The display's
/// xml:lang and charset are not kept (registries add `en-us`/`UTF-8` to their answers).
fn is_code_shaped(classification: &Classification) -> bool {
    classification.node.is_none()
        && classification.node_representation.is_some()
        && classification.slots.len() == 1
        && classification.slots[0].name == SLOT_CODING_SCHEME
        && classification.slots[0].values.len() == 1
        && classification.slots[0].slot_type.is_none()
        && classification.name.len() <= 1
}

/// Only called on a classification for which [`is_code_shaped`] holds, so `slots[0].values[0]`
/// exists.
fn code_of(classification: &Classification) -> Code {
    Code {
        code: classification.node_representation.clone().unwrap_or_default(),
        scheme: classification.slots[0].values[0].clone(),
        display: classification.name.first().map(|name| name.value.clone()).unwrap_or_default(),
    }
}

/// An author classification: empty or absent nodeRepresentation (ITI TF-3 4.2.3.1.4 says empty;
/// IPF omits it), no node, no name.
fn is_author_shaped(classification: &Classification) -> bool {
    classification.node.is_none()
        && classification.node_representation.as_deref().unwrap_or_default().is_empty()
        && classification.name.is_empty()
        && classification.slots.iter().all(|slot| slot.slot_type.is_none())
}

fn author_of(classification: Classification) -> Author {
    let mut slots = SlotTaker(classification.slots);
    Author {
        person: slots.single("authorPerson"),
        institutions: slots.list("authorInstitution"),
        roles: slots.list("authorRole"),
        specialties: slots.list("authorSpecialty"),
        telecommunications: slots.list("authorTelecommunication"),
        extra_slots: slots.0,
    }
}

/// Takes typed external identifiers out of a list, leaving the rest.
struct IdentifierTaker(Vec<ExternalIdentifier>);

impl IdentifierTaker {
    fn value(&mut self, scheme: &str) -> Option<String> {
        let index = self.0.iter().position(|identifier| identifier.scheme == scheme)?;
        Some(self.0.remove(index).value)
    }
}

pub(crate) fn required_attribute<'e>(element: Element<'e>, name: &'static str) -> Result<&'e str, EbrimError> {
    element.attribute(name).ok_or_else(|| {
        EbrimError::at(element, EbrimErrorKind::MissingAttribute { element: element.expanded_name(), attribute: name })
    })
}

pub(crate) fn optional_attribute(element: Element<'_>, name: &str) -> Option<String> {
    element.attribute(name).map(str::to_owned)
}

// ---- writing ----

/// Writes one registry object as a child of a rim:RegistryObjectList.
pub fn write_registry_object(writer: &mut XmlWriter, object: &RegistryObject) {
    match object {
        RegistryObject::SubmissionSet(submission_set) => write_submission_set(writer, submission_set),
        RegistryObject::Folder(folder) => write_folder(writer, folder),
        RegistryObject::DocumentEntry(entry) => write_document_entry(writer, entry),
        RegistryObject::Association(association) => write_association(writer, association),
        RegistryObject::Classification(classification) => write_classification(writer, classification),
        RegistryObject::ObjectRef { id, home } => {
            let mut attributes = vec![("id", id.as_str())];
            push_optional(&mut attributes, "home", home);
            writer.empty("rim:ObjectRef", &attributes);
        }
    }
}

/// Writes a rim:RegistryObjectList.
pub fn write_registry_object_list(writer: &mut XmlWriter, objects: &[RegistryObject]) {
    if objects.is_empty() {
        writer.empty("rim:RegistryObjectList", &[]);
        return;
    }
    writer.start("rim:RegistryObjectList", &[]);
    for object in objects {
        write_registry_object(writer, object);
    }
    writer.end("rim:RegistryObjectList");
}

fn write_document_entry(writer: &mut XmlWriter, entry: &DocumentEntry) {
    let mut attributes = vec![("id", entry.id.as_str())];
    push_optional(&mut attributes, "home", &entry.home);
    push_optional(&mut attributes, "lid", &entry.lid);
    if !entry.object_type.is_empty() {
        attributes.push(("objectType", entry.object_type.as_str()));
    }
    push_optional(&mut attributes, "status", &entry.status);
    attributes.push(("mimeType", entry.mime_type.as_str()));
    writer.start("rim:ExtrinsicObject", &attributes);
    let singles = [
        ("creationTime", &entry.creation_time),
        ("languageCode", &entry.language_code),
        ("serviceStartTime", &entry.service_start_time),
        ("serviceStopTime", &entry.service_stop_time),
        ("sourcePatientId", &entry.source_patient_id),
        ("hash", &entry.hash),
        ("size", &entry.size),
        ("repositoryUniqueId", &entry.repository_unique_id),
        ("URI", &entry.uri),
        ("legalAuthenticator", &entry.legal_authenticator),
    ];
    for (name, value) in singles {
        if let Some(value) = value {
            write_slot_values(writer, name, None, std::slice::from_ref(value));
        }
    }
    if !entry.source_patient_info.is_empty() {
        write_slot_values(writer, "sourcePatientInfo", None, &entry.source_patient_info);
    }
    if !entry.reference_ids.is_empty() {
        write_slot_values(writer, SLOT_REFERENCE_ID_LIST, None, &entry.reference_ids);
    }
    write_slots(writer, &entry.extra_slots);
    write_names_and_version(writer, &entry.title, &entry.comments, &entry.version);
    let mut ids = IdSequence::new(&entry.id);
    for author in &entry.authors {
        write_author(writer, &mut ids, &entry.id, DE_AUTHOR, author);
    }
    let codes = [
        (DE_CLASS_CODE, entry.class_code.as_ref()),
        (DE_FORMAT_CODE, entry.format_code.as_ref()),
        (DE_HEALTHCARE_FACILITY_TYPE_CODE, entry.healthcare_facility_type_code.as_ref()),
        (DE_PRACTICE_SETTING_CODE, entry.practice_setting_code.as_ref()),
        (DE_TYPE_CODE, entry.type_code.as_ref()),
    ];
    for (scheme, code) in codes {
        if let Some(code) = code {
            write_code(writer, &mut ids, &entry.id, scheme, code);
        }
    }
    for code in &entry.confidentiality_codes {
        write_code(writer, &mut ids, &entry.id, DE_CONFIDENTIALITY_CODE, code);
    }
    for code in &entry.event_codes {
        write_code(writer, &mut ids, &entry.id, DE_EVENT_CODE, code);
    }
    for classification in &entry.extra_classifications {
        write_classification(writer, classification);
    }
    let identifiers = [
        (DE_PATIENT_ID, &entry.patient_id, "XDSDocumentEntry.patientId"),
        (DE_UNIQUE_ID, &entry.unique_id, "XDSDocumentEntry.uniqueId"),
    ];
    for (scheme, value, name) in identifiers {
        if let Some(value) = value {
            write_identifier(writer, &ids.next_id(), scheme, &entry.id, value, name);
        }
    }
    for identifier in &entry.extra_external_identifiers {
        write_external_identifier(writer, identifier);
    }
    writer.end("rim:ExtrinsicObject");
}

fn write_submission_set(writer: &mut XmlWriter, submission_set: &SubmissionSet) {
    write_package_start(writer, &submission_set.id, &submission_set.home, &submission_set.lid, &submission_set.status);
    if let Some(submission_time) = &submission_set.submission_time {
        write_slot_values(writer, "submissionTime", None, std::slice::from_ref(submission_time));
    }
    if !submission_set.intended_recipients.is_empty() {
        write_slot_values(writer, "intendedRecipient", None, &submission_set.intended_recipients);
    }
    write_slots(writer, &submission_set.extra_slots);
    write_names_and_version(writer, &submission_set.title, &submission_set.comments, &submission_set.version);
    let mut ids = IdSequence::new(&submission_set.id);
    for author in &submission_set.authors {
        write_author(writer, &mut ids, &submission_set.id, SS_AUTHOR, author);
    }
    if let Some(code) = &submission_set.content_type_code {
        write_code(writer, &mut ids, &submission_set.id, SS_CONTENT_TYPE_CODE, code);
    }
    write_node_marker(writer, &ids.next_id(), &submission_set.id, SUBMISSION_SET_NODE);
    for classification in &submission_set.extra_classifications {
        write_classification(writer, classification);
    }
    let identifiers = [
        (SS_UNIQUE_ID, &submission_set.unique_id, "XDSSubmissionSet.uniqueId"),
        (SS_SOURCE_ID, &submission_set.source_id, "XDSSubmissionSet.sourceId"),
        (SS_PATIENT_ID, &submission_set.patient_id, "XDSSubmissionSet.patientId"),
    ];
    for (scheme, value, name) in identifiers {
        if let Some(value) = value {
            write_identifier(writer, &ids.next_id(), scheme, &submission_set.id, value, name);
        }
    }
    for identifier in &submission_set.extra_external_identifiers {
        write_external_identifier(writer, identifier);
    }
    writer.end("rim:RegistryPackage");
}

fn write_folder(writer: &mut XmlWriter, folder: &Folder) {
    write_package_start(writer, &folder.id, &folder.home, &folder.lid, &folder.status);
    if let Some(last_update_time) = &folder.last_update_time {
        write_slot_values(writer, "lastUpdateTime", None, std::slice::from_ref(last_update_time));
    }
    write_slots(writer, &folder.extra_slots);
    write_names_and_version(writer, &folder.title, &folder.comments, &folder.version);
    let mut ids = IdSequence::new(&folder.id);
    for code in &folder.codes {
        write_code(writer, &mut ids, &folder.id, FOLDER_CODE_LIST, code);
    }
    write_node_marker(writer, &ids.next_id(), &folder.id, FOLDER_NODE);
    for classification in &folder.extra_classifications {
        write_classification(writer, classification);
    }
    let identifiers = [
        (FOLDER_UNIQUE_ID, &folder.unique_id, "XDSFolder.uniqueId"),
        (FOLDER_PATIENT_ID, &folder.patient_id, "XDSFolder.patientId"),
    ];
    for (scheme, value, name) in identifiers {
        if let Some(value) = value {
            write_identifier(writer, &ids.next_id(), scheme, &folder.id, value, name);
        }
    }
    for identifier in &folder.extra_external_identifiers {
        write_external_identifier(writer, identifier);
    }
    writer.end("rim:RegistryPackage");
}

fn write_package_start(
    writer: &mut XmlWriter,
    id: &str,
    home: &Option<String>,
    lid: &Option<String>,
    status: &Option<String>,
) {
    let mut attributes = vec![("id", id)];
    push_optional(&mut attributes, "home", home);
    push_optional(&mut attributes, "lid", lid);
    attributes.push(("objectType", OBJECT_TYPE_REGISTRY_PACKAGE));
    push_optional(&mut attributes, "status", status);
    writer.start("rim:RegistryPackage", &attributes);
}

fn write_association(writer: &mut XmlWriter, association: &Association) {
    let mut attributes = vec![("id", association.id.as_str())];
    push_optional(&mut attributes, "home", &association.home);
    push_optional(&mut attributes, "lid", &association.lid);
    attributes.push(("objectType", OBJECT_TYPE_ASSOCIATION));
    push_optional(&mut attributes, "status", &association.status);
    attributes.push(("associationType", association.association_type.as_str()));
    attributes.push(("sourceObject", association.source_object.as_str()));
    attributes.push(("targetObject", association.target_object.as_str()));
    let singles = [
        (SLOT_SUBMISSION_SET_STATUS, &association.submission_set_status),
        (SLOT_ORIGINAL_STATUS, &association.original_status),
        (SLOT_NEW_STATUS, &association.new_status),
        (SLOT_PREVIOUS_VERSION, &association.previous_version),
    ];
    if singles.iter().all(|(_, value)| value.is_none())
        && association.extra_slots.is_empty()
        && association.extra_classifications.is_empty()
    {
        writer.empty("rim:Association", &attributes);
        return;
    }
    writer.start("rim:Association", &attributes);
    for (name, value) in singles {
        if let Some(value) = value {
            write_slot_values(writer, name, None, std::slice::from_ref(value));
        }
    }
    write_slots(writer, &association.extra_slots);
    for classification in &association.extra_classifications {
        write_classification(writer, classification);
    }
    writer.end("rim:Association");
}

/// Writes a rim:Classification verbatim.
pub fn write_classification(writer: &mut XmlWriter, classification: &Classification) {
    let mut attributes = vec![("id", classification.id.as_str())];
    push_optional(&mut attributes, "classificationScheme", &classification.scheme);
    attributes.push(("classifiedObject", classification.classified_object.as_str()));
    push_optional(&mut attributes, "classificationNode", &classification.node);
    push_optional(&mut attributes, "nodeRepresentation", &classification.node_representation);
    if classification.slots.is_empty() && classification.name.is_empty() {
        writer.empty("rim:Classification", &attributes);
        return;
    }
    writer.start("rim:Classification", &attributes);
    write_slots(writer, &classification.slots);
    if !classification.name.is_empty() {
        write_localized(writer, "rim:Name", &classification.name);
    }
    writer.end("rim:Classification");
}

fn write_external_identifier(writer: &mut XmlWriter, identifier: &ExternalIdentifier) {
    let attributes = [
        ("id", identifier.id.as_str()),
        ("identificationScheme", identifier.scheme.as_str()),
        ("registryObject", identifier.registry_object.as_str()),
        ("value", identifier.value.as_str()),
    ];
    if identifier.name.is_empty() {
        writer.empty("rim:ExternalIdentifier", &attributes);
        return;
    }
    writer.start("rim:ExternalIdentifier", &attributes);
    write_localized(writer, "rim:Name", &identifier.name);
    writer.end("rim:ExternalIdentifier");
}

fn write_identifier(writer: &mut XmlWriter, id: &str, scheme: &str, owner: &str, value: &str, name: &str) {
    write_external_identifier(
        writer,
        &ExternalIdentifier {
            id: id.to_owned(),
            scheme: scheme.to_owned(),
            registry_object: owner.to_owned(),
            value: value.to_owned(),
            name: vec![Localized::new(name)],
        },
    );
}

fn write_code(writer: &mut XmlWriter, ids: &mut IdSequence, owner: &str, scheme: &str, code: &Code) {
    let id = ids.next_id();
    writer.start(
        "rim:Classification",
        &[
            ("id", id.as_str()),
            ("classificationScheme", scheme),
            ("classifiedObject", owner),
            ("nodeRepresentation", code.code.as_str()),
        ],
    );
    write_slot_values(writer, SLOT_CODING_SCHEME, None, std::slice::from_ref(&code.scheme));
    write_localized(writer, "rim:Name", &[Localized::new(&code.display)]);
    writer.end("rim:Classification");
}

fn write_author(writer: &mut XmlWriter, ids: &mut IdSequence, owner: &str, scheme: &str, author: &Author) {
    let id = ids.next_id();
    writer.start(
        "rim:Classification",
        &[
            ("id", id.as_str()),
            ("classificationScheme", scheme),
            ("classifiedObject", owner),
            ("nodeRepresentation", ""),
        ],
    );
    if let Some(person) = &author.person {
        write_slot_values(writer, "authorPerson", None, std::slice::from_ref(person));
    }
    let lists = [
        ("authorInstitution", &author.institutions),
        ("authorRole", &author.roles),
        ("authorSpecialty", &author.specialties),
        ("authorTelecommunication", &author.telecommunications),
    ];
    for (name, values) in lists {
        if !values.is_empty() {
            write_slot_values(writer, name, None, values);
        }
    }
    write_slots(writer, &author.extra_slots);
    writer.end("rim:Classification");
}

fn write_node_marker(writer: &mut XmlWriter, id: &str, owner: &str, node: &str) {
    writer.empty("rim:Classification", &[("id", id), ("classifiedObject", owner), ("classificationNode", node)]);
}

fn write_names_and_version(
    writer: &mut XmlWriter,
    name: &[Localized],
    description: &[Localized],
    version: &Option<String>,
) {
    if !name.is_empty() {
        write_localized(writer, "rim:Name", name);
    }
    if !description.is_empty() {
        write_localized(writer, "rim:Description", description);
    }
    if let Some(version) = version {
        writer.empty("rim:VersionInfo", &[("versionName", version.as_str())]);
    }
}

fn write_localized(writer: &mut XmlWriter, element: &str, strings: &[Localized]) {
    writer.start(element, &[]);
    for string in strings {
        let mut attributes = Vec::with_capacity(3);
        if let Some(lang) = &string.lang {
            attributes.push(("xml:lang", lang.as_str()));
        }
        if let Some(charset) = &string.charset {
            attributes.push(("charset", charset.as_str()));
        }
        attributes.push(("value", string.value.as_str()));
        writer.empty("rim:LocalizedString", &attributes);
    }
    writer.end(element);
}

/// Writes slots verbatim.
pub fn write_slots(writer: &mut XmlWriter, slots: &[Slot]) {
    for slot in slots {
        write_slot_values(writer, &slot.name, slot.slot_type.as_deref(), &slot.values);
    }
}

fn write_slot_values(writer: &mut XmlWriter, name: &str, slot_type: Option<&str>, values: &[String]) {
    let mut attributes = vec![("name", name)];
    if let Some(slot_type) = slot_type {
        attributes.push(("slotType", slot_type));
    }
    writer.start("rim:Slot", &attributes);
    writer.start("rim:ValueList", &[]);
    for value in values {
        writer.text_element("rim:Value", &[], value);
    }
    writer.end("rim:ValueList");
    writer.end("rim:Slot");
}

fn push_optional<'a>(attributes: &mut Vec<(&'a str, &'a str)>, name: &'a str, value: &'a Option<String>) {
    if let Some(value) = value {
        attributes.push((name, value.as_str()));
    }
}

/// Ids for the classifications and external identifiers of one object, derived from its id. An
/// object with a UUID id gets UUIDs (name-based, RFC 4122 version 5 layout over SHA-1 of the
/// owner and the index: stable, and valid where registries check that `urn:uuid:` ids are UUIDs);
/// a symbolic id gets `<id>.<n>`.
struct IdSequence<'a> {
    owner: &'a str,
    next: usize,
}

impl<'a> IdSequence<'a> {
    fn new(owner: &'a str) -> Self {
        IdSequence { owner, next: 1 }
    }

    fn next_id(&mut self) -> String {
        let id = if self.owner.starts_with("urn:uuid:") {
            derived_uuid(self.owner, self.next)
        } else {
            format!("{}.{}", self.owner, self.next)
        };
        self.next += 1;
        id
    }
}

/// `urn:uuid:` + a version-5-layout UUID from SHA-1 of `owner` and `index`.
fn derived_uuid(owner: &str, index: usize) -> String {
    use sha1::{Digest, Sha1};
    let mut hasher = Sha1::new();
    hasher.update(owner.as_bytes());
    hasher.update(b".");
    hasher.update(index.to_string().as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("urn:uuid:{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Slot name of the referenceIdList (ITI TF-3 4.2.3.2.28).
pub const SLOT_REFERENCE_ID_LIST: &str = "urn:ihe:iti:xds:2013:referenceIdList";
/// ExtrinsicObject mimeType when the attribute is absent (rim.xsd default).
const DEFAULT_MIME_TYPE: &str = "application/octet-stream";
