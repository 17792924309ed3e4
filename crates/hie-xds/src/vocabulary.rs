//! The XDS metadata vocabulary: namespaces, classification and identification schemes, object
//! types, status values, association types and stored query ids, as named constants.
//!
//! Scheme UUIDs: ITI TF-3 4.2.5 (Table 4.2.5-1, "metadata object identification schemes"), as
//! listed in landscape-and-requirements.md 3.2 (taken from IPF `Vocabulary.java`).
//! Stored query ids: ITI TF-2a 3.18.4.1.2.3.7 (Table 3.18.4.1.2.3.7-1, "stored query IDs"),
//! cross-checked against the lists in IPF `QueryType`, dcm4chee-xds `XDSConstants` and OpenXDS.

/// SOAP 1.2 envelope namespace (SOAP 1.2 Part 1 section 5).
pub const NS_SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// SOAP 1.1 envelope namespace: only recognised so a VersionMismatch fault can be sent.
pub const NS_SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// WS-Addressing 1.0 (W3C WS-Addressing 1.0 Core).
pub const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
/// XOP (W3C XML-binary Optimized Packaging section 3).
pub const NS_XOP: &str = "http://www.w3.org/2004/08/xop/include";
/// ebRIM 3.0.
pub const NS_RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
/// ebRS 3.0 registry services.
pub const NS_RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
/// ebRS 3.0 life cycle manager.
pub const NS_LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
/// ebRS 3.0 query manager.
pub const NS_QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
/// IHE XDS.b elements (ITI-41, ITI-43 and the response RAD-69 returns).
pub const NS_XDSB: &str = "urn:ihe:iti:xds-b:2007";
/// IHE XDS-I.b elements (RAD-69 request, RAD TF-3 4.69).
pub const NS_XDSI: &str = "urn:ihe:rad:xdsi-b:2009";

/// The `role` of a SOAP header block addressed to no node (SOAP 1.2 Part 1 section 2.2).
pub const SOAP_ROLE_NONE: &str = "http://www.w3.org/2003/05/soap-envelope/role/none";
/// WS-Addressing anonymous address (WS-Addressing 1.0 Core section 2.1).
pub const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

/// DocumentEntry objectType, stable document (ITI TF-3 4.2.5.2).
pub const OBJECT_TYPE_STABLE_DOCUMENT: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
/// DocumentEntry objectType, on-demand document (ITI TF-3 4.2.5.2).
pub const OBJECT_TYPE_ON_DEMAND_DOCUMENT: &str = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248";
/// ebRIM objectType of a RegistryPackage.
pub const OBJECT_TYPE_REGISTRY_PACKAGE: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage";
/// ebRIM objectType of a Classification.
pub const OBJECT_TYPE_CLASSIFICATION: &str = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification";
/// ebRIM objectType of an ExternalIdentifier.
pub const OBJECT_TYPE_EXTERNAL_IDENTIFIER: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier";
/// ebRIM objectType of an Association.
pub const OBJECT_TYPE_ASSOCIATION: &str = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association";

/// SubmissionSet classification node (the RegistryPackage is a SubmissionSet).
pub const SUBMISSION_SET_NODE: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
/// Folder classification node (the RegistryPackage is a Folder).
pub const FOLDER_NODE: &str = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2";

/// DocumentEntry.classCode.
pub const DE_CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
/// DocumentEntry.confidentialityCode.
pub const DE_CONFIDENTIALITY_CODE: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
/// DocumentEntry.eventCodeList.
pub const DE_EVENT_CODE: &str = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4";
/// DocumentEntry.formatCode.
pub const DE_FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
/// DocumentEntry.healthcareFacilityTypeCode.
pub const DE_HEALTHCARE_FACILITY_TYPE_CODE: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
/// DocumentEntry.practiceSettingCode.
pub const DE_PRACTICE_SETTING_CODE: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
/// DocumentEntry.typeCode.
pub const DE_TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
/// DocumentEntry.author.
pub const DE_AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
/// DocumentEntry.patientId (external identifier).
pub const DE_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
/// DocumentEntry.uniqueId (external identifier).
pub const DE_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";

/// SubmissionSet.contentTypeCode.
pub const SS_CONTENT_TYPE_CODE: &str = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500";
/// SubmissionSet.author.
pub const SS_AUTHOR: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
/// SubmissionSet.patientId (external identifier).
pub const SS_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
/// SubmissionSet.uniqueId (external identifier).
pub const SS_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
/// SubmissionSet.sourceId (external identifier).
pub const SS_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";

/// Folder.codeList.
pub const FOLDER_CODE_LIST: &str = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5";
/// Folder.patientId (external identifier).
pub const FOLDER_PATIENT_ID: &str = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a";
/// Folder.uniqueId (external identifier).
pub const FOLDER_UNIQUE_ID: &str = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a";

/// The slot of a coded classification that carries the coding scheme (ITI TF-3 4.2.3.1.2).
pub const SLOT_CODING_SCHEME: &str = "codingScheme";

/// Status values (ebRIM 3.0 StatusType).
pub const STATUS_APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";
/// Status: deprecated.
pub const STATUS_DEPRECATED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated";
/// Status: submitted.
pub const STATUS_SUBMITTED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted";

/// Association types (ITI TF-3 4.2.2).
pub const ASSOCIATION_HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";
/// Replace.
pub const ASSOCIATION_RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";
/// Transform.
pub const ASSOCIATION_XFRM: &str = "urn:ihe:iti:2007:AssociationType:XFRM";
/// Append.
pub const ASSOCIATION_APND: &str = "urn:ihe:iti:2007:AssociationType:APND";
/// Transform and replace.
pub const ASSOCIATION_XFRM_RPLC: &str = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC";
/// Signs.
pub const ASSOCIATION_SIGNS: &str = "urn:ihe:iti:2007:AssociationType:signs";
/// ITI-57 Update Availability Status (ITI TF-3 4.2.2.2.x, Metadata Update).
pub const ASSOCIATION_UPDATE_AVAILABILITY_STATUS: &str = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus";

/// HasMember slot: the member is original to or referenced by the SubmissionSet.
pub const SLOT_SUBMISSION_SET_STATUS: &str = "SubmissionSetStatus";
/// SubmissionSetStatus value `Original`.
pub const SUBMISSION_SET_STATUS_ORIGINAL: &str = "Original";
/// SubmissionSetStatus value `Reference`.
pub const SUBMISSION_SET_STATUS_REFERENCE: &str = "Reference";
/// UpdateAvailabilityStatus slots (ITI TF-3 4.2.2.2.10 as used by ITI-57).
pub const SLOT_ORIGINAL_STATUS: &str = "OriginalStatus";
/// The status the object moves to.
pub const SLOT_NEW_STATUS: &str = "NewStatus";
/// ITI-57: the previous version the update applies to.
pub const SLOT_PREVIOUS_VERSION: &str = "PreviousVersion";

/// Stored queries (ITI TF-2a 3.18.4.1.2.3.7).
pub const QUERY_FIND_DOCUMENTS: &str = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d";
/// FindSubmissionSets.
pub const QUERY_FIND_SUBMISSION_SETS: &str = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9";
/// FindFolders.
pub const QUERY_FIND_FOLDERS: &str = "urn:uuid:958f3006-baad-4929-a4de-ff1114824431";
/// GetAll.
pub const QUERY_GET_ALL: &str = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3";
/// GetDocuments.
pub const QUERY_GET_DOCUMENTS: &str = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4";
/// GetFolders.
pub const QUERY_GET_FOLDERS: &str = "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4";
/// GetAssociations.
pub const QUERY_GET_ASSOCIATIONS: &str = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155";
/// GetDocumentsAndAssociations.
pub const QUERY_GET_DOCUMENTS_AND_ASSOCIATIONS: &str = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a";
/// GetSubmissionSets.
pub const QUERY_GET_SUBMISSION_SETS: &str = "urn:uuid:51224314-5390-4169-9b91-b1980040715a";
/// GetSubmissionSetAndContents.
pub const QUERY_GET_SUBMISSION_SET_AND_CONTENTS: &str = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83";
/// GetFolderAndContents.
pub const QUERY_GET_FOLDER_AND_CONTENTS: &str = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7";
/// GetFoldersForDocument.
pub const QUERY_GET_FOLDERS_FOR_DOCUMENT: &str = "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578";
/// GetRelatedDocuments.
pub const QUERY_GET_RELATED_DOCUMENTS: &str = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6";
/// FindDocumentsByReferenceId.
pub const QUERY_FIND_DOCUMENTS_BY_REFERENCE_ID: &str = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492";

/// Stored query parameters used by the broker (ITI TF-2a 3.18.4.1.2.3.7.x).
pub const PARAM_DOCUMENT_ENTRY_PATIENT_ID: &str = "$XDSDocumentEntryPatientId";
/// `$XDSDocumentEntryStatus` (a list).
pub const PARAM_DOCUMENT_ENTRY_STATUS: &str = "$XDSDocumentEntryStatus";
/// `$XDSDocumentEntryUniqueId` (a list).
pub const PARAM_DOCUMENT_ENTRY_UNIQUE_ID: &str = "$XDSDocumentEntryUniqueId";
/// `$XDSDocumentEntryEntryUUID` (a list).
pub const PARAM_DOCUMENT_ENTRY_ENTRY_UUID: &str = "$XDSDocumentEntryEntryUUID";
/// `$XDSSubmissionSetPatientId`.
pub const PARAM_SUBMISSION_SET_PATIENT_ID: &str = "$XDSSubmissionSetPatientId";
/// `$XDSSubmissionSetStatus` (a list).
pub const PARAM_SUBMISSION_SET_STATUS: &str = "$XDSSubmissionSetStatus";
/// `$XDSSubmissionSetUniqueId`.
pub const PARAM_SUBMISSION_SET_UNIQUE_ID: &str = "$XDSSubmissionSetUniqueId";
/// `$uuid` (GetAssociations).
pub const PARAM_UUID: &str = "$uuid";
/// `$AssociationTypes` (GetRelatedDocuments).
pub const PARAM_ASSOCIATION_TYPES: &str = "$AssociationTypes";
/// `$XDSDocumentEntryType` (stable / on-demand).
pub const PARAM_DOCUMENT_ENTRY_TYPE: &str = "$XDSDocumentEntryType";
