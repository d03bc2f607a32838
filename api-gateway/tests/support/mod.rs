//! Starts the whole system for a test, in either way of running, and talks to it over HTTP.
#![allow(dead_code, unused_macros)] // each test binary uses a different part

/// Runs each scenario (an `async fn(&Stack)`) twice: against the embedded default, and against
/// the split deployment on this machine's PostgreSQL and RabbitMQ (skipped, and listed, where
/// they are not running).
macro_rules! against_both {
    // With WebSocket settings of its own for every stack (`$ws`, resolved inside the generated
    // modules: write `super::name()`).
    ($file:literal, ws = $ws:expr; $($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let stack = super::Stack::embedded_with_ws($ws).await;
                    super::$scenario(&stack).await;
                }
            )*
        }
        mod split {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let test = concat!($file, "::split::", stringify!($scenario));
                    let Some((env, guards)) = super::split_env(test).await else { return };
                    let mut stack = super::Stack::split_with_ws(&env, $ws).await;
                    stack.keep(guards);
                    super::$scenario(&stack).await;
                }
            )*
        }
    };
    ($file:literal; $($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let stack = super::Stack::embedded().await;
                    super::$scenario(&stack).await;
                }
            )*
        }
        mod split {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let test = concat!($file, "::split::", stringify!($scenario));
                    let Some((env, guards)) = super::split_env(test).await else { return };
                    let mut stack = super::Stack::split(&env).await;
                    stack.keep(guards);
                    super::$scenario(&stack).await;
                }
            )*
        }
    };
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use api_gateway::HttpSettings;
use api_gateway::app::AppState;
use api_gateway::auth::{TokenRequest, TokenVerifier, mint_token, permission};
use api_gateway::embedded;
use api_gateway::health::Readiness;
use api_gateway::rate_limit::RateLimit;
use api_gateway::ws::WsSettings;
use api_gateway::ws::hub::{EventHub, HubExchanges};
use common::db::{Db, DbOptions, DbTarget, DbTimeouts};
use common::grpc_client::{self, ChatClient};
use common::service_auth::{InternalKey, ServiceName};
use pipeline::bus::EventBus;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The gateway's JWT_SECRET in tests (at least 32 bytes: the gateway refuses shorter ones).
pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";
/// The seed tutorial's tenant and agents.
pub const SEED_CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";
pub const AGENT_1: &str = "eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b";
pub const AGENT_2: &str = "47fe0b7c-7333-46cf-8b23-61e14e62490a";

/// A test gateway's limits: per caller, failed authentications per client address, and where
/// client addresses come from.
#[derive(Debug, Clone)]
pub struct Limits {
    pub callers: RateLimit,
    pub failures: RateLimit,
    pub client_ip_header: Option<http::HeaderName>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            callers: RateLimit::default(),
            failures: RateLimit::failures(),
            client_ip_header: None,
        }
    }
}

impl From<RateLimit> for Limits {
    fn from(callers: RateLimit) -> Self {
        Limits {
            callers,
            ..Limits::default()
        }
    }
}

/// A running gateway and the services behind it; stops them when dropped.
pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    data_dir: Option<PathBuf>,
    /// Split deployment: message-manager's link to chat-manager, to cut in tests.
    pub chat_link: Option<testkit::TcpProxy>,
    /// Split deployment: where chat-manager and message-manager serve gRPC.
    pub chat_addr: Option<SocketAddr>,
    pub message_addr: Option<SocketAddr>,
    /// What the gateway was built on, for `second_gateway`.
    gateway_parts: GatewayParts,
    /// The gateway's event hub, when it has one.
    pub hub: Option<EventHub>,
    /// What the split stack needs to be kept alive (schema and exchange guards).
    _guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// What a gateway is built on: the services, its event source and WebSocket settings.
#[derive(Clone)]
struct GatewayParts {
    chat: grpc_client::GrpcTransport,
    message: grpc_client::GrpcTransport,
    events: Option<(EventBus, HubExchanges)>,
    ws: WsSettings,
    webhook: Option<grpc_client::GrpcTransport>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Where the split deployment keeps its data and events.
pub struct SplitEnv {
    pub pg_url: String,
    pub chat_schema: String,
    pub message_schema: String,
    pub amqp_url: String,
    /// chat-manager's relay may go through a proxy; everything else talks to RabbitMQ directly.
    pub chat_amqp_url: String,
    pub chat_exchange: String,
    pub message_exchange: String,
    pub chat_events_queue: String,
    /// The gateways' typing exchange.
    pub typing_exchange: String,
    /// webhook-manager's queue (which the publishers declare).
    pub webhook_events_queue: String,
    /// The gateway's event hub may go through a proxy too.
    pub hub_amqp_url: String,
    /// Connections per service pool: few for tests (many run at once), the services' default
    /// for benchmarks.
    pub db_pool_size: u32,
    /// The services' PostgreSQL timeouts (the services' defaults unless a test shortens them).
    pub db_timeouts: DbTimeouts,
    /// How long message-manager's view vouches for a chat it has not confirmed.
    pub membership_max_age: Duration,
    /// The gateway's rate limits (benchmarks turn them off).
    pub limits: Limits,
    /// webhook-manager, when the test runs one: its schema and how it delivers.
    pub webhooks: Option<(String, webhook_manager::dispatch::DispatchSettings)>,
}

impl SplitEnv {
    /// Where webhook-manager's events come from.
    pub fn webhook_topology(&self) -> webhook_manager::Topology {
        webhook_manager::Topology {
            chat_exchange: self.chat_exchange.clone(),
            message_exchange: self.message_exchange.clone(),
            queue: self.webhook_events_queue.clone(),
        }
    }

    /// webhook-manager's queue, for the publishers to declare, when the test runs it.
    fn webhook_subscriber(&self) -> Option<pipeline::bus::SubscriptionSpec> {
        self.webhooks
            .as_ref()
            .map(|_| self.webhook_topology().subscription())
    }
}

/// A split environment on this machine's PostgreSQL and RabbitMQ, with fresh schemas and
/// names (None when a service is missing and the test is skipped); the guards clean up.
pub async fn split_env(
    test: &str,
) -> Option<(SplitEnv, Vec<Box<dyn std::any::Any + Send + Sync>>)> {
    let chat_pg = testkit::require_postgres(test).await?;
    let message_pg = testkit::require_postgres(test).await?;
    let amqp = testkit::require_rabbitmq(test).await?;
    let env = SplitEnv {
        pg_url: chat_pg.url.clone(),
        chat_schema: chat_pg.schema.clone(),
        message_schema: message_pg.schema.clone(),
        amqp_url: amqp.url.clone(),
        chat_amqp_url: amqp.url.clone(),
        chat_exchange: amqp.name("chat.events"),
        message_exchange: amqp.name("message.events"),
        chat_events_queue: amqp.name("message-manager.chat-events"),
        webhook_events_queue: amqp.name("webhook-manager.events"),
        typing_exchange: amqp.name("typing.events"),
        hub_amqp_url: amqp.url.clone(),
        db_pool_size: 4,
        db_timeouts: DbTimeouts::default(),
        membership_max_age: message_manager::membership::MAX_AGE,
        limits: Limits::default(),
        webhooks: None,
    };
    Some((
        env,
        vec![Box::new(chat_pg), Box::new(message_pg), Box::new(amqp)],
    ))
}

/// As `split_env`, with a webhook-manager (on a schema of its own) delivering with `settings`.
pub async fn split_env_with_webhooks(
    test: &str,
    settings: webhook_manager::dispatch::DispatchSettings,
) -> Option<(SplitEnv, Vec<Box<dyn std::any::Any + Send + Sync>>)> {
    let (mut env, mut guards) = split_env(test).await?;
    let webhook_pg = testkit::require_postgres(test).await?;
    env.webhooks = Some((webhook_pg.schema.clone(), settings));
    guards.push(Box::new(webhook_pg));
    Some((env, guards))
}

pub async fn connect(
    url: &str,
    schema: &str,
    migrations: common::db::Migrations,
    pool_size: u32,
    timeouts: DbTimeouts,
) -> Db {
    let target = DbTarget::parse(url, schema);
    tokio::task::spawn_blocking(move || {
        Db::connect(
            target,
            migrations,
            &DbOptions {
                pool_size,
                timeouts,
                ..DbOptions::default()
            },
        )
    })
    .await
    .unwrap()
    .expect("connect to PostgreSQL")
}

/// The internal key of the services tests start (as `testkit::spawn` gives the binaries).
pub fn internal_key() -> InternalKey {
    InternalKey::from_config(Some(testkit::INTERNAL_AUTH_SECRET)).expect("the tests' key")
}

/// A client of the service at `url` calling as the gateway does (its internal token).
pub fn gateway_client(url: &str, service: ServiceName) -> grpc_client::GrpcTransport {
    grpc_client::signed(
        grpc_client::remote(url).unwrap(),
        internal_key().credentials(ServiceName::ApiGateway, service),
    )
}

/// Serves a gRPC service on an ephemeral port until `shutdown`, its health following `db`,
/// refusing calls without the tests' internal key from other than `callers`.
async fn serve_grpc<S>(
    service: S,
    db: Db,
    me: ServiceName,
    callers: &'static [ServiceName],
    mut shutdown: watch::Receiver<bool>,
) -> (SocketAddr, JoinHandle<()>)
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the binaries serve: with health, the callers' check, per-call spans and metrics.
    let security = common::grpc_server::ServerSecurity {
        guard: internal_key().guard(me, callers),
        reflection: false,
    };
    let task = tokio::spawn(async move {
        let _ = common::grpc_server::serve(listener, service, Some(db), security, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    });
    (addr, task)
}

/// The WebSocket settings of test stacks: a stuck or silent socket is given up on quickly
/// (clients answer pings whenever they read, so only one that stops reading for 6 s or more is
/// dropped).
pub fn test_ws_settings() -> WsSettings {
    WsSettings {
        ping_interval: Duration::from_secs(3),
        send_timeout: Duration::from_secs(2),
        buffer_events: 1024,
        ..WsSettings::default()
    }
}

pub fn temp_data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("chat-test-{}", uuid::Uuid::new_v4().simple()))
}

impl Stack {
    /// The embedded default: everything in process, SQLite in a fresh data directory.
    pub async fn embedded() -> Stack {
        Self::embedded_in(temp_data_dir(), true).await
    }

    /// The embedded default over `data_dir`; `owns_dir` removes it on drop.
    pub async fn embedded_in(data_dir: PathBuf, owns_dir: bool) -> Stack {
        Self::embedded_limited(data_dir, owns_dir, RateLimit::default()).await
    }

    /// The embedded default with the gateway limiting each token to `limit`.
    pub async fn embedded_limited(
        data_dir: PathBuf,
        owns_dir: bool,
        limit: impl Into<Limits>,
    ) -> Stack {
        Self::embedded_configured(data_dir, owns_dir, limit.into(), test_ws_settings()).await
    }

    /// The embedded default with WebSocket settings `ws`.
    pub async fn embedded_with_ws(ws: WsSettings) -> Stack {
        Self::embedded_configured(temp_data_dir(), true, Limits::default(), ws).await
    }

    /// The embedded default delivering webhooks with `webhooks`.
    pub async fn embedded_with_webhooks(
        webhooks: webhook_manager::dispatch::DispatchSettings,
    ) -> Stack {
        Self::embedded_delivering(
            temp_data_dir(),
            true,
            Limits::default(),
            test_ws_settings(),
            webhooks,
        )
        .await
    }

    async fn embedded_configured(
        data_dir: PathBuf,
        owns_dir: bool,
        limit: Limits,
        ws: WsSettings,
    ) -> Stack {
        let webhooks = embedded::webhook_settings();
        Self::embedded_delivering(data_dir, owns_dir, limit, ws, webhooks).await
    }

    async fn embedded_delivering(
        data_dir: PathBuf,
        owns_dir: bool,
        limit: Limits,
        ws: WsSettings,
        webhooks: webhook_manager::dispatch::DispatchSettings,
    ) -> Stack {
        let (tx, rx) = watch::channel(false);
        let e = embedded::start_with(&data_dir, webhooks, rx.clone())
            .await
            .expect("embedded start");
        let events = (
            e.bus.clone(),
            HubExchanges::new("chat.events", "message.events"),
        );
        let parts = GatewayParts {
            chat: e.chat,
            message: e.message,
            events: Some(events),
            ws,
            webhook: Some(e.webhook),
        };
        let mut stack =
            Self::with_gateway_configured(parts, Readiness::InProcess, limit, tx, rx).await;
        stack.tasks.extend(e.tasks);
        stack.data_dir = owns_dir.then_some(data_dir);
        stack
    }

    /// The split deployment: chat-manager and message-manager as gRPC servers on ephemeral
    /// ports, each over its own PostgreSQL schema, their relays publishing to RabbitMQ and
    /// message-manager consuming chat events from it; the gateway forwards over real sockets.
    /// message-manager reaches chat-manager through `chat_link`, a proxy a test can cut.
    pub async fn split(env: &SplitEnv) -> Stack {
        Self::split_with_ws(env, test_ws_settings()).await
    }

    /// The split deployment with WebSocket settings `ws`.
    pub async fn split_with_ws(env: &SplitEnv, ws: WsSettings) -> Stack {
        let (tx, rx) = watch::channel(false);
        let chat_db = connect(
            &env.pg_url,
            &env.chat_schema,
            chat_manager::db::MIGRATIONS,
            env.db_pool_size,
            env.db_timeouts,
        )
        .await;
        let message_db = connect(
            &env.pg_url,
            &env.message_schema,
            message_manager::db::MIGRATIONS,
            env.db_pool_size,
            env.db_timeouts,
        )
        .await;

        let (chat_service, chat_relay) = chat_manager::service(
            chat_db.clone(),
            EventBus::amqp(&env.chat_amqp_url).with_subscribers(
                std::iter::once(pipeline::topology::chat_events_subscriber(
                    &env.chat_exchange,
                    &env.chat_events_queue,
                ))
                .chain(env.webhook_subscriber())
                .collect(),
            ),
            &env.chat_exchange,
            rx.clone(),
        );
        let (chat_addr, chat_server) = serve_grpc(
            chat_service,
            chat_db,
            ServiceName::ChatManager,
            common::service_auth::CHAT_MANAGER_CALLERS,
            rx.clone(),
        )
        .await;
        let chat_link = testkit::TcpProxy::start(chat_addr).await;

        let bus = EventBus::amqp(&env.amqp_url)
            .with_subscribers(env.webhook_subscriber().into_iter().collect());
        let topology = message_manager::Topology {
            exchange: env.message_exchange.clone(),
            chat_exchange: env.chat_exchange.clone(),
            chat_events_queue: env.chat_events_queue.clone(),
        };
        // As the binary does in the background: tried until chat-manager's relay has declared
        // its exchange (a subscriber may not create it under its own broker user).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let subscription = loop {
            match message_manager::subscribe_chat_events(
                &bus,
                &topology.chat_exchange,
                &topology.chat_events_queue,
            )
            .await
            {
                Ok(subscription) => break subscription,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "subscribing to chat events");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("subscribe to chat events: {e}"),
            }
        };
        let chat_for_messages = ChatClient::new(grpc_client::signed(
            grpc_client::remote(&format!("http://{}", chat_link.addr())).unwrap(),
            internal_key().credentials(ServiceName::MessageManager, ServiceName::ChatManager),
        ));
        let (message_service, message_tasks) = message_manager::service(
            message_db.clone(),
            bus,
            topology,
            subscription,
            Some((chat_for_messages, env.membership_max_age)),
            rx.clone(),
        );
        let (message_addr, message_server) = serve_grpc(
            message_service,
            message_db,
            ServiceName::MessageManager,
            common::service_auth::MESSAGE_MANAGER_CALLERS,
            rx.clone(),
        )
        .await;

        let (webhook_addr, webhook_tasks) = match &env.webhooks {
            None => (None, Vec::new()),
            Some((schema, settings)) => {
                let db = connect(
                    &env.pg_url,
                    schema,
                    webhook_manager::db::MIGRATIONS,
                    env.db_pool_size,
                    env.db_timeouts,
                )
                .await;
                let bus = EventBus::amqp(&env.amqp_url);
                let topology = env.webhook_topology();
                // Tried until both relays have declared their exchanges.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let subscription = loop {
                    match webhook_manager::subscribe(&bus, &topology).await {
                        Ok(subscription) => break subscription,
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            tracing::debug!(error = %e, "subscribing webhook-manager");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("subscribe webhook-manager: {e}"),
                    }
                };
                let (service, mut tasks) = webhook_manager::service(
                    db.clone(),
                    bus,
                    webhook_manager::ServiceSettings {
                        topology,
                        dispatch: *settings,
                    },
                    subscription,
                    rx.clone(),
                )
                .expect("webhook-manager");
                let (addr, server) = serve_grpc(
                    service,
                    db,
                    ServiceName::WebhookManager,
                    common::service_auth::WEBHOOK_MANAGER_CALLERS,
                    rx.clone(),
                )
                .await;
                tasks.push(server);
                (Some(addr), tasks)
            }
        };
        let hub_bus = EventBus::amqp(&env.hub_amqp_url);
        let events = (
            hub_bus.clone(),
            HubExchanges::new(&env.chat_exchange, &env.message_exchange)
                .with_typing(&env.typing_exchange),
        );
        let (chat, message) = (
            gateway_client(&format!("http://{chat_addr}"), ServiceName::ChatManager),
            gateway_client(
                &format!("http://{message_addr}"),
                ServiceName::MessageManager,
            ),
        );
        let readiness = Readiness::upstreams(chat.clone(), message.clone(), Some(hub_bus));
        let parts = GatewayParts {
            chat,
            message,
            events: Some(events),
            ws,
            webhook: webhook_addr
                .map(|addr| gateway_client(&format!("http://{addr}"), ServiceName::WebhookManager)),
        };
        let mut stack =
            Self::with_gateway_configured(parts, readiness, env.limits.clone(), tx, rx).await;
        stack.tasks.extend(webhook_tasks);
        stack.chat_addr = Some(chat_addr);
        stack.message_addr = Some(message_addr);
        stack
            .tasks
            .extend([chat_relay, chat_server, message_server]);
        stack.tasks.extend(message_tasks);
        stack.chat_link = Some(chat_link);
        stack
    }

    /// Only the gateway, forwarding to chat-manager at `url` (which may not be running).
    pub async fn remote_only(url: &str) -> Stack {
        Self::gateway_to(url, url).await
    }

    /// Only the gateway, forwarding to services running elsewhere (say, as processes).
    pub async fn gateway_to(chat_url: &str, message_url: &str) -> Stack {
        let (tx, rx) = watch::channel(false);
        Self::with_gateway(
            gateway_client(chat_url, ServiceName::ChatManager),
            gateway_client(message_url, ServiceName::MessageManager),
            None,
            tx,
            rx,
        )
        .await
    }

    /// Only the gateway, forwarding to services at these urls (which may not be running),
    /// with an event hub on an in-process bus that nothing publishes to: the WebSocket is
    /// served, and anything it asks the services fails as they do.
    pub async fn gateway_with_hub_to(chat_url: &str, message_url: &str) -> Stack {
        let (tx, rx) = watch::channel(false);
        let parts = GatewayParts {
            chat: gateway_client(chat_url, ServiceName::ChatManager),
            message: gateway_client(message_url, ServiceName::MessageManager),
            events: Some((
                EventBus::in_process(),
                HubExchanges::new("chat.events", "message.events"),
            )),
            ws: test_ws_settings(),
            webhook: None,
        };
        Self::with_gateway_configured(parts, Readiness::InProcess, Limits::default(), tx, rx).await
    }

    async fn with_gateway(
        chat: grpc_client::GrpcTransport,
        message: grpc_client::GrpcTransport,
        events: Option<(EventBus, HubExchanges)>,
        tx: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
    ) -> Stack {
        Self::with_gateway_ready(chat, message, events, Readiness::InProcess, tx, rx).await
    }

    /// The gateway over `chat` and `message`, its `/readyz` checking `readiness`.
    pub async fn with_gateway_ready(
        chat: grpc_client::GrpcTransport,
        message: grpc_client::GrpcTransport,
        events: Option<(EventBus, HubExchanges)>,
        readiness: Readiness,
        tx: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
    ) -> Stack {
        Self::with_gateway_limited(
            chat,
            message,
            events,
            readiness,
            RateLimit::default(),
            tx,
            rx,
        )
        .await
    }

    /// As `with_gateway_ready`, each token limited to `limit`.
    pub async fn with_gateway_limited(
        chat: grpc_client::GrpcTransport,
        message: grpc_client::GrpcTransport,
        events: Option<(EventBus, HubExchanges)>,
        readiness: Readiness,
        limit: RateLimit,
        tx: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
    ) -> Stack {
        let parts = GatewayParts {
            chat,
            message,
            events,
            ws: test_ws_settings(),
            webhook: None,
        };
        Self::with_gateway_configured(parts, readiness, limit.into(), tx, rx).await
    }

    /// Another gateway on the same services and event source (in the split deployment its
    /// own exclusive queue on the broker), with its own event hub and shutdown; stopping it
    /// leaves this stack running.
    pub async fn second_gateway(&self) -> Stack {
        let (tx, rx) = watch::channel(false);
        Self::with_gateway_configured(
            self.gateway_parts.clone(),
            Readiness::InProcess,
            Limits::default(),
            tx,
            rx,
        )
        .await
    }

    async fn with_gateway_configured(
        parts: GatewayParts,
        readiness: Readiness,
        limit: Limits,
        tx: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
    ) -> Stack {
        let kept = parts.clone();
        let GatewayParts {
            chat,
            message,
            events,
            ws,
            webhook,
        } = parts;
        let mut state = AppState::new(chat, message, TokenVerifier::new(SECRET));
        if let Some(webhook) = webhook {
            state = state.with_webhooks(webhook);
        }
        let mut state = state
            .with_readiness(readiness)
            .with_rate_limits(limit.callers, limit.failures)
            .with_client_ip_header(limit.client_ip_header);
        let mut hub_task = None;
        let mut event_hub = None;
        if let Some((bus, exchanges)) = events {
            // The hub subscribes once a socket opens, and a subscribe frame is answered once
            // it has: the tests need not wait for it.
            let (hub, task) = EventHub::start(bus, &exchanges, &ws, rx.clone());
            event_hub = Some(hub.clone());
            state = state.with_hub(hub, ws);
            hub_task = Some(task);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let mut shutdown = rx;
        let gateway = tokio::spawn(async move {
            let _ = api_gateway::serve(listener, state, HttpSettings::default(), async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        });
        Stack {
            base: format!("http://{addr}/v1.0"),
            http: reqwest::Client::new(),
            shutdown: tx,
            tasks: vec![gateway].into_iter().chain(hub_task).collect(),
            data_dir: None,
            chat_link: None,
            chat_addr: None,
            message_addr: None,
            gateway_parts: kept,
            hub: event_hub,
            _guards: Vec::new(),
        }
    }

    pub fn keep<T: Send + Sync + 'static>(&mut self, guard: T) {
        self._guards.push(Box::new(guard));
    }

    /// Stops serving and waits until the services have stopped (relays flushed).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// Sends a request; `path` is under /v1.0 and may carry a query; the token goes in the
    /// query string like the seed's requests.
    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> Reply {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}token={token}", self.base);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            // As the seed sends it.
            .header("Content-Type", "text/plain");
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// `GET` of a path outside /v1.0 (`/healthz`, `/readyz`), with no token.
    pub async fn get_root(&self, path: &str) -> Reply {
        let root = self.base.trim_end_matches("/v1.0");
        self.send(self.http.get(format!("{root}{path}"))).await
    }

    /// Every item of a list endpoint, page by page (`path` carries a query already).
    pub async fn list_all(&self, token: &str, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut page_token = String::new();
        loop {
            let reply = self
                .get(
                    &format!("{path}&page_size=100&page_token={page_token}"),
                    token,
                )
                .await;
            let page = reply.ok();
            let result = page["result"].as_array().unwrap();
            items.extend(result.iter().cloned());
            page_token = page["next_page_token"].as_str().unwrap_or("").to_owned();
            if result.is_empty() || page_token.is_empty() {
                return items;
            }
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, token, None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: &str) -> Reply {
        self.call("POST", path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: &str) -> Reply {
        self.call("PUT", path, token, Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call("DELETE", path, token, None).await
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    async fn from(res: reqwest::Response) -> Reply {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// Asserts the status and returns the JSON.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.status, 200,
            "expected 200, got {}: {}",
            self.status, self.text
        );
        &self.json
    }

    /// Asserts an error reply: status, code, and a message that names `field`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, field: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.json["error"]["code"], code, "body: {}", self.text);
        let message = self.json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "message {message:?} should name {field:?}"
        );
    }
}

/// A customer-level admin token of the seed's shape (the `customer` claim).
pub fn customer_token(customer_id: &str) -> String {
    token(
        customer_id,
        None,
        permission::CUSTOMER_ADMIN,
        Duration::from_secs(3600),
    )
}

pub fn agent_token(customer_id: &str, agent_id: &str, permission: u64) -> String {
    token(
        customer_id,
        Some(agent_id),
        permission,
        Duration::from_secs(3600),
    )
}

pub fn token(customer_id: &str, agent_id: Option<&str>, permission: u64, ttl: Duration) -> String {
    named_token(customer_id, agent_id, "Agent", permission, ttl)
}

/// An agent token whose agent has this name (shown on its messages as `target_name`).
pub fn named_agent_token(customer_id: &str, agent_id: &str, name: &str) -> String {
    named_token(
        customer_id,
        Some(agent_id),
        name,
        permission::CUSTOMER_AGENT,
        Duration::from_secs(3600),
    )
}

fn named_token(
    customer_id: &str,
    agent_id: Option<&str>,
    name: &str,
    permission: u64,
    ttl: Duration,
) -> String {
    mint_token(
        SECRET,
        &TokenRequest {
            customer_id: customer_id.parse().unwrap(),
            agent_id: agent_id.map(|a| a.parse().unwrap()),
            agent_name: name.into(),
            permission,
            ttl,
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

/// Webhook delivery as the contract has it, with quick retries (a test cannot wait 5 s per
/// retry) and, where a receiver hangs, a short attempt timeout.
pub fn quick(allow_private: bool) -> webhook_manager::dispatch::DispatchSettings {
    webhook_manager::dispatch::DispatchSettings {
        retry: webhook_manager::deliveries::RetryPolicy {
            first_retry: Duration::from_millis(200),
            ..Default::default()
        },
        address: webhook_manager::address::AddressPolicy { allow_private },
        endpoint_concurrency: 2,
        attempt_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

/// A group chat of `agents` (the first owns it); their chatroom ids, in the same order.
pub async fn group(s: &Stack, admin: &str, agents: &[&str]) -> (String, Vec<String>) {
    let chat = s
        .post(
            "/chats",
            admin,
            &chat_body("group", agents[0], agents, "team"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let mut rooms = Vec::new();
    for agent in agents {
        let listed = s
            .list_all(admin, &format!("/chatrooms?owner_id={agent}"))
            .await;
        let room = listed
            .iter()
            .find(|r| r["chat_id"] == chat_id.as_str())
            .unwrap();
        rooms.push(room["id"].as_str().unwrap().to_owned());
    }
    (chat_id, rooms)
}

/// A whole number from the environment (the benchmarks' settings), else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile of sorted microseconds, in milliseconds (the benchmarks' figures).
pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A `POST /chats` body.
pub fn chat_body(kind: &str, owner: &str, participants: &[&str], name: &str) -> String {
    serde_json::json!({
        "type": kind,
        "owner_id": owner,
        "participant_ids": participants,
        "name": name,
        "detail": "",
    })
    .to_string()
}

/// A WebSocket client of the gateway.
pub struct WsClient {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Stack {
    pub async fn ws(&self, token: &str) -> WsClient {
        let url = format!("{}/ws?token={token}", self.base.replace("http://", "ws://"));
        // tungstenite zeroes its read buffer on each read (128 KiB by default): with hundreds
        // of clients in the bench's process, that cost would be the load generator's, not the
        // gateway's.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(16 * 1024);
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .expect("websocket connects");
        WsClient { stream }
    }

    /// A WebSocket client with the token in an `Authorization: Bearer` header.
    pub async fn ws_bearer(&self, token: &str) -> WsClient {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/ws", self.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        WsClient { stream }
    }

    /// A WebSocket client whose socket has a small, fixed receive buffer (no kernel
    /// autotuning): one that stops reading is noticed by the server after a few frames, however
    /// the machine's TCP buffers are tuned.
    pub async fn ws_small_buffer(&self, token: &str) -> WsClient {
        let url = format!("{}/ws?token={token}", self.base.replace("http://", "ws://"));
        let host = self.base.trim_start_matches("http://");
        let addr: SocketAddr = host[..host.find('/').unwrap()].parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let tcp = socket.connect(addr).await.expect("connects");
        let (stream, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await
                .expect("websocket connects");
        WsClient { stream }
    }
}

impl WsClient {
    pub async fn send(&mut self, value: Value) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(
                value.to_string().into(),
            ))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(
                text.to_owned().into(),
            ))
            .await
            .unwrap();
    }

    /// The next JSON frame within `d`; None on timeout. Panics when the socket closed.
    pub async fn next_within(&mut self, d: Duration) -> Option<Value> {
        self.next_frame(d).await.map(|f| f.expect("socket open"))
    }

    /// The next JSON frame, Some(Err(close code)) when the socket closed, None on timeout.
    pub async fn next_frame(&mut self, d: Duration) -> Option<Result<Value, Option<u16>>> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Err(None)),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(Ok(serde_json::from_str(t.as_str()).unwrap()));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some(Err(frame.map(|f| u16::from(f.code))));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Subscribes and waits for the acknowledgement.
    pub async fn subscribe(&mut self, topics: &[String]) {
        self.send(serde_json::json!({"type": "subscribe", "topics": topics}))
            .await;
        let ack = self
            .next_within(Duration::from_secs(5))
            .await
            .expect("subscribed");
        assert_eq!(ack["type"], "subscribed", "{ack}");
        assert_eq!(ack["topics"], serde_json::json!(topics));
    }

    /// Frames of event `kind` received within `d`, stopping after `n`.
    pub async fn collect(&mut self, kind: &str, n: usize, d: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + d;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(f) if f["type"] == kind => out.push(f),
                Some(_) => {}
                None => break,
            }
        }
        out
    }
}
