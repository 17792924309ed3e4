-- The outbox ordering key each submission was queued under (`patient:<id>` or `study:<uid>`): a
-- study's later submissions join the key of its queued ones, so its versions and its deprecation
-- leave in order, and a retry by hand is queued again under it. NULL for rows queued before.
ALTER TABLE submissions ADD COLUMN outbox_key TEXT NULL;
