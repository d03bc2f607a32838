-- Back to one row per event; only single-event rows can be carried back.
CREATE TABLE outbox_events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    payload     TEXT NOT NULL,
    request_id  TEXT,
    created_at  TIMESTAMP NOT NULL,
    sent_at     TIMESTAMP
);
INSERT INTO outbox_events (id, routing_key, payload, request_id, created_at, sent_at)
SELECT split_part(events, chr(9), 2), split_part(events, chr(9), 1),
       substr(events, length(split_part(events, chr(9), 1)) + length(split_part(events, chr(9), 2)) + 3),
       request_id, created_at, sent_at
FROM outbox WHERE event_count = 1 ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_events RENAME TO outbox;
ALTER SEQUENCE outbox_events_seq_seq RENAME TO outbox_seq_seq;
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
