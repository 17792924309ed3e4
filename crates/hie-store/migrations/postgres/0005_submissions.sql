-- Submissions to the registry: one per manifest version to publish (ITI-41 or ITI-42, replacing the
-- previous version by RPLC) and one per deprecation (ITI-57). Delivery runs through the outbox
-- (topic xds.publish, payload submission=<id>); this table keeps what an operator needs to see:
-- state, attempts, the last error with its XDS codes, and the exact last request and response.
-- The identifiers are drawn once, at enqueue, so every retry resubmits the same uniqueIds.
CREATE TABLE submissions (
    id                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_instance_uid       TEXT NOT NULL,
    manifest_version         BIGINT NOT NULL,
    kind                     TEXT NOT NULL CHECK (kind IN ('publish', 'deprecate')),
    -- The manifest's uniqueId (its KOS SOP Instance UID); for a deprecation, the one deprecated.
    document_unique_id       TEXT NOT NULL,
    document_entry_uuid      TEXT NOT NULL,
    submission_set_unique_id TEXT NOT NULL UNIQUE,
    submission_set_uuid      TEXT NOT NULL,
    -- 'queued' (waiting or being sent), 'done', 'failed' (permanent, visible), 'superseded' (a newer
    -- version was queued before this one was sent, so it was not sent).
    state                    TEXT NOT NULL CHECK (state IN ('queued', 'done', 'failed', 'superseded')),
    attempts                 BIGINT NOT NULL DEFAULT 0,
    last_error               TEXT NULL,
    -- The XDS error codes of the last answer, space-separated.
    error_codes              TEXT NULL,
    -- The entryUUID the registry holds for the document, once known.
    registry_entry_uuid      TEXT NULL,
    -- The uniqueId this submission replaced (RPLC), once sent.
    replaced_unique_id       TEXT NULL,
    note                     TEXT NULL,
    request                  TEXT NULL,
    response                 TEXT NULL,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX submissions_by_study ON submissions(study_instance_uid, id);
