//! Chatmessages: the send (a message, whose copies every live chatroom of its chat then holds,
//! committed with the outbox record of its one event), reading, listing and deleting.

use common::db::DbConnection;
use common::page::Page;
use common::time;
use pipeline::contract::Action;
use proto::message::v1 as pb;

use crate::chatroommessages::message_no;
use crate::content;
use crate::db::models::{ChatmessageRow, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;
use crate::events::MessageRecord;
use crate::membership::Members;

/// A change and the records of the events it implies.
pub type Change<T> = pipeline::Change<T, MessageRecord>;

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

/// The row of a message and the record of its event (naming its copy in every live chatroom
/// the view knows), checked but not written.
pub fn prepare(members: &Members, new: NewMessage) -> Result<Change<ChatmessageRow>, MessageError> {
    let medias = check(members, &new)?;
    let now = time::now();
    let id = uuid::Uuid::new_v4();
    let message = ChatmessageRow {
        no: message_no(&id),
        id: id.to_string(),
        customer_id: new.customer_id,
        chat_id: new.chat_id,
        source: content::address_json(&new.source),
        message_type: new.message_type.as_str().to_owned(),
        text: new.text,
        medias,
        tm_create: now,
        tm_update: now,
        tm_delete: time::live(),
        chat_seq: 0,
        sender_id: (new.source.r#type == "agent").then(|| new.source.target.clone()),
    };
    // The rooms holding a copy: live now, and created by now (chat-manager's clock may run a
    // little ahead; the lists go by the same rule).
    let rooms: Vec<MemberChatroom> = members
        .rooms
        .iter()
        .filter(|r| r.holds_copy_of(now))
        .cloned()
        .collect();
    let records = vec![MessageRecord::fanout(Action::Created, &message, &rooms)];
    Ok((message, records))
}

pub fn get(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> Result<ChatmessageRow, MessageError> {
    let missing = || MessageError::not_found("chatmessage");
    let id = uuid::Uuid::parse_str(id).map_err(|_| missing())?;
    queries::find_message(conn, customer_id, &id)?.ok_or_else(missing)
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
    let rows = queries::list_messages(conn, &members.chat.customer_id, &members.chat.id, page)?;
    Ok(page.finish(rows, |r| (r.tm_create, r.id.clone())))
}

/// New content for a message: fields left out stay.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub text: Option<String>,
    pub medias: Option<Vec<pb::Media>>,
}

/// Changes a live message's content, checked as on creation; its live copies (derived from
/// it) change with it, and one event names them all.
pub fn update(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    edit: Edit,
) -> Result<Change<ChatmessageRow>, MessageError> {
    let message = get(conn, customer_id, id)?;
    edit_message(conn, message, edit)
}

/// Applies `edit` to `message` (which must be live).
pub fn edit_message(
    conn: &mut DbConnection,
    mut message: ChatmessageRow,
    edit: Edit,
) -> Result<Change<ChatmessageRow>, MessageError> {
    if message.tm_delete != time::live() {
        return Err(MessageError::not_found("chatmessage"));
    }
    let text = edit.text.unwrap_or_else(|| message.text.clone());
    let medias = match edit.medias {
        Some(medias) => medias,
        None => content::medias_from_json(&message.medias),
    };
    let stored_medias = content::check_body(&text, &medias)?;
    if text.is_empty() && medias.is_empty() {
        return Err(MessageError::invalid(
            "text: a message needs text or medias",
        ));
    }
    message.text = text;
    message.medias = stored_medias;
    message.tm_update = time::now();
    queries::save_message_content(conn, &message)?;
    let rooms = queries::rooms_with_live_copy(conn, &message)?;
    let records = vec![MessageRecord::fanout(Action::Updated, &message, &rooms)];
    Ok((message, records))
}

/// Deletes the message, and with it its live copies (one event names them all).
pub fn delete(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> Result<Change<ChatmessageRow>, MessageError> {
    let mut message = get(conn, customer_id, id)?;
    if message.tm_delete != time::live() {
        return Err(MessageError::not_found("chatmessage"));
    }
    let rooms = queries::rooms_with_live_copy(conn, &message)?;
    let now = time::now();
    message.tm_update = now;
    message.tm_delete = now;
    queries::delete_message(conn, message.no, now)?;
    let records = vec![MessageRecord::fanout(Action::Deleted, &message, &rooms)];
    Ok((message, records))
}
