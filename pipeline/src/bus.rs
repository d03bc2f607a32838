//! The event bus: RabbitMQ in production, an in-process fan-out for the embedded single-binary
//! mode and unit tests. One enum rather than a trait object keeps the call sites plain `async`.
//!
//! Delivery is at least once: `publish` returns only once every message is confirmed (publisher
//! confirms on AMQP, channel capacity in-process), and any error means "retry the whole batch".
//!
//! A publisher knows this system's durable subscribers of its exchange (`with_subscribers`):
//! it declares their queues and bindings before it publishes (on each connection, and again
//! every `TOPOLOGY_REFRESH`), so a subscriber that starts after the publisher finds every
//! event waiting in its queue; and it publishes what they bind as `mandatory`, so an event
//! the broker could route nowhere comes back as an error instead of being dropped.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{Mutex, mpsc};

use common::{REQUEST_ID_HEADER, TRACEPARENT_HEADER};

/// How long a connection attempt may take before the broker counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a batch may wait for its confirms; a broker that stops answering must not hang the
/// relay forever (the connection is dropped and the batch retried).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long declaring and subscribing may take once connected: a broker that accepted the
/// connection and then stopped answering must not hang a subscriber (or its start-up).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The body is a structured-mode CloudEvent.
pub use crate::cloudevent::CONTENT_TYPE;
/// AMQP delivery mode 2: the broker writes the message to disk (in durable queues).
const PERSISTENT: u8 = 2;
/// How often a publisher declares its subscribers' queues again on a connection that stays
/// up (one deleted meanwhile is back within this).
pub const TOPOLOGY_REFRESH: Duration = Duration::from_secs(60);

/// Where RabbitMQ is: its URL (`amqp://`, or `amqps://` for TLS) and, for TLS, the CA
/// certificates to trust besides the system's.
#[derive(Clone, Default)]
pub struct AmqpEndpoint {
    pub url: String,
    /// PEM certificates (`AMQP_CA_FILE`).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for AmqpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries the password.
        f.debug_struct("AmqpEndpoint")
            .field("url", &common::db::redact_url(&self.url))
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

impl From<&str> for AmqpEndpoint {
    fn from(url: &str) -> Self {
        AmqpEndpoint {
            url: url.to_owned(),
            ca_pem: None,
        }
    }
}

impl From<String> for AmqpEndpoint {
    fn from(url: String) -> Self {
        AmqpEndpoint { url, ca_pem: None }
    }
}

impl From<&String> for AmqpEndpoint {
    fn from(url: &String) -> Self {
        AmqpEndpoint::from(url.as_str())
    }
}

/// The RabbitMQ settings every process takes (flattened into each one's clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// RabbitMQ: `amqp://user:password@host:5672/vhost`, or `amqps://...:5671/...` for TLS
    /// (the broker's certificate is verified against the system's CAs and AMQP_CA_FILE).
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// A PEM file of CA certificates to trust for `amqps://`, besides the system's.
    #[arg(long, env = "AMQP_CA_FILE")]
    pub amqp_ca_file: Option<std::path::PathBuf>,
}

impl AmqpArgs {
    /// The configured endpoint (`what` names who needs it, for the error).
    pub fn endpoint(&self, what: &str) -> Result<AmqpEndpoint, String> {
        let url = self
            .amqp_url
            .clone()
            .ok_or_else(|| format!("AMQP_URL is required ({what})"))?;
        let ca_pem = match &self.amqp_ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("AMQP_CA_FILE {}: {e}", path.display()))?,
            ),
        };
        if ca_pem.is_some() && !url.starts_with("amqps://") {
            return Err("AMQP_CA_FILE is set but AMQP_URL is not amqps://".into());
        }
        Ok(AmqpEndpoint { url, ca_pem })
    }
}

/// One event as published: routing key = event type; message_id = event id (the CloudEvents id).
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub payload: Arc<[u8]>,
    pub request_id: Option<String>,
    /// W3C trace context of the request that caused the event.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker not reachable within {0:?}")]
    ConnectTimeout(Duration),
    #[error("publish not confirmed within {0:?}")]
    ConfirmTimeout(Duration),
    /// A declare or subscribe the broker did not answer in time (the connection is dropped).
    #[error("broker did not answer {what} within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("broker refused (nacked) message {message_id}")]
    Nacked { message_id: String },
    /// Published as mandatory and returned: no queue was bound for it, although a
    /// subscriber of this system binds it (its queue is gone).
    #[error("broker could route message {message_id} ({routing_key}) to no queue")]
    Unroutable {
        message_id: String,
        routing_key: String,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The channel ended before an ack/nack reached the broker (it will redeliver).
    #[error("channel closed")]
    Closed,
}

/// The broker's confirms of a sent batch.
pub struct PendingConfirms(Pin<Box<dyn Future<Output = Result<(), BusError>> + Send>>);

impl PendingConfirms {
    /// Resolves once every message of the batch is confirmed; on `Err`, send the batch again.
    pub async fn confirmed(self) -> Result<(), BusError> {
        self.0.await
    }
}

/// A subscription: a queue bound to `(exchange, binding pattern)` pairs.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// AMQP queue name; `""` lets the broker name it (only sensible with `exclusive`).
    pub queue: String,
    pub bindings: Vec<(String, String)>,
    /// Exclusive + auto-delete and consumed without acks (gateways, tests); otherwise a durable
    /// queue whose deliveries must be acked.
    pub exclusive: bool,
    /// Unacknowledged deliveries in flight (AMQP basic.qos); the channel capacity in-process.
    pub prefetch: u16,
}

#[derive(Clone)]
pub enum EventBus {
    Amqp(AmqpBus),
    InProcess(InProcessBus),
}

impl EventBus {
    /// Lazy: connects on first use, reconnects after any failure.
    pub fn amqp(endpoint: impl Into<AmqpEndpoint>) -> Self {
        EventBus::Amqp(AmqpBus::new(endpoint.into(), Vec::new()))
    }

    /// A publisher that declares this system's durable `subscribers` (their queues and
    /// bindings) before it publishes, and publishes what they bind as mandatory. The
    /// in-process bus keeps no queues: there, subscribers subscribe before anything is
    /// published (see the embedded default).
    pub fn with_subscribers(self, subscribers: Vec<SubscriptionSpec>) -> Self {
        match self {
            EventBus::Amqp(bus) => EventBus::Amqp(AmqpBus::new(
                bus.inner.endpoint.clone(),
                subscribers.into_iter().filter(|s| !s.exclusive).collect(),
            )),
            in_process => in_process,
        }
    }

    pub fn in_process() -> Self {
        EventBus::InProcess(InProcessBus::default())
    }

    /// Publishes in order and returns once every message is confirmed. On `Err` nothing is known
    /// about which messages made it: retry the whole batch (consumers dedupe by `message_id`).
    pub async fn publish(&self, batch: &[EventMessage]) -> Result<(), BusError> {
        self.send(batch).await?.confirmed().await
    }

    /// Sends the batch in order and returns without waiting for the broker's confirms, so that
    /// the next batch can go out while these are on their way. Batches sent one after another
    /// keep their order.
    pub async fn send(&self, batch: &[EventMessage]) -> Result<PendingConfirms, BusError> {
        match self {
            EventBus::Amqp(bus) => bus.send(batch).await,
            EventBus::InProcess(bus) => {
                bus.publish(batch).await;
                Ok(PendingConfirms(Box::pin(std::future::ready(Ok(())))))
            }
        }
    }

    /// Declares `exchange` and this system's subscribers of it (their queues and bindings)
    /// now, rather than at the first publish: subscribers can bind as soon as the publisher
    /// runs. The in-process bus has nothing to declare.
    pub async fn prepare(&self, exchange: &str) -> Result<(), BusError> {
        match self {
            EventBus::Amqp(bus) => bus.prepare(exchange).await,
            EventBus::InProcess(_) => Ok(()),
        }
    }

    /// Declares a place to set events aside (dead letters): a durable fanout exchange and a
    /// durable queue bound to it, both named `name`; publish to the exchange `name` to put an
    /// event there. (Not the default exchange: publishing there would need the right to
    /// reach any queue.) The in-process bus has no queues: a no-op.
    pub async fn declare_set_aside(&self, name: &str) -> Result<(), BusError> {
        match self {
            EventBus::Amqp(bus) => bus.declare_set_aside(name).await,
            EventBus::InProcess(_) => Ok(()),
        }
    }

    pub async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        match self {
            EventBus::Amqp(bus) => bus.subscribe(spec).await,
            EventBus::InProcess(bus) => Ok(bus.subscribe(spec)),
        }
    }

    /// Messages ready in the durable `queue` (a passive declare: the queue is not created);
    /// `None` on the in-process bus, which has no queues to measure.
    pub async fn queue_depth(&self, queue: &str) -> Result<Option<u32>, BusError> {
        match self {
            EventBus::Amqp(bus) => bus.queue_depth(queue).await.map(Some),
            EventBus::InProcess(_) => Ok(None),
        }
    }

    /// Whether the consuming connection is up (always, in-process), connecting it if it is
    /// not: the gateway is not ready without it, as its WebSockets would get no events. (Its
    /// hub subscribes only while sockets are open, so while none are, nothing else would
    /// notice that the connection is gone or bring it back.)
    pub async fn consumer_reachable(&self) -> bool {
        match self {
            EventBus::Amqp(bus) => bus.consumer_reachable().await,
            EventBus::InProcess(_) => true,
        }
    }
}

/// Samples the depth of the durable `queue` at each metrics scrape (on RabbitMQ; the in-process
/// bus has no queue to measure) and shows its dead-letter counter from 0, until `shutdown`.
pub fn watch_queue_depth(bus: EventBus, queue: &str, shutdown: tokio::sync::watch::Receiver<bool>) {
    use common::metrics::{QueueLabels, metrics};
    let labels = QueueLabels {
        queue: queue.to_owned(),
    };
    // Created at 0, so the series exists (and `increase()` works) before the first event.
    metrics()
        .consumer_dead_lettered
        .get_or_create(&labels)
        .inc_by(0);
    if matches!(bus, EventBus::InProcess(_)) {
        return;
    }
    metrics().add_probe(shutdown, move || {
        let (bus, labels) = (bus.clone(), labels.clone());
        Box::pin(async move {
            match bus.queue_depth(&labels.queue).await {
                Ok(Some(depth)) => {
                    metrics()
                        .consumer_queue_depth
                        .get_or_create(&labels)
                        .set(i64::from(depth));
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "metrics: queue depth not sampled"),
            }
        })
    });
}

// ---------------------------------------------------------------------------------------------
// AMQP

/// Publishing and consuming use separate connections: RabbitMQ blocks a publishing connection
/// under a resource alarm, which must not also stall consumers' acks.
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<AmqpInner>,
}

struct AmqpInner {
    endpoint: AmqpEndpoint,
    /// This system's durable subscribers of what this bus publishes.
    subscribers: Vec<SubscriptionSpec>,
    /// Set-aside places declared (`declare_set_aside`): fanout exchanges, not topic ones.
    set_aside: StdMutex<std::collections::HashSet<String>>,
    publisher: Mutex<Option<Publisher>>,
    consumer_conn: Mutex<Option<Connection>>,
}

impl AmqpInner {
    /// Whether a subscriber of this system binds `routing_key` on `exchange`: then the message
    /// must reach a queue (mandatory).
    fn bound(&self, exchange: &str, routing_key: &str) -> bool {
        self.subscribers.iter().any(|s| {
            s.bindings
                .iter()
                .any(|(ex, pattern)| ex == exchange && topic_matches(pattern, routing_key))
        })
    }
}

/// A connection with its confirm-mode channel, and the exchanges (with their subscribers'
/// queues) declared on it, with when.
struct Publisher {
    conn: Connection,
    channel: Channel,
    declared: HashMap<String, std::time::Instant>,
}

impl Publisher {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

impl AmqpBus {
    fn new(endpoint: AmqpEndpoint, subscribers: Vec<SubscriptionSpec>) -> Self {
        AmqpBus {
            inner: Arc::new(AmqpInner {
                endpoint,
                subscribers,
                set_aside: StdMutex::default(),
                publisher: Mutex::new(None),
                consumer_conn: Mutex::new(None),
            }),
        }
    }

    #[cfg(test)]
    async fn publish(&self, batch: &[EventMessage]) -> Result<(), BusError> {
        self.send(batch).await?.confirmed().await
    }

    async fn send(&self, batch: &[EventMessage]) -> Result<PendingConfirms, BusError> {
        if batch.is_empty() {
            return Ok(PendingConfirms(Box::pin(std::future::ready(Ok(())))));
        }
        // Invalid names would fail the same way on every retry: report before touching the broker.
        let prepared = batch
            .iter()
            .map(|m| prepare(m, self.inner.bound(&m.exchange, &m.routing_key)))
            .collect::<Result<Vec<_>, _>>()?;
        // One batch at a time on the channel: order must hold across callers.
        let mut slot = self.inner.publisher.lock().await;
        let sent =
            match tokio::time::timeout(CONFIRM_TIMEOUT, send_on(&mut slot, &self.inner, &prepared))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(BusError::ConfirmTimeout(CONFIRM_TIMEOUT)),
            };
        let confirms = match sent {
            Ok(confirms) => confirms,
            Err(e) => {
                // Whatever failed, start over on a fresh connection next time.
                *slot = None;
                return Err(e);
            }
        };
        let channel = slot.as_ref().expect("sent on it").channel.clone();
        Ok(PendingConfirms(Box::pin(async move {
            let result = match tokio::time::timeout(CONFIRM_TIMEOUT, await_confirms(confirms)).await
            {
                Ok(result) => result,
                Err(_) => Err(BusError::ConfirmTimeout(CONFIRM_TIMEOUT)),
            };
            if result.is_err() {
                // The next send then opens a fresh connection (see `Publisher::usable`).
                let _ = channel.close(320, "confirm failed".into()).await;
            }
            result
        })))
    }

    /// Connects if need be (within `CONNECT_TIMEOUT`), then declares and binds the queue and
    /// starts consuming (within `OPERATION_TIMEOUT`); on a timeout the consuming connection is
    /// dropped, so the next attempt starts afresh.
    async fn subscribe(&self, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        self.bounded_on_consumer_conn("subscribe", self.subscribe_unbounded(spec))
            .await
    }

    /// `work` on the consuming connection, within `CONNECT_TIMEOUT` and `OPERATION_TIMEOUT`;
    /// past them the connection is dropped, so the next attempt starts afresh.
    async fn bounded_on_consumer_conn<T>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T, BusError>>,
    ) -> Result<T, BusError> {
        let limit = CONNECT_TIMEOUT + OPERATION_TIMEOUT;
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                self.drop_consumer_conn().await;
                Err(BusError::Timeout {
                    what,
                    timeout: limit,
                })
            }
        }
    }

    /// Forgets the consuming connection after it stopped answering (a lock held by a stuck
    /// operation is waited for at most `OPERATION_TIMEOUT`).
    async fn drop_consumer_conn(&self) {
        if let Ok(mut slot) =
            tokio::time::timeout(OPERATION_TIMEOUT, self.inner.consumer_conn.lock()).await
        {
            *slot = None;
        }
    }

    async fn subscribe_unbounded(&self, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        let queue = short("queue name", &spec.queue)?;
        let bindings = spec
            .bindings
            .iter()
            .map(|(ex, pattern)| Ok((short("exchange", ex)?, short("binding pattern", pattern)?)))
            .collect::<Result<Vec<_>, BusError>>()?;

        let channel = {
            let mut slot = self.inner.consumer_conn.lock().await;
            if !slot.as_ref().is_some_and(|c| c.status().connected()) {
                *slot = None;
                *slot = Some(connect(&self.inner.endpoint).await?);
            }
            let conn = slot.as_ref().expect("just connected");
            match conn.create_channel().await {
                Ok(channel) => channel,
                Err(e) => {
                    *slot = None;
                    return Err(e.into());
                }
            }
        };
        channel
            .basic_qos(spec.prefetch, BasicQosOptions::default())
            .await?;
        {
            let slot = self.inner.consumer_conn.lock().await;
            let conn = slot.as_ref().ok_or(BusError::Closed)?;
            for (exchange, _) in &bindings {
                ensure_exchange(conn, exchange.clone()).await?;
            }
        }
        let queue = declare_queue_and_bind(&channel, queue, &bindings, spec.exclusive).await?;
        let consumer = channel
            .basic_consume(
                queue.clone(),
                ShortString::default(), // broker-generated consumer tag
                BasicConsumeOptions {
                    no_ack: spec.exclusive,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Subscription {
            inner: SubscriptionInner::Amqp(Box::new(AmqpSubscription {
                binder: Binder(BinderInner::Amqp {
                    channel,
                    queue: queue.clone(),
                }),
                consumer,
                auto_ack: spec.exclusive,
            })),
        })
    }
}

impl AmqpBus {
    async fn queue_depth(&self, queue: &str) -> Result<u32, BusError> {
        self.bounded_on_consumer_conn("a passive queue declare", self.queue_depth_unbounded(queue))
            .await
    }

    async fn queue_depth_unbounded(&self, queue: &str) -> Result<u32, BusError> {
        let queue = short("queue name", queue)?;
        // A channel of its own: a passive declare of a missing queue closes its channel.
        let channel = {
            let mut slot = self.inner.consumer_conn.lock().await;
            if !slot.as_ref().is_some_and(|c| c.status().connected()) {
                *slot = None;
                *slot = Some(connect(&self.inner.endpoint).await?);
            }
            slot.as_ref()
                .expect("just connected")
                .create_channel()
                .await?
        };
        let declared = channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "OK".into()).await;
        Ok(declared?.message_count())
    }

    async fn consumer_reachable(&self) -> bool {
        // Waits at most briefly: a subscribe in progress holds the lock while it connects.
        let Ok(mut slot) =
            tokio::time::timeout(Duration::from_secs(1), self.inner.consumer_conn.lock()).await
        else {
            return false;
        };
        if slot.as_ref().is_some_and(|c| c.status().connected()) {
            return true;
        }
        *slot = None;
        match connect(&self.inner.endpoint).await {
            Ok(conn) => {
                *slot = Some(conn);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "bus: consuming connection unreachable");
                false
            }
        }
    }

    /// `work` on the publishing connection (connected first if need be), all within
    /// `CONNECT_TIMEOUT` + `OPERATION_TIMEOUT`, waiting for the publisher included; on any
    /// failure the connection is dropped, so the next use starts afresh.
    async fn on_publisher<T>(
        &self,
        what: &'static str,
        work: impl AsyncFnOnce(&mut Publisher) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let limit = CONNECT_TIMEOUT + OPERATION_TIMEOUT;
        let deadline = tokio::time::Instant::now() + limit;
        let timed_out = || BusError::Timeout {
            what,
            timeout: limit,
        };
        let Ok(mut slot) = tokio::time::timeout_at(deadline, self.inner.publisher.lock()).await
        else {
            return Err(timed_out());
        };
        let done = async {
            let publisher = open_publisher(&mut slot, &self.inner.endpoint).await?;
            work(publisher).await
        };
        let result = tokio::time::timeout_at(deadline, done)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if result.is_err() {
            *slot = None;
        }
        result
    }

    async fn prepare(&self, exchange: &str) -> Result<(), BusError> {
        let name = short("exchange", exchange)?;
        let inner = self.inner.clone();
        self.on_publisher(
            "declaring the exchange and its subscribers",
            async move |publisher: &mut Publisher| {
                declare_exchange(&publisher.channel, name, ExchangeKind::Topic).await?;
                declare_subscribers(&publisher.channel, &inner, exchange).await?;
                publisher
                    .declared
                    .insert(exchange.to_owned(), std::time::Instant::now());
                Ok(())
            },
        )
        .await
    }

    async fn declare_set_aside(&self, name: &str) -> Result<(), BusError> {
        self.inner
            .set_aside
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        let name = short("queue name", name)?;
        self.on_publisher(
            "declaring a dead-letter queue",
            async move |publisher: &mut Publisher| {
                let channel = &publisher.channel;
                declare_exchange(channel, name.clone(), ExchangeKind::Fanout).await?;
                let bindings = [(name.clone(), ShortString::default())];
                declare_queue_and_bind(channel, name, &bindings, false).await?;
                Ok(())
            },
        )
        .await
    }
}

/// Declares `queue` (durable, or exclusive and auto-deleted) and binds it: the one declaration
/// a subscriber and a publisher declaring its subscribers both make, so their arguments agree.
/// Returns the queue's name (the broker's, for `""`).
async fn declare_queue_and_bind(
    channel: &Channel,
    queue: ShortString,
    bindings: &[(ShortString, ShortString)],
    exclusive: bool,
) -> Result<ShortString, BusError> {
    let declared = channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                durable: !exclusive,
                exclusive,
                auto_delete: exclusive,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = declared.name().clone();
    for (exchange, pattern) in bindings {
        channel
            .queue_bind(
                queue.clone(),
                exchange.clone(),
                pattern.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue)
}

/// Makes sure `exchange` exists, for a subscriber: a passive declare, which needs no right
/// to configure it; only if it does not exist yet (its publisher has not started), an active
/// one (refused where the subscriber's broker user may not create it: then the subscription
/// fails and is tried again later). Each on a channel of its own: a failed declare closes it.
async fn ensure_exchange(conn: &Connection, exchange: ShortString) -> Result<(), BusError> {
    let channel = conn.create_channel().await?;
    let passive = channel
        .exchange_declare(
            exchange.clone(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match passive {
        Ok(()) => {
            let _ = channel.close(200, "OK".into()).await;
            Ok(())
        }
        Err(_) => {
            let channel = conn.create_channel().await?;
            declare_exchange(&channel, exchange, ExchangeKind::Topic).await?;
            let _ = channel.close(200, "OK".into()).await;
            Ok(())
        }
    }
}

/// Connects with a deadline: lapin itself would wait for the OS TCP timeout on a dead address.
async fn connect(endpoint: &AmqpEndpoint) -> Result<Connection, BusError> {
    let props = ConnectionProperties::default();
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: endpoint.ca_pem.clone(),
    };
    let connecting = async {
        let runtime = lapin::runtime::default_runtime()?;
        Connection::connect_with_config(&endpoint.url, props, tls, runtime).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(BusError::ConnectTimeout(CONNECT_TIMEOUT)),
    }
}

async fn declare_exchange(
    channel: &Channel,
    exchange: ShortString,
    kind: ExchangeKind,
) -> Result<(), BusError> {
    channel
        .exchange_declare(
            exchange,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

struct Prepared<'a> {
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
    /// A subscriber of this system binds it: it must reach a queue.
    mandatory: bool,
    message: &'a EventMessage,
}

fn prepare(m: &EventMessage, mandatory: bool) -> Result<Prepared<'_>, BusError> {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(short("message id", &m.message_id)?);
    let mut headers = FieldTable::default();
    for (name, value) in [
        (REQUEST_ID_HEADER, &m.request_id),
        (TRACEPARENT_HEADER, &m.traceparent),
    ] {
        if let Some(value) = value {
            headers.insert(name.into(), AMQPValue::LongString(value.as_str().into()));
        }
    }
    if !headers.inner().is_empty() {
        properties = properties.with_headers(headers);
    }
    Ok(Prepared {
        exchange: short("exchange", &m.exchange)?,
        routing_key: short("routing key", &m.routing_key)?,
        properties,
        mandatory,
        message: m,
    })
}

/// lapin's `ShortString::from` panics past 255 bytes; this reports it instead.
fn short(what: &'static str, s: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(s).map_err(|e| BusError::Invalid {
        what,
        reason: e.to_string(),
    })
}

/// The publisher in `slot`, connected (with a confirm-mode channel) if it was not.
async fn open_publisher<'a>(
    slot: &'a mut Option<Publisher>,
    endpoint: &AmqpEndpoint,
) -> Result<&'a mut Publisher, BusError> {
    if !slot.as_ref().is_some_and(Publisher::usable) {
        *slot = None;
        let conn = connect(endpoint).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *slot = Some(Publisher {
            conn,
            channel,
            declared: HashMap::new(),
        });
    }
    Ok(slot.as_mut().expect("just connected"))
}

/// A `basic_publish` under way: lapin queues the frames on the first poll and resolves once its
/// I/O loop has written them, giving the confirm to wait for.
type Publishing =
    Pin<Box<dyn Future<Output = lapin::Result<lapin::PublisherConfirm>> + Send + 'static>>;

/// A message's publish: still being written, or written (its confirm to come).
enum Sent {
    Writing(Publishing),
    Written(lapin::Result<lapin::PublisherConfirm>),
}

/// Sends the batch on the publisher (connecting first if needed) and returns its confirms.
///
/// Each `basic_publish` is polled once, in order, which queues its frames (so the broker gets
/// them in the batch's order), without waiting for lapin's I/O loop to write each one before
/// the next is queued: that wait is one hand-off between threads per message, and would cap a
/// relay's rate (BENCHMARKS.md, "What each change bought").
async fn send_on(
    slot: &mut Option<Publisher>,
    inner: &AmqpInner,
    batch: &[Prepared<'_>],
) -> Result<Vec<(String, Sent)>, BusError> {
    let publisher = open_publisher(slot, &inner.endpoint).await?;

    for p in batch {
        // The default exchange ("") exists and cannot be declared.
        let exchange = p.exchange.as_str();
        let fresh = publisher
            .declared
            .get(exchange)
            .is_some_and(|at| at.elapsed() < TOPOLOGY_REFRESH);
        if !exchange.is_empty() && !fresh {
            let set_aside = inner
                .set_aside
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(exchange);
            let kind = match set_aside {
                true => ExchangeKind::Fanout,
                false => ExchangeKind::Topic,
            };
            declare_exchange(&publisher.channel, p.exchange.clone(), kind).await?;
            declare_subscribers(&publisher.channel, inner, exchange).await?;
            publisher
                .declared
                .insert(exchange.to_owned(), std::time::Instant::now());
        }
    }
    let mut sent = Vec::with_capacity(batch.len());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for p in batch {
        let channel = publisher.channel.clone();
        let (exchange, routing_key, properties, mandatory) = (
            p.exchange.clone(),
            p.routing_key.clone(),
            p.properties.clone(),
            p.mandatory,
        );
        let payload = p.message.payload.clone();
        let mut publishing: Publishing = Box::pin(async move {
            channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory,
                        ..BasicPublishOptions::default()
                    },
                    &payload,
                    properties,
                )
                .await
        });
        let state = match publishing.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => Sent::Written(result),
            std::task::Poll::Pending => Sent::Writing(publishing),
        };
        sent.push((p.message.message_id.clone(), state));
    }
    Ok(sent)
}

/// Declares the queues and bindings of this system's subscribers of `exchange`.
async fn declare_subscribers(
    channel: &Channel,
    inner: &AmqpInner,
    exchange: &str,
) -> Result<(), BusError> {
    for spec in &inner.subscribers {
        if !spec.bindings.iter().any(|(ex, _)| ex == exchange) {
            continue;
        }
        let bindings = spec
            .bindings
            .iter()
            .filter(|(ex, _)| ex == exchange)
            .map(|(ex, pattern)| Ok((short("exchange", ex)?, short("binding pattern", pattern)?)))
            .collect::<Result<Vec<_>, BusError>>()?;
        declare_queue_and_bind(channel, short("queue name", &spec.queue)?, &bindings, false)
            .await?;
    }
    Ok(())
}

async fn await_confirms(sent: Vec<(String, Sent)>) -> Result<(), BusError> {
    // Every message written first (in order), then the confirms (the broker confirms in order).
    let mut confirms = Vec::with_capacity(sent.len());
    for (message_id, state) in sent {
        let written = match state {
            Sent::Writing(publishing) => publishing.await,
            Sent::Written(result) => result,
        };
        confirms.push((message_id, written?));
    }
    for (message_id, confirm) in confirms {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            // Mandatory, and routed to no queue.
            Confirmation::Ack(Some(returned)) => {
                return Err(BusError::Unroutable {
                    message_id,
                    routing_key: returned.delivery.routing_key.to_string(),
                });
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                return Err(BusError::Nacked { message_id });
            }
        }
    }
    Ok(())
}

fn from_amqp(d: &lapin::message::Delivery) -> EventMessage {
    let header = |name: &str| {
        d.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name))
            .and_then(|v| match v {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            })
    };
    EventMessage {
        exchange: d.exchange.to_string(),
        routing_key: d.routing_key.to_string(),
        message_id: d
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        payload: Arc::from(d.data.as_slice()),
        request_id: header(REQUEST_ID_HEADER),
        traceparent: header(TRACEPARENT_HEADER),
    }
}

// ---------------------------------------------------------------------------------------------
// In-process

/// Fan-out to in-memory subscriptions. Unlike RabbitMQ, every subscription gets its own copy
/// (queue names are not shared) and nothing is kept for subscriptions that do not exist yet.
#[derive(Clone, Default)]
pub struct InProcessBus {
    subscriptions: Arc<StdMutex<Vec<InProcessSubscription>>>,
}

type Bindings = Arc<StdMutex<Vec<(String, String)>>>;

#[derive(Clone)]
struct InProcessSubscription {
    bindings: Bindings,
    exclusive: bool,
    tx: mpsc::Sender<EventMessage>,
}

impl InProcessSubscription {
    fn matches(&self, m: &EventMessage) -> bool {
        self.bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(ex, pattern)| *ex == m.exchange && topic_matches(pattern, &m.routing_key))
    }
}

/// How long a publish waits for room in a full exclusive subscription before giving up on it.
/// A burst (a relay round can carry thousands of events) only slows the publisher down, as
/// RabbitMQ's flow control would; a subscriber stuck for this long is cut off instead, and it
/// sees its subscription end (as when a broker connection drops), so it knows to resync rather
/// than silently missing events.
const EXCLUSIVE_STALL_LIMIT: Duration = Duration::from_secs(5);

impl InProcessBus {
    async fn publish(&self, batch: &[EventMessage]) {
        // A snapshot: the lock is never held across an await.
        let subscriptions = self.subscriptions.lock().expect("bus lock").clone();
        let mut cut_off = vec![false; subscriptions.len()];
        for m in batch {
            for (i, s) in subscriptions.iter().enumerate() {
                if cut_off[i] || !s.matches(m) {
                    continue;
                }
                if s.exclusive {
                    let sent =
                        tokio::time::timeout(EXCLUSIVE_STALL_LIMIT, s.tx.send(m.clone())).await;
                    if sent.is_err() {
                        tracing::warn!(routing_key = %m.routing_key, message_id = %m.message_id,
                            "in-process bus: an exclusive subscriber stopped reading; its subscription is ended");
                        cut_off[i] = true;
                    }
                } else {
                    // Waiting for capacity is the in-process "confirm": a slow durable
                    // consumer slows the publisher down instead of losing events.
                    let _ = s.tx.send(m.clone()).await;
                }
            }
        }
        // Dropping the last sender of a cut-off subscription ends it: its reader gets what was
        // queued, then `None`.
        let cut_off: Vec<&mpsc::Sender<EventMessage>> = subscriptions
            .iter()
            .zip(&cut_off)
            .filter_map(|(s, cut)| cut.then_some(&s.tx))
            .collect();
        self.subscriptions
            .lock()
            .expect("bus lock")
            .retain(|s| !s.tx.is_closed() && !cut_off.iter().any(|c| c.same_channel(&s.tx)));
    }

    fn subscribe(&self, spec: SubscriptionSpec) -> Subscription {
        let (tx, rx) = mpsc::channel(usize::from(spec.prefetch.max(1)));
        let bindings: Bindings = Arc::new(StdMutex::new(spec.bindings));
        self.subscriptions
            .lock()
            .expect("bus lock")
            .push(InProcessSubscription {
                bindings: bindings.clone(),
                exclusive: spec.exclusive,
                tx,
            });
        Subscription {
            inner: SubscriptionInner::InProcess {
                rx,
                requeued: Arc::default(),
                binder: Binder(BinderInner::InProcess(bindings)),
            },
        }
    }
}

/// RabbitMQ topic matching: words separated by `.`, `*` matches exactly one word, `#` zero or
/// more.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((&word, rest)) => key.split_first().is_some_and(|(&k, key_rest)| {
                (word == "*" || word == k) && matches(rest, key_rest)
            }),
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches(&pattern, &key)
}

// ---------------------------------------------------------------------------------------------
// Subscriptions and deliveries

type Requeued = Arc<StdMutex<VecDeque<EventMessage>>>;

pub struct Subscription {
    inner: SubscriptionInner,
}

struct AmqpSubscription {
    /// Its channel (held open as long as the subscription lives) and queue.
    binder: Binder,
    consumer: lapin::Consumer,
    /// Exclusive subscriptions consume without acknowledgements: their queue dies with the
    /// connection anyway, and per-message acks cost a round trip through the I/O loop each.
    auto_ack: bool,
}

enum SubscriptionInner {
    Amqp(Box<AmqpSubscription>),
    InProcess {
        rx: mpsc::Receiver<EventMessage>,
        requeued: Requeued,
        binder: Binder,
    },
}

/// Adds and removes a subscription's bindings while it consumes (a gateway binds the tenants of
/// its open sockets only).
#[derive(Clone)]
pub struct Binder(BinderInner);

#[derive(Clone)]
enum BinderInner {
    Amqp {
        channel: Channel,
        queue: ShortString,
    },
    InProcess(Bindings),
}

impl Binder {
    /// Routes what `exchange` publishes under keys matching `pattern` to the subscription too.
    pub async fn bind(&self, exchange: &str, pattern: &str) -> Result<(), BusError> {
        match &self.0 {
            BinderInner::Amqp { channel, queue } => {
                let bound = channel.queue_bind(
                    queue.clone(),
                    short("exchange", exchange)?,
                    short("binding pattern", pattern)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                );
                bounded("binding a queue", bound).await
            }
            BinderInner::InProcess(bindings) => {
                let mut bindings = bindings.lock().unwrap_or_else(|e| e.into_inner());
                let binding = (exchange.to_owned(), pattern.to_owned());
                if !bindings.contains(&binding) {
                    bindings.push(binding);
                }
                Ok(())
            }
        }
    }

    /// Stops routing what `bind` routed (a binding that does not exist is fine).
    pub async fn unbind(&self, exchange: &str, pattern: &str) -> Result<(), BusError> {
        match &self.0 {
            BinderInner::Amqp { channel, queue } => {
                let unbound = channel.queue_unbind(
                    queue.clone(),
                    short("exchange", exchange)?,
                    short("binding pattern", pattern)?,
                    FieldTable::default(),
                );
                bounded("unbinding a queue", unbound).await
            }
            BinderInner::InProcess(bindings) => {
                bindings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|(ex, p)| !(ex == exchange && p == pattern));
                Ok(())
            }
        }
    }
}

/// A broker operation within `OPERATION_TIMEOUT`.
async fn bounded(
    what: &'static str,
    operation: impl Future<Output = lapin::Result<()>>,
) -> Result<(), BusError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BusError::Timeout {
            what,
            timeout: OPERATION_TIMEOUT,
        }),
    }
}

impl Subscription {
    /// Changes this subscription's bindings while it consumes.
    pub fn binder(&self) -> Binder {
        match &self.inner {
            SubscriptionInner::Amqp(amqp) => amqp.binder.clone(),
            SubscriptionInner::InProcess { binder, .. } => binder.clone(),
        }
    }

    /// Next delivery; `None` when the subscription ended (connection lost: the caller
    /// resubscribes).
    pub async fn next(&mut self) -> Option<Delivery> {
        match &mut self.inner {
            SubscriptionInner::Amqp(amqp) => match amqp.consumer.next().await? {
                Ok(d) => Some(Delivery {
                    message: from_amqp(&d),
                    acker: if amqp.auto_ack {
                        Acker::AutoAcked
                    } else {
                        Acker::Amqp(d.acker)
                    },
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "bus: subscription ended");
                    None
                }
            },
            SubscriptionInner::InProcess { rx, requeued, .. } => {
                let again = requeued.lock().expect("requeue lock").pop_front();
                let message = match again {
                    Some(m) => m,
                    None => rx.recv().await?,
                };
                Some(Delivery {
                    message,
                    acker: Acker::InProcess(requeued.clone()),
                })
            }
        }
    }
}

pub struct Delivery {
    pub message: EventMessage,
    acker: Acker,
}

enum Acker {
    Amqp(lapin::Acker),
    /// Delivered to an exclusive (no-ack) subscription: nothing to acknowledge.
    AutoAcked,
    /// Where `nack_requeue` puts the message back, for this subscription's next `next()`.
    InProcess(Requeued),
}

impl Delivery {
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Acker::Amqp(acker) => sent(acker.ack(BasicAckOptions::default()).await?),
            Acker::AutoAcked | Acker::InProcess(_) => Ok(()),
        }
    }

    pub async fn nack_requeue(self) -> Result<(), BusError> {
        match self.acker {
            Acker::Amqp(acker) => sent(
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?,
            ),
            Acker::AutoAcked => {
                tracing::warn!(id = %self.message.message_id, "bus: an exclusive subscription cannot requeue; message dropped");
                Ok(())
            }
            Acker::InProcess(requeued) => {
                requeued
                    .lock()
                    .expect("requeue lock")
                    .push_back(self.message);
                Ok(())
            }
        }
    }
}

/// lapin answers `Ok(false)` when the channel is gone: the broker never saw the (n)ack.
fn sent(done: bool) -> Result<(), BusError> {
    if done { Ok(()) } else { Err(BusError::Closed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    /// Same rule as `testkit::require_rabbitmq` (testkit is not a dev-dependency of common):
    /// a missing broker fails under CI=true and is skipped, and recorded, otherwise.
    async fn require_rabbitmq(test: &str) -> Option<String> {
        let url = std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
        let uri: lapin::uri::AMQPUri = url.parse().expect("TEST_AMQP_URL parses");
        let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
        let reachable = matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(&addr)
            )
            .await,
            Ok(Ok(_))
        );
        if reachable {
            return Some(url);
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: RabbitMQ not reachable at {addr} (CI=true)");
        }
        let line = format!("SKIPPED {test}: RabbitMQ not reachable at {addr}\n");
        eprint!("{line}");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        // One write of the whole line: parallel test binaries append to the same file.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target.join("skipped-tests.txt"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        None
    }

    fn unique(base: &str) -> String {
        format!(
            "t{}.{base}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    }

    fn message(exchange: &str, routing_key: &str, i: usize) -> EventMessage {
        EventMessage {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            message_id: uuid::Uuid::new_v4().to_string(),
            payload: Arc::from(format!("{{\"n\":{i}}}").as_bytes()),
            request_id: i.is_multiple_of(2).then(|| format!("req-{i}")),
            traceparent: i
                .is_multiple_of(3)
                .then(|| format!("00-{:032x}-{:016x}-01", i + 1, i + 1)),
        }
    }

    async fn delete_exchange(url: &str, exchange: &str) {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("connect for cleanup");
        let channel = conn.create_channel().await.expect("channel");
        let _ = channel
            .exchange_delete(exchange.into(), Default::default())
            .await;
        let _ = conn.close(200, "OK".into()).await;
    }

    #[tokio::test]
    async fn amqp_publishes_a_batch_in_order_with_ids_and_headers() {
        let Some(url) = require_rabbitmq("bus::amqp_publishes_a_batch_in_order").await else {
            return;
        };
        let exchange = unique("chat.events");
        let bus = EventBus::amqp(url.clone());
        let mut sub = bus
            .subscribe(SubscriptionSpec {
                queue: String::new(),
                bindings: vec![
                    (exchange.clone(), "chat_created".into()),
                    (exchange.clone(), "chat_updated".into()),
                ],
                exclusive: true,
                prefetch: 50,
            })
            .await
            .expect("subscribe");

        let batch: Vec<EventMessage> = (0..200)
            .map(|i| {
                message(
                    &exchange,
                    if i % 3 == 0 {
                        "chat_created"
                    } else {
                        "chat_updated"
                    },
                    i,
                )
            })
            .collect();
        bus.publish(&batch).await.expect("publish");
        // Not bound: must not arrive.
        bus.publish(&[message(&exchange, "chatroom_created", 999)])
            .await
            .expect("publish unbound");

        for expected in &batch {
            let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("delivery in time")
                .expect("subscription open");
            assert_eq!(&d.message, expected);
            d.ack().await.expect("ack");
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next())
                .await
                .is_err(),
            "nothing else is routed"
        );
        drop(sub);
        delete_exchange(&url, &exchange).await;
    }

    #[tokio::test]
    async fn amqp_durable_queue_keeps_messages_and_requeues_on_nack() {
        let Some(url) = require_rabbitmq("bus::amqp_durable_queue_keeps_messages").await else {
            return;
        };
        let exchange = unique("message.events");
        let queue = unique("search");
        let bus = EventBus::amqp(url.clone());
        let spec = SubscriptionSpec {
            queue: queue.clone(),
            bindings: vec![(exchange.clone(), "#".into())],
            exclusive: false,
            prefetch: 10,
        };
        drop(bus.subscribe(spec.clone()).await.expect("declare queue"));
        // Published while nobody consumes: the durable queue keeps it.
        let m = message(&exchange, "messagechat_created", 1);
        bus.publish(std::slice::from_ref(&m))
            .await
            .expect("publish");

        let mut sub = bus.subscribe(spec.clone()).await.expect("resubscribe");
        let d = sub.next().await.expect("delivery");
        assert_eq!(d.message, m);
        d.nack_requeue().await.expect("nack");
        let d = sub.next().await.expect("redelivery");
        assert_eq!(d.message, m);
        d.ack().await.expect("ack");
        drop(sub);

        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("connect for cleanup");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .expect("delete queue");
        drop(channel);
        let _ = conn.close(200, "OK".into()).await;
        delete_exchange(&url, &exchange).await;
    }

    #[tokio::test]
    async fn amqp_reconnects_after_the_connection_is_lost() {
        let Some(url) = require_rabbitmq("bus::amqp_reconnects").await else {
            return;
        };
        let exchange = unique("chat.events");
        let bus = AmqpBus::new(url.clone().into(), Vec::new());
        let mut sub = EventBus::Amqp(bus.clone())
            .subscribe(SubscriptionSpec {
                queue: String::new(),
                bindings: vec![(exchange.clone(), "#".into())],
                exclusive: true,
                prefetch: 10,
            })
            .await
            .expect("subscribe");
        bus.publish(&[message(&exchange, "chat_created", 1)])
            .await
            .expect("first publish");
        sub.next()
            .await
            .expect("first delivery")
            .ack()
            .await
            .unwrap();

        // Kill both connections from under the bus.
        if let Some(p) = bus.inner.publisher.lock().await.as_ref() {
            p.conn.close(320, "test".into()).await.expect("close");
        }
        if let Some(c) = bus.inner.consumer_conn.lock().await.as_ref() {
            c.close(320, "test".into()).await.expect("close");
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("subscription notices");
        assert!(ended.is_none(), "subscription ends with the connection");

        let mut sub = EventBus::Amqp(bus.clone())
            .subscribe(SubscriptionSpec {
                queue: String::new(),
                bindings: vec![(exchange.clone(), "#".into())],
                exclusive: true,
                prefetch: 10,
            })
            .await
            .expect("resubscribe on a new connection");
        let m = message(&exchange, "chat_updated", 2);
        bus.publish(std::slice::from_ref(&m))
            .await
            .expect("publish reconnects");
        assert_eq!(sub.next().await.expect("delivery").message, m);
        drop(sub);
        delete_exchange(&url, &exchange).await;
    }

    /// A publisher declares its system subscribers' queue before publishing (so what it
    /// publishes waits there for a subscriber that has never run), and what they bind is
    /// mandatory: with the queue deleted under a live connection, the broker returns the
    /// message and the publish fails (to be retried, which declares the queue again) rather
    /// than succeeding with the event dropped.
    #[tokio::test]
    async fn amqp_declares_its_subscribers_and_what_they_bind_must_reach_a_queue() {
        let Some(url) = require_rabbitmq("bus::amqp_declares_its_subscribers").await else {
            return;
        };
        let exchange = unique("chat.events");
        let queue = unique("subscriber");
        let spec = SubscriptionSpec {
            queue: queue.clone(),
            bindings: vec![(exchange.clone(), "chat_created".into())],
            exclusive: false,
            prefetch: 10,
        };
        let bus = EventBus::amqp(url.clone()).with_subscribers(vec![spec.clone()]);
        bus.publish(&[message(&exchange, "chat_created", 1)])
            .await
            .expect("publish");
        assert_eq!(
            bus.queue_depth(&queue).await.unwrap(),
            Some(1),
            "it waits there"
        );

        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
        let lost = bus.publish(&[message(&exchange, "chat_created", 2)]).await;
        assert!(matches!(lost, Err(BusError::Unroutable { .. })), "{lost:?}");
        // Sent again (as the relay does), on a fresh connection that declares the queue again.
        bus.publish(&[message(&exchange, "chat_created", 2)])
            .await
            .expect("publish again");
        assert_eq!(bus.queue_depth(&queue).await.unwrap(), Some(1));
        // What no subscriber of this system binds is not mandatory.
        bus.publish(&[message(&exchange, "chatroom_created", 3)])
            .await
            .expect("an event nobody binds");

        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = conn.close(200, "OK".into()).await;
        delete_exchange(&url, &exchange).await;
    }

    /// amqps://: the broker's certificate is verified against the CA given (AMQP_CA_FILE) and
    /// the host name; events then flow over TLS. Without the CA, or by an address the
    /// certificate does not name, nothing connects.
    #[tokio::test]
    async fn amqps_verifies_the_broker_and_carries_events() {
        let Some(amqp) = testkit::require_rabbitmq("bus::amqps_verifies_the_broker").await else {
            return;
        };
        let ca = testkit::tls::TestCa::new();
        let proxy = testkit::tls::TlsProxy::start(&ca, amqp.addr()).await;
        let port = proxy.addr().port();
        let args = AmqpArgs {
            amqp_url: Some(format!("amqps://guest:guest@localhost:{port}/%2f")),
            amqp_ca_file: Some(ca.ca_file().to_owned()),
        };
        let bus = EventBus::amqp(args.endpoint("the test").unwrap());
        let exchange = amqp.name("tls.events");
        let mut sub = bus
            .subscribe(SubscriptionSpec {
                queue: String::new(),
                bindings: vec![(exchange.clone(), "#".into())],
                exclusive: true,
                prefetch: 10,
            })
            .await
            .expect("subscribe over TLS");
        let sent = message(&exchange, "chat_created", 1);
        bus.publish(std::slice::from_ref(&sent))
            .await
            .expect("publish over TLS");
        assert_eq!(sub.next().await.expect("delivery").message, sent);

        let refused = [
            (
                "no CA",
                format!("amqps://guest:guest@localhost:{port}/%2f"),
                None,
            ),
            (
                "another name",
                format!("amqps://guest:guest@127.0.0.1:{port}/%2f"),
                Some(ca.ca_pem.clone()),
            ),
        ];
        for (what, url, ca_pem) in refused {
            let bus = EventBus::amqp(AmqpEndpoint { url, ca_pem });
            let result = bus.publish(&[message(&exchange, "chat_created", 2)]).await;
            assert!(result.is_err(), "{what}: connected");
        }
        // A CA file with a plain amqp:// URL is a mistake, said at start.
        let plain = AmqpArgs {
            amqp_url: Some("amqp://guest:guest@localhost:5672/%2f".into()),
            amqp_ca_file: Some(ca.ca_file().to_owned()),
        };
        assert!(plain.endpoint("x").unwrap_err().contains("not amqps://"));
        drop(sub);
        amqp.cleanup().await;
    }

    #[tokio::test]
    async fn amqp_unreachable_broker_fails_fast() {
        let bus = EventBus::amqp("amqp://guest:guest@127.0.0.1:1/%2f");
        let started = Instant::now();
        let result = bus.publish(&[message("x", "chat_created", 1)]).await;
        assert!(result.is_err());
        assert!(started.elapsed() <= CONNECT_TIMEOUT + Duration::from_secs(1));
        let sub = bus
            .subscribe(SubscriptionSpec {
                queue: String::new(),
                bindings: vec![("x".into(), "#".into())],
                exclusive: true,
                prefetch: 1,
            })
            .await;
        assert!(sub.is_err());
    }

    #[tokio::test]
    async fn amqp_broker_that_never_answers_times_out() {
        // Accepts TCP (the kernel completes the handshake) but never speaks AMQP.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bus = EventBus::amqp(format!(
            "amqp://guest:guest@{}/%2f",
            silent.local_addr().unwrap()
        ));
        let started = Instant::now();
        let result = bus.publish(&[message("x", "chat_created", 1)]).await;
        assert!(
            matches!(result, Err(BusError::ConnectTimeout(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn amqp_rejects_names_longer_than_255_bytes_without_panicking() {
        let bus = EventBus::amqp("amqp://guest:guest@127.0.0.1:1/%2f");
        let result = bus.publish(&[message("x", &"k".repeat(256), 1)]).await;
        assert!(
            matches!(result, Err(BusError::Invalid { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        let cases = [
            ("chat_created", "chat_created", true),
            ("chat_created", "chat_updated", false),
            ("#", "chat_created", true),
            ("#", "a.b.c", true),
            ("#", "", true),
            ("*", "chat_created", true),
            ("*", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#", "b.a", false),
            ("#.c", "a.b.c", true),
            ("#.c", "c", true),
            ("#.c", "a.b", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.x.y.c", true),
            ("a.#.c", "a.x.y", false),
            ("*.b.#", "a.b", true),
            ("*.b.#", "a.b.c.d", true),
            ("*.b.#", "b", false),
            ("#.#", "a", true),
            ("a.*.#.d", "a.b.d", true),
            ("a.*.#.d", "a.d", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(topic_matches(pattern, key), expected, "{pattern} vs {key}");
        }
    }

    #[tokio::test]
    async fn in_process_routes_by_exchange_and_pattern() {
        let bus = EventBus::in_process();
        let spec = |bindings: Vec<(String, String)>| SubscriptionSpec {
            queue: String::new(),
            bindings,
            exclusive: true,
            prefetch: 16,
        };
        let mut chats = bus
            .subscribe(spec(vec![("chat.events".into(), "chat_created".into())]))
            .await
            .unwrap();
        let mut all = bus
            .subscribe(spec(vec![
                ("chat.events".into(), "#".into()),
                ("message.events".into(), "#".into()),
            ]))
            .await
            .unwrap();
        let batch = [
            message("chat.events", "chat_created", 0),
            message("chat.events", "chatroom_created", 1),
            message("message.events", "messagechat_created", 2),
        ];
        bus.publish(&batch).await.unwrap();
        assert_eq!(chats.next().await.unwrap().message, batch[0]);
        for expected in &batch {
            assert_eq!(&all.next().await.unwrap().message, expected);
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), chats.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn in_process_durable_subscription_applies_backpressure() {
        let bus = EventBus::in_process();
        let mut sub = bus
            .subscribe(SubscriptionSpec {
                queue: "q".into(),
                bindings: vec![("ex".into(), "#".into())],
                exclusive: false,
                prefetch: 2,
            })
            .await
            .unwrap();
        let batch: Vec<EventMessage> = (0..5).map(|i| message("ex", "k", i)).collect();
        let publisher = {
            let bus = bus.clone();
            let batch = batch.clone();
            tokio::spawn(async move { bus.publish(&batch).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!publisher.is_finished(), "publish waits for the consumer");

        // A requeued message comes back first.
        let first = sub.next().await.unwrap();
        assert_eq!(first.message, batch[0]);
        first.nack_requeue().await.unwrap();
        for expected in &batch {
            let d = sub.next().await.unwrap();
            assert_eq!(&d.message, expected);
            d.ack().await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(1), publisher)
            .await
            .expect("publish completes once read")
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn in_process_exclusive_subscription_waits_then_is_ended_and_closed_ones_are_forgotten() {
        let InProcessBus { subscriptions } = InProcessBus::default();
        let bus = EventBus::InProcess(InProcessBus {
            subscriptions: subscriptions.clone(),
        });
        let spec = |exclusive| SubscriptionSpec {
            queue: String::new(),
            bindings: vec![("ex".into(), "#".into())],
            exclusive,
            prefetch: 1,
        };
        let mut reading = bus.subscribe(spec(true)).await.unwrap();
        let closed = bus.subscribe(spec(false)).await.unwrap();
        drop(closed);
        let batch: Vec<EventMessage> = (0..3).map(|i| message("ex", "k", i)).collect();

        // A burst beyond the subscription's capacity waits for its reader: nothing is lost.
        let publisher = {
            let (bus, batch) = (bus.clone(), batch.clone());
            tokio::spawn(async move { bus.publish(&batch).await })
        };
        for expected in &batch {
            assert_eq!(&reading.next().await.unwrap().message, expected);
        }
        publisher.await.unwrap().unwrap();
        assert_eq!(
            subscriptions.lock().unwrap().len(),
            1,
            "the closed one is forgotten"
        );

        // A reader that stops reading is cut off after the stall limit: it gets what was
        // queued and then the end of its subscription (its cue to resync), and the publisher
        // goes on.
        let started = tokio::time::Instant::now();
        bus.publish(&batch).await.unwrap();
        assert!(started.elapsed() >= EXCLUSIVE_STALL_LIMIT);
        assert_eq!(reading.next().await.unwrap().message, batch[0]);
        assert!(reading.next().await.is_none(), "the subscription ended");
        assert!(subscriptions.lock().unwrap().is_empty());
    }
}
