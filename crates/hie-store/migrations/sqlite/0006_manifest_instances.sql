-- The instances each manifest version references: what a retrieval (RAD-69) may serve. A request
-- is authorized per instance against the study's current registered manifest, in one indexed
-- lookup by (study, version), instead of reading and parsing the KOS on every request.
CREATE TABLE manifest_instances (
    study_instance_uid  TEXT NOT NULL,
    version             BIGINT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, version, sop_instance_uid),
    FOREIGN KEY (study_instance_uid, version) REFERENCES manifests(study_instance_uid, version)
);
