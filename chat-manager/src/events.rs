//! chat-manager's events, and their records in the outbox. Each change is one event: a chat's
//! creation, deletion or participant change is its `chat_*` event naming every chatroom it
//! created, updated or deleted (`contract::ChatroomItem`: an id and an owner, and what differs
//! from the chat); a change to one chatroom is that chatroom's event. Events are rendered when
//! their change commits and stored as they will be published.

use std::collections::HashMap;

use common::resources::ChatroomJson;
use pipeline::contract::{
    Action, ChatEventData, ChatroomChanges, ChatroomItem, EventData, EventType, Resource,
};
use pipeline::outbox::legacy;
use pipeline::{Event, OutboxRecord};
use serde::{Deserialize, Serialize};

use crate::db::models::{ChatRow, ChatroomRow, ChatroomView};

/// A record of chat-manager's outbox: one event. Versioned (`OutboxRecord::VERSION`): a new
/// kind of record is a new variant and a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRecord {
    Event(Event),
}

impl OutboxRecord for ChatRecord {
    const VERSION: u32 = 1;

    fn rendered(event: Event) -> Self {
        ChatRecord::Event(event)
    }

    fn weight(&self) -> usize {
        let ChatRecord::Event(e) = self;
        e.weight()
    }

    fn render(
        _conn: &mut common::db::DbConnection,
        records: &[Self],
    ) -> Result<Vec<Option<Event>>, common::db::DbError> {
        Ok(records
            .iter()
            .map(|ChatRecord::Event(e)| Some(e.clone()))
            .collect())
    }

    fn from_legacy(lines: Vec<legacy::Line<'_>>) -> Option<Vec<Self>> {
        legacy_records(lines)
    }
}

/// The chat's JSON, as its events and answers carry it.
fn chat_json(chat: &ChatRow) -> common::resources::ChatJson {
    common::resources::ChatJson::from(crate::chats::to_proto(chat))
}

/// The item of `room` in its chat's event: what differs from the chat.
fn item(room: &ChatroomRow, chat: &ChatRow) -> ChatroomItem {
    let differs = |room: &String, chat: &String| (room != chat).then(|| room.clone());
    ChatroomItem {
        id: room.id.clone(),
        owner_id: room.owner_id.clone(),
        tm_create: (room.tm_create != chat.tm_create).then(|| common::time::format(room.tm_create)),
        name: differs(&room.name, &chat.name),
        detail: differs(&room.detail, &chat.detail),
    }
}

/// Chatrooms a chat's change touched, by what happened to them.
#[derive(Debug, Default)]
pub struct RoomChanges<'a> {
    pub created: &'a [ChatroomRow],
    pub updated: &'a [ChatroomRow],
    pub deleted: &'a [ChatroomRow],
}

/// The event of a change to `chat` (as it is after it), naming the chatrooms it touched.
pub fn chat_event(action: Action, chat: &ChatRow, rooms: RoomChanges<'_>) -> ChatRecord {
    let items = |rooms: &[ChatroomRow]| rooms.iter().map(|r| item(r, chat)).collect();
    let data = EventData::Chat(ChatEventData {
        chat: chat_json(chat),
        chatrooms: ChatroomChanges {
            created: items(rooms.created),
            updated: items(rooms.updated),
            deleted: items(rooms.deleted),
        },
    });
    ChatRecord::Event(Event::new(EventType::new(Resource::Chat, action), &data))
}

/// The event of a change to one chatroom, routed to its owner.
pub fn chatroom_event(action: Action, view: &ChatroomView) -> ChatRecord {
    let data = EventData::Chatroom(ChatroomJson::from(crate::chatrooms::to_proto(view)));
    let event = Event::new(EventType::new(Resource::Chatroom, action), &data);
    ChatRecord::Event(event.owned_by(&view.room.owner_id))
}

/// Records of a row from before typed records. Its lines were a chat's event, then its
/// chatrooms' (rendered one by one, or as one compact record per kind of change): they are
/// folded into that chat event, which is published as today's one event per change, under its
/// old id. Chatroom lines of no chat event in the row stay single-chatroom events.
fn legacy_records(lines: Vec<legacy::Line<'_>>) -> Option<Vec<ChatRecord>> {
    let mut events: Vec<Event> = Vec::new();
    // The rooms of each chat, by chat id: (action, room JSON, event id).
    let mut rooms: Vec<(String, Action, ChatroomJson, uuid::Uuid)> = Vec::new();
    for line in lines {
        match line {
            legacy::Line::Rendered(event) if event.event_type.resource == Resource::Chatroom => {
                let room: ChatroomJson = serde_json::from_str(event.data.get()).ok()?;
                rooms.push((
                    room.chat_id.clone(),
                    event.event_type.action,
                    room,
                    event.id,
                ));
            }
            legacy::Line::Rendered(event) => events.push(event),
            legacy::Line::Compact {
                kind: "chatrooms",
                body,
            } => {
                let record: LegacyChatroomEvents = serde_json::from_str(body).ok()?;
                let action = EventType::parse(&record.event_type)?.action;
                for (n, room) in record.rooms().into_iter().enumerate() {
                    let id = legacy::event_id(record.event_id_base, n);
                    rooms.push((room.chat_id.clone(), action, room, id));
                }
            }
            legacy::Line::Compact { .. } => return None,
        }
    }
    let mut chats: HashMap<String, usize> = HashMap::new();
    let mut folded: Vec<(Event, ChatEventData)> = Vec::new();
    let mut records = Vec::new();
    for event in events {
        if event.event_type.resource != Resource::Chat {
            records.push(ChatRecord::Event(event));
            continue;
        }
        let data: ChatEventData = serde_json::from_str(event.data.get()).ok()?;
        chats.insert(data.chat.id.clone(), folded.len());
        folded.push((event, data));
    }
    let mut singles = Vec::new();
    for (chat_id, action, room, id) in rooms {
        match chats.get(&chat_id) {
            Some(&n) => {
                let (_, data) = &mut folded[n];
                let item = ChatroomItem::of(&room, &data.chat);
                match action {
                    Action::Created => data.chatrooms.created.push(item),
                    Action::Updated => data.chatrooms.updated.push(item),
                    Action::Deleted => data.chatrooms.deleted.push(item),
                    // Legacy rows predate read state.
                    Action::ReadUpdated => return None,
                }
            }
            None => {
                let owner = room.owner_id.clone();
                let event_type = EventType::new(Resource::Chatroom, action);
                let mut event = Event::new(event_type, &EventData::Chatroom(room));
                event.id = id;
                singles.push(ChatRecord::Event(event.owned_by(&owner)));
            }
        }
    }
    for (mut event, data) in folded {
        event.data = EventData::Chat(data).to_json();
        records.push(ChatRecord::Event(event));
    }
    records.extend(singles);
    Some(records)
}

/// The compact record of chatroom events that releases before typed records wrote
/// (`@chatrooms\t<this as JSON>`): rooms of one chat, one type of event, the chat's
/// participant list once.
#[derive(Debug, Deserialize)]
struct LegacyChatroomEvents {
    event_type: String,
    event_id_base: uuid::Uuid,
    customer_id: String,
    chat_id: String,
    chat_type: String,
    participant_ids: Vec<String>,
    name: String,
    detail: String,
    rooms: Vec<LegacyRoomState>,
}

#[derive(Debug, Deserialize)]
struct LegacyRoomState {
    id: String,
    owner_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    tm_create: chrono::NaiveDateTime,
    tm_update: chrono::NaiveDateTime,
    tm_delete: chrono::NaiveDateTime,
}

impl LegacyChatroomEvents {
    fn rooms(&self) -> Vec<ChatroomJson> {
        self.rooms
            .iter()
            .map(|r| ChatroomJson {
                id: r.id.clone(),
                customer_id: self.customer_id.clone(),
                chat_type: self.chat_type.clone(),
                chat_id: self.chat_id.clone(),
                owner_id: r.owner_id.clone(),
                participant_ids: self.participant_ids.clone(),
                name: r.name.clone().unwrap_or_else(|| self.name.clone()),
                detail: r.detail.clone().unwrap_or_else(|| self.detail.clone()),
                tm_create: common::time::format(r.tm_create),
                tm_update: common::time::format(r.tm_update),
                tm_delete: common::time::format(r.tm_delete),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::contract::ParsedEvent;

    fn chat(t: chrono::NaiveDateTime) -> ChatRow {
        ChatRow {
            id: "chat".into(),
            customer_id: "c".into(),
            chat_type: "group".into(),
            owner_id: "a".into(),
            participant_ids: crate::db::models::encode_ids(&["a".into(), "b".into(), "c".into()]),
            name: "team".into(),
            detail: "d".into(),
            normal_pair: None,
            tm_create: t,
            tm_update: t,
            tm_delete: common::time::live(),
        }
    }

    fn room(id: &str, owner: &str, name: &str, chat: &ChatRow) -> ChatroomRow {
        ChatroomRow {
            id: id.into(),
            customer_id: "c".into(),
            chat_id: chat.id.clone(),
            owner_id: owner.into(),
            name: name.into(),
            detail: "d".into(),
            tm_create: chat.tm_create,
            tm_update: chat.tm_update,
            tm_delete: common::time::live(),
        }
    }

    fn parsed(record: &ChatRecord) -> ParsedEvent {
        let ChatRecord::Event(e) = record;
        let body = e.to_cloudevent(crate::EVENT_SOURCE, common::time::now());
        pipeline::cloudevent::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn a_chat_event_names_its_rooms_and_gives_each_back_as_its_own_event_had() {
        let mut chat = chat(common::time::now());
        let rooms = vec![
            room("r1", "a", "team", &chat),
            room("r2", "b", "renamed by b", &chat),
        ];
        chat.tm_update = chat.tm_create + chrono::Duration::seconds(5);
        let mut kept = rooms.clone();
        for r in &mut kept {
            r.tm_update = chat.tm_update;
        }
        let mut added = room("r3", "c", "team", &chat);
        added.tm_create = chat.tm_update;
        let record = chat_event(
            Action::Updated,
            &chat,
            RoomChanges {
                created: std::slice::from_ref(&added),
                updated: &kept,
                deleted: &[],
            },
        );
        let event = parsed(&record);
        let items: Vec<_> = event.items().collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[1].event_type, EventType::CHATROOM_CREATED);
        assert_eq!(items[2].event_type, EventType::CHATROOM_UPDATED);
        let views = crate::chatrooms::views(vec![added, kept[0].clone(), kept[1].clone()], &chat);
        for (n, view) in views.iter().enumerate() {
            let expected =
                serde_json::to_string(&ChatroomJson::from(crate::chatrooms::to_proto(view)))
                    .unwrap();
            assert_eq!(event.item_json(n + 1).unwrap(), expected, "room {n}");
        }
    }

    #[test]
    fn a_legacy_row_becomes_one_event_per_change_under_its_old_id() {
        let chat = chat(common::time::now());
        let chat_event_id = uuid::Uuid::new_v4();
        let chat_line = format!(
            "chat_created\t{chat_event_id}\t{}",
            serde_json::json!({
                "specversion": "1.0", "id": chat_event_id, "source": "chat-manager",
                "type": "chat_created", "time": "2026-12-01T00:00:00.000000Z",
                "datacontenttype": "application/json", "customerid": "c",
                "data": chat_json(&chat),
            })
        );
        let base = uuid::Uuid::new_v4();
        let rooms: Vec<serde_json::Value> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(n, owner)| {
                serde_json::json!({
                    "id": format!("r{n}"), "owner_id": owner, "tm_create": chat.tm_create,
                    "tm_update": chat.tm_update, "tm_delete": chat.tm_delete,
                })
            })
            .collect();
        let record = serde_json::json!({
            "event_type": "chatroom_created", "event_id_base": base, "customer_id": "c",
            "chat_id": "chat", "chat_type": "group", "participant_ids": ["a", "b", "c"],
            "name": "team", "detail": "d", "rooms": rooms,
        });
        let text = format!("{chat_line}\n@chatrooms\t{record}");
        let records = legacy_records(legacy::lines(&text).unwrap()).unwrap();
        assert_eq!(records.len(), 1, "one event for the change");
        let event = parsed(&records[0]);
        assert_eq!(event.id, chat_event_id.to_string());
        assert_eq!(event.event_type, EventType::CHAT_CREATED);
        let items: Vec<_> = event.items().collect();
        assert_eq!(items.len(), 4);
        assert!(
            items[1..]
                .iter()
                .all(|i| i.event_type == EventType::CHATROOM_CREATED)
        );
        assert_eq!(items[3].owner_id, Some("c"));
        // A lone chatroom record (no chat event in its row) stays per room, ids as before.
        let lone = format!("@chatrooms\t{record}");
        let records = legacy_records(legacy::lines(&lone).unwrap()).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            parsed(&records[2]).id,
            legacy::event_id(base, 2).to_string()
        );
        assert!(legacy_records(legacy::lines("@unknown\tx").unwrap()).is_none());
    }
}
