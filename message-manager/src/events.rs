//! message-manager's events: its outbox records (`MessageRecord`), and the consumer of
//! chat-manager's events into the membership view. The consumer is idempotent: each event id
//! is recorded in the same transaction as its effect, so a redelivery changes nothing.
//! Failures are retried, then dead-lettered, as `pipeline::consumer` does.

use std::collections::HashMap;

use common::db::{Db, DbConnection, DbError};
use common::resources::ChatmessageJson;
use diesel::Connection;
use pipeline::bus::{EventBus, Subscription, SubscriptionSpec};
use pipeline::consumer::{DurableConsumer, EventHandler, Failure};
use pipeline::contract::{Action, CopyItem, EventData, EventType, MessagechatEventData, Resource};
use pipeline::outbox::legacy;
use pipeline::{Event, OutboxRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::chatmessages;
use crate::chatroommessages::{CopyKey, message_no};
use crate::db::models::{ChatmessageRow, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;
use crate::membership;

/// A record of message-manager's outbox: one event. Versioned (`OutboxRecord::VERSION`): a new
/// kind of record is a new variant and a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRecord {
    /// An event rendered when its change committed (a copy deleted on its own).
    Event(Event),
    /// A chatmessage's event with its copies in the chatrooms listed, rendered when published:
    /// what a send writes (a few bytes per chatroom, whatever the size of the message).
    Fanout(Fanout),
}

/// `messagechat_<action>` of a chatmessage and its copies in `rooms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fanout {
    pub action: Action,
    /// The event's id: the same each time the record is published again.
    pub event_id: uuid::Uuid,
    pub message_id: uuid::Uuid,
    /// The chatrooms' numbers in the membership view (`member_chatrooms.no`).
    pub rooms: Vec<i64>,
}

impl MessageRecord {
    /// The event of `message` and its copies in `rooms`.
    pub fn fanout(action: Action, message: &ChatmessageRow, rooms: &[MemberChatroom]) -> Self {
        MessageRecord::Fanout(Fanout {
            action,
            event_id: uuid::Uuid::new_v4(),
            message_id: uuid::Uuid::parse_str(&message.id).expect("message ids are UUIDs"),
            rooms: rooms.iter().map(|r| r.no).collect(),
        })
    }

    /// The event of one copy, routed to its chatroom's owner.
    pub fn copy(
        action: Action,
        copy: &proto::message::v1::Chatroommessage,
        owner_id: &str,
    ) -> Self {
        let data = EventData::Messagechatroom(copy.clone().into());
        let event_type = EventType::new(Resource::Messagechatroom, action);
        MessageRecord::Event(Event::new(event_type, &data).owned_by(owner_id))
    }
}

/// About what one copy adds to a message's event.
const COPY_BYTES: usize = 120;

impl OutboxRecord for MessageRecord {
    const VERSION: u32 = 1;

    fn rendered(event: Event) -> Self {
        MessageRecord::Event(event)
    }

    fn weight(&self) -> usize {
        match self {
            MessageRecord::Event(e) => e.weight(),
            // The message's text is not at hand here: a kilobyte for it.
            MessageRecord::Fanout(f) => {
                1024 + pipeline::cloudevent::ENVELOPE_BYTES + f.rooms.len() * COPY_BYTES
            }
        }
    }

    /// Two queries for all the records' messages and chatrooms.
    fn render(conn: &mut DbConnection, records: &[Self]) -> Result<Vec<Option<Event>>, DbError> {
        let fanouts = || {
            records.iter().filter_map(|r| match r {
                MessageRecord::Fanout(f) => Some(f),
                MessageRecord::Event(_) => None,
            })
        };
        let message_nos: Vec<i64> = fanouts().map(|f| message_no(&f.message_id)).collect();
        let mut room_nos: Vec<i64> = fanouts().flat_map(|f| f.rooms.iter().copied()).collect();
        room_nos.sort_unstable();
        room_nos.dedup();
        let messages: HashMap<String, ChatmessageRow> = if message_nos.is_empty() {
            HashMap::new()
        } else {
            queries::messages_by_no(conn, &message_nos)?
                .into_iter()
                .map(|m| (m.id.clone(), m))
                .collect()
        };
        let rooms: HashMap<i64, MemberChatroom> = if room_nos.is_empty() {
            HashMap::new()
        } else {
            queries::rooms_by_no(conn, &room_nos)?
                .into_iter()
                .map(|r| (r.no, r))
                .collect()
        };
        Ok(records
            .iter()
            .map(|record| match record {
                MessageRecord::Event(e) => Some(e.clone()),
                MessageRecord::Fanout(f) => {
                    let message = messages.get(&f.message_id.to_string())?;
                    render_fanout(f, message, &rooms)
                }
            })
            .collect())
    }

    fn from_legacy(lines: Vec<legacy::Line<'_>>) -> Option<Vec<Self>> {
        lines
            .into_iter()
            .map(|line| match line {
                legacy::Line::Rendered(event) => Some(MessageRecord::Event(event)),
                legacy::Line::Compact { kind, body } => legacy_fanout(kind, body),
            })
            .collect()
    }
}

/// The event of a fanout record: the chatmessage (for a send, as it was sent, even if deleted
/// since) and a copy per chatroom. `None` if a chatroom is missing from the view (rooms are
/// never removed from it, so the record is corrupt).
fn render_fanout(
    fanout: &Fanout,
    message: &ChatmessageRow,
    rooms: &HashMap<i64, MemberChatroom>,
) -> Option<Event> {
    let sent;
    let message = if fanout.action == Action::Created {
        sent = ChatmessageRow {
            tm_update: message.tm_create,
            tm_delete: common::time::live(),
            ..message.clone()
        };
        &sent
    } else {
        message
    };
    let copies = fanout
        .rooms
        .iter()
        .map(|no| {
            let room = rooms.get(no)?;
            Some(CopyItem(
                CopyKey::of(room, message).id().to_string(),
                room.id.clone(),
                room.owner_id.clone(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let data = EventData::Messagechat(MessagechatEventData {
        chatmessage: ChatmessageJson::from(chatmessages::to_proto(message)),
        chatroommessages: copies,
    });
    let mut event = Event::new(EventType::new(Resource::Messagechat, fanout.action), &data);
    event.id = fanout.event_id;
    Some(event)
}

/// A compact record of releases before typed records: `@messagechat_created` or
/// `@messagechat_deleted`, `<message id>\t<event id base>\t<room numbers, comma-separated>`.
/// Its event goes out as today's one event, under the id of the first event it stood for.
fn legacy_fanout(kind: &str, body: &str) -> Option<MessageRecord> {
    let action = match kind {
        "messagechat_created" => Action::Created,
        "messagechat_deleted" => Action::Deleted,
        _ => return None,
    };
    let mut parts = body.splitn(3, '\t');
    let message_id = uuid::Uuid::parse_str(parts.next()?).ok()?;
    let base = uuid::Uuid::parse_str(parts.next()?).ok()?;
    let rooms = match parts.next()? {
        "" => Vec::new(),
        list => list
            .split(',')
            .map(|n| n.parse().ok())
            .collect::<Option<Vec<i64>>>()?,
    };
    Some(MessageRecord::Fanout(Fanout {
        action,
        event_id: legacy::event_id(base, 0),
        message_id,
        rooms,
    }))
}

/// The durable queue bound to each chat event type (chat-manager declares it too).
pub fn subscription_spec(chat_exchange: &str, queue: &str) -> SubscriptionSpec {
    pipeline::topology::chat_events_subscriber(chat_exchange, queue)
}

pub use pipeline::consumer::{FIRST_RETRY_DELAY, MAX_ATTEMPTS, dead_letter_queue};

/// Consumes chat-manager's events into the membership view (see `pipeline::consumer`).
pub struct ChatEventConsumer {
    pub db: Db,
    pub bus: EventBus,
    pub spec: SubscriptionSpec,
}

/// What became of one delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Applied,
    /// Seen before: acknowledged without effect.
    Duplicate,
}

/// Applies chat events to the membership view.
struct MembershipUpdate {
    db: Db,
}

impl EventHandler for MembershipUpdate {
    async fn handle(&self, payload: &[u8]) -> Result<(), Failure> {
        match handle(&self.db, payload).await {
            Ok(_) => Ok(()),
            Err(MessageError::Unavailable(why)) => Err(Failure::Unavailable(why)),
            Err(MessageError::InvalidArgument(why)) => Err(Failure::Malformed(why)),
            Err(e) => Err(Failure::Failed(e.to_string())),
        }
    }
}

impl ChatEventConsumer {
    /// Consumes until `shutdown`, from `first` (or, without one, a subscription of its own),
    /// subscribing again (with backoff) whenever the subscription ends or cannot be made.
    pub fn run(
        self,
        first: impl Into<Option<Subscription>>,
        shutdown: watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let stale_bindings = stale_bindings(&self.spec);
        let consumer = DurableConsumer {
            bus: self.bus,
            spec: self.spec,
            stale_bindings,
            what: "chat events",
            handler: MembershipUpdate { db: self.db },
        };
        Box::pin(consumer.run(first.into(), shutdown))
    }
}

/// Applies one CloudEvents payload to the view, once.
pub async fn handle(db: &Db, payload: &[u8]) -> Result<Handled, MessageError> {
    let event = pipeline::cloudevent::parse(payload)
        .map_err(|e| MessageError::invalid(format!("event: {e}")))?;
    db.run(move |conn| {
        conn.transaction(|conn| {
            if !queries::mark_processed(conn, &event.id)? {
                return Ok(Handled::Duplicate);
            }
            membership::apply_event(conn, &event)?;
            Ok(Handled::Applied)
        })
    })
    .await
}

/// The bindings of releases before tenant routing keys (the bare event types), which match
/// nothing any more.
fn stale_bindings(spec: &SubscriptionSpec) -> Vec<(String, String)> {
    spec.bindings
        .first()
        .map(|(exchange, _)| pipeline::topology::legacy_chat_bindings(exchange))
        .unwrap_or_default()
}

/// The dead-letter queue of `spec`'s queue, then the subscription; bindings of releases
/// before tenant routing keys are removed from the queue.
pub async fn subscribe_with_dead_letters(
    bus: &EventBus,
    spec: SubscriptionSpec,
) -> Result<Subscription, pipeline::bus::BusError> {
    let stale = stale_bindings(&spec);
    pipeline::consumer::subscribe_with_dead_letters(bus, spec, &stale).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_stored_as_versioned_json() {
        let fanout = MessageRecord::Fanout(Fanout {
            action: Action::Created,
            event_id: uuid::Uuid::nil(),
            message_id: uuid::Uuid::nil(),
            rooms: vec![7, 1_152_921_504_606_846_975],
        });
        let row = pipeline::outbox::OutboxRow::new(&common::RequestMeta::default(), &[fanout]);
        assert_eq!(
            row.events,
            r#"{"v":1,"records":[{"fanout":{"action":"created","event_id":"00000000-0000-0000-0000-000000000000","message_id":"00000000-0000-0000-0000-000000000000","rooms":[7,1152921504606846975]}}]}"#
        );
        assert_eq!(row.event_count, 1);
    }

    #[test]
    fn legacy_compact_records_become_one_fanout_under_their_first_event_id() {
        let (message, base) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let body = format!("{message}\t{base}\t1,2,3");
        let Some(MessageRecord::Fanout(f)) = legacy_fanout("messagechat_created", &body) else {
            panic!("converts");
        };
        assert_eq!(
            (f.action, f.event_id, f.message_id),
            (Action::Created, base, message)
        );
        assert_eq!(f.rooms, [1, 2, 3]);
        let none = format!("{message}\t{base}\t");
        assert!(
            matches!(legacy_fanout("messagechat_deleted", &none), Some(MessageRecord::Fanout(f)) if f.rooms.is_empty())
        );
        assert!(legacy_fanout("messagechat_created", "junk").is_none());
        assert!(legacy_fanout("something_else", &body).is_none());
    }
}
