//! Read state: how far each chatroom's owner has read in its chat. The read point is a message
//! (its place in the chat, `chat_seq`); the unread count is computed from it when asked (see
//! `queries::read_states`), so it cannot drift, and a send writes nothing per participant.

use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::page::Page;
use common::resources::ReadStateJson;
use common::time;
use pipeline::Event;
use pipeline::contract::{EventData, EventType, PeerItem, ReadEventData};
use proto::message::v1 as pb;

use crate::chatmessages::Change;
use crate::db::models::{ChatmessageRow, MemberChatroom};
use crate::db::queries::{self, ReadScope, ReadStateRow};
use crate::error::MessageError;
use crate::events::MessageRecord;

pub fn to_proto(row: ReadStateRow) -> pb::ReadState {
    let tm = |t: Option<NaiveDateTime>| t.map(time::format).unwrap_or_default();
    pb::ReadState {
        chatroom_id: row.chatroom_id,
        customer_id: row.customer_id,
        chat_id: row.chat_id,
        owner_id: row.owner_id,
        last_read_messagechat_id: row.messagechat_id.unwrap_or_default(),
        tm_last_read: tm(row.tm_last_read),
        unread_count: row.unread_count.max(0),
        tm_update: tm(row.tm_update),
    }
}

/// `owner_id`'s live chatroom, or NOT_FOUND (another's room is as good as missing).
pub fn own_room(room: MemberChatroom, owner_id: &str) -> Result<MemberChatroom, MessageError> {
    if room.owner_id != owner_id || room.tm_delete != time::live() {
        return Err(MessageError::not_found("chatroom"));
    }
    Ok(room)
}

/// The read state of `room` (a live room of a live chat; NOT_FOUND otherwise).
pub fn get(conn: &mut DbConnection, room: &MemberChatroom) -> Result<pb::ReadState, MessageError> {
    queries::read_states(conn, &room.customer_id, ReadScope::Room(&room.id))?
        .pop()
        .map(to_proto)
        .ok_or_else(|| MessageError::not_found("chatroom"))
}

/// The read states of every live chatroom of `room`'s chat.
pub fn list_for_chat(
    conn: &mut DbConnection,
    room: &MemberChatroom,
) -> Result<Vec<pb::ReadState>, MessageError> {
    Ok(
        queries::read_states(conn, &room.customer_id, ReadScope::Chat(&room.chat_id))?
            .into_iter()
            .map(to_proto)
            .collect(),
    )
}

/// How much `owner_id` has not read: rooms with unread copies, and those copies in all.
pub fn unread(
    conn: &mut DbConnection,
    customer_id: &str,
    owner_id: &str,
) -> Result<pb::Unread, MessageError> {
    let rows = queries::read_states(conn, customer_id, ReadScope::Owner(owner_id))?;
    let counts = rows.iter().map(|r| r.unread_count).filter(|n| *n > 0);
    Ok(pb::Unread {
        chatrooms: counts.clone().count() as i64,
        chatroommessages: counts.sum(),
    })
}

/// Moves `room`'s read point forward to the message with id `messagechat_id` (one the room
/// holds a copy of) or, without one, to the room's newest live copy. Publishes
/// `chatroom_read_updated` when it moved; an earlier point leaves it, and publishes nothing.
pub fn mark(
    conn: &mut DbConnection,
    room: &MemberChatroom,
    messagechat_id: Option<&str>,
) -> Result<Change<pb::ReadState>, MessageError> {
    let target = match messagechat_id {
        Some(id) => Some(message_of_room(conn, room, id)?),
        None => newest_copy(conn, room)?,
    };
    let moved = match &target {
        Some(message) => queries::advance_read_point(conn, room, message, time::now())?,
        None => false,
    };
    let state = get(conn, room)?;
    if !moved {
        return Ok((state, Vec::new()));
    }
    let peers = queries::member_chat_with_rooms(conn, &room.customer_id, &room.chat_id)?
        .map(|(_, rooms)| rooms)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.id != room.id)
        .map(|r| PeerItem(r.id, r.owner_id))
        .collect();
    let data = EventData::ChatroomRead(ReadEventData {
        read_state: ReadStateJson::from(state.clone()),
        peers,
    });
    let event = Event::new(EventType::CHATROOM_READ_UPDATED, &data).owned_by(&room.owner_id);
    Ok((state, vec![MessageRecord::Event(event)]))
}

/// The message `id` if `room` holds a copy of it (live or not); 400 naming the field if not.
fn message_of_room(
    conn: &mut DbConnection,
    room: &MemberChatroom,
    id: &str,
) -> Result<ChatmessageRow, MessageError> {
    let not_here =
        || MessageError::invalid("messagechat_id: not a message of this chatroom's chat");
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_here())?;
    queries::find_message(conn, &room.customer_id, &id)?
        .filter(|m| m.chat_id == room.chat_id && room.holds_copy_of(m.tm_create))
        .ok_or_else(not_here)
}

/// The message of the room's newest live copy, if it has one.
fn newest_copy(
    conn: &mut DbConnection,
    room: &MemberChatroom,
) -> Result<Option<ChatmessageRow>, MessageError> {
    let first = Page::new(1, "").map_err(|e| MessageError::Internal(e.to_string()))?;
    Ok(queries::list_copies(conn, room, &first)?.into_iter().next())
}
