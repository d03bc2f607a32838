// The tables of chat-manager's own schema (see migrations/). The outbox table is
// `pipeline::outbox::outbox`.

diesel::table! {
    chats (id) {
        id -> Text,
        customer_id -> Text,
        chat_type -> Text,
        owner_id -> Text,
        participant_ids -> Text,
        name -> Text,
        detail -> Text,
        normal_pair -> Nullable<Text>,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::table! {
    chatrooms (id) {
        id -> Text,
        customer_id -> Text,
        chat_id -> Text,
        owner_id -> Text,
        name -> Text,
        detail -> Text,
        tm_create -> Timestamp,
        tm_update -> Timestamp,
        tm_delete -> Timestamp,
    }
}

diesel::joinable!(chatrooms -> chats (chat_id));
diesel::allow_tables_to_appear_in_same_query!(chats, chatrooms);
