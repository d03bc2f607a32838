-- Back to one row per event; only single-event rows can be carried back.
CREATE TABLE outbox_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    payload     TEXT NOT NULL,
    request_id  TEXT,
    created_at  TIMESTAMP NOT NULL,
    sent_at     TIMESTAMP
);
INSERT INTO outbox_events (id, routing_key, payload, request_id, created_at, sent_at)
SELECT substr(events, instr(events, char(9)) + 1, 36),
       substr(events, 1, instr(events, char(9)) - 1),
       substr(events, instr(events, char(9)) + 38),
       request_id, created_at, sent_at
FROM outbox WHERE event_count = 1 ORDER BY seq;
DROP TABLE outbox;
ALTER TABLE outbox_events RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
