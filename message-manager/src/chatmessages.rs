//! Chatmessages: the send (a message and one copy per live chatroom of its chat, in one
//! transaction with their events), reading, listing and deleting.

use common::db::DbConnection;
use common::outbox::DomainEvent;
use common::page::Page;
use common::resources::ChatmessageJson;
use common::store::Change;
use common::time;
use proto::message::v1 as pb;

use crate::chatroommessages;
use crate::content;
use crate::db::models::{ChatmessageRow, ChatroommessageRow};
use crate::db::queries;
use crate::error::MessageError;
use crate::membership::Members;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Normal,
    System,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Normal => "normal",
            MessageType::System => "system",
        }
    }

    pub fn proto_from_db(s: &str) -> i32 {
        match s {
            "normal" => pb::MessageType::Normal as i32,
            "system" => pb::MessageType::System as i32,
            _ => pb::MessageType::Unspecified as i32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub customer_id: String,
    pub chat_id: String,
    pub source: pb::Address,
    pub message_type: MessageType,
    pub text: String,
    pub medias: Vec<pb::Media>,
}

pub fn to_proto(r: &ChatmessageRow) -> pb::Chatmessage {
    pb::Chatmessage {
        id: r.id.clone(),
        customer_id: r.customer_id.clone(),
        chat_id: r.chat_id.clone(),
        source: Some(content::address_from_json(&r.source)),
        r#type: MessageType::proto_from_db(&r.message_type),
        text: r.text.clone(),
        medias: content::medias_from_json(&r.medias),
        tm_create: time::format(r.tm_create),
        tm_update: time::format(r.tm_update),
        tm_delete: time::format(r.tm_delete),
    }
}

fn event(kind: &'static str, r: &ChatmessageRow) -> DomainEvent {
    DomainEvent::new(kind, &r.customer_id, ChatmessageJson::from(to_proto(r)))
}

fn copy_event(kind: &'static str, r: &ChatroommessageRow) -> DomainEvent {
    chatroommessages::event(kind, r)
}

/// The rules a message must meet before anything is written.
pub fn check(members: &Members, new: &NewMessage) -> Result<String, MessageError> {
    if !members.is_live() {
        return Err(MessageError::not_found("chat"));
    }
    content::check_address("source", &new.source)?;
    let medias = content::check_body(&new.text, &new.medias)?;
    if new.text.is_empty() && new.medias.is_empty() {
        return Err(MessageError::invalid(
            "text: a message needs text or medias",
        ));
    }
    if new.message_type == MessageType::Normal {
        if new.source.r#type != "agent" {
            return Err(MessageError::invalid(
                "source: a normal message comes from an agent (source.type \"agent\")",
            ));
        }
        if sender_unknown(members, new) {
            return Err(MessageError::invalid(
                "source: the agent is not a participant of this chat",
            ));
        }
    }
    Ok(medias)
}

/// A normal message whose agent the view does not list among the participants (perhaps
/// added a moment ago, before the event arrived).
pub fn sender_unknown(members: &Members, new: &NewMessage) -> bool {
    new.message_type == MessageType::Normal
        && new.source.r#type == "agent"
        && !members.chat.participants().contains(&new.source.target)
}

/// Writes the message and its copies, one per live chatroom the view knows.
pub fn create(
    conn: &mut DbConnection,
    members: &Members,
    new: NewMessage,
) -> Result<Change<(ChatmessageRow, Vec<ChatroommessageRow>)>, MessageError> {
    let ((message, copies), events) = prepare(members, new)?;
    queries::insert_message(conn, &message, &copies)?;
    Ok(((message, copies), events))
}

/// The rows of a message and its copies (one per live chatroom the view knows) and their
/// events, checked but not written.
pub fn prepare(
    members: &Members,
    new: NewMessage,
) -> Result<Change<(ChatmessageRow, Vec<ChatroommessageRow>)>, MessageError> {
    let medias = check(members, &new)?;
    let now = time::now();
    let message = ChatmessageRow {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: new.customer_id,
        chat_id: new.chat_id,
        source: content::address_json(&new.source),
        message_type: new.message_type.as_str().to_owned(),
        text: new.text,
        medias,
        tm_create: now,
        tm_update: now,
        tm_delete: time::live(),
    };
    let copies: Vec<ChatroommessageRow> = members
        .rooms
        .iter()
        .map(|room| ChatroommessageRow {
            id: uuid::Uuid::new_v4().to_string(),
            customer_id: message.customer_id.clone(),
            chatroom_id: room.id.clone(),
            owner_id: room.owner_id.clone(),
            messagechat_id: message.id.clone(),
            source: message.source.clone(),
            message_type: message.message_type.clone(),
            text: message.text.clone(),
            medias: message.medias.clone(),
            tm_create: now,
            tm_update: now,
            tm_delete: time::live(),
        })
        .collect();
    let mut events = vec![event("messagechat_created", &message)];
    events.extend(
        copies
            .iter()
            .map(|c| copy_event("messagechatroom_created", c)),
    );
    Ok(((message, copies), events))
}

pub fn get(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> Result<ChatmessageRow, MessageError> {
    queries::find_message(conn, customer_id, id)?
        .ok_or_else(|| MessageError::not_found("chatmessage"))
}

/// The chat's live messages, newest first; a deleted chat lists none.
pub fn list(
    conn: &mut DbConnection,
    members: &Members,
    page: &Page,
) -> Result<(Vec<ChatmessageRow>, String), MessageError> {
    if !members.is_live() {
        return Ok((Vec::new(), String::new()));
    }
    let rows = queries::list_messages(conn, &members.chat.id, page)?;
    Ok(page.finish(rows, |r| (r.tm_create, r.id.clone())))
}

/// Deletes the message and its live copies.
pub fn delete(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> Result<Change<ChatmessageRow>, MessageError> {
    let mut message = get(conn, customer_id, id)?;
    if message.tm_delete != time::live() {
        return Err(MessageError::not_found("chatmessage"));
    }
    let now = time::now();
    message.tm_update = now;
    message.tm_delete = now;
    queries::delete_message(conn, &message.id, now)?;
    let copies = queries::live_copies_of(conn, &message.id)?;
    let ids: Vec<String> = copies.iter().map(|c| c.id.clone()).collect();
    queries::delete_copies(conn, &ids, now)?;
    let mut events = vec![event("messagechat_deleted", &message)];
    events.extend(copies.into_iter().map(|mut c| {
        c.tm_update = now;
        c.tm_delete = now;
        copy_event("messagechatroom_deleted", &c)
    }));
    Ok((message, events))
}
