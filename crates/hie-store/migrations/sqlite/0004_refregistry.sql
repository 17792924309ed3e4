-- The built-in reference XDS Document Registry and Document Repository (crate hie-refregistry):
-- its own tables, prefixed reg_, apart from the broker's. Times are microseconds since the Unix
-- epoch (BIGINT). Status values are the ebRIM URNs, as queries name them.

-- Patients the registry knows from its Patient Identity Feed (ITI-8), by affinity-domain CX in
-- the canonical form id^^^&oid&ISO. A merged (subsumed) patient keeps its row with merged_into
-- set to the surviving patient, so later submissions for it can be refused.
CREATE TABLE reg_patients (
    patient_id  TEXT PRIMARY KEY,
    merged_into TEXT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX reg_patients_by_survivor ON reg_patients(merged_into) WHERE merged_into IS NOT NULL;

-- Every feed message applied (or refused for good), by sender (MSH-3|MSH-4) and MSH-10, with the
-- ACK sent: a repeat is answered with the same ACK and not applied again.
CREATE TABLE reg_feed_messages (
    sender      TEXT NOT NULL,
    control_id  TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    ack_code    TEXT NOT NULL,
    ack         TEXT NOT NULL,
    PRIMARY KEY (sender, control_id)
);

-- DocumentEntries. The columns are what the stored queries filter on; ebrim is the whole
-- ExtrinsicObject as registered (ids already mapped), answered for LeafClass with the live
-- status, version, lid and patientId of the row laid over it. Times are DTM padded to 14 digits
-- so they compare as text. uniqueId is not unique: a resubmission with the same hash is a second
-- entry (NIST test 12004).
CREATE TABLE reg_documents (
    entry_uuid           TEXT PRIMARY KEY,
    unique_id            TEXT NOT NULL,
    lid                  TEXT NOT NULL,
    version              BIGINT NOT NULL,
    status               TEXT NOT NULL,
    patient_id           TEXT NOT NULL,
    object_type          TEXT NOT NULL,
    mime_type            TEXT NOT NULL,
    hash                 TEXT NULL,
    size                 BIGINT NULL,
    repository_unique_id TEXT NULL,
    creation_time        TEXT NULL,
    service_start_time   TEXT NULL,
    service_stop_time    TEXT NULL,
    class_code           TEXT NULL,
    class_scheme         TEXT NULL,
    type_code            TEXT NULL,
    type_scheme          TEXT NULL,
    format_code          TEXT NULL,
    format_scheme        TEXT NULL,
    facility_code        TEXT NULL,
    facility_scheme      TEXT NULL,
    practice_code        TEXT NULL,
    practice_scheme      TEXT NULL,
    submission_set_uuid  TEXT NOT NULL,
    ebrim                TEXT NOT NULL,
    created_at           BIGINT NOT NULL
);
-- FindDocuments: patient and status first, then the ordering.
CREATE INDEX reg_documents_by_patient ON reg_documents(patient_id, status, created_at);
CREATE INDEX reg_documents_by_unique_id ON reg_documents(unique_id);
CREATE INDEX reg_documents_by_lid ON reg_documents(lid, version);

-- Multi-valued DocumentEntry attributes the stored queries filter on: 'event' (eventCodeList),
-- 'confidentiality' (confidentialityCode), 'author' (authorPerson; scheme empty).
CREATE TABLE reg_document_codes (
    entry_uuid TEXT NOT NULL REFERENCES reg_documents(entry_uuid),
    kind       TEXT NOT NULL,
    code       TEXT NOT NULL,
    scheme     TEXT NOT NULL
);
CREATE INDEX reg_document_codes_by_entry ON reg_document_codes(entry_uuid, kind);
CREATE INDEX reg_document_codes_by_code ON reg_document_codes(kind, code, scheme);

-- SubmissionSets: uniqueId is unique in the registry (XDSDuplicateUniqueIdInRegistry).
CREATE TABLE reg_submission_sets (
    entry_uuid          TEXT PRIMARY KEY,
    unique_id           TEXT NOT NULL UNIQUE,
    source_id           TEXT NOT NULL,
    patient_id          TEXT NOT NULL,
    status              TEXT NOT NULL,
    submission_time     TEXT NULL,
    content_type_code   TEXT NULL,
    content_type_scheme TEXT NULL,
    author_person       TEXT NULL,
    ebrim               TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX reg_submission_sets_by_patient ON reg_submission_sets(patient_id, status, created_at);

-- Folders (stored and answered by GetSubmissionSetAndContents; no FindFolders).
CREATE TABLE reg_folders (
    entry_uuid       TEXT PRIMARY KEY,
    unique_id        TEXT NOT NULL UNIQUE,
    lid              TEXT NOT NULL,
    version          BIGINT NOT NULL,
    patient_id       TEXT NOT NULL,
    status           TEXT NOT NULL,
    last_update_time TEXT NOT NULL,
    ebrim            TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX reg_folders_by_patient ON reg_folders(patient_id);

-- Associations: HasMember, RPLC, XFRM, APND, XFRM_RPLC, signs, and the UpdateAvailabilityStatus
-- associations of ITI-57 (kept for audit; their effect is applied to the target's status).
CREATE TABLE reg_associations (
    entry_uuid       TEXT PRIMARY KEY,
    association_type TEXT NOT NULL,
    source_uuid      TEXT NOT NULL,
    target_uuid      TEXT NOT NULL,
    status           TEXT NOT NULL,
    ebrim            TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX reg_associations_by_source ON reg_associations(source_uuid, association_type);
CREATE INDEX reg_associations_by_target ON reg_associations(target_uuid, association_type);

-- The Document Repository's documents (ITI-41 in, ITI-43 out), by DocumentEntry uniqueId.
CREATE TABLE reg_repository_documents (
    unique_id  TEXT PRIMARY KEY,
    mime_type  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    content    BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
