-- Rows now hold typed records, `{"v": <version>, "records": [...]}`, one event each (rows
-- written before keep their one line per event, and are published in today's form). Their
-- events' size once rendered, estimated when recorded, bounds what one relay round publishes.
ALTER TABLE outbox ADD COLUMN publish_bytes INTEGER;
