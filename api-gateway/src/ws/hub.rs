//! The event hub: one subscription per gateway process to both exchanges (its own exclusive
//! queue on RabbitMQ, or the in-process bus), bound only to the tenants of this process's open
//! sockets (`*.<customer id>` on each exchange, bound when a tenant's first socket registers
//! and unbound when its last one goes), so gateway replicas share the socket load instead of
//! each one receiving every tenant's events. The subscription itself is held only while
//! sockets are open (and for `WsSettings::idle_unsubscribe_after` after the last one closes).
//!
//! An event stands for one or many resources (a message to a 1,000-person chat names its 1,000
//! copies): the hub works out, once per event, which of them each socket of the tenant wants
//! (`Selector`), and queues the event with that selection; the socket renders the frames as it
//! sends them, so a large event is parsed once and never held as a thousand frames. Each socket
//! has a bounded queue; one that falls that far behind is marked lagged, told so and dropped:
//! memory does not grow with slow clients. When the process shuts down every socket is closed
//! (1001), and the hub's task ends once they all have, or after the time a close may take.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline::bus::{Binder, EventBus, Subscription, SubscriptionSpec};
use pipeline::contract::{Item, ParsedEvent, Resource, tenant_pattern};
use pipeline::typing::TypingSignal;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ws::WsSettings;
use crate::ws::topic::{Audience, Topic};

#[derive(Debug, Clone)]
pub enum HubMessage {
    /// An event, and which of its resources (`ParsedEvent::item`) the socket's topics match.
    Event {
        event: Arc<ParsedEvent>,
        items: Vec<u32>,
    },
    /// A frame made already (an agent typing in the socket's chatroom).
    Frame(Arc<str>),
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

    /// Offers the event to the sockets of its tenant, each with the resources it wants.
    fn dispatch(&self, event: Arc<ParsedEvent>) {
        let Some(ids) = self.by_customer.get(&event.customer_id) else {
            return;
        };
        let selector = Selector::new(&event);
        for id in ids {
            let items = selector.select(&self.by_id[id].topics);
            if !items.is_empty() {
                let message = HubMessage::Event {
                    event: event.clone(),
                    items,
                };
                self.deliver(*id, message);
            }
        }
    }

    /// Offers a typing signal to the sockets of its tenant: each other participant whose socket
    /// subscribes to its own chatroom (`agent_id:<owner>:chatroom[:<its chatroom>]`) gets a
    /// frame naming that chatroom.
    fn dispatch_typing(&self, signal: &TypingSignal) {
        let Some(ids) = self.by_customer.get(&signal.customer_id) else {
            return;
        };
        for id in ids {
            let topics = &self.by_id[id].topics;
            for (room, owner) in &signal.chatrooms {
                if *owner == signal.agent_id {
                    continue;
                }
                let wanted = topics.iter().any(|t| {
                    t.resource == Resource::Chatroom
                        && t.audience == Audience::Agent(owner.clone())
                        && t.id.as_ref().is_none_or(|narrowed| narrowed == room)
                });
                if wanted {
                    self.deliver(*id, HubMessage::Frame(signal.frame(room).into()));
                }
            }
        }
    }

    fn resync(&self) {
        for id in self.by_id.keys() {
            self.deliver(*id, HubMessage::Resync);
        }
    }
}

/// Which resources of an event a socket's topics match. A small event is looked through item
/// by item; a large one (a message to a large chat) through indexes by owner and by scope made
/// once, so each socket costs a lookup per topic, not a pass over a thousand items.
struct Selector<'a> {
    items: Vec<Item<'a>>,
    by_owner: std::sync::OnceLock<HashMap<&'a str, Vec<u32>>>,
    by_scope: std::sync::OnceLock<HashMap<&'a str, Vec<u32>>>,
}

/// Events of more items than this are looked through by index.
const INDEXED_FROM: usize = 16;

impl<'a> Selector<'a> {
    fn new(event: &'a ParsedEvent) -> Self {
        Selector {
            items: event.items().collect(),
            by_owner: Default::default(),
            by_scope: Default::default(),
        }
    }

    fn index(&self, key: impl Fn(&Item<'a>) -> Option<&'a str>) -> HashMap<&'a str, Vec<u32>> {
        let mut index: HashMap<&'a str, Vec<u32>> = HashMap::new();
        for (n, item) in self.items.iter().enumerate() {
            if let Some(k) = key(item) {
                index.entry(k).or_default().push(n as u32);
            }
        }
        index
    }

    /// The items any of `topics` matches, in order.
    fn select(&self, topics: &[Topic]) -> Vec<u32> {
        let matching = |n: &u32| topics.iter().any(|t| t.matches(&self.items[*n as usize]));
        if self.items.len() <= INDEXED_FROM {
            return (0..self.items.len() as u32).filter(matching).collect();
        }
        let mut selected: Vec<u32> = Vec::new();
        for topic in topics {
            let candidates: &[u32] = match (&topic.audience, &topic.id) {
                (_, Some(id)) => self
                    .by_scope
                    .get_or_init(|| self.index(|i| Some(i.scope_id)))
                    .get(id.as_str())
                    .map_or(&[], Vec::as_slice),
                (Audience::Agent(agent), None) => self
                    .by_owner
                    .get_or_init(|| self.index(|i| i.owner_id))
                    .get(agent.as_str())
                    .map_or(&[], Vec::as_slice),
                (Audience::Customer(_), None) => {
                    selected.extend(
                        (0..self.items.len() as u32)
                            .filter(|n| topic.matches(&self.items[*n as usize])),
                    );
                    continue;
                }
            };
            selected.extend(
                candidates
                    .iter()
                    .filter(|n| topic.matches(&self.items[**n as usize])),
            );
        }
        selected.sort_unstable();
        selected.dedup();
        selected
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
    stats: Arc<HubStats>,
    /// Where typing signals are published.
    typing: Arc<(EventBus, String)>,
}

/// The exchanges the hub takes its sockets' events from.
#[derive(Debug, Clone)]
pub struct HubExchanges {
    pub chat: String,
    pub message: String,
    /// "Is typing" signals between gateways (the hub declares it).
    pub typing: String,
}

impl HubExchanges {
    /// The exchanges of these names, and the default typing exchange.
    pub fn new(chat: &str, message: &str) -> Self {
        HubExchanges {
            chat: chat.to_owned(),
            message: message.to_owned(),
            typing: pipeline::topology::TYPING_EXCHANGE.to_owned(),
        }
    }

    pub fn with_typing(mut self, typing: &str) -> Self {
        self.typing = typing.to_owned();
        self
    }
}

/// Whether the hub should be subscribed and to which tenants, and what is in place.
struct Feed {
    /// True while any socket is registered.
    wanted: watch::Sender<bool>,
    /// True while the subscription to the exchanges is in place.
    consuming: watch::Sender<bool>,
    /// The tenants bound on the subscription: their events published from now on reach the
    /// sockets.
    bound: watch::Sender<HashSet<String>>,
    /// Bound tenants whose bindings are being removed (their last socket went): a socket of
    /// theirs that registers meanwhile waits for the next rebinding rather than take these for
    /// bindings in place (the events between the two would be lost). Marked under the routes
    /// lock, cleared with the removal from `bound`.
    unbinding: std::sync::Mutex<HashSet<String>>,
    /// The tenants with sockets changed: bindings to add or remove.
    tenants_changed: Notify,
    /// A socket was told "subscribed" before the subscription was in place (the broker was
    /// unreachable): once it is, every socket is told to resync.
    owed_resync: AtomicBool,
}

impl Feed {
    fn unbinding(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unbinding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the hub received from the broker.
#[derive(Debug, Default)]
pub struct HubStats {
    received: AtomicU64,
    unwanted: AtomicU64,
}

impl HubStats {
    /// Events received, and of those how many were of a tenant with no socket here (its
    /// binding was being removed as they were routed).
    pub fn received(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.unwanted.load(Ordering::Relaxed),
        )
    }
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
    customer_id: String,
    pub events: mpsc::Receiver<HubMessage>,
    pub lagged: Arc<AtomicBool>,
    /// True once the process shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl Registration {
    /// Waits, at most `limit`, until the hub's subscription is in place and bound to this
    /// socket's tenant: every event committed after this returns then reaches the socket's
    /// topics. If it is not in place by then (the broker is unreachable), the sockets are told
    /// to resync once it is.
    pub async fn wait_for_feed(&self, limit: Duration) {
        let mut bound = self.hub.feed.bound.subscribe();
        let customer = self.customer_id.clone();
        let feed = &self.hub.feed;
        let in_place = async {
            let _ = bound
                .wait_for(|tenants| {
                    *feed.consuming.borrow()
                        && tenants.contains(&customer)
                        && !feed.unbinding().contains(&customer)
                })
                .await;
        };
        if tokio::time::timeout(limit, in_place).await.is_err() {
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
                self.hub.feed.tenants_changed.notify_one();
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
        exchanges: &HubExchanges,
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
                bound: watch::channel(HashSet::new()).0,
                unbinding: std::sync::Mutex::new(HashSet::new()),
                tenants_changed: Notify::new(),
                owed_resync: AtomicBool::new(false),
            }),
            stats: Arc::default(),
            typing: Arc::new((bus.clone(), exchanges.typing.clone())),
        };
        let exchanges = exchanges.clone();
        let linger = settings.idle_unsubscribe_after;
        let task = tokio::spawn(run(bus, exchanges, linger, hub.clone(), shutdown));
        (hub, task)
    }

    /// Publishes a typing signal to every gateway (this one included).
    pub async fn publish_typing(
        &self,
        signal: &TypingSignal,
    ) -> Result<(), pipeline::bus::BusError> {
        let (bus, exchange) = &*self.typing;
        let message = pipeline::bus::EventMessage {
            exchange: exchange.clone(),
            routing_key: signal.routing_key(),
            message_id: uuid::Uuid::new_v4().to_string(),
            payload: serde_json::to_vec(signal)
                .expect("a typing signal serializes")
                .into(),
            request_id: None,
            traceparent: None,
        };
        bus.publish(std::slice::from_ref(&message)).await
    }

    /// What the hub has received from the broker.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Whether the hub's subscription is bound to the tenant's events.
    pub fn is_bound(&self, customer_id: &str) -> bool {
        self.feed.bound.borrow().contains(customer_id)
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
        let sockets = routes
            .by_customer
            .entry(customer_id.to_owned())
            .or_default();
        sockets.insert(id);
        if sockets.len() == 1 {
            self.feed.tenants_changed.notify_one();
        }
        // Under the routes lock, as the hub's decision to unsubscribe is.
        if routes.by_id.len() == 1 {
            self.feed.wanted.send_replace(true);
        }
        drop(routes);
        Registration {
            hub: self.clone(),
            id,
            customer_id: customer_id.to_owned(),
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

    /// Whether any socket of this process belongs to the tenant.
    fn has_sockets_of(&self, customer_id: &str) -> bool {
        self.lock().by_customer.contains_key(customer_id)
    }

    /// The tenants with sockets here.
    fn tenants(&self) -> HashSet<String> {
        self.lock().by_customer.keys().cloned().collect()
    }

    /// The tenants with sockets here, and the bound ones without (now marked as unbinding:
    /// decided under the lock a socket registers under).
    fn tenants_and_leaving(&self) -> (HashSet<String>, HashSet<String>) {
        let routes = self.lock();
        let wanted: HashSet<String> = routes.by_customer.keys().cloned().collect();
        let leaving: HashSet<String> = self
            .feed
            .bound
            .borrow()
            .difference(&wanted)
            .cloned()
            .collect();
        self.feed.unbinding().extend(leaving.iter().cloned());
        (wanted, leaving)
    }
}

impl HubExchanges {
    /// The bindings of one tenant's events.
    fn of_tenant(&self, customer_id: &str) -> [(&str, String); 3] {
        let pattern = tenant_pattern(customer_id);
        [
            (&self.chat, pattern.clone()),
            (&self.message, pattern.clone()),
            (&self.typing, pattern),
        ]
    }

    /// A subscription bound to `tenants`.
    fn spec(&self, tenants: &HashSet<String>) -> SubscriptionSpec {
        SubscriptionSpec {
            // Broker-named, exclusive, auto-deleted: each gateway instance has its own.
            queue: String::new(),
            bindings: tenants
                .iter()
                .flat_map(|t| self.of_tenant(t))
                .map(|(exchange, pattern)| (exchange.to_owned(), pattern))
                .collect(),
            exclusive: true,
            prefetch: 1024,
        }
    }
}

async fn run(
    bus: EventBus,
    exchanges: HubExchanges,
    linger: Duration,
    hub: EventHub,
    mut shutdown: watch::Receiver<bool>,
) {
    consume(bus, exchanges, linger, &hub, &mut shutdown).await;
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
    exchanges: HubExchanges,
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
        let tenants = hub.tenants();
        // The typing exchange is the gateways' own: declared before it is bound.
        let subscribed = match bus.prepare(&exchanges.typing).await {
            Ok(()) => bus.subscribe(exchanges.spec(&tenants)).await,
            Err(e) => Err(e),
        };
        let mut sub = match subscribed {
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
        hub.feed.bound.send_replace(tenants);
        // After `consuming` is set: a socket that sets the flag later hears every event anyway.
        let owed = hub.feed.owed_resync.swap(false, Ordering::SeqCst);
        if interrupted || owed {
            tracing::info!("event hub: subscribed again; telling sockets to resync");
            hub.lock().resync();
        }
        interrupted = false;
        let end = feed(&mut sub, &exchanges, linger, hub, &mut wanted, shutdown).await;
        hub.feed.bound.send_replace(HashSet::new());
        match end {
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

/// Binds and unbinds tenants as their sockets come and go, and routes `sub`'s events to the
/// sockets, until it ends, `shutdown`, or no socket has been open for `linger`.
async fn feed(
    sub: &mut Subscription,
    exchanges: &HubExchanges,
    linger: Duration,
    hub: &EventHub,
    wanted: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> FeedEnd {
    let idle_deadline = |wanted: bool| (!wanted).then(|| tokio::time::Instant::now() + linger);
    let mut idle_at = idle_deadline(*wanted.borrow_and_update());
    let binder = sub.binder();
    loop {
        let idle = async {
            match idle_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let delivery = tokio::select! {
            d = sub.next() => Some(d),
            () = hub.feed.tenants_changed.notified() => None,
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
            // The tenants with sockets changed.
            if let Err(e) = rebind(&binder, exchanges, hub).await {
                tracing::warn!(error = %e, "event hub: binding tenants failed; subscribing again");
                return FeedEnd::Interrupted;
            }
            continue;
        };
        let Some(delivery) = delivery else {
            return FeedEnd::Interrupted;
        };
        if delivery.message.exchange == exchanges.typing {
            route_typing(&delivery.message.payload, hub);
        } else {
            route(&delivery.message.payload, hub);
        }
        let _ = delivery.ack().await;
    }
}

/// Binds the tenants that have sockets and are not bound yet, and unbinds those that have
/// none any more.
async fn rebind(
    binder: &Binder,
    exchanges: &HubExchanges,
    hub: &EventHub,
) -> Result<(), pipeline::bus::BusError> {
    let (wanted, leaving) = hub.tenants_and_leaving();
    let bound = hub.feed.bound.borrow().clone();
    for tenant in wanted.difference(&bound) {
        for (exchange, pattern) in exchanges.of_tenant(tenant) {
            binder.bind(exchange, &pattern).await?;
        }
        hub.feed.bound.send_modify(|b| {
            b.insert(tenant.clone());
        });
    }
    for tenant in &leaving {
        // An event routed meanwhile finds no socket of its tenant and is dropped here.
        let unbound = async {
            for (exchange, pattern) in exchanges.of_tenant(tenant) {
                binder.unbind(exchange, &pattern).await?;
            }
            Ok::<_, pipeline::bus::BusError>(())
        }
        .await;
        // Failed, the subscription is made again from scratch (and bound anew).
        hub.feed.bound.send_modify(|b| {
            b.remove(tenant);
            hub.feed.unbinding().remove(tenant);
        });
        unbound?;
    }
    Ok(())
}

/// Reads an event and offers it to the sockets of its tenant. Its envelope is read first: the
/// rest is parsed only for a tenant this gateway has sockets for.
fn route(payload: &[u8], hub: &EventHub) {
    let metrics = common::metrics::metrics();
    hub.stats.received.fetch_add(1, Ordering::Relaxed);
    metrics.hub_events_received.inc();
    let (attributes, data) = match pipeline::cloudevent::attributes(payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            tracing::warn!(error = %e, "event hub: unreadable event skipped");
            return;
        }
    };
    if !hub.has_sockets_of(&attributes.customer_id) {
        hub.stats.unwanted.fetch_add(1, Ordering::Relaxed);
        metrics.hub_events_unwanted.inc();
        return;
    }
    match pipeline::cloudevent::parse_data(attributes, data) {
        Ok(event) => hub.lock().dispatch(Arc::new(event)),
        Err(e) => tracing::warn!(error = %e, "event hub: unreadable event skipped"),
    }
}

/// Offers a typing signal to the sockets of its tenant.
fn route_typing(payload: &[u8], hub: &EventHub) {
    match serde_json::from_slice::<TypingSignal>(payload) {
        Ok(signal) if signal.v == TypingSignal::VERSION => hub.lock().dispatch_typing(&signal),
        Ok(signal) => tracing::debug!(
            v = signal.v,
            "event hub: typing signal of another version skipped"
        ),
        Err(e) => tracing::warn!(error = %e, "event hub: unreadable typing signal skipped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::resources::{AddressJson, ChatmessageJson};
    use pipeline::contract::{CopyItem, EventData, EventType, MessagechatEventData};

    const C: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

    /// A message to a chat of `rooms` chatrooms, room `n` owned by agent `a<n>`.
    fn message_event(rooms: usize) -> ParsedEvent {
        ParsedEvent {
            id: "e".into(),
            event_type: EventType::MESSAGECHAT_CREATED,
            customer_id: C.into(),
            owner_id: None,
            data: EventData::Messagechat(MessagechatEventData {
                chatmessage: ChatmessageJson {
                    id: "m".into(),
                    customer_id: C.into(),
                    chat_id: "chat".into(),
                    source: AddressJson::default(),
                    message_type: "normal".into(),
                    text: "hi".into(),
                    medias: Vec::new(),
                    tm_create: "t".into(),
                    tm_update: "t".into(),
                    tm_delete: common::time::LIVE.into(),
                },
                chatroommessages: (0..rooms)
                    .map(|n| CopyItem(format!("k{n}"), format!("r{n}"), format!("a{n}")))
                    .collect(),
            }),
        }
    }

    fn topic(audience: Audience, resource: &str, id: Option<&str>) -> Topic {
        Topic {
            audience,
            resource: crate::ws::topic::Resource::parse(resource).unwrap(),
            id: id.map(str::to_owned),
        }
    }

    /// Small events are looked through item by item, large ones by index: the same answers.
    #[test]
    fn sockets_get_the_items_their_topics_match_whatever_the_size_of_the_event() {
        for rooms in [3, INDEXED_FROM + 5, 1000] {
            let event = message_event(rooms);
            let selector = Selector::new(&event);
            let last = rooms - 1;
            let agent = |n: usize| Audience::Agent(format!("a{n}"));
            let customer = || Audience::Customer(C.into());
            let cases: Vec<(Vec<Topic>, Vec<u32>)> = vec![
                (vec![topic(agent(1), "messagechatroom", None)], vec![2]),
                (
                    vec![topic(
                        agent(last),
                        "messagechatroom",
                        Some(&format!("r{last}")),
                    )],
                    vec![rooms as u32],
                ),
                (vec![topic(agent(1), "messagechatroom", Some("r0"))], vec![]),
                (
                    vec![topic(customer(), "messagechat", Some("chat"))],
                    vec![0],
                ),
                (
                    vec![topic(customer(), "messagechat", Some("other"))],
                    vec![],
                ),
                (
                    vec![topic(customer(), "messagechatroom", None)],
                    (1..=rooms as u32).collect(),
                ),
                (
                    vec![
                        topic(agent(0), "messagechatroom", None),
                        topic(customer(), "messagechat", None),
                        topic(customer(), "messagechatroom", Some("r0")),
                    ],
                    vec![0, 1],
                ),
                (vec![topic(agent(0), "chatroom", None)], vec![]),
            ];
            for (topics, expected) in cases {
                assert_eq!(
                    selector.select(&topics),
                    expected,
                    "{rooms} rooms: {topics:?}"
                );
            }
        }
    }
}
