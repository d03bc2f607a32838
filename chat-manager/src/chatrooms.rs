//! Chatrooms: each participant's own view of a chat. Created and deleted with the chat's
//! participants (see `chats`); renamed and deleted on their own here.

use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::page::Page;
use common::time;
use pipeline::contract::Action;
use proto::chat::v1 as pb;

use crate::chats::{self, Change, ChatType, NewChat, check_name_detail, normal_pair, normalise};
use crate::db::models::{ChatRow, ChatroomRow, ChatroomView};
use crate::db::queries;
use crate::error::ChatError;
use crate::events::chatroom_event;

/// A new chatroom of `owner_id` in `chat`, copying the chat's name and detail.
pub fn new_row(chat: &ChatRow, owner_id: &str, now: NaiveDateTime) -> ChatroomRow {
    ChatroomRow {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: chat.customer_id.clone(),
        chat_id: chat.id.clone(),
        owner_id: owner_id.to_owned(),
        name: chat.name.clone(),
        detail: chat.detail.clone(),
        tm_create: now,
        tm_update: now,
        tm_delete: time::live(),
    }
}

pub fn view(room: ChatroomRow, chat: &ChatRow) -> ChatroomView {
    views(vec![room], chat).pop().expect("one view")
}

/// The views of rooms of `chat`, sharing one parse of its participant list.
pub fn views(rooms: Vec<ChatroomRow>, chat: &ChatRow) -> Vec<ChatroomView> {
    let participant_ids: std::sync::Arc<[String]> = chat.participants().into();
    rooms
        .into_iter()
        .map(|room| ChatroomView {
            room,
            chat_type: chat.chat_type.clone(),
            participant_ids: participant_ids.clone(),
        })
        .collect()
}

pub fn to_proto(v: &ChatroomView) -> pb::Chatroom {
    let r = &v.room;
    pb::Chatroom {
        id: r.id.clone(),
        customer_id: r.customer_id.clone(),
        r#type: ChatType::from_db(&v.chat_type).to_proto() as i32,
        chat_id: r.chat_id.clone(),
        owner_id: r.owner_id.clone(),
        participant_ids: v.participant_ids.to_vec(),
        name: r.name.clone(),
        detail: r.detail.clone(),
        tm_create: time::format(r.tm_create),
        tm_update: time::format(r.tm_update),
        tm_delete: time::format(r.tm_delete),
    }
}

pub fn get(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<ChatroomView, ChatError> {
    queries::find_room(conn, customer_id, id, owner_id)?
        .ok_or_else(|| ChatError::not_found("chatroom"))
}

fn get_live(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<ChatroomView, ChatError> {
    let v = get(conn, customer_id, id, owner_id)?;
    if v.room.tm_delete != time::live() {
        return Err(ChatError::not_found("chatroom"));
    }
    Ok(v)
}

pub fn list(
    conn: &mut DbConnection,
    customer_id: &str,
    owner_id: Option<&str>,
    page: &Page,
) -> Result<(Vec<ChatroomView>, String), ChatError> {
    let rows = queries::list_rooms(conn, customer_id, owner_id, page)?;
    Ok(page.finish(rows, |v| (v.room.tm_create, v.room.id.clone())))
}

pub fn update(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
    name: Option<String>,
    detail: Option<String>,
) -> Result<Change<ChatroomView>, ChatError> {
    check_name_detail(name.as_deref(), detail.as_deref())?;
    let mut v = get_live(conn, customer_id, id, owner_id)?;
    if let Some(name) = name {
        v.room.name = name;
    }
    if let Some(detail) = detail {
        v.room.detail = detail;
    }
    v.room.tm_update = time::now();
    queries::save_room(conn, &v.room)?;
    let events = vec![chatroom_event(Action::Updated, &v)];
    Ok((v, events))
}

pub fn delete(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<Change<ChatroomView>, ChatError> {
    let mut v = get_live(conn, customer_id, id, owner_id)?;
    let now = time::now();
    v.room.tm_update = now;
    v.room.tm_delete = now;
    queries::save_room(conn, &v.room)?;
    let events = vec![chatroom_event(Action::Deleted, &v)];
    Ok((v, events))
}

/// An agent opens a chat: a new chat owned by the agent (added to the participants if
/// missing), `normal` for a pair and `group` for more; for a pair that already has a live
/// normal chat, the agent's chatroom of it (made anew if the agent had deleted theirs).
pub fn create_for_agent(
    conn: &mut DbConnection,
    customer_id: &str,
    agent_id: &str,
    participant_ids: Vec<String>,
    name: String,
    detail: String,
) -> Result<Change<ChatroomView>, ChatError> {
    let mut participants = participant_ids;
    participants.push(agent_id.to_owned());
    let participants = normalise(participants);
    if participants.len() < 2 {
        return Err(ChatError::invalid(
            "participant_ids: name at least one participant besides yourself",
        ));
    }
    let chat_type = if participants.len() == 2 {
        ChatType::Normal
    } else {
        ChatType::Group
    };
    if let Some(pair) = normal_pair(chat_type, &participants)
        && let Some(chat) = queries::find_normal_chat(conn, customer_id, &pair)?
    {
        let rooms = queries::live_rooms_of_chat(conn, &chat.id)?;
        if let Some(room) = rooms.into_iter().find(|r| r.owner_id == agent_id) {
            return Ok((view(room, &chat), Vec::new()));
        }
        let room = new_row(&chat, agent_id, time::now());
        queries::insert_chatrooms(conn, std::slice::from_ref(&room))?;
        let v = view(room, &chat);
        let events = vec![chatroom_event(Action::Created, &v)];
        return Ok((v, events));
    }
    let (chat, events) = chats::create(
        conn,
        NewChat {
            customer_id: customer_id.to_owned(),
            chat_type,
            owner_id: agent_id.to_owned(),
            participant_ids: participants,
            name,
            detail,
        },
    )?;
    let room = queries::live_rooms_of_chat(conn, &chat.id)?
        .into_iter()
        .find(|r| r.owner_id == agent_id)
        .ok_or_else(|| ChatError::Internal("the new chat has no chatroom for its owner".into()))?;
    Ok((view(room, &chat), events))
}
