//! The event hub: one subscription per gateway process to both exchanges (its own exclusive
//! queue on RabbitMQ, or the in-process bus), routed to the sockets of this process whose
//! topics match. Routing happens here, once per event, over the sockets of the event's tenant
//! only, so a socket wakes only for what it will send. The subscription is held only while
//! sockets are open (and for `WsSettings::idle_unsubscribe_after` after the last one closes):
//! a gateway without sockets costs the broker and itself nothing per event. Each socket has a
//! bounded queue; one that falls that far behind is marked lagged, told so and dropped: memory
//! does not grow with slow clients. When the process shuts down every socket is closed (1001), and the hub's task
//! ends once they all have, or after the time a close may take.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bus::{EventBus, Subscription, SubscriptionSpec};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ws::WsSettings;
use crate::ws::topic::{Resource, Topic};

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

/// One socket as the hub sees it.
struct Route {
    customer_id: String,
    topics: Vec<Topic>,
    tx: mpsc::Sender<HubMessage>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Routes {
    by_id: HashMap<u64, Route>,
    by_customer: HashMap<String, HashSet<u64>>,
}

impl Routes {
    fn deliver(&self, id: u64, message: HubMessage) {
        let Some(route) = self.by_id.get(&id) else {
            return;
        };
        // A lagged socket is being closed: nothing more is queued for it.
        if route.lagged.load(Ordering::Relaxed) {
            return;
        }
        if route.tx.try_send(message).is_err() {
            // Full (or gone): the socket is too far behind; it closes itself.
            route.lagged.store(true, Ordering::Relaxed);
        }
    }

    fn dispatch(&self, message: HubMessage) {
        match &message {
            HubMessage::Event(event) => {
                let Some(ids) = self.by_customer.get(&event.customer_id) else {
                    return;
                };
                for id in ids {
                    let matches = self.by_id[id]
                        .topics
                        .iter()
                        .any(|t| t.matches(&event.customer_id, event));
                    if matches {
                        self.deliver(*id, message.clone());
                    }
                }
            }
            HubMessage::Resync => {
                for id in self.by_id.keys() {
                    self.deliver(*id, HubMessage::Resync);
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct EventHub {
    routes: Arc<Mutex<Routes>>,
    next_id: Arc<AtomicU64>,
    capacity: usize,
    /// The process's shutdown signal, which every socket watches.
    shutdown: watch::Receiver<bool>,
    /// Woken when the last socket deregisters.
    all_closed: Arc<Notify>,
    /// How long a socket may take to close (send its close frame, hear the reply).
    close_within: Duration,
    feed: Arc<Feed>,
}

/// Whether the hub should be subscribed, and whether it is.
struct Feed {
    /// True while any socket is registered.
    wanted: watch::Sender<bool>,
    /// True while the subscription to the exchanges is in place (events published from now on
    /// reach the sockets).
    consuming: watch::Sender<bool>,
    /// A socket was told "subscribed" before the subscription was in place (the broker was
    /// unreachable): once it is, every socket is told to resync.
    owed_resync: AtomicBool,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A socket's registration: its queue, whether it fell behind, and the shutdown signal it
/// closes on. Deregisters on drop.
pub struct Registration {
    hub: EventHub,
    id: u64,
    pub events: mpsc::Receiver<HubMessage>,
    pub lagged: Arc<AtomicBool>,
    /// True once the process shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl Registration {
    /// Waits, at most `limit`, until the hub's subscription is in place: every event committed
    /// after this returns then reaches the socket's topics. If it is not in place by then (the
    /// broker is unreachable), the sockets are told to resync once it is.
    pub async fn wait_for_feed(&self, limit: Duration) {
        let mut consuming = self.hub.feed.consuming.subscribe();
        if tokio::time::timeout(limit, consuming.wait_for(|c| *c))
            .await
            .is_err()
        {
            // Set after the hub may have started consuming and checked the flag: then the
            // events from here on reach this socket anyway, and a later resync is spurious.
            self.hub.feed.owed_resync.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the hub found this socket's queue full: it is to be told and closed.
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Replaces the socket's topics.
    pub fn set_topics(&self, topics: Vec<Topic>) {
        if let Some(route) = self.hub.lock().by_id.get_mut(&self.id) {
            route.topics = topics;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.hub.lock();
        if let Some(route) = routes.by_id.remove(&self.id)
            && let Some(ids) = routes.by_customer.get_mut(&route.customer_id)
        {
            ids.remove(&self.id);
            if ids.is_empty() {
                routes.by_customer.remove(&route.customer_id);
            }
        }
        if routes.by_id.is_empty() {
            self.hub.feed.wanted.send_replace(false);
            self.hub.all_closed.notify_waiters();
        }
    }
}

impl EventHub {
    /// Starts consuming `chat_exchange` and `message_exchange` from `bus`. A socket may fall
    /// `settings.buffer_events` behind before it is dropped. When `shutdown` turns true the
    /// sockets close, and the returned task ends once they have (or could have).
    pub fn start(
        bus: EventBus,
        chat_exchange: &str,
        message_exchange: &str,
        settings: &WsSettings,
        shutdown: watch::Receiver<bool>,
    ) -> (EventHub, JoinHandle<()>) {
        let hub = EventHub {
            routes: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            capacity: settings.buffer_events.max(1),
            shutdown: shutdown.clone(),
            all_closed: Arc::new(Notify::new()),
            close_within: settings.send_timeout + crate::ws::CLOSE_GRACE,
            feed: Arc::new(Feed {
                wanted: watch::channel(false).0,
                consuming: watch::channel(false).0,
                owed_resync: AtomicBool::new(false),
            }),
        };
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
        let linger = settings.idle_unsubscribe_after;
        let task = tokio::spawn(run(bus, spec, linger, hub.clone(), shutdown));
        (hub, task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a socket of `customer_id` (with no topics yet).
    pub fn register(&self, customer_id: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut routes = self.lock();
        routes.by_id.insert(
            id,
            Route {
                customer_id: customer_id.to_owned(),
                topics: Vec::new(),
                tx,
                lagged: lagged.clone(),
            },
        );
        routes
            .by_customer
            .entry(customer_id.to_owned())
            .or_default()
            .insert(id);
        // Under the routes lock, as the hub's decision to unsubscribe is.
        if routes.by_id.len() == 1 {
            self.feed.wanted.send_replace(true);
        }
        drop(routes);
        Registration {
            hub: self.clone(),
            id,
            events,
            lagged,
            shutdown: self.shutdown.clone(),
        }
    }

    /// Whether the hub is subscribed to the exchanges right now.
    pub fn is_consuming(&self) -> bool {
        *self.feed.consuming.borrow()
    }

    /// How many sockets are registered.
    pub fn sockets(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Waits until no socket is registered, at most `limit`.
    async fn all_sockets_closed(&self, limit: Duration) {
        let wait = async {
            loop {
                let closed = self.all_closed.notified();
                tokio::pin!(closed);
                // Registered before looking, so a socket closing in between is not missed.
                closed.as_mut().enable();
                if self.sockets() == 0 {
                    return;
                }
                closed.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!(
                open = self.sockets(),
                "event hub: sockets still open at shutdown"
            );
        }
    }

    fn dispatch(&self, message: HubMessage) {
        self.lock().dispatch(message);
    }

    /// Whether any socket of this process belongs to the tenant.
    fn has_sockets_of(&self, customer_id: &str) -> bool {
        self.lock().by_customer.contains_key(customer_id)
    }
}

async fn run(
    bus: EventBus,
    spec: SubscriptionSpec,
    linger: Duration,
    hub: EventHub,
    mut shutdown: watch::Receiver<bool>,
) {
    consume(bus, spec, linger, &hub, &mut shutdown).await;
    hub.feed.consuming.send_replace(false);
    // The sockets watch the same signal and are closing: give them the time a close takes.
    hub.all_sockets_closed(hub.close_within).await;
}

/// How a subscription's stream ended.
enum FeedEnd {
    Shutdown,
    /// Interrupted (the connection was lost): events may have been missed.
    Interrupted,
    /// No socket for `linger`: unsubscribed.
    Idle,
}

/// Subscribes while sockets are open, and feeds them until `shutdown`, resubscribing whenever
/// the stream is interrupted.
async fn consume(
    bus: EventBus,
    spec: SubscriptionSpec,
    linger: Duration,
    hub: &EventHub,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut wanted = hub.feed.wanted.subscribe();
    let mut interrupted = false;
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = wanted.wait_for(|w| *w) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let mut sub = match bus.subscribe(spec.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                interrupted = true;
                tracing::warn!(error = %e, retry_in = ?backoff, "event hub: subscribe failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        hub.feed.consuming.send_replace(true);
        // After `consuming` is set: a socket that sets the flag later hears every event anyway.
        let owed = hub.feed.owed_resync.swap(false, Ordering::SeqCst);
        if interrupted || owed {
            tracing::info!("event hub: subscribed again; telling sockets to resync");
            hub.dispatch(HubMessage::Resync);
        }
        interrupted = false;
        match feed(&mut sub, linger, hub, &mut wanted, shutdown).await {
            FeedEnd::Shutdown => return,
            FeedEnd::Interrupted => {
                hub.feed.consuming.send_replace(false);
                tracing::warn!("event hub: subscription ended; resubscribing");
                interrupted = true;
            }
            // `consuming` was cleared under the routes lock.
            FeedEnd::Idle => tracing::debug!("event hub: no sockets; unsubscribed"),
        }
        // Cancels the consumer: its auto-deleted queue goes with it.
        drop(sub);
    }
}

/// Routes `sub`'s events to the sockets until it ends, `shutdown`, or no socket has been open
/// for `linger`.
async fn feed(
    sub: &mut Subscription,
    linger: Duration,
    hub: &EventHub,
    wanted: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> FeedEnd {
    let idle_deadline = |wanted: bool| (!wanted).then(|| tokio::time::Instant::now() + linger);
    let mut idle_at = idle_deadline(*wanted.borrow_and_update());
    loop {
        let idle = async {
            match idle_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let delivery = tokio::select! {
            d = sub.next() => d,
            _ = wanted.changed() => {
                idle_at = idle_deadline(*wanted.borrow_and_update());
                continue;
            }
            () = idle => {
                // Decided under the routes lock, which a socket registers under: one that
                // registers after this sees `consuming` false and waits for the next
                // subscription.
                let routes = hub.lock();
                if routes.by_id.is_empty() {
                    hub.feed.consuming.send_replace(false);
                    return FeedEnd::Idle;
                }
                idle_at = None;
                continue;
            }
            _ = shutdown.wait_for(|s| *s) => return FeedEnd::Shutdown,
        };
        let Some(delivery) = delivery else {
            return FeedEnd::Interrupted;
        };
        let wanted = |customer: &str| hub.has_sockets_of(customer);
        match parse(
            &delivery.message.routing_key,
            &delivery.message.payload,
            wanted,
        ) {
            Ok(Some(event)) => hub.dispatch(HubMessage::Event(Arc::new(event))),
            // No socket of this gateway could want it.
            Ok(None) => {}
            Err(Unreadable) => {
                tracing::warn!(key = %delivery.message.routing_key, "event hub: unreadable event skipped")
            }
        }
        let _ = delivery.ack().await;
    }
}

/// A payload that is not an event the hub can route (not CloudEvents JSON, an unknown type, no
/// tenant or scope).
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Reads a CloudEvents payload into what routing needs. `wanted` is asked first, with the
/// event's tenant: the rest (the scope, the frame) is worked out only for a tenant this
/// gateway has sockets for (`Ok(None)` otherwise).
///
/// One pass over the envelope that borrows instead of building a JSON tree, and the frame
/// made around the event's `data` as it arrived (its bytes, so its field order too).
pub fn parse(
    event_type: &str,
    payload: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<Option<HubEvent>, Unreadable> {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow, default)]
        event_type: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        customerid: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        ownerid: Option<Cow<'a, str>>,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Scope<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        chat_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        chatroom_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        customer_id: Option<Cow<'a, str>>,
    }

    let envelope: Envelope<'_> = serde_json::from_slice(payload).map_err(|_| Unreadable)?;
    let event_type = envelope.event_type.as_deref().unwrap_or(event_type);
    let resource = Resource::of_event(event_type).ok_or(Unreadable)?;
    let scope: Scope<'_> = serde_json::from_str(envelope.data.get()).map_err(|_| Unreadable)?;
    let customer_id = envelope
        .customerid
        .as_deref()
        .or(scope.customer_id.as_deref())
        .ok_or(Unreadable)?;
    if !wanted(customer_id) {
        return Ok(None);
    }
    let scope_id = match resource {
        Resource::Chat | Resource::Chatroom => scope.id,
        Resource::Messagechat => scope.chat_id,
        Resource::Messagechatroom => scope.chatroom_id,
    }
    .ok_or(Unreadable)?;
    let event_type_json = serde_json::to_string(event_type).map_err(|_| Unreadable)?;
    let frame = format!(
        "{{\"type\":{event_type_json},\"data\":{}}}",
        envelope.data.get()
    );
    Ok(Some(HubEvent {
        resource,
        customer_id: customer_id.to_owned(),
        owner_id: envelope.ownerid.map(Cow::into_owned),
        scope_id: scope_id.into_owned(),
        frame: frame.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn parses_what_routing_needs() {
        let payload = serde_json::json!({
            "specversion": "1.0", "id": "e", "type": "messagechatroom_created", "customerid": "c", "ownerid": "o",
            "data": {"id": "m", "chatroom_id": "r", "text": "hi"}
        });
        let e = parse(
            "messagechatroom_created",
            payload.to_string().as_bytes(),
            |_| true,
        )
        .unwrap()
        .unwrap();
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
        // A tenant without sockets here: skipped before the frame is made.
        let asked = std::cell::Cell::new(None);
        let skipped = parse(
            "messagechatroom_created",
            payload.to_string().as_bytes(),
            |c| {
                asked.set(Some(c.to_owned()));
                false
            },
        );
        assert!(matches!(skipped, Ok(None)));
        assert_eq!(asked.take().as_deref(), Some("c"));
        assert!(parse("x", b"not json", |_| true).is_err());
        assert!(
            parse(
                "chat_created",
                br#"{"type":"chat_created","customerid":"c","data":{}}"#,
                |_| true
            )
            .is_err()
        );
        // Escapes inside the data survive as they were sent.
        let escaped =
            br#"{"type":"chat_created","customerid":"c","data":{"id":"x","name":"a\"b\u00e9"}}"#;
        let e = parse("chat_created", escaped, |_| true).unwrap().unwrap();
        assert_eq!(
            &*e.frame,
            r#"{"type":"chat_created","data":{"id":"x","name":"a\"b\u00e9"}}"#
        );
    }
}
