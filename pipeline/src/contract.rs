//! The events as their subscribers see them: the thirteen event types, their routing keys and
//! the `data` each carries. `proto/asyncapi.yaml` documents the same for people and tools, and
//! a test checks rendered events against it.
//!
//! One event per change: a change that touches many chatrooms or copies at once is one event
//! naming each of them in a few bytes (`ChatroomItem`, `CopyItem`), from which every item's
//! full resource follows (`ParsedEvent::items`): the size of a send grows by about a hundred
//! bytes per copy, not by a whole chatroommessage. Subscribers that want VoIPbin's
//! per-resource frames (the WebSocket, webhooks) expand the event as they deliver it.

use common::resources::{
    ChatJson, ChatmessageJson, ChatroomJson, ChatroommessageJson, ReadStateJson,
};
use serde::{Deserialize, Serialize};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Chat,
    Chatroom,
    Messagechat,
    Messagechatroom,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Chat => "chat",
            Resource::Chatroom => "chatroom",
            Resource::Messagechat => "messagechat",
            Resource::Messagechatroom => "messagechatroom",
        }
    }

    pub fn parse(s: &str) -> Option<Resource> {
        [
            Resource::Chat,
            Resource::Chatroom,
            Resource::Messagechat,
            Resource::Messagechatroom,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// What happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Deleted,
    /// A chatroom's read state moved (`chatroom_read_updated`).
    ReadUpdated,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::ReadUpdated => "read_updated",
        }
    }
}

/// An event type of the contract: `<resource>_<action>`, e.g. `messagechat_created`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    pub resource: Resource,
    pub action: Action,
}

macro_rules! event_types {
    ($($name:ident = $resource:ident $action:ident $text:literal;)*) => {
        impl EventType {
            $(pub const $name: EventType = EventType {
                resource: Resource::$resource,
                action: Action::$action,
            };)*

            /// Every event type, in the contract's order.
            pub const ALL: [EventType; 13] = [$(EventType::$name),*];

            pub fn as_str(self) -> &'static str {
                match (self.resource, self.action) {
                    $((Resource::$resource, Action::$action) => $text,)*
                    // Only chatrooms have a read state: no code makes these.
                    (_, Action::ReadUpdated) => "unknown",
                }
            }
        }
    };
}

event_types! {
    CHAT_CREATED = Chat Created "chat_created";
    CHAT_UPDATED = Chat Updated "chat_updated";
    CHAT_DELETED = Chat Deleted "chat_deleted";
    CHATROOM_CREATED = Chatroom Created "chatroom_created";
    CHATROOM_UPDATED = Chatroom Updated "chatroom_updated";
    CHATROOM_DELETED = Chatroom Deleted "chatroom_deleted";
    MESSAGECHAT_CREATED = Messagechat Created "messagechat_created";
    MESSAGECHAT_UPDATED = Messagechat Updated "messagechat_updated";
    MESSAGECHAT_DELETED = Messagechat Deleted "messagechat_deleted";
    MESSAGECHATROOM_CREATED = Messagechatroom Created "messagechatroom_created";
    MESSAGECHATROOM_UPDATED = Messagechatroom Updated "messagechatroom_updated";
    MESSAGECHATROOM_DELETED = Messagechatroom Deleted "messagechatroom_deleted";
    CHATROOM_READ_UPDATED = Chatroom ReadUpdated "chatroom_read_updated";
}

impl EventType {
    pub fn new(resource: Resource, action: Action) -> Self {
        EventType { resource, action }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The routing key of this type's events of `customer_id`: `<event type>.<customer id>`,
    /// so a subscriber binds `#` (everything), `<type>.*` (one type) or `*.<customer id>`
    /// (one tenant).
    pub fn routing_key(self, customer_id: &str) -> String {
        format!("{}.{customer_id}", self.as_str())
    }

    /// The binding pattern of every event of this type.
    pub fn any_tenant(self) -> String {
        format!("{}.*", self.as_str())
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        EventType::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {text:?}")))
    }
}

/// The binding pattern of every event of one tenant.
pub fn tenant_pattern(customer_id: &str) -> String {
    format!("*.{customer_id}")
}

/// The `data` of `chat_created`, `chat_updated` and `chat_deleted`: the chat as it is after
/// the change, and the chatrooms the same change created, updated or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEventData {
    #[serde(flatten)]
    pub chat: ChatJson,
    #[serde(default, skip_serializing_if = "ChatroomChanges::is_empty")]
    pub chatrooms: ChatroomChanges,
}

/// Chatrooms changed with their chat, by what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatroomChanges {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<ChatroomItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updated: Vec<ChatroomItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<ChatroomItem>,
}

impl ChatroomChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }

    pub fn len(&self) -> usize {
        self.created.len() + self.updated.len() + self.deleted.len()
    }

    /// Item `k` of `iter`.
    pub fn at(&self, k: usize) -> Option<(Action, &ChatroomItem)> {
        let (created, updated) = (self.created.len(), self.updated.len());
        if k < created {
            Some((Action::Created, &self.created[k]))
        } else if k < created + updated {
            Some((Action::Updated, &self.updated[k - created]))
        } else {
            Some((Action::Deleted, self.deleted.get(k - created - updated)?))
        }
    }

    /// The items in publication order (created, updated, deleted), with what happened to each.
    pub fn iter(&self) -> impl Iterator<Item = (Action, &ChatroomItem)> {
        let tag = |action| move |item| (action, item);
        self.created
            .iter()
            .map(tag(Action::Created))
            .chain(self.updated.iter().map(tag(Action::Updated)))
            .chain(self.deleted.iter().map(tag(Action::Deleted)))
    }
}

/// A chatroom changed with its chat. What it leaves out is the chat's: its `type`,
/// `customer_id`, `participant_ids` (as after the change), `name`, `detail` and `tm_create`
/// unless given here; `tm_update` is the chat's (the change's time), and `tm_delete` too for a
/// deleted room (else the live mark).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatroomItem {
    pub id: String,
    pub owner_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tm_create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ChatroomItem {
    /// The item of `room` in `chat`'s event: only what differs from the chat.
    pub fn of(room: &ChatroomJson, chat: &ChatJson) -> Self {
        let differs = |room: &String, chat: &String| (room != chat).then(|| room.clone());
        ChatroomItem {
            id: room.id.clone(),
            owner_id: room.owner_id.clone(),
            tm_create: differs(&room.tm_create, &chat.tm_create),
            name: differs(&room.name, &chat.name),
            detail: differs(&room.detail, &chat.detail),
        }
    }
}

impl ChatEventData {
    /// The chatroom `item` as it is after the change.
    pub fn chatroom(&self, action: Action, item: &ChatroomItem) -> ChatroomJson {
        let chat = &self.chat;
        let or_chat = |own: &Option<String>, chat: &String| own.as_ref().unwrap_or(chat).clone();
        ChatroomJson {
            id: item.id.clone(),
            customer_id: chat.customer_id.clone(),
            chat_type: chat.chat_type.clone(),
            chat_id: chat.id.clone(),
            owner_id: item.owner_id.clone(),
            participant_ids: chat.participant_ids.clone(),
            name: or_chat(&item.name, &chat.name),
            detail: or_chat(&item.detail, &chat.detail),
            tm_create: or_chat(&item.tm_create, &chat.tm_create),
            tm_update: chat.tm_update.clone(),
            tm_delete: match action {
                Action::Deleted => chat.tm_update.clone(),
                Action::Created | Action::Updated | Action::ReadUpdated => {
                    common::time::LIVE.to_owned()
                }
            },
        }
    }
}

/// The `data` of `messagechat_created`, `messagechat_updated` and `messagechat_deleted`: the
/// chatmessage as it is after the change, and its copies the change created, updated or
/// deleted with it (every live chatroom's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagechatEventData {
    #[serde(flatten)]
    pub chatmessage: ChatmessageJson,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chatroommessages: Vec<CopyItem>,
}

/// A copy of the chatmessage: `[id, chatroom_id, owner_id]` (the chatroom's owner, for routing
/// to agents). Everything else is the chatmessage's, `tm_update` and `tm_delete` included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyItem(pub String, pub String, pub String);

impl CopyItem {
    pub fn id(&self) -> &str {
        &self.0
    }

    pub fn chatroom_id(&self) -> &str {
        &self.1
    }

    pub fn owner_id(&self) -> &str {
        &self.2
    }
}

impl MessagechatEventData {
    /// The copy `item` as it is after the change.
    pub fn chatroommessage(&self, item: &CopyItem) -> ChatroommessageJson {
        let m = &self.chatmessage;
        ChatroommessageJson {
            id: item.0.clone(),
            customer_id: m.customer_id.clone(),
            chatroom_id: item.1.clone(),
            messagechat_id: m.id.clone(),
            source: m.source.clone(),
            message_type: m.message_type.clone(),
            text: m.text.clone(),
            medias: m.medias.clone(),
            tm_create: m.tm_create.clone(),
            tm_update: m.tm_update.clone(),
            tm_delete: m.tm_delete.clone(),
        }
    }
}

/// The `data` of `chatroom_read_updated`: the chatroom's read state after the change, and the
/// other live chatrooms of its chat (their owners see it as "seen").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadEventData {
    #[serde(flatten)]
    pub read_state: ReadStateJson,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerItem>,
}

/// Another participant's chatroom of the same chat: `[chatroom id, owner id]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerItem(pub String, pub String);

/// An event's `data`, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    Chat(ChatEventData),
    Chatroom(ChatroomJson),
    Messagechat(MessagechatEventData),
    Messagechatroom(ChatroommessageJson),
    ChatroomRead(ReadEventData),
}

impl EventData {
    /// The data of an event of `event_type` from its JSON.
    pub fn parse(event_type: EventType, json: &str) -> Result<Self, serde_json::Error> {
        Ok(match (event_type.resource, event_type.action) {
            (Resource::Chatroom, Action::ReadUpdated) => {
                EventData::ChatroomRead(serde_json::from_str(json)?)
            }
            (Resource::Chat, _) => EventData::Chat(serde_json::from_str(json)?),
            (Resource::Chatroom, _) => EventData::Chatroom(serde_json::from_str(json)?),
            (Resource::Messagechat, _) => EventData::Messagechat(serde_json::from_str(json)?),
            (Resource::Messagechatroom, _) => {
                EventData::Messagechatroom(serde_json::from_str(json)?)
            }
        })
    }

    pub fn to_json(&self) -> Box<serde_json::value::RawValue> {
        let json = match self {
            EventData::Chat(d) => serde_json::value::to_raw_value(d),
            EventData::Chatroom(d) => serde_json::value::to_raw_value(d),
            EventData::Messagechat(d) => serde_json::value::to_raw_value(d),
            EventData::Messagechatroom(d) => serde_json::value::to_raw_value(d),
            EventData::ChatroomRead(d) => serde_json::value::to_raw_value(d),
        };
        json.expect("event data serializes")
    }

    pub fn customer_id(&self) -> &str {
        match self {
            EventData::Chat(d) => &d.chat.customer_id,
            EventData::Chatroom(d) => &d.customer_id,
            EventData::Messagechat(d) => &d.chatmessage.customer_id,
            EventData::Messagechatroom(d) => &d.customer_id,
            EventData::ChatroomRead(d) => &d.read_state.customer_id,
        }
    }
}

/// One resource an event stands for: what its own event (a per-resource frame) would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub event_type: EventType,
    /// The resource's id.
    pub id: &'a str,
    /// What a topic narrows on: the chat's id (`chat`, `messagechat`) or the chatroom's
    /// (`chatroom`, `messagechatroom`).
    pub scope_id: &'a str,
    /// The chatroom's owner, for chatrooms and copies.
    pub owner_id: Option<&'a str>,
    /// Another participant's view of a read state (`chatroom_read_updated`'s peers): for that
    /// participant's own agent topics only, never for customer topics or webhooks, which get
    /// the read state once, as item 0.
    pub peer: bool,
}

/// A published event, read: its type, tenant and data (see `cloudevent::parse`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub id: String,
    pub event_type: EventType,
    pub customer_id: String,
    /// The chatroom owner of a single chatroom or copy (the `ownerid` extension).
    pub owner_id: Option<String>,
    pub data: EventData,
}

impl ParsedEvent {
    /// How many resources it stands for.
    pub fn len(&self) -> usize {
        1 + match &self.data {
            EventData::Chat(d) => d.chatrooms.len(),
            EventData::Messagechat(d) => d.chatroommessages.len(),
            EventData::ChatroomRead(d) => d.peers.len(),
            EventData::Chatroom(_) | EventData::Messagechatroom(_) => 0,
        }
    }

    /// Never: an event stands for its own resource at least.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Resource `n` it stands for: 0 is the event's own, then its chatrooms (created, updated,
    /// deleted) or copies.
    pub fn item(&self, n: usize) -> Option<Item<'_>> {
        match (&self.data, n) {
            (EventData::Chat(d), 0) => Some(Item {
                event_type: self.event_type,
                id: &d.chat.id,
                scope_id: &d.chat.id,
                owner_id: None,
                peer: false,
            }),
            (EventData::Chat(d), n) => {
                let (action, room) = d.chatrooms.at(n - 1)?;
                Some(Item {
                    event_type: EventType::new(Resource::Chatroom, action),
                    id: &room.id,
                    scope_id: &room.id,
                    owner_id: Some(&room.owner_id),
                    peer: false,
                })
            }
            (EventData::Chatroom(room), 0) => Some(Item {
                event_type: self.event_type,
                id: &room.id,
                scope_id: &room.id,
                owner_id: Some(self.owner_id.as_deref().unwrap_or(&room.owner_id)),
                peer: false,
            }),
            (EventData::Messagechat(d), 0) => Some(Item {
                event_type: self.event_type,
                id: &d.chatmessage.id,
                scope_id: &d.chatmessage.chat_id,
                owner_id: None,
                peer: false,
            }),
            (EventData::Messagechat(d), n) => {
                let copy = d.chatroommessages.get(n - 1)?;
                Some(Item {
                    event_type: EventType::new(Resource::Messagechatroom, self.event_type.action),
                    id: copy.id(),
                    scope_id: copy.chatroom_id(),
                    owner_id: Some(copy.owner_id()),
                    peer: false,
                })
            }
            (EventData::Messagechatroom(copy), 0) => Some(Item {
                event_type: self.event_type,
                id: &copy.id,
                scope_id: &copy.chatroom_id,
                owner_id: self.owner_id.as_deref(),
                peer: false,
            }),
            (EventData::ChatroomRead(d), 0) => Some(Item {
                event_type: self.event_type,
                id: &d.read_state.chatroom_id,
                scope_id: &d.read_state.chatroom_id,
                owner_id: Some(&d.read_state.owner_id),
                peer: false,
            }),
            (EventData::ChatroomRead(d), n) => {
                let peer = d.peers.get(n - 1)?;
                Some(Item {
                    event_type: self.event_type,
                    id: &d.read_state.chatroom_id,
                    scope_id: &peer.0,
                    owner_id: Some(&peer.1),
                    peer: true,
                })
            }
            _ => None,
        }
    }

    /// Every resource it stands for, in order (see `item`).
    pub fn items(&self) -> impl Iterator<Item = Item<'_>> {
        (0..self.len()).map_while(|n| self.item(n))
    }

    /// The JSON of resource `n` (see `item`): what its own event would have carried.
    pub fn item_json(&self, n: usize) -> Option<String> {
        let json = match (&self.data, n) {
            (EventData::Chat(d), 0) => serde_json::to_string(&d.chat),
            (EventData::Chat(d), n) => {
                let (action, room) = d.chatrooms.at(n - 1)?;
                serde_json::to_string(&d.chatroom(action, room))
            }
            (EventData::Chatroom(room), 0) => serde_json::to_string(room),
            (EventData::Messagechat(d), 0) => serde_json::to_string(&d.chatmessage),
            (EventData::Messagechat(d), n) => {
                serde_json::to_string(&d.chatroommessage(d.chatroommessages.get(n - 1)?))
            }
            (EventData::Messagechatroom(copy), 0) => serde_json::to_string(copy),
            (EventData::ChatroomRead(d), n) if n <= d.peers.len() => {
                serde_json::to_string(&d.read_state)
            }
            _ => return None,
        };
        Some(json.expect("resource JSON serializes"))
    }

    /// Resource `n` as VoIPbin's per-resource frame: `{"type": "<event type>", "data":
    /// <resource>}`.
    pub fn item_frame(&self, n: usize) -> Option<String> {
        let event_type = self.item(n)?.event_type;
        let data = self.item_json(n)?;
        Some(format!(
            "{{\"type\":\"{}\",\"data\":{data}}}",
            event_type.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::resources::AddressJson;

    fn chat() -> ChatJson {
        ChatJson {
            id: "chat-1".into(),
            customer_id: "c".into(),
            chat_type: "group".into(),
            owner_id: "a".into(),
            participant_ids: vec!["a".into(), "b".into(), "c".into()],
            name: "team".into(),
            detail: "d".into(),
            tm_create: "2026-01-01 00:00:00.000000".into(),
            tm_update: "2026-01-02 00:00:00.000000".into(),
            tm_delete: common::time::LIVE.into(),
        }
    }

    #[test]
    fn event_types_name_their_resource_and_action_and_route_by_tenant() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                t.as_str(),
                format!("{}_{}", t.resource.as_str(), t.action.as_str())
            );
        }
        assert_eq!(
            EventType::MESSAGECHAT_CREATED.routing_key("c1"),
            "messagechat_created.c1"
        );
        assert_eq!(EventType::parse("chat_renamed"), None);
        let json = serde_json::to_string(&EventType::CHATROOM_DELETED).unwrap();
        assert_eq!(json, "\"chatroom_deleted\"");
        assert_eq!(
            serde_json::from_str::<EventType>(&json).unwrap(),
            EventType::CHATROOM_DELETED
        );
    }

    #[test]
    fn a_chat_event_gives_back_each_chatroom_in_full() {
        let chat = chat();
        let room = |id: &str, owner: &str, name: &str, created: &str| ChatroomJson {
            id: id.into(),
            customer_id: "c".into(),
            chat_type: "group".into(),
            chat_id: chat.id.clone(),
            owner_id: owner.into(),
            participant_ids: chat.participant_ids.clone(),
            name: name.into(),
            detail: "d".into(),
            tm_create: created.into(),
            tm_update: chat.tm_update.clone(),
            tm_delete: common::time::LIVE.into(),
        };
        let kept = room("r1", "a", "renamed by a", &chat.tm_create);
        let added = room("r3", "c", "team", &chat.tm_update);
        let data = ChatEventData {
            chat: chat.clone(),
            chatrooms: ChatroomChanges {
                created: vec![ChatroomItem::of(&added, &chat)],
                updated: vec![ChatroomItem::of(&kept, &chat)],
                deleted: Vec::new(),
            },
        };
        let text = serde_json::to_string(&data).unwrap();
        let back: ChatEventData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, data);
        assert_eq!(
            back.chatroom(Action::Created, &back.chatrooms.created[0]),
            added
        );
        assert_eq!(
            back.chatroom(Action::Updated, &back.chatrooms.updated[0]),
            kept
        );
        // A room as the chat has it costs its id and owner only.
        let plain = ChatroomItem::of(&room("r2", "b", "team", &chat.tm_create), &chat);
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"id":"r2","owner_id":"b"}"#
        );
    }

    #[test]
    fn a_message_event_gives_back_each_copy_and_names_every_item_in_order() {
        let message = ChatmessageJson {
            id: "m".into(),
            customer_id: "c".into(),
            chat_id: "chat-1".into(),
            source: AddressJson::default(),
            message_type: "normal".into(),
            text: "hi".into(),
            medias: Vec::new(),
            tm_create: "t1".into(),
            tm_update: "t1".into(),
            tm_delete: common::time::LIVE.into(),
        };
        let event = ParsedEvent {
            id: "e".into(),
            event_type: EventType::MESSAGECHAT_CREATED,
            customer_id: "c".into(),
            owner_id: None,
            data: EventData::Messagechat(MessagechatEventData {
                chatmessage: message,
                chatroommessages: vec![
                    CopyItem("k1".into(), "r1".into(), "a".into()),
                    CopyItem("k2".into(), "r2".into(), "b".into()),
                ],
            }),
        };
        let items: Vec<Item<'_>> = event.items().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].event_type, EventType::MESSAGECHAT_CREATED);
        assert_eq!(items[0].scope_id, "chat-1");
        assert_eq!(items[2].event_type, EventType::MESSAGECHATROOM_CREATED);
        assert_eq!(
            (items[2].id, items[2].scope_id, items[2].owner_id),
            ("k2", "r2", Some("b"))
        );
        let copy: serde_json::Value = serde_json::from_str(&event.item_json(2).unwrap()).unwrap();
        assert_eq!(copy["messagechat_id"], "m");
        assert_eq!(copy["chatroom_id"], "r2");
        assert_eq!(copy["text"], "hi");
        let frame: serde_json::Value = serde_json::from_str(&event.item_frame(1).unwrap()).unwrap();
        assert_eq!(frame["type"], "messagechatroom_created");
        assert_eq!(frame["data"]["id"], "k1");
        assert_eq!(event.item_json(3), None);
    }

    #[test]
    fn a_read_event_stands_for_its_read_state_once_and_once_more_per_peer() {
        let state = ReadStateJson {
            chatroom_id: "r1".into(),
            customer_id: "c".into(),
            chat_id: "chat-1".into(),
            owner_id: "a".into(),
            last_read_messagechat_id: "m".into(),
            tm_last_read: "t1".into(),
            unread_count: 2,
            tm_update: "t2".into(),
        };
        let data = EventData::ChatroomRead(ReadEventData {
            read_state: state.clone(),
            peers: vec![
                PeerItem("r2".into(), "b".into()),
                PeerItem("r3".into(), "c".into()),
            ],
        });
        let json = data.to_json();
        assert_eq!(
            EventData::parse(EventType::CHATROOM_READ_UPDATED, json.get()).unwrap(),
            data
        );
        let event = ParsedEvent {
            id: "e".into(),
            event_type: EventType::CHATROOM_READ_UPDATED,
            customer_id: "c".into(),
            owner_id: Some("a".into()),
            data,
        };
        let items: Vec<Item<'_>> = event.items().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(
            (items[0].scope_id, items[0].owner_id, items[0].peer),
            ("r1", Some("a"), false)
        );
        assert_eq!(
            (items[2].scope_id, items[2].owner_id, items[2].peer),
            ("r3", Some("c"), true)
        );
        for n in 0..3 {
            let json = event.item_json(n).unwrap();
            assert_eq!(serde_json::from_str::<ReadStateJson>(&json).unwrap(), state);
        }
        assert_eq!(event.item_json(3), None);
        let frame: serde_json::Value = serde_json::from_str(&event.item_frame(1).unwrap()).unwrap();
        assert_eq!(frame["type"], "chatroom_read_updated");
        assert_eq!(frame["data"]["owner_id"], "a");
    }
}
