//! The body of every published event: a CloudEvents 1.0 document in structured JSON mode,
//! with the tenant in the `customerid` extension attribute and, for a single chatroom or copy,
//! the chatroom's owner in `ownerid` (so agent subscriptions route without a lookup).

use std::borrow::Cow;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::contract::{EventData, EventType, ParsedEvent};

/// The `datacontenttype` of every event, and AMQP's `content_type` of its message.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// About what a CloudEvents envelope adds to its data, in bytes.
pub const ENVELOPE_BYTES: usize = 300;

/// An event ready to be published: everything but the envelope's `source` and `time`, which
/// the relay adds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The CloudEvents id, also the AMQP `message_id`: the same each time the event is
    /// published again (consumers dedupe by it).
    pub id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    pub data: Box<RawValue>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.customer_id == other.customer_id
            && self.owner_id == other.owner_id
            && self.data.get() == other.data.get()
    }
}

impl Event {
    /// A new event (a fresh id) of `data`.
    pub fn new(event_type: EventType, data: &EventData) -> Self {
        Event {
            id: uuid::Uuid::new_v4(),
            event_type,
            customer_id: data.customer_id().to_owned(),
            owner_id: None,
            data: data.to_json(),
        }
    }

    /// The chatroom owner a single chatroom or copy event concerns.
    pub fn owned_by(mut self, owner_id: &str) -> Self {
        self.owner_id = Some(owner_id.to_owned());
        self
    }

    /// Its routing key, `<event type>.<customer id>`.
    /// About what it weighs published: its data and the envelope around it, in bytes.
    pub fn weight(&self) -> usize {
        self.data.get().len() + ENVELOPE_BYTES
    }

    pub fn routing_key(&self) -> String {
        self.event_type.routing_key(&self.customer_id)
    }

    /// The CloudEvents JSON the relay publishes: `source` is the publishing service, `time`
    /// when its change committed.
    pub fn to_cloudevent(&self, source: &str, time: NaiveDateTime) -> String {
        let envelope = Envelope {
            specversion: "1.0",
            id: &self.id.to_string(),
            source,
            event_type: self.event_type.as_str(),
            time: &common::time::rfc3339(time),
            datacontenttype: "application/json",
            customerid: &self.customer_id,
            ownerid: self.owner_id.as_deref(),
            data: &self.data,
        };
        serde_json::to_string(&envelope).expect("an event serializes")
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'a str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    time: &'a str,
    datacontenttype: &'a str,
    customerid: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ownerid: Option<&'a str>,
    data: &'a RawValue,
}

/// The envelope as read: attributes borrowed where the JSON has no escapes.
#[derive(Deserialize)]
struct ReadEnvelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    customerid: Cow<'a, str>,
    #[serde(default, borrow)]
    ownerid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Why a body is not an event of this contract.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("not a CloudEvents JSON document: {0}")]
    Envelope(serde_json::Error),
    #[error("unknown event type {0:?}")]
    Type(String),
    #[error("data of {0}: {1}")]
    Data(EventType, serde_json::Error),
}

/// The envelope's attributes, read without the data.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub id: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
    pub owner_id: Option<Cow<'a, str>>,
}

/// Reads an event's envelope only (its data stays unparsed): for a subscriber that decides by
/// type or tenant whether to read the rest.
pub fn attributes(body: &[u8]) -> Result<(Attributes<'_>, &RawValue), Unreadable> {
    let e: ReadEnvelope<'_> = serde_json::from_slice(body).map_err(Unreadable::Envelope)?;
    Ok((
        Attributes {
            id: e.id,
            event_type: e.event_type,
            customer_id: e.customerid,
            owner_id: e.ownerid,
        },
        e.data,
    ))
}

/// Reads a published event, its data typed.
pub fn parse(body: &[u8]) -> Result<ParsedEvent, Unreadable> {
    let (attributes, data) = attributes(body)?;
    parse_data(attributes, data)
}

/// The event of an envelope read with `attributes`, its data typed (the envelope is not read
/// again).
pub fn parse_data(attributes: Attributes<'_>, data: &RawValue) -> Result<ParsedEvent, Unreadable> {
    let event_type = EventType::parse(&attributes.event_type)
        .ok_or_else(|| Unreadable::Type(attributes.event_type.into_owned()))?;
    let data =
        EventData::parse(event_type, data.get()).map_err(|e| Unreadable::Data(event_type, e))?;
    Ok(ParsedEvent {
        id: attributes.id.into_owned(),
        event_type,
        customer_id: attributes.customer_id.into_owned(),
        owner_id: attributes.owner_id.map(Cow::into_owned),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::resources::ChatroomJson;

    #[test]
    fn an_event_round_trips_through_its_cloudevent() {
        let room = ChatroomJson {
            id: "r".into(),
            customer_id: "c".into(),
            chat_type: "normal".into(),
            chat_id: "chat".into(),
            owner_id: "o".into(),
            participant_ids: vec!["o".into(), "p".into()],
            name: "a \"quoted\"\tname".into(),
            detail: String::new(),
            tm_create: "2026-01-01 00:00:00.000000".into(),
            tm_update: "2026-01-01 00:00:00.000000".into(),
            tm_delete: common::time::LIVE.into(),
        };
        let data = EventData::Chatroom(room);
        let event = Event::new(EventType::CHATROOM_UPDATED, &data).owned_by("o");
        let t = common::time::parse("2026-01-01 00:00:00.000001").unwrap();
        let body = event.to_cloudevent("chat-manager", t);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["source"], "chat-manager");
        assert_eq!(json["time"], "2026-01-01T00:00:00.000001Z");
        assert_eq!(json["customerid"], "c");
        assert_eq!(json["ownerid"], "o");
        assert_eq!(event.routing_key(), "chatroom_updated.c");
        let parsed = parse(body.as_bytes()).unwrap();
        assert_eq!(parsed.id, event.id.to_string());
        assert_eq!(parsed.event_type, EventType::CHATROOM_UPDATED);
        assert_eq!(parsed.owner_id.as_deref(), Some("o"));
        assert_eq!(parsed.data, data);
        // Stored and read back (the outbox keeps events as JSON).
        let stored = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&stored).unwrap(), event);
    }

    #[test]
    fn what_is_not_an_event_says_why() {
        assert!(matches!(parse(b"not json"), Err(Unreadable::Envelope(_))));
        let unknown = br#"{"specversion":"1.0","id":"e","source":"s","type":"chat_renamed","time":"t","datacontenttype":"application/json","customerid":"c","data":{}}"#;
        assert!(matches!(parse(unknown), Err(Unreadable::Type(_))));
        let bad = br#"{"specversion":"1.0","id":"e","source":"s","type":"chat_created","time":"t","datacontenttype":"application/json","customerid":"c","data":{"id":"x"}}"#;
        assert!(matches!(parse(bad), Err(Unreadable::Data(..))));
    }
}
