use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{chatmessages, member_chatrooms, member_chats};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, PartialEq)]
#[diesel(table_name = chatmessages)]
pub struct ChatmessageRow {
    /// The id's leading 60 bits (`chatroommessages::message_no`).
    pub no: i64,
    pub id: String,
    pub customer_id: String,
    pub chat_id: String,
    /// Address JSON.
    pub source: String,
    pub message_type: String,
    pub text: String,
    /// JSON array of medias.
    pub medias: String,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
    /// The message's place in its chat, given when it is written (0 until then).
    pub chat_seq: i64,
    /// The agent of an agent source.
    pub sender_id: Option<String>,
}

/// A chat as the membership view knows it (less the send's counters, `last_seq` and
/// `last_message_at`, which only the send writes).
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = member_chats)]
pub struct MemberChat {
    pub id: String,
    pub customer_id: String,
    /// JSON array.
    pub participant_ids: String,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
    /// When the view last confirmed this chat's state: from chat-manager's answer, or from a
    /// chat event (which carries the whole participant list).
    pub tm_checked: NaiveDateTime,
}

impl MemberChat {
    pub fn participants(&self) -> Vec<String> {
        serde_json::from_str(&self.participant_ids).unwrap_or_default()
    }
}

/// A chatroom as the membership view knows it. It holds a copy of every message of its chat
/// sent while it was live, from `tm_create` until `tm_delete`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = member_chatrooms)]
pub struct MemberChatroom {
    /// Given by the database when the view first stores the room (0 until then).
    #[diesel(skip_insertion, skip_update)]
    pub no: i64,
    pub id: String,
    pub customer_id: String,
    pub chat_id: String,
    pub owner_id: String,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

impl MemberChatroom {
    /// Whether the room was live when a message of `tm_create` was sent: it holds its copy.
    pub fn holds_copy_of(&self, message_tm_create: NaiveDateTime) -> bool {
        self.tm_create <= message_tm_create && message_tm_create < self.tm_delete
    }
}
