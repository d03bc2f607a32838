-- Back to a row per copy: every copy the lean layout implies is written out (with its old id
-- where it had one, else a new one).
CREATE TABLE chatroommessages (
    id             TEXT COLLATE "C" PRIMARY KEY,
    customer_id    TEXT COLLATE "C" NOT NULL,
    chatroom_id    TEXT COLLATE "C" NOT NULL,
    owner_id       TEXT COLLATE "C" NOT NULL,
    messagechat_id TEXT COLLATE "C" NOT NULL,
    source         TEXT NOT NULL,
    message_type   TEXT NOT NULL,
    text           TEXT NOT NULL,
    medias         TEXT NOT NULL,
    tm_create      TIMESTAMP NOT NULL,
    tm_update      TIMESTAMP NOT NULL,
    tm_delete      TIMESTAMP NOT NULL
);
INSERT INTO chatroommessages
SELECT COALESCE(l.id, gen_random_uuid()::text), m.customer_id, r.id, r.owner_id, m.id, m.source,
       m.message_type, m.text, m.medias, m.tm_create,
       LEAST(m.tm_update, COALESCE(d.tm_delete, m.tm_update)),
       LEAST(m.tm_delete, COALESCE(d.tm_delete, m.tm_delete))
  FROM chatmessages m
  JOIN member_chatrooms r ON r.chat_id = m.chat_id AND r.tm_create <= m.tm_create AND m.tm_create < r.tm_delete
  LEFT JOIN legacy_copy_ids l ON l.room_no = r.no AND l.message_no = m.no
  LEFT JOIN chatroommessage_deletions d ON d.room_no = r.no AND d.message_no = m.no;
CREATE INDEX chatroommessages_list ON chatroommessages (chatroom_id, tm_delete, tm_create DESC, id DESC);
CREATE INDEX chatroommessages_message ON chatroommessages (messagechat_id);
DROP TABLE legacy_copy_ids;
DROP TABLE chatroommessage_deletions;
ALTER TABLE member_chatrooms DROP COLUMN tm_create;
ALTER TABLE member_chatrooms DROP COLUMN no;
DROP INDEX chatmessages_list;
ALTER TABLE chatmessages DROP CONSTRAINT chatmessages_pkey;
ALTER TABLE chatmessages ADD PRIMARY KEY (id);
ALTER TABLE chatmessages DROP COLUMN no;
CREATE INDEX chatmessages_list ON chatmessages (chat_id, tm_delete, tm_create DESC, id DESC);
