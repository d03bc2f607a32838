ALTER TABLE outbox DROP COLUMN publish_bytes;
