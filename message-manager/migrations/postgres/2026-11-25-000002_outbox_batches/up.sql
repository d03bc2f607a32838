-- One outbox row per committed transaction instead of one per event: a send with many copies
-- writes (and later marks sent) one row. `events` holds one line per event: routing key,
-- event id and CloudEvents JSON, tab-separated. Rows of the old layout carry over, one event
-- each, so nothing unsent is lost by the upgrade.
CREATE TABLE outbox_batches (
    seq         BIGSERIAL PRIMARY KEY,
    events      TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    request_id  TEXT,
    traceparent TEXT,
    created_at  TIMESTAMP NOT NULL,
    sent_at     TIMESTAMP
);
INSERT INTO outbox_batches (events, event_count, request_id, created_at, sent_at)
SELECT routing_key || chr(9) || id || chr(9) || payload, 1, request_id, created_at, sent_at
FROM outbox ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_batches RENAME TO outbox;
ALTER SEQUENCE outbox_batches_seq_seq RENAME TO outbox_seq_seq;
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
