//! Chatmessages: the send (a message, whose copies every live chatroom of its chat then holds,
//! committed with one compact outbox record standing for all its events), reading, listing
//! and deleting.

use common::db::DbConnection;
use common::outbox::DomainEvent;
use common::page::Page;
use common::store::Change;
use common::time;
use proto::message::v1 as pb;

use crate::chatroommessages::message_no;
use crate::content;
use crate::db::models::{ChatmessageRow, MemberChatroom};
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

/// The events of a message and of its copies in `rooms`, as one compact outbox record
/// (`<message id>\t<event id base>\t<room numbers>`): the relay renders them
/// (`events::MessageEventExpander`), so a send to a 1,000-person chat writes one short line.
/// Event ids are `outbox::event_id` of the base and the event's position (stable when the
/// record is published again).
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutRecord {
    /// `messagechat_created` (a send) or `messagechat_deleted`.
    pub kind: &'static str,
    pub message_id: String,
    pub event_id_base: uuid::Uuid,
    pub room_nos: Vec<i64>,
}

impl FanoutRecord {
    pub fn new(kind: &'static str, message: &ChatmessageRow, rooms: &[MemberChatroom]) -> Self {
        FanoutRecord {
            kind,
            message_id: message.id.clone(),
            event_id_base: uuid::Uuid::new_v4(),
            room_nos: rooms.iter().map(|r| r.no).collect(),
        }
    }

    pub fn into_event(self) -> DomainEvent {
        use std::fmt::Write;
        let mut body = String::with_capacity(80 + self.room_nos.len() * 8);
        let _ = write!(body, "{}\t{}\t", self.message_id, self.event_id_base);
        for (i, no) in self.room_nos.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let _ = write!(body, "{no}");
        }
        DomainEvent::compact(self.kind, body, 1 + self.room_nos.len())
    }

    pub fn parse(kind: &'static str, body: &str) -> Option<Self> {
        let mut parts = body.splitn(3, '\t');
        let message_id = parts.next()?.to_owned();
        let event_id_base = uuid::Uuid::parse_str(parts.next()?).ok()?;
        let rooms = parts.next()?;
        let room_nos = if rooms.is_empty() {
            Vec::new()
        } else {
            rooms
                .split(',')
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<i64>>>()?
        };
        Some(FanoutRecord {
            kind,
            message_id,
            event_id_base,
            room_nos,
        })
    }

    /// The id of the record's `n`th event (0: the message's own).
    pub fn event_id(&self, n: usize) -> uuid::Uuid {
        common::outbox::event_id(self.event_id_base, n)
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

/// The row of a message and its events (its own and one per live chatroom the view knows,
/// as one compact record), checked but not written.
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
    };
    // The rooms holding a copy: live now, and created by now (chat-manager's clock may run a
    // little ahead; the lists go by the same rule).
    let rooms: Vec<MemberChatroom> = members
        .rooms
        .iter()
        .filter(|r| r.holds_copy_of(now))
        .cloned()
        .collect();
    let events = vec![FanoutRecord::new("messagechat_created", &message, &rooms).into_event()];
    Ok((message, events))
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

/// Deletes the message, and with it its live copies (their events in one compact record).
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
    let events = vec![FanoutRecord::new("messagechat_deleted", &message, &rooms).into_event()];
    Ok((message, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_records_round_trip_with_distinct_stable_event_ids() {
        for rooms in [vec![], vec![7], vec![1, 2, 3, 1_152_921_504_606_846_975]] {
            let record = FanoutRecord {
                kind: "messagechat_created",
                message_id: uuid::Uuid::new_v4().to_string(),
                event_id_base: uuid::Uuid::new_v4(),
                room_nos: rooms.clone(),
            };
            let DomainEvent::Compact(compact) = record.clone().into_event() else {
                panic!("a compact record");
            };
            assert_eq!(compact.event_count as usize, 1 + rooms.len());
            assert!(!compact.body.contains('\n'));
            let parsed = FanoutRecord::parse("messagechat_created", &compact.body).unwrap();
            assert_eq!(parsed, record);
            let ids: std::collections::HashSet<_> =
                (0..=rooms.len()).map(|n| parsed.event_id(n)).collect();
            assert_eq!(ids.len(), 1 + rooms.len());
            assert!(ids.iter().all(|id| id.get_version_num() == 4));
        }
        assert_eq!(FanoutRecord::parse("messagechat_created", "junk"), None);
        assert_eq!(
            FanoutRecord::parse("messagechat_created", "m\tnot-a-uuid\t1"),
            None
        );
    }
}
