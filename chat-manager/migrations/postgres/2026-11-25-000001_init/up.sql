-- chat-manager's own schema (the connection's search_path names it).
-- Ids are UUID text with byte order ("C") so ordering and the tie-breaking cursor agree with
-- the index.

CREATE TABLE chats (
    id              TEXT COLLATE "C" PRIMARY KEY,
    customer_id     TEXT COLLATE "C" NOT NULL,
    chat_type       TEXT NOT NULL,
    owner_id        TEXT COLLATE "C" NOT NULL,
    -- JSON array of participant ids, sorted, without duplicates.
    participant_ids TEXT NOT NULL,
    name            TEXT NOT NULL,
    detail          TEXT NOT NULL,
    -- "<a>,<b>" for a live normal chat, NULL otherwise: makes a second live normal chat for a
    -- pair a unique violation, also under concurrent creates.
    normal_pair     TEXT COLLATE "C",
    tm_create       TIMESTAMP NOT NULL,
    tm_update       TIMESTAMP NOT NULL,
    tm_delete       TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX chats_normal_pair ON chats (customer_id, normal_pair);
CREATE INDEX chats_list ON chats (customer_id, tm_delete, tm_create DESC, id DESC);

CREATE TABLE chatrooms (
    id          TEXT COLLATE "C" PRIMARY KEY,
    customer_id TEXT COLLATE "C" NOT NULL,
    chat_id     TEXT COLLATE "C" NOT NULL REFERENCES chats (id),
    owner_id    TEXT COLLATE "C" NOT NULL,
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
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    payload     TEXT NOT NULL,
    request_id  TEXT,
    created_at  TIMESTAMP NOT NULL,
    sent_at     TIMESTAMP
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
