// The tables of message-manager's own schema (see migrations/). The outbox and idempotency
// tables are common's.

diesel::table! {
    chatmessages (id) {
        id -> Text,
        customer_id -> Text,
        chat_id -> Text,
        source -> Text,
        message_type -> Text,
        text -> Text,
        medias -> Text,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::table! {
    chatroommessages (id) {
        id -> Text,
        customer_id -> Text,
        chatroom_id -> Text,
        owner_id -> Text,
        messagechat_id -> Text,
        source -> Text,
        message_type -> Text,
        text -> Text,
        medias -> Text,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::table! {
    member_chats (id) {
        id -> Text,
        customer_id -> Text,
        participant_ids -> Text,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::table! {
    member_chatrooms (id) {
        id -> Text,
        customer_id -> Text,
        chat_id -> Text,
        owner_id -> Text,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::table! {
    processed_events (id) {
        id -> Text,
        processed_at -> Timestamp,
    }
}
// A send reads a chat and its chatrooms in one query.
diesel::allow_tables_to_appear_in_same_query!(member_chats, member_chatrooms);
