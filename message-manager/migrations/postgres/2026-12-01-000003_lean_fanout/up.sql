-- A lean fan-out. A chatroommessage is no longer a row of its own: each live chatroom of a chat
-- has a copy of every message sent while it was live (the contract's fan-out), so the copies
-- are read from the chat's messages and the room's lifetime in the membership view, and only a
-- copy deleted on its own is written down. A send writes one message row and one short outbox
-- record whatever the size of the chat. A copy's id packs its room's number and its message's
-- number (see src/chatroommessages.rs), so it is found without a row per copy.

-- Messages are numbered by the leading 60 bits of their id (the id's order, with the version
-- nibble left out): the primary key, and the tie-breaker of both lists.
ALTER TABLE chatmessages ADD COLUMN no BIGINT;
UPDATE chatmessages
   SET no = ('x' || lpad(substr(id, 1, 8) || substr(id, 10, 4) || substr(id, 16, 3), 16, '0'))::bit(64)::bigint;
ALTER TABLE chatmessages ALTER COLUMN no SET NOT NULL;
ALTER TABLE chatmessages DROP CONSTRAINT chatmessages_pkey;
ALTER TABLE chatmessages ADD PRIMARY KEY (no);
DROP INDEX chatmessages_list;
CREATE INDEX chatmessages_list ON chatmessages (chat_id, tm_delete, tm_create DESC, no DESC);

-- Rooms get a number, and the time they were created: their copies start there. (For rooms
-- the view knew before, the earlier of their first copy and their last update.)
ALTER TABLE member_chatrooms ADD COLUMN no BIGSERIAL;
CREATE UNIQUE INDEX member_chatrooms_no ON member_chatrooms (no);
ALTER TABLE member_chatrooms ADD COLUMN tm_create TIMESTAMP;
UPDATE member_chatrooms r
   SET tm_create = LEAST(r.tm_update, COALESCE(
       (SELECT min(c.tm_create) FROM chatroommessages c WHERE c.chatroom_id = r.id), r.tm_update));
ALTER TABLE member_chatrooms ALTER COLUMN tm_create SET NOT NULL;

-- Copies deleted on their own (a copy also ends with its message or its room).
CREATE TABLE chatroommessage_deletions (
    room_no    BIGINT NOT NULL,
    message_no BIGINT NOT NULL,
    tm_delete  TIMESTAMP NOT NULL,
    PRIMARY KEY (room_no, message_no)
);

-- The copies written before keep their ids.
CREATE TABLE legacy_copy_ids (
    id         TEXT COLLATE "C" PRIMARY KEY,
    room_no    BIGINT NOT NULL,
    message_no BIGINT NOT NULL
);
INSERT INTO legacy_copy_ids (id, room_no, message_no)
SELECT c.id, r.no, m.no
  FROM chatroommessages c
  JOIN member_chatrooms r ON r.id = c.chatroom_id
  JOIN chatmessages m ON m.id = c.messagechat_id;
INSERT INTO chatroommessage_deletions (room_no, message_no, tm_delete)
SELECT r.no, m.no, c.tm_delete
  FROM chatroommessages c
  JOIN member_chatrooms r ON r.id = c.chatroom_id
  JOIN chatmessages m ON m.id = c.messagechat_id
 WHERE c.tm_delete <> '9999-01-01 00:00:00' AND (m.tm_delete = '9999-01-01 00:00:00' OR c.tm_delete < m.tm_delete)
ON CONFLICT DO NOTHING;
DROP TABLE chatroommessages;
