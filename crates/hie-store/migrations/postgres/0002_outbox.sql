-- The durable outbox: everything the broker must send later, written in the same transaction as
-- the change it follows from. Times are microseconds since the Unix epoch (BIGINT).
-- The identity keeps the default CACHE 1: values then grow in allocation order across sessions,
-- which the per-key ordering relies on (enqueue serializes same-key inserts with an advisory lock).
CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           TEXT NOT NULL,
    -- Ordering key (e.g. 'patient:42'): items with the same key are delivered in id order.
    key             TEXT NOT NULL,
    payload         TEXT NOT NULL,
    idempotency_key TEXT NULL,
    -- 'pending' (waiting or leased), 'done', 'failed' (permanent; blocks its key until retried).
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT NULL,
    lease_token     BIGINT NULL,
    lease_until     BIGINT NULL,
    last_error      TEXT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- NULLs are distinct in a unique index, so items without an idempotency key never collide.
    UNIQUE (topic, idempotency_key)
);
-- The claim scans pending items in id order; done rows (the bulk, until purged) stay out of it.
CREATE INDEX outbox_pending ON outbox(id) WHERE state = 'pending';
-- "Is there an earlier unfinished item with my key?": one index probe per candidate.
CREATE INDEX outbox_open_by_key ON outbox(key, id) WHERE state <> 'done';
-- Listing by state for the API, and purging old done rows.
CREATE INDEX outbox_by_state ON outbox(state, updated_at);
