//! Consuming chat-manager's events into the membership view. Idempotent: each event id is
//! recorded in the same transaction as its effect, so a redelivery changes nothing. And the
//! expansion of message-manager's own compact outbox records into their events.
//!
//! An event that fails is retried a few times with backoff and then set aside in the
//! dead-letter queue (`<queue>.dead-letter`), so it never holds up the events behind it. A
//! malformed event goes there at once. Failures of the database itself are not the event's
//! fault: the event is requeued and tried again once the database answers.

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDateTime;
use common::bus::{Delivery, EventBus, EventMessage, Subscription, SubscriptionSpec};
use common::db::{Db, DbConnection, DbError};
use common::outbox::{Expander, RecordEvents, RenderedEvent, StoredRecord};
use common::resources::{ChatmessageJson, ChatroommessageJson};
use diesel::Connection;
use serde_json::Value;
use tokio::sync::watch;

use crate::chatmessages::{self, FanoutRecord};
use crate::chatroommessages::{self, message_no};
use crate::db::models::{ChatmessageRow, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;
use crate::membership;

pub use common::topology::CHAT_EVENT_TYPES;

/// The durable queue bound to each chat event type (chat-manager declares it too).
pub fn subscription_spec(chat_exchange: &str, queue: &str) -> SubscriptionSpec {
    common::topology::chat_events_subscriber(chat_exchange, queue)
}

/// Attempts an event gets (the first and the retries) before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 4;
/// The wait before the first retry; doubled for each further one.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where events that could not be applied are set aside: a durable queue, reached through an
/// exchange of the same name.
pub fn dead_letter_queue(queue: &str) -> String {
    common::topology::dead_letter_name(queue)
}

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

impl ChatEventConsumer {
    /// Consumes until `shutdown`, from `first` (or, without one, a subscription of its own),
    /// subscribing again (with backoff) whenever the subscription ends or cannot be made.
    pub fn run(
        self,
        first: impl Into<Option<Subscription>>,
        shutdown: watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.run_from(first.into(), shutdown))
    }

    async fn run_from(
        self,
        mut subscription: Option<Subscription>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut sub = match subscription.take() {
                Some(s) => s,
                None => match self.subscribe().await {
                    Ok(s) => {
                        backoff = Duration::from_millis(200);
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "chat events: subscribe failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            loop {
                let delivery = tokio::select! {
                    d = sub.next() => d,
                    _ = shutdown.changed() => return,
                };
                let Some(delivery) = delivery else {
                    tracing::warn!("chat events: subscription ended; resubscribing");
                    break;
                };
                self.process(delivery).await;
            }
        }
    }

    async fn subscribe(&self) -> Result<Subscription, common::bus::BusError> {
        subscribe_with_dead_letters(&self.bus, self.spec.clone()).await
    }

    async fn process(&self, delivery: Delivery) {
        let mut attempt = 1;
        loop {
            match handle(&self.db, &delivery.message.payload).await {
                Ok(outcome) => {
                    tracing::debug!(?outcome, key = %delivery.message.routing_key, "chat event");
                    let _ = delivery.ack().await;
                    return;
                }
                Err(MessageError::Unavailable(why)) => {
                    tracing::warn!(error = %why, "chat event: database unavailable; will be redelivered");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = delivery.nack_requeue().await;
                    return;
                }
                // A malformed event will never apply.
                Err(MessageError::InvalidArgument(why)) => {
                    return self.dead_letter(delivery, &why).await;
                }
                Err(e) if attempt < MAX_ATTEMPTS => {
                    let delay = FIRST_RETRY_DELAY * 2u32.pow(attempt - 1);
                    tracing::warn!(error = %e, attempt, retry_in = ?delay, id = %delivery.message.message_id, "chat event failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return self.dead_letter(delivery, &e.to_string()).await,
            }
        }
    }

    /// Sets the event aside, then acknowledges it; if the broker does not take it, the event is
    /// requeued instead (never dropped).
    async fn dead_letter(&self, delivery: Delivery, why: &str) {
        let aside = EventMessage {
            exchange: dead_letter_queue(&self.spec.queue),
            ..delivery.message.clone()
        };
        match self.bus.publish(std::slice::from_ref(&aside)).await {
            Ok(()) => {
                common::metrics::count_dead_lettered(&self.spec.queue);
                tracing::error!(error = %why, id = %delivery.message.message_id,
                    key = %delivery.message.routing_key, queue = %aside.exchange,
                    "chat event dead-lettered");
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "chat event: dead-lettering failed; will be redelivered");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = delivery.nack_requeue().await;
            }
        }
    }
}

/// Applies one CloudEvents payload to the view, once.
pub async fn handle(db: &Db, payload: &[u8]) -> Result<Handled, MessageError> {
    let event: Value = serde_json::from_slice(payload)
        .map_err(|e| MessageError::invalid(format!("event: not JSON: {e}")))?;
    let id = event
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| MessageError::invalid("event: no id"))?
        .to_owned();
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| MessageError::invalid("event: no type"))?
        .to_owned();
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    db.run(move |conn| {
        conn.transaction(|conn| {
            if !queries::mark_processed(conn, &id)? {
                return Ok(Handled::Duplicate);
            }
            membership::apply_event(conn, &event_type, &data)?;
            Ok(Handled::Applied)
        })
    })
    .await
}

/// The dead-letter queue of `spec`'s queue (declared first: what is set aside must have
/// somewhere to go), then the subscription.
pub async fn subscribe_with_dead_letters(
    bus: &EventBus,
    spec: SubscriptionSpec,
) -> Result<Subscription, common::bus::BusError> {
    bus.declare_set_aside(&dead_letter_queue(&spec.queue))
        .await?;
    bus.subscribe(spec).await
}

/// Renders the compact records of sends and message deletions (`chatmessages::FanoutRecord`)
/// into their events when the relay publishes them: the message's, then one per copy, each
/// copy's routed to its room's owner. Two queries per round (the messages and the rooms).
pub struct MessageEventExpander;

impl Expander for MessageEventExpander {
    fn kinds(&self) -> &'static [&'static str] {
        &["messagechat_created", "messagechat_deleted"]
    }

    fn expand(
        &self,
        conn: &mut DbConnection,
        records: &[StoredRecord<'_>],
    ) -> Result<Vec<Option<RecordEvents>>, DbError> {
        let parsed: Vec<Option<FanoutRecord>> = records
            .iter()
            .map(|r| match r.kind {
                "messagechat_created" => FanoutRecord::parse("messagechat_created", r.body),
                "messagechat_deleted" => FanoutRecord::parse("messagechat_deleted", r.body),
                _ => None,
            })
            .collect();
        let message_nos: Vec<i64> = parsed
            .iter()
            .flatten()
            .filter_map(|f| uuid::Uuid::parse_str(&f.message_id).ok())
            .map(|id| message_no(&id))
            .collect();
        let mut room_nos: Vec<i64> = parsed
            .iter()
            .flatten()
            .flat_map(|f| f.room_nos.iter().copied())
            .collect();
        room_nos.sort_unstable();
        room_nos.dedup();
        let messages: HashMap<String, ChatmessageRow> =
            queries::messages_by_no(conn, &message_nos)?
                .into_iter()
                .map(|m| (m.id.clone(), m))
                .collect();
        let rooms: HashMap<i64, MemberChatroom> = queries::rooms_by_no(conn, &room_nos)?
            .into_iter()
            .map(|r| (r.no, r))
            .collect();
        Ok(parsed
            .iter()
            .zip(records)
            .map(|(record, stored)| {
                let record = record.as_ref()?;
                let message = messages.get(&record.message_id)?;
                // About a kilobyte an event: rendered here, at once.
                let events = render_fanout(record, message, &rooms, stored.created_at)?;
                Some(Box::new(events.into_iter()) as RecordEvents)
            })
            .collect())
    }
}

fn render_fanout(
    record: &FanoutRecord,
    message: &ChatmessageRow,
    rooms: &HashMap<i64, MemberChatroom>,
    time: NaiveDateTime,
) -> Option<Vec<RenderedEvent>> {
    let created = record.kind == "messagechat_created";
    let message = if created {
        // As it was sent, even if it has been deleted since.
        ChatmessageRow {
            tm_update: message.tm_create,
            tm_delete: common::time::live(),
            ..message.clone()
        }
    } else {
        message.clone()
    };
    let copy_kind = if created {
        "messagechatroom_created"
    } else {
        "messagechatroom_deleted"
    };
    let event = |n: usize, kind: &str, owner: Option<&str>, data: &dyn erased::Json| {
        let id = record.event_id(n).to_string();
        let payload = data.cloud_event(&id, kind, time, &message.customer_id, owner);
        RenderedEvent {
            routing_key: kind.to_owned(),
            id,
            payload,
        }
    };
    let mut events = Vec::with_capacity(1 + record.room_nos.len());
    events.push(event(
        0,
        record.kind,
        None,
        &ChatmessageJson::from(chatmessages::to_proto(&message)),
    ));
    let mut copy = chatroommessages::copy_template(&message);
    for (i, no) in record.room_nos.iter().enumerate() {
        // Rooms are never removed from the view, so a missing one means a corrupt record.
        let mut room = rooms.get(no)?.clone();
        if created {
            room.tm_delete = common::time::live();
        }
        chatroommessages::fill_copy(&mut copy, &message, &room, None);
        events.push(event(
            i + 1,
            copy_kind,
            Some(&room.owner_id),
            &ChatroommessageJson::from(copy.clone()),
        ));
    }
    Some(events)
}

/// A resource JSON shape behind a trait object, so one closure renders both kinds of event.
mod erased {
    use chrono::NaiveDateTime;

    pub trait Json {
        fn cloud_event(
            &self,
            id: &str,
            kind: &str,
            time: NaiveDateTime,
            customer_id: &str,
            owner_id: Option<&str>,
        ) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn cloud_event(
            &self,
            id: &str,
            kind: &str,
            time: NaiveDateTime,
            customer_id: &str,
            owner_id: Option<&str>,
        ) -> String {
            common::outbox::cloud_event_json(
                crate::EVENT_SOURCE,
                id,
                kind,
                time,
                customer_id,
                owner_id,
                self,
            )
        }
    }
}
