//! chat-manager's events in the outbox. A change to many chatrooms of one chat at once (a chat
//! created or deleted, a participant added or removed) writes their events as one compact
//! record, `ChatroomEvents`, holding the chat's participant list once rather than once per
//! room; the relay renders the events from it as it publishes them (`ChatroomEventExpander`),
//! a round's worth at a time. A 1,000-person chat's creation is then a record of about
//! 200 kB instead of 40 MB of rendered events, and neither the change nor the relay holds
//! the 40 MB at once.

use std::sync::Arc;

use chrono::NaiveDateTime;
use common::db::{DbConnection, DbError};
use common::outbox::{self, DomainEvent, Expander, RecordEvents, RenderedEvent, StoredRecord};
use common::resources::ChatroomJson;
use serde::{Deserialize, Serialize};

use crate::chatrooms;
use crate::db::models::{ChatroomRow, ChatroomView};

/// The compact record's kind in the outbox.
const KIND: &str = "chatrooms";

/// The events of chatrooms of one chat that changed in one transaction, all of one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatroomEvents {
    /// `chatroom_created`, `chatroom_updated` or `chatroom_deleted`.
    pub event_type: String,
    /// Event `n` (the `n`th room's) has the id `outbox::event_id(event_id_base, n)`: the
    /// same when the record is published again.
    pub event_id_base: uuid::Uuid,
    pub customer_id: String,
    pub chat_id: String,
    pub chat_type: String,
    /// The chat's participants as the rooms showed them at the change.
    pub participant_ids: Vec<String>,
    /// The name and detail of the first room; a room whose own differ carries them.
    pub name: String,
    pub detail: String,
    pub rooms: Vec<RoomState>,
}

/// What differs between the rooms of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomState {
    pub id: String,
    pub owner_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub tm_create: NaiveDateTime,
    pub tm_update: NaiveDateTime,
    pub tm_delete: NaiveDateTime,
}

impl ChatroomEvents {
    /// The record of `event_type` for `views` (rooms of one chat), or `None` for no rooms.
    pub fn new(event_type: &'static str, views: &[ChatroomView]) -> Option<Self> {
        let first = views.first()?;
        let (name, detail) = (&first.room.name, &first.room.detail);
        Some(ChatroomEvents {
            event_type: event_type.to_owned(),
            event_id_base: uuid::Uuid::new_v4(),
            customer_id: first.room.customer_id.clone(),
            chat_id: first.room.chat_id.clone(),
            chat_type: first.chat_type.clone(),
            participant_ids: first.participant_ids.to_vec(),
            name: name.clone(),
            detail: detail.clone(),
            rooms: views
                .iter()
                .map(|v| RoomState {
                    id: v.room.id.clone(),
                    owner_id: v.room.owner_id.clone(),
                    name: (v.room.name != *name).then(|| v.room.name.clone()),
                    detail: (v.room.detail != *detail).then(|| v.room.detail.clone()),
                    tm_create: v.room.tm_create,
                    tm_update: v.room.tm_update,
                    tm_delete: v.room.tm_delete,
                })
                .collect(),
        })
    }

    pub fn into_event(self) -> DomainEvent {
        // Compact JSON holds no raw newline, as a record's body must not.
        let body = serde_json::to_string(&self).expect("a record serializes");
        DomainEvent::compact(KIND, body, self.rooms.len())
    }

    /// The rooms as they were at the change, sharing one participant list.
    fn views(self) -> (String, uuid::Uuid, Vec<ChatroomView>) {
        let participant_ids: Arc<[String]> = self.participant_ids.into();
        let views = self
            .rooms
            .into_iter()
            .map(|r| ChatroomView {
                room: ChatroomRow {
                    id: r.id,
                    customer_id: self.customer_id.clone(),
                    chat_id: self.chat_id.clone(),
                    owner_id: r.owner_id,
                    name: r.name.unwrap_or_else(|| self.name.clone()),
                    detail: r.detail.unwrap_or_else(|| self.detail.clone()),
                    tm_create: r.tm_create,
                    tm_update: r.tm_update,
                    tm_delete: r.tm_delete,
                },
                chat_type: self.chat_type.clone(),
                participant_ids: participant_ids.clone(),
            })
            .collect();
        (self.event_type, self.event_id_base, views)
    }
}

/// The events of `views`: one compact record, or (while the relay publishing is of a release
/// that does not read these records, during a rolling upgrade) one rendered event per room.
pub fn chatroom_events(
    conn: &mut DbConnection,
    event_type: &'static str,
    views: &[ChatroomView],
) -> diesel::QueryResult<Vec<DomainEvent>> {
    if views.is_empty() {
        return Ok(Vec::new());
    }
    if !outbox::leader_reads_compact(conn)? {
        return Ok(views
            .iter()
            .map(|view| chatrooms::event(event_type, view))
            .collect());
    }
    Ok(ChatroomEvents::new(event_type, views)
        .map(ChatroomEvents::into_event)
        .into_iter()
        .collect())
}

/// Renders `ChatroomEvents` records as the relay publishes them: each room's event when the
/// relay takes it, each routed to the room's owner.
pub struct ChatroomEventExpander;

impl Expander for ChatroomEventExpander {
    fn kinds(&self) -> &'static [&'static str] {
        &[KIND]
    }

    fn expand(
        &self,
        _conn: &mut DbConnection,
        records: &[StoredRecord<'_>],
    ) -> Result<Vec<Option<RecordEvents>>, DbError> {
        Ok(records
            .iter()
            .map(|stored| {
                if stored.kind != KIND {
                    return None;
                }
                let record: ChatroomEvents = serde_json::from_str(stored.body).ok()?;
                let (event_type, base, views) = record.views();
                let time = stored.created_at;
                let events = views.into_iter().enumerate().map(move |(n, view)| {
                    let id = outbox::event_id(base, n).to_string();
                    let payload = outbox::cloud_event_json(
                        crate::EVENT_SOURCE,
                        &id,
                        &event_type,
                        time,
                        &view.room.customer_id,
                        Some(&view.room.owner_id),
                        &ChatroomJson::from(chatrooms::to_proto(&view)),
                    );
                    RenderedEvent {
                        routing_key: event_type.clone(),
                        id,
                        payload,
                    }
                });
                Some(Box::new(events) as RecordEvents)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, owner: &str, name: &str, participants: &Arc<[String]>) -> ChatroomView {
        let t = common::time::now();
        ChatroomView {
            room: ChatroomRow {
                id: id.into(),
                customer_id: "c".into(),
                chat_id: "chat".into(),
                owner_id: owner.into(),
                name: name.into(),
                detail: "d".into(),
                tm_create: t,
                tm_update: t,
                tm_delete: common::time::live(),
            },
            chat_type: "group".into(),
            participant_ids: participants.clone(),
        }
    }

    #[test]
    fn a_record_gives_back_each_room_as_it_was() {
        let participants: Arc<[String]> = vec!["a".into(), "b".into(), "c".into()].into();
        let views = vec![
            view("r1", "a", "team", &participants),
            view("r2", "b", "renamed by b", &participants),
            view("r3", "c", "team", &participants),
        ];
        let record = ChatroomEvents::new("chatroom_deleted", &views).unwrap();
        assert_eq!(record.rooms[0].name, None);
        assert_eq!(record.rooms[1].name.as_deref(), Some("renamed by b"));
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains('\n'));
        let parsed: ChatroomEvents = serde_json::from_str(&text).unwrap();
        let (kind, _, back) = parsed.views();
        assert_eq!(kind, "chatroom_deleted");
        assert_eq!(back, views);
    }

    #[test]
    fn no_rooms_no_record() {
        assert!(ChatroomEvents::new("chatroom_created", &[]).is_none());
    }
}
