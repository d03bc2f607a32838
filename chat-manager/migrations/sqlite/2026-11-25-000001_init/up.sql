-- chat-manager's tables for the embedded default (SQLite), the same shape as PostgreSQL's.

CREATE TABLE chats (
    id              TEXT PRIMARY KEY NOT NULL,
    customer_id     TEXT NOT NULL,
    chat_type       TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    participant_ids TEXT NOT NULL,
    name            TEXT NOT NULL,
    detail          TEXT NOT NULL,
    normal_pair     TEXT,
    tm_create       TIMESTAMP NOT NULL,
    tm_update       TIMESTAMP NOT NULL,
    tm_delete       TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX chats_normal_pair ON chats (customer_id, normal_pair);
CREATE INDEX chats_list ON chats (customer_id, tm_delete, tm_create DESC, id DESC);

CREATE TABLE chatrooms (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL,
    chat_id     TEXT NOT NULL REFERENCES chats (id),
    owner_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    tm_create   TIMESTAMP NOT NULL,
    tm_update   TIMESTAMP NOT NULL,
    tm_delete   TIMESTAMP NOT NULL
);
CREATE INDEX chatrooms_list ON chatrooms (customer_id, tm_delete, tm_create DESC, id DESC);
CREATE INDEX chatrooms_owner_list ON chatrooms (customer_id, owner_id, tm_delete, tm_create DESC, id DESC);
CREATE INDEX chatrooms_chat ON chatrooms (chat_id, tm_delete);

CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    payload     TEXT NOT NULL,
    request_id  TEXT,
    created_at  TIMESTAMP NOT NULL,
    sent_at     TIMESTAMP
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
