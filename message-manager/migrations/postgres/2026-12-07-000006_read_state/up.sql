-- Read state. Each message gets its place in its chat (`chat_seq`: 1, 2, 3, ... in the order
-- of `tm_create`, which the send now keeps strictly increasing within a chat), so a room's
-- unread count is the number of places after its read point, less the few messages after it
-- that are deleted, deleted in that room, or the owner's own: a send writes nothing per
-- participant.
ALTER TABLE chatmessages ADD COLUMN chat_seq BIGINT NOT NULL DEFAULT 0;
-- The agent of an agent source (NULL for any other source); collated as the ids it is
-- compared with, so the comparison can use the index.
ALTER TABLE chatmessages ADD COLUMN sender_id TEXT COLLATE "C";
UPDATE chatmessages SET sender_id = source::jsonb->>'target' WHERE source::jsonb->>'type' = 'agent';
UPDATE chatmessages m SET chat_seq = s.seq
  FROM (SELECT no, row_number() OVER (PARTITION BY chat_id ORDER BY tm_create, no) AS seq
          FROM chatmessages) s
 WHERE m.no = s.no;

-- A copy deleted on its own carries its message's place and sender, so a room's count of them
-- after its read point is a range of this table's index.
ALTER TABLE chatroommessage_deletions ADD COLUMN chat_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chatroommessage_deletions ADD COLUMN sender_id TEXT COLLATE "C";
UPDATE chatroommessage_deletions
   SET chat_seq = (SELECT m.chat_seq FROM chatmessages m WHERE m.no = chatroommessage_deletions.message_no),
       sender_id = (SELECT m.sender_id FROM chatmessages m WHERE m.no = chatroommessage_deletions.message_no);
CREATE INDEX chatroommessage_deletions_after ON chatroommessage_deletions (room_no, chat_seq, sender_id);

-- The chat's last place given and its last message's time: the send takes the next of both
-- under this row's lock.
ALTER TABLE member_chats ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE member_chats ADD COLUMN last_message_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE member_chats c SET last_seq = s.seq, last_message_at = s.tm
  FROM (SELECT chat_id, max(chat_seq) AS seq, max(tm_create) AS tm FROM chatmessages GROUP BY chat_id) s
 WHERE c.id = s.chat_id;

-- The counts subtracted: deleted messages after a place, and an agent's own live ones.
CREATE INDEX chatmessages_deleted_after ON chatmessages (chat_id, chat_seq)
 WHERE tm_delete <> '9999-01-01 00:00:00';
CREATE INDEX chatmessages_sent_after ON chatmessages (chat_id, sender_id, chat_seq)
 WHERE tm_delete = '9999-01-01 00:00:00';
-- An agent's chatrooms (the unread total).
CREATE INDEX member_chatrooms_owner ON member_chatrooms (owner_id, customer_id, tm_delete);

-- A room's read point (none: nothing read yet). Only moves forward.
CREATE TABLE chatroom_reads (
    chatroom_id    TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    customer_id    TEXT COLLATE "C" NOT NULL,
    read_seq       BIGINT NOT NULL,
    messagechat_id TEXT COLLATE "C" NOT NULL,
    tm_last_read   TIMESTAMP NOT NULL,
    tm_update      TIMESTAMP NOT NULL
);
