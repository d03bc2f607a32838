//! The membership view: which chats exist, who takes part, and which chatrooms are live. Fed by
//! chat-manager's events; on a miss (a message sent before the events arrived) filled from
//! chat-manager's answer over gRPC.
//!
//! Events can be late, or lost to the dead-letter queue, and a room whose deletion never
//! arrived would go on receiving copies. So the view does not vouch for a chat it has not
//! confirmed for `MAX_AGE` (from chat-manager's answer, or a chat event, which carries the
//! whole participant list): the next use asks chat-manager again, and a live room missing
//! from the answer is retired with the deletion time chat-manager gives. A room whose owner
//! is no longer a participant is left out at once.

use std::time::Duration;

use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::resources::{ChatJson, ChatroomJson};
use common::time;
use pipeline::contract::{EventData, ParsedEvent};
use proto::chat::v1 as chat_pb;

use crate::db::models::{MemberChat, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;

/// A chat and its live chatrooms, as the view knows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Members {
    pub chat: MemberChat,
    pub rooms: Vec<MemberChatroom>,
}

/// How long the view vouches for a chat it has not confirmed, unless configured.
pub const MAX_AGE: Duration = Duration::from_secs(60);

impl Members {
    pub fn is_live(&self) -> bool {
        self.chat.tm_delete == time::live()
    }

    /// A live chat not confirmed within `max_age`: ask chat-manager before using it. (A
    /// deleted chat is final.)
    pub fn is_stale(&self, now: NaiveDateTime, max_age: Duration) -> bool {
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        self.is_live()
            && self
                .chat
                .tm_checked
                .checked_add_signed(max_age)
                .is_none_or(|due| due <= now)
    }

    /// Every participant has a live chatroom. When not, a chatroom event may still be on its
    /// way (or the participant deleted their room): ask chat-manager before fanning out.
    pub fn is_complete(&self) -> bool {
        let owners: std::collections::HashSet<&str> =
            self.rooms.iter().map(|r| r.owner_id.as_str()).collect();
        self.chat
            .participants()
            .iter()
            .all(|p| owners.contains(p.as_str()))
    }
}

/// The chat of the tenant with its live chatrooms, if the view knows it. A room whose owner is
/// not among the chat's participants is left out: its deletion has not arrived yet.
pub fn load(
    conn: &mut DbConnection,
    customer_id: &str,
    chat_id: &str,
) -> Result<Option<Members>, MessageError> {
    Ok(
        queries::member_chat_with_rooms(conn, customer_id, chat_id)?.map(|(chat, mut rooms)| {
            if chat.tm_delete == time::live() {
                let participants: std::collections::HashSet<String> =
                    chat.participants().into_iter().collect();
                rooms.retain(|r| participants.contains(&r.owner_id));
            }
            Members { chat, rooms }
        }),
    )
}

/// The ids of the chat's rooms the view has live, whether or not their owners still take part.
pub fn live_room_ids(
    conn: &mut DbConnection,
    customer_id: &str,
    chat_id: &str,
) -> Result<Vec<String>, MessageError> {
    Ok(queries::member_chat_with_rooms(conn, customer_id, chat_id)?
        .map(|(_, rooms)| rooms.into_iter().map(|r| r.id).collect())
        .unwrap_or_default())
}

/// The chat's members for a send of `new`, when the view can vouch for them: the chat is
/// deleted (the send is refused as such), or it was confirmed within `max_age`, every
/// participant has a live chatroom and the sender is one of them. Otherwise `Stale`: the
/// caller refreshes the view from chat-manager.
pub fn vouching_for(
    conn: &mut DbConnection,
    new: &crate::chatmessages::NewMessage,
    max_age: Duration,
) -> Result<Members, MessageError> {
    let now = time::now();
    load(conn, &new.customer_id, &new.chat_id)?
        .filter(|m| {
            !m.is_live()
                || (!m.is_stale(now, max_age)
                    && m.is_complete()
                    && !crate::chatmessages::sender_unknown(m, new))
        })
        .ok_or_else(|| MessageError::Stale("membership view".into()))
}

/// The chatroom of the tenant, if the view knows it.
pub fn load_room(
    conn: &mut DbConnection,
    customer_id: &str,
    room_id: &str,
) -> Result<Option<MemberChatroom>, MessageError> {
    Ok(queries::tenant_room(conn, customer_id, room_id)?)
}

fn tm(s: &str) -> Result<NaiveDateTime, MessageError> {
    time::parse(s)
        .ok_or_else(|| MessageError::Internal(format!("bad timestamp {s:?} from chat-manager")))
}

/// A timestamp of an event: a bad one makes the event malformed (it will never apply).
fn event_tm(s: &str) -> Result<NaiveDateTime, MessageError> {
    time::parse(s).ok_or_else(|| MessageError::invalid(format!("event data: bad timestamp {s:?}")))
}

pub fn member_chat_from_proto(c: &chat_pb::Chat) -> Result<MemberChat, MessageError> {
    Ok(MemberChat {
        id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        participant_ids: serde_json::to_string(&c.participant_ids).expect("ids serialize"),
        tm_update: tm(&c.tm_update)?,
        tm_delete: tm(&c.tm_delete)?,
        tm_checked: time::now(),
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

/// Stores chat-manager's answer (a chat and its live chatrooms), the rooms it retired (those
/// the view had live and the answer left out, as chat-manager has them now), and that the
/// chat was confirmed now. Rooms the view has as the answer does are not written again.
pub fn fill(
    conn: &mut DbConnection,
    members: &chat_pb::ChatMembers,
    retired: &[chat_pb::Chatroom],
) -> Result<(), MessageError> {
    let chat = members
        .chat
        .as_ref()
        .ok_or_else(|| MessageError::Internal("chat-manager answered without a chat".into()))?;
    let chat_row = member_chat_from_proto(chat)?;
    queries::upsert_member_chat(conn, &chat_row)?;
    let known: std::collections::HashMap<String, MemberChatroom> =
        queries::member_chat_with_rooms(conn, &chat_row.customer_id, &chat_row.id)?
            .map(|(_, rooms)| rooms.into_iter().map(|r| (r.id.clone(), r)).collect())
            .unwrap_or_default();
    for room in members.chatrooms.iter().chain(retired) {
        let row = member_room_from_proto(room)?;
        let same = known
            .get(&row.id)
            .is_some_and(|k| k.tm_update == row.tm_update && k.tm_delete == row.tm_delete);
        if !same {
            queries::upsert_member_room(conn, &row)?;
        }
    }
    queries::mark_checked(conn, &chat_row.id, chat_row.tm_checked)?;
    Ok(())
}

/// The view's chat from an event's.
fn member_chat(chat: &ChatJson) -> Result<MemberChat, MessageError> {
    Ok(MemberChat {
        id: chat.id.clone(),
        customer_id: chat.customer_id.clone(),
        participant_ids: serde_json::to_string(&chat.participant_ids).expect("ids serialize"),
        tm_update: event_tm(&chat.tm_update)?,
        tm_delete: event_tm(&chat.tm_delete)?,
        // The event carries the whole participant list: the chat is confirmed as of now (kept
        // only if the event is not older than what the view has).
        tm_checked: time::now(),
    })
}

/// The view's chatroom from an event's.
fn member_room(room: &ChatroomJson) -> Result<MemberChatroom, MessageError> {
    Ok(MemberChatroom {
        no: 0,
        id: room.id.clone(),
        customer_id: room.customer_id.clone(),
        chat_id: room.chat_id.clone(),
        owner_id: room.owner_id.clone(),
        tm_create: event_tm(&room.tm_create)?,
        tm_update: event_tm(&room.tm_update)?,
        tm_delete: event_tm(&room.tm_delete)?,
    })
}

/// Applies one of chat-manager's events to the view: the chat, and each chatroom it names.
/// Other events are ignored.
pub fn apply_event(conn: &mut DbConnection, event: &ParsedEvent) -> Result<(), MessageError> {
    match &event.data {
        EventData::Chat(data) => {
            queries::upsert_member_chat(conn, &member_chat(&data.chat)?)?;
            for (action, item) in data.chatrooms.iter() {
                queries::upsert_member_room(conn, &member_room(&data.chatroom(action, item))?)?;
            }
        }
        EventData::Chatroom(room) => queries::upsert_member_room(conn, &member_room(room)?)?,
        EventData::Messagechat(_) | EventData::Messagechatroom(_) | EventData::ChatroomRead(_) => {}
    }
    Ok(())
}
