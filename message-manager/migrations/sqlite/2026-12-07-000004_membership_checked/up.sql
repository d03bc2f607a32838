-- When the membership view last confirmed a chat against chat-manager (or applied a chat event,
-- which carries the whole participant list): a chat not confirmed for a minute is asked about
-- again before it is used, so a room whose deletion event was lost stops receiving copies.
-- Existing chats count as never confirmed.
ALTER TABLE member_chats ADD COLUMN tm_checked TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
