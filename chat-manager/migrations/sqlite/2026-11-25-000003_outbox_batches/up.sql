-- One outbox row per committed transaction (see the PostgreSQL migration).
CREATE TABLE outbox_batches (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    events      TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    request_id  TEXT,
    traceparent TEXT,
    created_at  TIMESTAMP NOT NULL,
    sent_at     TIMESTAMP
);
INSERT INTO outbox_batches (events, event_count, request_id, created_at, sent_at)
SELECT routing_key || char(9) || id || char(9) || payload, 1, request_id, created_at, sent_at
FROM outbox ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_batches RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
