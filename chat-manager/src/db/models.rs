use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{chatrooms, chats};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, PartialEq)]
#[diesel(table_name = chats)]
pub struct ChatRow {
    pub id: String,
    pub customer_id: String,
    pub chat_type: String,
    pub owner_id: String,
    /// JSON array, sorted, without duplicates.
    pub participant_ids: String,
    pub name: String,
    pub detail: String,
    pub normal_pair: Option<String>,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

impl ChatRow {
    pub fn participants(&self) -> Vec<String> {
        decode_ids(&self.participant_ids)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, PartialEq)]
#[diesel(table_name = chatrooms)]
pub struct ChatroomRow {
    pub id: String,
    pub customer_id: String,
    pub chat_id: String,
    pub owner_id: String,
    pub name: String,
    pub detail: String,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

/// A chatroom with what it shows of its chat: the type and the current participants are the
/// chat's (kept once, on the chat, rather than copied into every room on every change). The
/// participant list is shared by the views of one chat's rooms: a change to a 1,000-person
/// chat makes a thousand views, not a million strings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatroomView {
    pub room: ChatroomRow,
    pub chat_type: String,
    pub participant_ids: std::sync::Arc<[String]>,
}

pub fn encode_ids(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("a list of strings serializes")
}

pub fn decode_ids(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}
