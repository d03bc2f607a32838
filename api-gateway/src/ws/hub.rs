//! The event hub: one subscription per gateway process to both exchanges (its own exclusive
//! queue on RabbitMQ, or the in-process bus), fanned out to every WebSocket of this process
//! through a bounded broadcast ring. A socket that falls more than the ring behind is told so
//! and dropped; memory does not grow with slow clients.

use std::sync::Arc;
use std::time::Duration;

use common::bus::{EventBus, SubscriptionSpec};
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::ws::topic::Resource;

/// One event, parsed once for every socket.
#[derive(Debug, Clone)]
pub struct HubEvent {
    pub resource: Resource,
    pub customer_id: String,
    /// The chatroom owner, for chatroom and messagechatroom events.
    pub owner_id: Option<String>,
    /// What a topic's id narrows on: the chat (chat, messagechat) or the chatroom (chatroom,
    /// messagechatroom).
    pub scope_id: String,
    /// `{"type": "<event type>", "data": <resource>}`, ready to send.
    pub frame: Arc<str>,
}

#[derive(Debug, Clone)]
pub enum HubMessage {
    Event(Arc<HubEvent>),
    /// The stream from the broker was interrupted: events may have been missed.
    Resync,
}

#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<HubMessage>,
}

impl EventHub {
    /// Starts consuming `chat_exchange` and `message_exchange` from `bus`; `capacity` is how
    /// many events a socket may fall behind before it is dropped.
    pub fn start(
        bus: EventBus,
        chat_exchange: &str,
        message_exchange: &str,
        capacity: usize,
        shutdown: watch::Receiver<bool>,
    ) -> (EventHub, JoinHandle<()>) {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let spec = SubscriptionSpec {
            // Broker-named, exclusive, auto-deleted: each gateway instance has its own.
            queue: String::new(),
            bindings: vec![
                (chat_exchange.to_owned(), "#".to_owned()),
                (message_exchange.to_owned(), "#".to_owned()),
            ],
            exclusive: true,
            prefetch: 1024,
        };
        let task = tokio::spawn(run(bus, spec, tx.clone(), shutdown));
        (EventHub { tx }, task)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMessage> {
        self.tx.subscribe()
    }
}

async fn run(
    bus: EventBus,
    spec: SubscriptionSpec,
    tx: broadcast::Sender<HubMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut interrupted = false;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut sub = match bus.subscribe(spec.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                interrupted = true;
                tracing::warn!(error = %e, retry_in = ?backoff, "event hub: subscribe failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if interrupted {
            tracing::info!("event hub: subscribed again; telling sockets to resync");
            let _ = tx.send(HubMessage::Resync);
        }
        loop {
            let delivery = tokio::select! {
                d = sub.next() => d,
                _ = shutdown.changed() => return,
            };
            let Some(delivery) = delivery else {
                tracing::warn!("event hub: subscription ended; resubscribing");
                interrupted = true;
                break;
            };
            match parse(&delivery.message.routing_key, &delivery.message.payload) {
                Some(event) => {
                    // No receivers is fine: nobody is connected.
                    let _ = tx.send(HubMessage::Event(Arc::new(event)));
                }
                None => {
                    tracing::warn!(key = %delivery.message.routing_key, "event hub: unreadable event skipped")
                }
            }
            let _ = delivery.ack().await;
        }
    }
}

/// Reads a CloudEvents payload into what routing needs.
pub fn parse(event_type: &str, payload: &[u8]) -> Option<HubEvent> {
    let event: Value = serde_json::from_slice(payload).ok()?;
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(event_type);
    let resource = Resource::of_event(event_type)?;
    let data = event.get("data")?;
    let field = |name: &str| data.get(name).and_then(Value::as_str).map(str::to_owned);
    let scope_id = match resource {
        Resource::Chat | Resource::Chatroom => field("id")?,
        Resource::Messagechat => field("chat_id")?,
        Resource::Messagechatroom => field("chatroom_id")?,
    };
    let frame = serde_json::json!({"type": event_type, "data": data}).to_string();
    Some(HubEvent {
        resource,
        customer_id: event
            .get("customerid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| field("customer_id"))?,
        owner_id: event
            .get("ownerid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        scope_id,
        frame: frame.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_routing_needs() {
        let payload = serde_json::json!({
            "specversion": "1.0", "id": "e", "type": "messagechatroom_created", "customerid": "c", "ownerid": "o",
            "data": {"id": "m", "chatroom_id": "r", "text": "hi"}
        });
        let e = parse("messagechatroom_created", payload.to_string().as_bytes()).unwrap();
        assert_eq!(e.resource, Resource::Messagechatroom);
        assert_eq!(
            (
                e.customer_id.as_str(),
                e.owner_id.as_deref(),
                e.scope_id.as_str()
            ),
            ("c", Some("o"), "r")
        );
        let frame: Value = serde_json::from_str(&e.frame).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "messagechatroom_created", "data": {"id": "m", "chatroom_id": "r", "text": "hi"}})
        );
        assert!(parse("x", b"not json").is_none());
        assert!(
            parse(
                "chat_created",
                br#"{"type":"chat_created","customerid":"c","data":{}}"#
            )
            .is_none()
        );
    }
}
