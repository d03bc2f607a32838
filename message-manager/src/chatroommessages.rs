//! Chatroommessages: each chatroom's copy of a chatmessage. Created by the send (see
//! `chatmessages`); read, listed and deleted on their own here.

use common::db::DbConnection;
use common::outbox::DomainEvent;
use common::page::Page;
use common::resources::ChatroommessageJson;
use common::store::Change;
use common::time;
use proto::message::v1 as pb;

use crate::chatmessages::MessageType;
use crate::content;
use crate::db::models::{ChatroommessageRow, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;

pub fn to_proto(r: &ChatroommessageRow) -> pb::Chatroommessage {
    pb::Chatroommessage {
        id: r.id.clone(),
        customer_id: r.customer_id.clone(),
        chatroom_id: r.chatroom_id.clone(),
        messagechat_id: r.messagechat_id.clone(),
        source: Some(content::address_from_json(&r.source)),
        r#type: MessageType::proto_from_db(&r.message_type),
        text: r.text.clone(),
        medias: content::medias_from_json(&r.medias),
        tm_create: time::format(r.tm_create),
        tm_update: time::format(r.tm_update),
        tm_delete: time::format(r.tm_delete),
    }
}

/// An event about a copy, routed to its chatroom's owner.
pub fn event(kind: &'static str, r: &ChatroommessageRow) -> DomainEvent {
    DomainEvent::new(kind, &r.customer_id, ChatroommessageJson::from(to_proto(r)))
        .owned_by(&r.owner_id)
}

pub fn get(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<ChatroommessageRow, MessageError> {
    queries::find_copy(conn, customer_id, id, owner_id)?
        .ok_or_else(|| MessageError::not_found("chatroommessage"))
}

/// The room's live copies, newest first; a deleted room, or a room of a deleted chat (whose
/// own deletion event may still be on its way), lists none.
pub fn list(
    conn: &mut DbConnection,
    room: &MemberChatroom,
    page: &Page,
) -> Result<(Vec<ChatroommessageRow>, String), MessageError> {
    let chat_deleted = queries::member_chat(conn, &room.chat_id)?
        .is_some_and(|chat| chat.tm_delete != time::live());
    if room.tm_delete != time::live() || chat_deleted {
        return Ok((Vec::new(), String::new()));
    }
    let rows = queries::list_copies(conn, &room.id, page)?;
    Ok(page.finish(rows, |r| (r.tm_create, r.id.clone())))
}

pub fn delete(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<Change<ChatroommessageRow>, MessageError> {
    let mut copy = get(conn, customer_id, id, owner_id)?;
    if copy.tm_delete != time::live() {
        return Err(MessageError::not_found("chatroommessage"));
    }
    let now = time::now();
    copy.tm_update = now;
    copy.tm_delete = now;
    queries::delete_copies(conn, std::slice::from_ref(&copy.id), now)?;
    let event = event("messagechatroom_deleted", &copy);
    Ok((copy, vec![event]))
}
