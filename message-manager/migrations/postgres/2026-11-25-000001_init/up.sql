-- message-manager's own schema (the connection's search_path names it). It never reads
-- chat-manager's tables: membership is a local view fed by chat-manager's events.

CREATE TABLE chatmessages (
    id           TEXT COLLATE "C" PRIMARY KEY,
    customer_id  TEXT COLLATE "C" NOT NULL,
    chat_id      TEXT COLLATE "C" NOT NULL,
    -- address JSON
    source       TEXT NOT NULL,
    message_type TEXT NOT NULL,
    text         TEXT NOT NULL,
    -- JSON array of medias
    medias       TEXT NOT NULL,
    tm_create    TIMESTAMP NOT NULL,
    tm_update    TIMESTAMP NOT NULL,
    tm_delete    TIMESTAMP NOT NULL
);
CREATE INDEX chatmessages_list ON chatmessages (chat_id, tm_delete, tm_create DESC, id DESC);

CREATE TABLE chatroommessages (
    id             TEXT COLLATE "C" PRIMARY KEY,
    customer_id    TEXT COLLATE "C" NOT NULL,
    chatroom_id    TEXT COLLATE "C" NOT NULL,
    -- the chatroom's owner, fixed for the room's life: agent checks need no join
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
CREATE INDEX chatroommessages_list ON chatroommessages (chatroom_id, tm_delete, tm_create DESC, id DESC);
CREATE INDEX chatroommessages_message ON chatroommessages (messagechat_id);

-- The membership view: chats and chatrooms as chat-manager's events (or, on a miss, its gRPC
-- answers) describe them. `tm_update` orders competing updates; a deletion is final.
CREATE TABLE member_chats (
    id              TEXT COLLATE "C" PRIMARY KEY,
    customer_id     TEXT COLLATE "C" NOT NULL,
    participant_ids TEXT NOT NULL,
    tm_update       TIMESTAMP NOT NULL,
    tm_delete       TIMESTAMP NOT NULL
);

CREATE TABLE member_chatrooms (
    id          TEXT COLLATE "C" PRIMARY KEY,
    customer_id TEXT COLLATE "C" NOT NULL,
    chat_id     TEXT COLLATE "C" NOT NULL,
    owner_id    TEXT COLLATE "C" NOT NULL,
    tm_update   TIMESTAMP NOT NULL,
    tm_delete   TIMESTAMP NOT NULL
);
CREATE INDEX member_chatrooms_chat ON member_chatrooms (chat_id, tm_delete);

-- Event ids already applied, recorded in the same transaction as their effect.
CREATE TABLE processed_events (
    id           TEXT PRIMARY KEY,
    processed_at TIMESTAMP NOT NULL
);

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

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BIGINT NOT NULL,
    response     BYTEA NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
