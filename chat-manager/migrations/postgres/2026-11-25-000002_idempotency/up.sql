-- Idempotency-Key records: the first result of a creating call, replayed to retries.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BIGINT NOT NULL,
    response     BYTEA NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
