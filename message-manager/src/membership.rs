//! The membership view: which chats exist, who takes part, and which chatrooms are live. Fed by
//! chat-manager's events; on a miss (a message sent before the events arrived) filled from
//! chat-manager's answer over gRPC.

use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::time;
use proto::chat::v1 as chat_pb;
use serde_json::Value;

use crate::db::models::{MemberChat, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;

/// A chat and its live chatrooms, as the view knows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Members {
    pub chat: MemberChat,
    pub rooms: Vec<MemberChatroom>,
}

impl Members {
    pub fn is_live(&self) -> bool {
        self.chat.tm_delete == time::live()
    }

    /// Every participant has a live chatroom. When not, a chatroom event may still be on its
    /// way (or the participant deleted their room): ask chat-manager before fanning out.
    pub fn is_complete(&self) -> bool {
        self.chat
            .participants()
            .iter()
            .all(|p| self.rooms.iter().any(|r| &r.owner_id == p))
    }
}

/// The chat of the tenant with its live chatrooms, if the view knows it.
pub fn load(
    conn: &mut DbConnection,
    customer_id: &str,
    chat_id: &str,
) -> Result<Option<Members>, MessageError> {
    Ok(queries::member_chat_with_rooms(conn, chat_id)?
        .filter(|(chat, _)| chat.customer_id == customer_id)
        .map(|(chat, rooms)| Members { chat, rooms }))
}

/// The chat's members for a send of `new`, when the view can vouch for them: the chat is
/// deleted (the send is refused as such), or every participant has a live chatroom and the
/// sender is one of them. Otherwise `Stale`: the caller refreshes the view from chat-manager.
pub fn vouching_for(
    conn: &mut DbConnection,
    new: &crate::chatmessages::NewMessage,
) -> Result<Members, MessageError> {
    load(conn, &new.customer_id, &new.chat_id)?
        .filter(|m| {
            !m.is_live() || (m.is_complete() && !crate::chatmessages::sender_unknown(m, new))
        })
        .ok_or_else(|| MessageError::Stale("membership view".into()))
}

/// The chatroom of the tenant, if the view knows it.
pub fn load_room(
    conn: &mut DbConnection,
    customer_id: &str,
    room_id: &str,
) -> Result<Option<MemberChatroom>, MessageError> {
    Ok(queries::member_room(conn, room_id)?.filter(|r| r.customer_id == customer_id))
}

fn tm(s: &str) -> Result<NaiveDateTime, MessageError> {
    time::parse(s)
        .ok_or_else(|| MessageError::Internal(format!("bad timestamp {s:?} from chat-manager")))
}

pub fn member_chat_from_proto(c: &chat_pb::Chat) -> Result<MemberChat, MessageError> {
    Ok(MemberChat {
        id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        participant_ids: serde_json::to_string(&c.participant_ids).expect("ids serialize"),
        tm_update: tm(&c.tm_update)?,
        tm_delete: tm(&c.tm_delete)?,
    })
}

pub fn member_room_from_proto(r: &chat_pb::Chatroom) -> Result<MemberChatroom, MessageError> {
    Ok(MemberChatroom {
        no: 0,
        id: r.id.clone(),
        customer_id: r.customer_id.clone(),
        chat_id: r.chat_id.clone(),
        owner_id: r.owner_id.clone(),
        tm_create: tm(&r.tm_create)?,
        tm_update: tm(&r.tm_update)?,
        tm_delete: tm(&r.tm_delete)?,
    })
}

/// Stores chat-manager's answer (a chat and its live chatrooms).
pub fn fill(conn: &mut DbConnection, members: &chat_pb::ChatMembers) -> Result<(), MessageError> {
    let chat = members
        .chat
        .as_ref()
        .ok_or_else(|| MessageError::Internal("chat-manager answered without a chat".into()))?;
    queries::upsert_member_chat(conn, &member_chat_from_proto(chat)?)?;
    for room in &members.chatrooms {
        queries::upsert_member_room(conn, &member_room_from_proto(room)?)?;
    }
    Ok(())
}

fn field<'a>(data: &'a Value, name: &str) -> Result<&'a str, MessageError> {
    data.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| MessageError::invalid(format!("event data: missing {name}")))
}

/// Applies one of chat-manager's events to the view. Unknown event types are ignored.
pub fn apply_event(
    conn: &mut DbConnection,
    event_type: &str,
    data: &Value,
) -> Result<(), MessageError> {
    match event_type {
        "chat_created" | "chat_updated" | "chat_deleted" => {
            let participants: Vec<String> = data
                .get("participant_ids")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .ok_or_else(|| MessageError::invalid("event data: missing participant_ids"))?;
            let chat = MemberChat {
                id: field(data, "id")?.to_owned(),
                customer_id: field(data, "customer_id")?.to_owned(),
                participant_ids: serde_json::to_string(&participants).expect("ids serialize"),
                tm_update: tm(field(data, "tm_update")?)?,
                tm_delete: tm(field(data, "tm_delete")?)?,
            };
            queries::upsert_member_chat(conn, &chat)?;
        }
        "chatroom_created" | "chatroom_updated" | "chatroom_deleted" => {
            let room = MemberChatroom {
                no: 0,
                id: field(data, "id")?.to_owned(),
                customer_id: field(data, "customer_id")?.to_owned(),
                chat_id: field(data, "chat_id")?.to_owned(),
                owner_id: field(data, "owner_id")?.to_owned(),
                tm_create: tm(field(data, "tm_create")?)?,
                tm_update: tm(field(data, "tm_update")?)?,
                tm_delete: tm(field(data, "tm_delete")?)?,
            };
            queries::upsert_member_room(conn, &room)?;
        }
        _ => {}
    }
    Ok(())
}
