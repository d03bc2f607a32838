-- A lean fan-out: see the PostgreSQL migration of the same name. SQLite cannot change a primary
-- key in place, so the two tables are rebuilt.

-- Messages are numbered by the leading 60 bits of their id (hex digits 1-12 and 14-16).
CREATE TABLE chatmessages_numbered (
    no           INTEGER PRIMARY KEY NOT NULL,
    id           TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    chat_id      TEXT NOT NULL,
    source       TEXT NOT NULL,
    message_type TEXT NOT NULL,
    text         TEXT NOT NULL,
    medias       TEXT NOT NULL,
    tm_create    TIMESTAMP NOT NULL,
    tm_update    TIMESTAMP NOT NULL,
    tm_delete    TIMESTAMP NOT NULL
);
INSERT INTO chatmessages_numbered
SELECT (((((((((((((((0 * 16 + instr('0123456789abcdef', substr(id, 1, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 2, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 3, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 4, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 5, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 6, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 7, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 8, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 10, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 11, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 12, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 13, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 16, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 17, 1)) - 1) * 16 + instr('0123456789abcdef', substr(id, 18, 1)) - 1),
       id, customer_id, chat_id, source, message_type, text, medias, tm_create, tm_update, tm_delete
  FROM chatmessages;

CREATE TABLE member_chatrooms_numbered (
    no          INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    tm_create   TIMESTAMP NOT NULL,
    tm_update   TIMESTAMP NOT NULL,
    tm_delete   TIMESTAMP NOT NULL
);
INSERT INTO member_chatrooms_numbered (id, customer_id, chat_id, owner_id, tm_create, tm_update, tm_delete)
SELECT r.id, r.customer_id, r.chat_id, r.owner_id,
       min(r.tm_update, coalesce((SELECT min(c.tm_create) FROM chatroommessages c WHERE c.chatroom_id = r.id), r.tm_update)),
       r.tm_update, r.tm_delete
  FROM member_chatrooms r;

CREATE TABLE chatroommessage_deletions (
    room_no    INTEGER NOT NULL,
    message_no INTEGER NOT NULL,
    tm_delete  TIMESTAMP NOT NULL,
    PRIMARY KEY (room_no, message_no)
);
CREATE TABLE legacy_copy_ids (
    id         TEXT PRIMARY KEY NOT NULL,
    room_no    INTEGER NOT NULL,
    message_no INTEGER NOT NULL
);
INSERT INTO legacy_copy_ids (id, room_no, message_no)
SELECT c.id, r.no, m.no
  FROM chatroommessages c
  JOIN member_chatrooms_numbered r ON r.id = c.chatroom_id
  JOIN chatmessages_numbered m ON m.id = c.messagechat_id;
INSERT OR IGNORE INTO chatroommessage_deletions (room_no, message_no, tm_delete)
SELECT r.no, m.no, c.tm_delete
  FROM chatroommessages c
  JOIN member_chatrooms_numbered r ON r.id = c.chatroom_id
  JOIN chatmessages_numbered m ON m.id = c.messagechat_id
-- (live is the year 9999: compared by year, whatever the stored fraction looks like)
 WHERE substr(c.tm_delete, 1, 4) <> '9999' AND (substr(m.tm_delete, 1, 4) = '9999' OR c.tm_delete < m.tm_delete);

DROP TABLE chatroommessages;
DROP TABLE chatmessages;
ALTER TABLE chatmessages_numbered RENAME TO chatmessages;
CREATE INDEX chatmessages_list ON chatmessages (chat_id, tm_delete, tm_create DESC, no DESC);
DROP TABLE member_chatrooms;
ALTER TABLE member_chatrooms_numbered RENAME TO member_chatrooms;
CREATE INDEX member_chatrooms_chat ON member_chatrooms (chat_id, tm_delete);
