use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{chatmessages, chatroommessages, member_chatrooms, member_chats};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, PartialEq)]
#[diesel(table_name = chatmessages)]
pub struct ChatmessageRow {
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
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, PartialEq)]
#[diesel(table_name = chatroommessages)]
pub struct ChatroommessageRow {
    pub id: String,
    pub customer_id: String,
    pub chatroom_id: String,
    pub owner_id: String,
    pub messagechat_id: String,
    pub source: String,
    pub message_type: String,
    pub text: String,
    pub medias: String,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

/// A chat as the membership view knows it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = member_chats)]
pub struct MemberChat {
    pub id: String,
    pub customer_id: String,
    /// JSON array.
    pub participant_ids: String,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

impl MemberChat {
    pub fn participants(&self) -> Vec<String> {
        serde_json::from_str(&self.participant_ids).unwrap_or_default()
    }
}

/// A chatroom as the membership view knows it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = member_chatrooms)]
pub struct MemberChatroom {
    pub id: String,
    pub customer_id: String,
    pub chat_id: String,
    pub owner_id: String,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}
