// The tables of message-manager's own schema (see migrations/). The outbox and idempotency
// tables are common's.

diesel::table! {
    /// `no`: the id's leading 60 bits (see `chatroommessages::message_no`), the key of a
    /// message inside this service.
    chatmessages (no) {
        no -> BigInt,
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
        /// The message's place in its chat: 1, 2, 3, ... in the order of `tm_create`.
        chat_seq -> BigInt,
        /// The agent of an agent source.
        sender_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// A chatroom's read point (no row: nothing read yet).
    chatroom_reads (chatroom_id) {
        chatroom_id -> Text,
        customer_id -> Text,
        read_seq -> BigInt,
        messagechat_id -> Text,
        tm_last_read -> Timestamp,
        tm_update -> Timestamp,
    }
}

diesel::table! {
    /// Copies deleted on their own; a copy also ends with its message or its chatroom.
    chatroommessage_deletions (room_no, message_no) {
        room_no -> BigInt,
        message_no -> BigInt,
        tm_delete -> Timestamp,
        /// The message's `chat_seq` and `sender_id` (for the unread counts).
        chat_seq -> BigInt,
        sender_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// Ids of copies written before copies were derived (the lean fan-out migration).
    legacy_copy_ids (id) {
        id -> Text,
        room_no -> BigInt,
        message_no -> BigInt,
    }
}

diesel::table! {
    /// `tm_checked`: when the view last confirmed the chat (see `membership`).
    member_chats (id) {
        id -> Text,
        customer_id -> Text,
        participant_ids -> Text,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
        tm_checked -> Timestamp,
        /// The last `chat_seq` given and the last message's `tm_create` (see the send).
        last_seq -> BigInt,
        last_message_at -> Timestamp,
    }
}

diesel::table! {
    /// `no`: assigned when the view first learns of the room; part of its copies' ids.
    member_chatrooms (id) {
        no -> BigInt,
        id -> Text,
        customer_id -> Text,
        chat_id -> Text,
        owner_id -> Text,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

pub use common::processed::processed_events;

// A send reads a chat and its chatrooms in one query; a room's copies are its chat's messages
// less those deleted on their own.
diesel::allow_tables_to_appear_in_same_query!(member_chats, member_chatrooms);
diesel::allow_tables_to_appear_in_same_query!(chatmessages, chatroommessage_deletions);
