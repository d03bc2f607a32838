-- Read state: see the PostgreSQL migration of the same name.
ALTER TABLE chatmessages ADD COLUMN chat_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chatmessages ADD COLUMN sender_id TEXT;
UPDATE chatmessages SET sender_id = json_extract(source, '$.target')
 WHERE json_extract(source, '$.type') = 'agent';
CREATE TEMP TABLE chat_seqs (no INTEGER PRIMARY KEY NOT NULL, seq INTEGER NOT NULL);
INSERT INTO chat_seqs (no, seq)
SELECT no, row_number() OVER (PARTITION BY chat_id ORDER BY tm_create, no) FROM chatmessages;
UPDATE chatmessages SET chat_seq = (SELECT seq FROM chat_seqs WHERE chat_seqs.no = chatmessages.no);
DROP TABLE chat_seqs;

-- A copy deleted on its own carries its message's place and sender, so a room's count of them
-- after its read point is a range of this table's index.
ALTER TABLE chatroommessage_deletions ADD COLUMN chat_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chatroommessage_deletions ADD COLUMN sender_id TEXT;
UPDATE chatroommessage_deletions
   SET chat_seq = (SELECT m.chat_seq FROM chatmessages m WHERE m.no = chatroommessage_deletions.message_no),
       sender_id = (SELECT m.sender_id FROM chatmessages m WHERE m.no = chatroommessage_deletions.message_no);
CREATE INDEX chatroommessage_deletions_after ON chatroommessage_deletions (room_no, chat_seq, sender_id);

ALTER TABLE member_chats ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE member_chats ADD COLUMN last_message_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE member_chats
   SET last_seq = coalesce((SELECT max(m.chat_seq) FROM chatmessages m WHERE m.chat_id = member_chats.id), 0),
       last_message_at = coalesce((SELECT max(m.tm_create) FROM chatmessages m WHERE m.chat_id = member_chats.id), '1970-01-01 00:00:00');

CREATE INDEX chatmessages_deleted_after ON chatmessages (chat_id, chat_seq)
 WHERE tm_delete <> '9999-01-01 00:00:00';
CREATE INDEX chatmessages_sent_after ON chatmessages (chat_id, sender_id, chat_seq)
 WHERE tm_delete = '9999-01-01 00:00:00';
CREATE INDEX member_chatrooms_owner ON member_chatrooms (owner_id, customer_id, tm_delete);

CREATE TABLE chatroom_reads (
    chatroom_id    TEXT PRIMARY KEY NOT NULL,
    customer_id    TEXT NOT NULL,
    read_seq       BIGINT NOT NULL,
    messagechat_id TEXT NOT NULL,
    tm_last_read   TIMESTAMP NOT NULL,
    tm_update      TIMESTAMP NOT NULL
);
