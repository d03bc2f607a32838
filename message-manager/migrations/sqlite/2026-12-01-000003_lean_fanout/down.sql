-- Back to a row per copy (copies without an old id get a new random one).
CREATE TABLE chatroommessages (
    id             TEXT PRIMARY KEY NOT NULL,
    customer_id    TEXT NOT NULL,
    chatroom_id    TEXT NOT NULL,
    owner_id       TEXT NOT NULL,
    messagechat_id TEXT NOT NULL,
    source         TEXT NOT NULL,
    message_type   TEXT NOT NULL,
    text           TEXT NOT NULL,
    medias         TEXT NOT NULL,
    tm_create      TIMESTAMP NOT NULL,
    tm_update      TIMESTAMP NOT NULL,
    tm_delete      TIMESTAMP NOT NULL
);
INSERT INTO chatroommessages
SELECT coalesce(l.id, lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
       m.customer_id, r.id, r.owner_id, m.id, m.source, m.message_type, m.text, m.medias, m.tm_create,
       min(m.tm_update, coalesce(d.tm_delete, m.tm_update)),
       min(m.tm_delete, coalesce(d.tm_delete, m.tm_delete))
  FROM chatmessages m
  JOIN member_chatrooms r ON r.chat_id = m.chat_id AND r.tm_create <= m.tm_create AND m.tm_create < r.tm_delete
  LEFT JOIN legacy_copy_ids l ON l.room_no = r.no AND l.message_no = m.no
  LEFT JOIN chatroommessage_deletions d ON d.room_no = r.no AND d.message_no = m.no;
CREATE INDEX chatroommessages_list ON chatroommessages (chatroom_id, tm_delete, tm_create DESC, id DESC);
CREATE INDEX chatroommessages_message ON chatroommessages (messagechat_id);
DROP TABLE legacy_copy_ids;
DROP TABLE chatroommessage_deletions;

CREATE TABLE member_chatrooms_old (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    tm_update   TIMESTAMP NOT NULL,
    tm_delete   TIMESTAMP NOT NULL
);
INSERT INTO member_chatrooms_old SELECT id, customer_id, chat_id, owner_id, tm_update, tm_delete FROM member_chatrooms;
DROP TABLE member_chatrooms;
ALTER TABLE member_chatrooms_old RENAME TO member_chatrooms;
CREATE INDEX member_chatrooms_chat ON member_chatrooms (chat_id, tm_delete);

CREATE TABLE chatmessages_old (
    id           TEXT PRIMARY KEY NOT NULL,
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
INSERT INTO chatmessages_old SELECT id, customer_id, chat_id, source, message_type, text, medias, tm_create, tm_update, tm_delete FROM chatmessages;
DROP TABLE chatmessages;
ALTER TABLE chatmessages_old RENAME TO chatmessages;
CREATE INDEX chatmessages_list ON chatmessages (chat_id, tm_delete, tm_create DESC, id DESC);
