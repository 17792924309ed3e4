-- Patients, their identifiers in each assigning authority, merges and history.
-- Times are microseconds since the Unix epoch (BIGINT) on both engines.
CREATE TABLE patients (
    id            INTEGER PRIMARY KEY,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    -- Set when this patient was merged into another (A40); the row and its history stay.
    merged_into   BIGINT NULL REFERENCES patients(id),
    family_name   TEXT NOT NULL DEFAULT '',
    given_name    TEXT NOT NULL DEFAULT '',
    birth_date    TEXT NOT NULL DEFAULT '',
    sex           TEXT NOT NULL DEFAULT ''
);

CREATE TABLE patient_identifiers (
    authority_key     TEXT NOT NULL,
    id_value          TEXT NOT NULL,
    patient_id        BIGINT NOT NULL REFERENCES patients(id),
    namespace_id      TEXT NOT NULL,
    universal_id      TEXT NOT NULL,
    universal_id_type TEXT NOT NULL,
    id_type_code      TEXT NOT NULL,
    -- 0 once an A47 moved the patient to another identifier; kept for history.
    active            BIGINT NOT NULL DEFAULT 1,
    position          BIGINT NOT NULL,
    PRIMARY KEY (authority_key, id_value)
);
CREATE INDEX patient_identifiers_by_patient ON patient_identifiers(patient_id);

CREATE TABLE patient_history (
    id                 INTEGER PRIMARY KEY,
    patient_id         BIGINT NOT NULL REFERENCES patients(id),
    at                 BIGINT NOT NULL,
    event              TEXT NOT NULL,
    message_control_id TEXT NOT NULL,
    detail             TEXT NOT NULL
);
CREATE INDEX patient_history_by_patient ON patient_history(patient_id, id);

-- Every HL7 message applied (or rejected for good), by sender and MSH-10, with the ACK sent:
-- a repeat gets the same ACK and is not applied twice.
CREATE TABLE hl7_inbound (
    sender      TEXT NOT NULL,
    control_id  TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    ack_code    TEXT NOT NULL,
    ack         TEXT NOT NULL,
    PRIMARY KEY (sender, control_id)
);
