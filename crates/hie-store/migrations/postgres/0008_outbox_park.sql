-- A parked item (1) waits for something another item of its key brings, e.g. a submission the
-- registry refused with XDSUnknownPatientId waits for the patient's identity feed. A parked
-- item does not hold back items of other topics with the same key (the feed may pass it), its
-- attempt is given back, and it becomes due again when an item of its key is delivered.
ALTER TABLE outbox ADD COLUMN parked BIGINT NOT NULL DEFAULT 0;
-- Usually empty: the wake-up after a delivery probes it by key.
CREATE INDEX outbox_parked ON outbox(key) WHERE parked = 1 AND state = 'pending';
