//! Helpers for integration tests against the real PostgreSQL and RabbitMQ on this machine.
//!
//! A test asks for a service with `require_postgres` / `require_rabbitmq`. When the service is
//! unreachable the test is skipped: it prints `SKIPPED <test>: <service> not reachable at
//! <addr>` and appends that line to `target/skipped-tests.txt`, so the test command can list
//! what did not run. With `CI=true` a missing service is a failure instead (panic).
//!
//! Every test gets names of its own (a fresh PostgreSQL schema, an exchange/queue prefix), so
//! tests run in parallel and leave nothing behind.

pub mod explain;
pub mod ops;
pub mod receiver;
pub mod tls;

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The internal key of the services tests start (`INTERNAL_AUTH_SECRET`): for tests only.
pub const INTERNAL_AUTH_SECRET: &str = "testkit-internal-key-0123456789abcdef0123456789";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Enough for a local service; an absent one refuses at once or times out here.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Setup and cleanup connections: a reachable broker that does not answer is a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// env `TEST_DATABASE_URL`, default [`DEFAULT_DATABASE_URL`].
pub fn postgres_url() -> String {
    env_or("TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
}

/// env `TEST_AMQP_URL`, default [`DEFAULT_AMQP_URL`].
pub fn amqp_url() -> String {
    env_or("TEST_AMQP_URL", DEFAULT_AMQP_URL)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Where skipped tests are recorded: `$CARGO_TARGET_DIR/skipped-tests.txt`, else the workspace's
/// `target/skipped-tests.txt`.
pub fn skipped_tests_file() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("skipped-tests.txt")
}

/// True when `addr` accepts a TCP connection; otherwise skips (or panics under CI).
async fn require(test: &str, service: &str, addr: &str) -> bool {
    let reachable = matches!(
        tokio::time::timeout(REACHABLE_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    if !reachable {
        report_unreachable(test, service, addr, &skipped_tests_file());
    }
    reachable
}

/// True when `tool` is on `PATH` (a program a fault test drives, such as `rabbitmqctl`);
/// otherwise skips (or panics under CI), as for a missing service.
pub fn require_tool(test: &str, tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        report_skip(
            test,
            &format!("{tool} not found on PATH"),
            &skipped_tests_file(),
        );
    }
    found
}

/// True when `path` exists (a file a test needs that a set-up step makes, such as a tool's
/// installed package); otherwise skips (or panics under CI), saying what makes it.
pub fn require_path(test: &str, path: &Path, made_by: &str) -> bool {
    let found = path.exists();
    if !found {
        report_skip(
            test,
            &format!("{} not found ({made_by})", path.display()),
            &skipped_tests_file(),
        );
    }
    found
}

fn report_unreachable(test: &str, service: &str, addr: &str, record: &Path) {
    report_skip(test, &format!("{service} not reachable at {addr}"), record);
}

fn report_skip(test: &str, why: &str, record: &Path) {
    let line = format!("SKIPPED {test}: {why}");
    if ci() {
        panic!("{line} (CI=true: a missing service is a failure)");
    }
    eprintln!("{line}");
    if let Some(dir) = record.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write of the whole line: parallel test binaries append to the same file.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "testkit: could not record the skip in {}: {e}",
            record.display()
        );
    }
}

/// `host:port` of `scheme://[userinfo@]host[:port][/path][?query]`.
fn host_port(url: &str, default_port: u16) -> String {
    let (_, authority, _) = split_authority(url);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let has_port = match host_port.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host_port.contains(':'),
    };
    if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    }
}

/// (`scheme://`, authority, rest) of a URL.
fn split_authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    (&url[..start], &url[start..end], &url[end..])
}

fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A fresh schema in the test database; dropped (`DROP SCHEMA .. CASCADE`) when this drops.
/// `url` is the plain database URL: the code under test puts its tables in `schema`.
#[derive(Debug)]
pub struct PgSchema {
    pub url: String,
    pub schema: String,
}

impl PgSchema {
    /// The server's socket address (e.g. the target of a [`TcpProxy`]).
    pub fn addr(&self) -> SocketAddr {
        resolve(&host_port(&self.url, 5432))
    }

    /// The database URL with its host and port replaced by the proxy's.
    pub fn url_via(&self, proxy: &TcpProxy) -> String {
        url_via(&self.url, proxy)
    }
}

/// A connection to `url` whose tables are those of `schema` (`search_path`), for tests and
/// benches that read or write a service's schema directly.
pub fn connect_in_schema(url: &str, schema: &str) -> diesel::PgConnection {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let mut conn = diesel::PgConnection::establish(url)
        .unwrap_or_else(|e| panic!("connect to PostgreSQL: {e}"));
    conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
        .expect("search_path");
    conn
}

fn resolve(host_port: &str) -> SocketAddr {
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve {host_port}"))
}

/// `url` with its host and port replaced by the proxy's (credentials, path and query kept).
fn url_via(url: &str, proxy: &TcpProxy) -> String {
    let (scheme, authority, rest) = split_authority(url);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}{userinfo}{}{rest}", proxy.addr())
}

/// A fresh uniquely named schema, or `None` (test skipped) when PostgreSQL is unreachable.
pub async fn require_postgres(test: &str) -> Option<PgSchema> {
    let url = postgres_url();
    if !require(test, "PostgreSQL", &host_port(&url, 5432)).await {
        return None;
    }
    // Named after the test too, so a leftover (a killed test run) says where it came from.
    let sanitized: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let schema = format!("t_{}_{sanitized}", unique_id());
    let (task_url, task_schema, task_test) = (url.clone(), schema.clone(), test.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&task_url).unwrap_or_else(|e| {
            panic!("{task_test}: PostgreSQL at {task_url} is reachable but connecting failed: {e}")
        });
        diesel::sql_query(format!("CREATE SCHEMA \"{task_schema}\""))
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("{task_test}: CREATE SCHEMA {task_schema}: {e}"));
    })
    .await
    .expect("create schema task");
    Some(PgSchema { url, schema })
}

impl Drop for PgSchema {
    /// Synchronous on purpose: works inside or outside a runtime, and while unwinding.
    fn drop(&mut self) {
        let dropped = PgConnection::establish(&self.url)
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                // A connection the test leaked mid-transaction must not hang the test forever.
                diesel::sql_query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .and_then(|_| {
                        diesel::sql_query(format!(
                            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                            self.schema
                        ))
                        .execute(&mut conn)
                    })
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = dropped {
            eprintln!("testkit: could not drop schema {}: {e}", self.schema);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

/// A unique name prefix for exchanges and queues. Every name handed out by [`AmqpNames::name`]
/// is deleted (as an exchange and as a queue, best effort) by [`AmqpNames::cleanup`] or on drop,
/// and so is its `<name>.dead-letter` (where a subscriber sets aside what it cannot apply).
#[derive(Debug)]
pub struct AmqpNames {
    pub url: String,
    pub prefix: String,
    handed_out: Mutex<Vec<String>>,
}

/// A unique name prefix, or `None` (test skipped) when RabbitMQ is unreachable.
pub async fn require_rabbitmq(test: &str) -> Option<AmqpNames> {
    let url = amqp_url();
    if !require(test, "RabbitMQ", &host_port(&url, 5672)).await {
        return None;
    }
    Some(AmqpNames {
        url,
        prefix: format!("t{}", unique_id()),
        handed_out: Mutex::default(),
    })
}

impl AmqpNames {
    /// `"chat.events"` -> `"t1a2b3c4d.chat.events"`; remembered for cleanup.
    pub fn name(&self, base: &str) -> String {
        let name = format!("{}.{base}", self.prefix);
        self.lock().push(name.clone());
        name
    }

    /// The broker's socket address (e.g. the target of a [`TcpProxy`]).
    pub fn addr(&self) -> SocketAddr {
        resolve(&host_port(&self.url, 5672))
    }

    /// The broker URL with its host and port replaced by the proxy's.
    pub fn url_via(&self, proxy: &TcpProxy) -> String {
        url_via(&self.url, proxy)
    }

    /// Deletes the handed-out names now (rather than in `Drop`, which needs a thread).
    pub async fn cleanup(self) {
        let names = std::mem::take(&mut *self.lock());
        delete_names(&self.url, names).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.handed_out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for AmqpNames {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.lock());
        if names.is_empty() {
            return;
        }
        let url = self.url.clone();
        // lapin needs a runtime, and we may be on one we must not block: use a thread with its own.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(delete_names(&url, names));
        })
        .join();
        if cleaned.is_err() {
            eprintln!("testkit: AMQP cleanup panicked");
        }
    }
}

/// A virtual host of its own with the three processes' broker users, made by the project's
/// `deploy/rabbitmq/create-users` (so the permissions tested are the ones deployed); the
/// vhost (with everything in it) and the users are deleted on drop. Needs `rabbitmqctl` on
/// this machine.
#[derive(Debug)]
pub struct BrokerUsers {
    pub vhost: String,
    pub chat_manager_url: String,
    pub message_manager_url: String,
    pub api_gateway_url: String,
    /// guest, with every right on the vhost: for the test's own readers and clean-up.
    pub admin_url: String,
    users: Vec<String>,
}

/// The exchange and queue names the users' rights cover.
#[derive(Debug, Clone)]
pub struct BrokerNames<'a> {
    pub chat_exchange: &'a str,
    pub message_exchange: &'a str,
    pub chat_events_queue: &'a str,
    pub typing_exchange: &'a str,
}

/// Per-process broker users on a fresh vhost (None, and the test skipped, without RabbitMQ or
/// `rabbitmqctl`).
pub async fn broker_users(test: &str, names: BrokerNames<'_>) -> Option<BrokerUsers> {
    let amqp = require_rabbitmq(test).await?;
    if !require_tool(test, "rabbitmqctl") {
        return None;
    }
    let id = unique_id();
    let vhost = format!("test-{id}");
    let prefix = format!("t{id}.");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq/create-users");
    let password = |who: &str| format!("{who}-{}", unique_id());
    let passwords = [
        ("chat-manager", password("cm")),
        ("message-manager", password("mm")),
        ("api-gateway", password("gw")),
    ];
    let out = tokio::process::Command::new(&script)
        .env("AMQP_VHOST", &vhost)
        .env("AMQP_USER_PREFIX", &prefix)
        .env("CHAT_MANAGER_AMQP_PASSWORD", &passwords[0].1)
        .env("MESSAGE_MANAGER_AMQP_PASSWORD", &passwords[1].1)
        .env("API_GATEWAY_AMQP_PASSWORD", &passwords[2].1)
        .env("CHAT_EVENTS_EXCHANGE", names.chat_exchange)
        .env("MESSAGE_EVENTS_EXCHANGE", names.message_exchange)
        .env("CHAT_EVENTS_QUEUE", names.chat_events_queue)
        .env("TYPING_EXCHANGE", names.typing_exchange)
        .output()
        .await
        .expect("run deploy/rabbitmq/create-users");
    let users: Vec<String> = passwords
        .iter()
        .map(|(who, _)| format!("{prefix}{who}"))
        .collect();
    let broker = BrokerUsers {
        admin_url: vhost_url(&amqp.url, "guest", "guest", &vhost),
        chat_manager_url: vhost_url(&amqp.url, &users[0], &passwords[0].1, &vhost),
        message_manager_url: vhost_url(&amqp.url, &users[1], &passwords[1].1, &vhost),
        api_gateway_url: vhost_url(&amqp.url, &users[2], &passwords[2].1, &vhost),
        vhost,
        users,
    };
    assert!(
        out.status.success(),
        "create-users failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    rabbitmqctl(&[
        "set_permissions",
        "-p",
        &broker.vhost,
        "guest",
        ".*",
        ".*",
        ".*",
    ]);
    Some(broker)
}

/// `url` (guest's, to the default vhost) for `user` on `vhost`.
fn vhost_url(url: &str, user: &str, password: &str, vhost: &str) -> String {
    let (scheme, authority, _) = split_authority(url);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "{scheme}{}:{}@{host}/{}",
        enc(user),
        enc(password),
        enc(vhost)
    )
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "testkit: rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("testkit: rabbitmqctl {args:?}: {e}"),
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.vhost]);
        for user in &self.users {
            rabbitmqctl(&["delete_user", user]);
        }
    }
}

/// Deletes each name as an exchange and as a queue; a name that is neither is fine.
async fn delete_names(url: &str, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let conn = match connect(url).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("testkit: AMQP cleanup skipped ({e}); left behind: {names:?}");
            return;
        }
    };
    let names: Vec<String> = names
        .into_iter()
        .flat_map(|n| [format!("{n}.dead-letter"), n])
        .collect();
    for name in &names {
        // A channel per operation: a failed one closes its channel.
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .exchange_delete(name.as_str().into(), Default::default())
                .await;
        }
        // A consumer's queue comes with its dead-letter queue, named after it by the service.
        for queue in [name.clone(), format!("{name}.dead-letter")] {
            if let Ok(channel) = conn.create_channel().await {
                let _ = channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await;
            }
        }
    }
    let _ = conn.close(200, "OK".into()).await;
}

async fn connect(url: &str) -> Result<Connection, String> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("connect {url}: {e}")),
        Err(_) => Err(format!("connect {url}: timed out")),
    }
}

/// One event as the broker delivered it: routing key, AMQP properties, JSON body.
pub type ReceivedEvent = (String, BasicProperties, serde_json::Value);

/// Declares a durable queue bound to `exchange` with `#` (and the exchange, as the bus does):
/// unlike an [`EventReader`]'s queue it survives a broker restart. Name both with
/// [`AmqpNames::name`] so they get deleted; read it with [`drain_queue`].
pub async fn durable_queue(url: &str, exchange: &str, queue: &str) {
    let conn = connect(url)
        .await
        .unwrap_or_else(|e| panic!("durable_queue: {e}"));
    let channel = conn.create_channel().await.expect("durable_queue: channel");
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable_queue: declare exchange");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable_queue: declare queue");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("durable_queue: bind");
    let _ = conn.close(200, "OK".into()).await;
}

/// Takes every message waiting in the named queue (basic.get until empty), as
/// `(message id, JSON-or-text body)`. For queues the code under test declares and fills.
pub async fn drain_queue(url: &str, queue: &str) -> Vec<(String, String)> {
    let conn = connect(url)
        .await
        .unwrap_or_else(|e| panic!("drain_queue: {e}"));
    let channel = conn.create_channel().await.expect("drain_queue: channel");
    let mut taken = Vec::new();
    while let Some(m) = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap_or_else(|e| panic!("drain_queue: get from {queue}: {e}"))
    {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        taken.push((id, String::from_utf8_lossy(&m.delivery.data).into_owned()));
    }
    let _ = conn.close(200, "OK".into()).await;
    taken
}

/// A string header of a received event (`x-request-id`, `traceparent`).
pub fn header(event: &ReceivedEvent, name: &str) -> Option<String> {
    match event.1.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Reads events off a fresh exclusive queue bound to an exchange with `#` (lapin directly, so
/// tests check what the real broker got). Panics on setup failures: they are test failures.
pub struct EventReader {
    // The consumer lives as long as its channel, the channel as long as the connection.
    _conn: Connection,
    _channel: Channel,
    consumer: Consumer,
}

impl EventReader {
    /// Declares `exchange` (durable topic, as the bus does) so the queue can be bound before the
    /// code under test first publishes. Name it with [`AmqpNames::name`] so it gets deleted.
    pub async fn bind(url: &str, exchange: &str) -> EventReader {
        let conn = connect(url)
            .await
            .unwrap_or_else(|e| panic!("EventReader: {e}"));
        let channel = conn.create_channel().await.expect("EventReader: channel");
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("EventReader: declare exchange {exchange}: {e}"));
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("EventReader: declare queue");
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("EventReader: bind queue");
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("EventReader: consume");
        EventReader {
            _conn: conn,
            _channel: channel,
            consumer,
        }
    }

    /// The next event, or `None` if none arrives within `wait`. Panics if a body is not JSON.
    pub async fn next_within(&mut self, wait: Duration) -> Option<ReceivedEvent> {
        match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => None,
            Ok(Some(Ok(d))) => {
                let body = serde_json::from_slice(&d.data).unwrap_or_else(|e| {
                    panic!(
                        "event body is not JSON ({e}): {}",
                        String::from_utf8_lossy(&d.data)
                    )
                });
                Some((d.routing_key.to_string(), d.properties, body))
            }
            Ok(Some(Err(e))) => panic!("EventReader: consumer failed: {e}"),
            Ok(None) => panic!("EventReader: consumer ended"),
        }
    }

    /// Every event that arrives within `wait` (from now).
    pub async fn collect_for(&mut self, wait: Duration) -> Vec<ReceivedEvent> {
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        while let Some(event) = self
            .next_within(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            events.push(event);
        }
        events
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection

/// A TCP proxy in front of a real service, for fault tests: listens on 127.0.0.1:0 and forwards
/// to `target`. `set_up(false)` resets every live connection and refuses new ones (accepts, then
/// resets) until `set_up(true)`. `black_hole()` keeps every connection open but forwards
/// nothing either way, and accepts new ones without ever connecting them (a peer that stopped
/// answering, a network that drops packets) until `set_up` ends it: `set_up(true)` resumes
/// the live connections and resets the held new ones. Dropping the proxy closes everything.
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    BlackHole,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("TcpProxy: bind");
        let addr = listener.local_addr().expect("TcpProxy: local addr");
        let (mode, mode_rx) = watch::channel(Mode::Up);
        let accept = tokio::spawn(accept_loop(listener, target, mode_rx));
        TcpProxy { addr, mode, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_up(&self, up: bool) {
        self.mode
            .send_replace(if up { Mode::Up } else { Mode::Down });
    }

    /// Stops forwarding without closing anything (see the type's documentation).
    pub fn black_hole(&self) {
        self.mode.send_replace(Mode::BlackHole);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Live connections end when the sender goes (their `wait_for` fails), or here.
        self.mode.send_replace(Mode::Down);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // E.g. out of file descriptors: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let current = *mode.borrow();
        match current {
            // A reset rather than a FIN: the client sees the failure at once.
            Mode::Down => {
                let _ = client.set_zero_linger();
            }
            Mode::BlackHole => {
                let mut mode = mode.clone();
                tokio::spawn(async move {
                    let _ = mode.wait_for(|m| *m != Mode::BlackHole).await;
                    let _ = client.set_zero_linger();
                });
            }
            Mode::Up => {
                tokio::spawn(forward(client, target, mode.clone()));
            }
        }
    }
}

async fn forward(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(Ok(server)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = pump(&client, &server, mode.clone()) => {}
        _ = pump(&server, &client, mode.clone()) => {}
        _ = mode.wait_for(|m| *m == Mode::Down) => {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

/// Copies `from` to `to` until EOF or an error, reading nothing while black-holed
/// (readiness-based, so tokio's `io-util` feature, which the workspace does not enable, is not
/// needed).
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    mut mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let up = match mode.wait_for(|m| *m != Mode::BlackHole).await {
            Ok(m) => *m == Mode::Up,
            Err(_) => return Ok(()),
        };
        if !up {
            // Down: `forward` resets both sides.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            ready = from.readable() => ready?,
            _ = mode.changed() => continue,
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < n {
            to.writable().await?;
            match to.try_write(&buf[written..n]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::{BigInt, Text};
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, LongString};

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    fn schema_exists(url: &str, schema: &str) -> bool {
        let mut conn = PgConnection::establish(url).expect("connect");
        let rows: Vec<Count> = diesel::sql_query(
            "SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = $1",
        )
        .bind::<Text, _>(schema)
        .load(&mut conn)
        .expect("query");
        rows[0].n == 1
    }

    async fn exchange_exists(url: &str, exchange: &str) -> bool {
        let conn = connect(url).await.expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok()
    }

    #[test]
    fn urls_are_split_into_host_and_port() {
        assert_eq!(host_port(DEFAULT_DATABASE_URL, 5432), "127.0.0.1:5432");
        assert_eq!(host_port(DEFAULT_AMQP_URL, 5672), "127.0.0.1:5672");
        assert_eq!(host_port("amqp://localhost", 5672), "localhost:5672");
        assert_eq!(
            host_port("postgres://u:p@db/x?sslmode=disable", 5432),
            "db:5432"
        );
        assert_eq!(host_port("postgres://[::1]/x", 5432), "[::1]:5432");
        assert_eq!(host_port("postgres://[::1]:6000/x", 5432), "[::1]:6000");
    }

    #[tokio::test]
    async fn url_via_points_at_the_proxy_and_keeps_credentials_and_vhost() {
        let names = AmqpNames {
            url: DEFAULT_AMQP_URL.into(),
            prefix: "tx".into(),
            handed_out: Mutex::default(),
        };
        let proxy = TcpProxy::start("127.0.0.1:1".parse().unwrap()).await;
        assert_eq!(
            names.url_via(&proxy),
            format!("amqp://guest:guest@{}/%2f", proxy.addr())
        );
        assert_eq!(names.name("chat.events"), "tx.chat.events");
        names.handed_out.lock().unwrap().clear(); // nothing to delete
    }

    #[tokio::test]
    async fn an_unreachable_service_is_skipped_and_recorded_or_fails_under_ci() {
        let record = std::env::temp_dir().join(format!("skipped-{}.txt", unique_id()));
        let task_record = record.clone();
        let outcome = tokio::spawn(async move {
            report_unreachable("testkit::demo", "Nothing", "127.0.0.1:1", &task_record)
        })
        .await;
        if ci() {
            assert!(outcome.unwrap_err().is_panic());
        } else {
            outcome.unwrap();
            let text = std::fs::read_to_string(&record).unwrap();
            assert_eq!(
                text,
                "SKIPPED testkit::demo: Nothing not reachable at 127.0.0.1:1\n"
            );
            std::fs::remove_file(&record).unwrap();
        }
    }

    #[tokio::test]
    async fn postgres_schema_is_created_and_dropped() {
        let Some(pg) = require_postgres("testkit::postgres_schema_is_created_and_dropped").await
        else {
            return;
        };
        assert!(pg.schema.starts_with("t_"));
        let (url, schema) = (pg.url.clone(), pg.schema.clone());
        let (u, s) = (url.clone(), schema.clone());
        assert!(
            tokio::task::spawn_blocking(move || schema_exists(&u, &s))
                .await
                .unwrap()
        );
        // Tables in it go too (CASCADE); dropping inside the runtime is fine.
        let (u, s) = (url.clone(), schema.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = PgConnection::establish(&u).unwrap();
            diesel::sql_query(format!("CREATE TABLE \"{s}\".t (id INT)"))
                .execute(&mut conn)
                .unwrap();
        })
        .await
        .unwrap();
        drop(pg);
        assert!(
            !tokio::task::spawn_blocking(move || schema_exists(&url, &schema))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn event_reader_sees_what_the_broker_got_and_names_are_cleaned_up() {
        let Some(amqp) = require_rabbitmq("testkit::event_reader_sees_what_the_broker_got").await
        else {
            return;
        };
        let exchange = amqp.name("chat.events");
        assert!(exchange.starts_with(&amqp.prefix));
        let mut reader = EventReader::bind(&amqp.url, &exchange).await;

        let conn = connect(&amqp.url).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(LongString::from("req-1")),
        );
        for (i, key) in ["chat_created", "chatroom_deleted"].iter().enumerate() {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    (*key).into(),
                    BasicPublishOptions::default(),
                    format!(r#"{{"n":{i}}}"#).as_bytes(),
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(format!("id-{i}").into())
                        .with_headers(headers.clone()),
                )
                .await
                .unwrap();
        }
        let (key, props, body) = reader.next_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(key, "chat_created");
        assert_eq!(props.message_id().as_ref().unwrap().as_str(), "id-0");
        assert_eq!(*props.delivery_mode(), Some(2));
        assert!(
            props
                .headers()
                .as_ref()
                .unwrap()
                .contains_key("x-request-id")
        );
        assert_eq!(body, serde_json::json!({"n": 0}));
        let rest = reader.collect_for(Duration::from_millis(500)).await;
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, "chatroom_deleted");
        let _ = conn.close(200, "OK".into()).await;
        drop(reader);

        let url = amqp.url.clone();
        assert!(exchange_exists(&url, &exchange).await);
        amqp.cleanup().await;
        assert!(!exchange_exists(&url, &exchange).await);

        // The same through Drop, from inside the runtime.
        let amqp = require_rabbitmq("testkit::amqp_names_drop").await.unwrap();
        let exchange = amqp.name("message.events");
        drop(EventReader::bind(&amqp.url, &exchange).await);
        assert!(exchange_exists(&url, &exchange).await);
        drop(amqp);
        assert!(!exchange_exists(&url, &exchange).await);
    }

    /// A black hole holds connections open and forwards nothing; `set_up(true)` resumes.
    #[tokio::test]
    async fn proxy_black_hole_forwards_nothing_until_it_is_up_again() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(s);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = TcpProxy::start(target).await;
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 4];
        live.write_all(b"ping").await.unwrap();
        live.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.black_hole();
        tokio::time::sleep(Duration::from_millis(50)).await;
        live.write_all(b"lost").await.unwrap();
        let mut held = TcpStream::connect(proxy.addr()).await.expect("accepted");
        held.write_all(b"held").await.unwrap();
        for stream in [&mut live, &mut held] {
            let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf));
            assert!(read.await.is_err(), "no answer, and no close");
        }

        proxy.set_up(true);
        live.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"lost", "held back, not dropped");
        let ended = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buf)).await;
        assert!(
            matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
            "the held connection is reset"
        );
    }

    #[tokio::test]
    async fn proxy_forwards_cuts_and_refuses_then_recovers() {
        let Some(amqp) = require_rabbitmq("testkit::proxy_forwards_cuts_and_refuses").await else {
            return;
        };
        let proxy = TcpProxy::start(amqp.addr()).await;
        let url = amqp.url_via(&proxy);

        let conn = connect(&url).await.expect("through the proxy");
        let channel = conn.create_channel().await.expect("channel");
        assert!(channel.status().connected());

        proxy.set_up(false);
        let started = Instant::now();
        while conn.status().connected() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the live connection is cut"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = connect(&url).await;
        assert!(refused.is_err(), "new connections are refused");
        assert!(started.elapsed() < Duration::from_secs(5), "and fast");

        proxy.set_up(true);
        let conn = connect(&url).await.expect("up again");
        assert!(conn.create_channel().await.is_ok());
        let _ = conn.close(200, "OK".into()).await;
    }
}
