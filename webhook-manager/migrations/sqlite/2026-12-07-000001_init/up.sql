-- Customers' webhooks.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    uri         TEXT NOT NULL,
    method      TEXT NOT NULL,
    -- The event types delivered: a JSON list of strings.
    event_types TEXT NOT NULL,
    status      TEXT NOT NULL,
    -- `whsec_<base64 of the key>`; signs every attempt (read at the attempt, so a rotation
    -- takes effect at once).
    secret      TEXT NOT NULL,
    tm_create   TIMESTAMP NOT NULL,
    tm_update   TIMESTAMP NOT NULL,
    tm_delete   TIMESTAMP NOT NULL
);
CREATE INDEX webhooks_by_customer ON webhooks (customer_id, tm_create, id);

-- One event (one item of an event) for one webhook, recorded before it is attempted.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    customer_id      TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    -- The request body: `{"type": ..., "data": ...}`.
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    last_status_code INTEGER NOT NULL,
    last_error       TEXT NOT NULL,
    tm_next_attempt  TIMESTAMP NOT NULL,
    -- Retries go on for the retry period from here (the creation, or a retry by hand).
    tm_retry_from    TIMESTAMP NOT NULL,
    tm_create        TIMESTAMP NOT NULL,
    tm_update        TIMESTAMP NOT NULL
);
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, tm_create, id);
-- A webhook's deliveries of one status (the dispatcher's due ones, the `status` filter), and
-- the webhooks with work. Not partial indexes: the statuses are bound parameters, which
-- neither SQLite nor a generic PostgreSQL plan matches against a partial index's predicate.
CREATE INDEX deliveries_by_webhook_status ON deliveries (webhook_id, status, tm_next_attempt);
CREATE INDEX deliveries_by_status ON deliveries (status, webhook_id, tm_next_attempt);

-- Event ids already turned into deliveries, recorded in the same transaction.
CREATE TABLE processed_events (
    id           TEXT PRIMARY KEY,
    processed_at TIMESTAMP NOT NULL
);

-- Idempotency-Key records: the first result of a creating call, replayed to retries.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BIGINT NOT NULL,
    response     BLOB NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
