DROP TABLE idempotency_keys;
DROP TABLE processed_events;
DROP TABLE deliveries;
DROP TABLE webhooks;
