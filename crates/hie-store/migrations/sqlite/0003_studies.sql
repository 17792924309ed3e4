-- Studies the broker manifests, the manifests it built, and the instance headers its DICOM
-- listener received. Times are microseconds since the Unix epoch (BIGINT).

-- One row per study the broker has heard of, from any trigger (C-STORE arrival, PACS poll,
-- explicit request). A change makes the study 'pending' and due after the quiet period; the
-- scheduler claims due studies with a lease, builds the manifest from the PACS and records a new
-- version only when what the manifest says has changed.
CREATE TABLE studies (
    study_instance_uid TEXT PRIMARY KEY,
    -- 'pending' (a change waits to be manifested), 'current' (the latest manifest reflects the
    -- PACS), 'failed' (attempts used up: visible, retried by request), 'gone' (the PACS no longer
    -- holds the study after it was manifested).
    state              TEXT NOT NULL CHECK (state IN ('pending', 'current', 'failed', 'gone')),
    -- What reported the last change: 'c-store', 'poll' or 'request'.
    source             TEXT NOT NULL,
    -- Bumped by every change, so a build that started before a change does not mark it done.
    change_seq         BIGINT NOT NULL DEFAULT 1,
    first_seen_at      BIGINT NOT NULL,
    last_change_at     BIGINT NOT NULL,
    -- When the scheduler should (re)build; NULL when there is nothing to do.
    due_at             BIGINT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    last_error         TEXT NULL,
    -- Latest manifest version (0: none yet).
    manifest_version   BIGINT NOT NULL DEFAULT 0,
    -- Instance count the PACS reported when polled (change detection); NULL when unknown.
    pacs_instances     BIGINT NULL,
    -- Study Date (DA) from the last manifest, so a poll can tell a deleted study from an old one.
    study_date         TEXT NULL,
    lease_owner        TEXT NULL,
    lease_token        BIGINT NULL,
    lease_until        BIGINT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX studies_due ON studies(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX studies_by_state ON studies(state, updated_at);

-- Every manifest version built, with its bytes: the KOS that is (or will be) published.
CREATE TABLE manifests (
    study_instance_uid  TEXT NOT NULL REFERENCES studies(study_instance_uid),
    version             BIGINT NOT NULL,
    -- The KOS SOP Instance UID, also the XDS document uniqueId.
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    series_instance_uid TEXT NOT NULL,
    n_series            BIGINT NOT NULL,
    n_instances         BIGINT NOT NULL,
    -- SHA-256 (hex) of what the manifest says, its own identity aside: equal evidence, equal fingerprint.
    fingerprint         TEXT NOT NULL,
    kos                 BLOB NOT NULL,
    -- What the XDS metadata needs beyond the KOS: the series' distinct Modality and Body Part
    -- Examined values, backslash-separated as DICOM writes multiple values.
    modalities          TEXT NOT NULL DEFAULT '',
    body_parts          TEXT NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (study_instance_uid, version)
);

-- Instance headers received by our C-STORE SCP: the data set up to (not including) Pixel Data,
-- as received, in `transfer_syntax_uid`. Enough to build a manifest; no pixel data.
CREATE TABLE dicom_instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae_title    TEXT NOT NULL,
    header              BLOB NOT NULL,
    received_at         BIGINT NOT NULL
);
CREATE INDEX dicom_instances_by_study ON dicom_instances(study_instance_uid);
