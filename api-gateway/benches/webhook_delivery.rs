//! Webhook delivery in the split deployment (chat-manager, message-manager, webhook-manager
//! and the gateway in this process over gRPC sockets, this machine's PostgreSQL and RabbitMQ):
//! events are made by `POST /v1.0/chatmessages` through the gateway, one tenant per phase,
//! every webhook listening to `messagechat_created` and pointing at a receiver of its own (a
//! port of its own on loopback, in this process: it counts requests and notes when each
//! message's delivery arrived). Three measurements, for 1 and for 100 webhooks:
//!
//! 1. **Throughput**: 16 senders in a closed loop, each holding back while more than
//!    `BENCH_BACKLOG` deliveries are outstanding (sent x webhooks - received), so the dispatcher
//!    always has work and the backlog stays bounded. Deliveries received over a steady window
//!    after a warm-up: deliveries/s and events/s, the sends' rate, how long the senders were
//!    held back, where the backlog sat (the webhook queue on RabbitMQ, the delivery rows not
//!    yet done), the CPU of PostgreSQL, RabbitMQ and this process, and what PostgreSQL's
//!    sessions were doing (sampled from `pg_stat_activity`).
//! 2. **Delay from commit to delivery**, sends paced at half the throughput's event rate:
//!    commit = when the `POST /chatmessages` answer reached the sender (the message and its
//!    event committed before the answer), delivery = when the receiver had the request; matched
//!    by the message id in the delivered body (`data.id`). p50, p99, max; split where
//!    webhook-manager's consumer stamped the delivery row (`tm_create`), and, for several
//!    webhooks, how far apart one event's deliveries arrived.
//! 3. The same paced run with **one more webhook whose receiver never answers**
//!    (`testkit::receiver::Answer::Hang`): the healthy receivers' delay beside 2. A customer
//!    may have at most 100 webhooks, so for 100 the hanging one takes a healthy one's place.
//!
//! `cargo bench -p api-gateway --bench webhook_delivery`; tune with BENCH_WEBHOOKS (default
//! "1 100"), BENCH_SECONDS (throughput window, default 15), BENCH_WARMUP (default 3),
//! BENCH_PACED_SECONDS (each paced run, default 15), BENCH_SENDERS (default 16),
//! BENCH_BACKLOG (default max(2,000, 40 x webhooks)), BENCH_RATE (paced events/s instead of
//! half the measured rate), BENCH_ENDPOINT_CONCURRENCY (default DispatchSettings' 8),
//! BENCH_PHASES (default "throughput paced hang"), BENCH_PG_SAMPLES=0 (no `pg_stat_activity`
//! sampling), BENCH_POOL_SIZE (each service's PostgreSQL connections, default theirs: 4),
//! BENCH_PGSSLMODE (default `disable`, as `scripts/bench-send`: no TLS on loopback). The
//! gateway's rate limits are off; webhooks may point at loopback; the dispatcher is otherwise
//! at its defaults. Load generator, receivers and services share this process and its cores.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_gateway::rate_limit::RateLimit;
use diesel::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::*;
use testkit::receiver::{Answer, WebhookReceiver};
use tokio::sync::Semaphore;
use webhook_manager::address::AddressPolicy;
use webhook_manager::dispatch::DispatchSettings;

// ---------------------------------------------------------------------------------------------
// The receivers: one port per webhook, one shared count.

/// What every receiver of a phase shares.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    /// While set, each delivery's message id and arrival are noted.
    noting: AtomicBool,
    arrivals: Mutex<Vec<(String, Instant, u64)>>,
}

#[derive(serde::Deserialize)]
struct Frame {
    data: FrameData,
}

#[derive(serde::Deserialize)]
struct FrameData {
    id: String,
}

/// Microseconds since the epoch, on the clock webhook-manager stamps its rows with.
fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

impl Sink {
    fn arrived(&self, body: &[u8]) {
        let at = Instant::now();
        if self.noting.load(Ordering::Relaxed)
            && let Ok(frame) = serde_json::from_slice::<Frame>(body)
        {
            self.arrivals
                .lock()
                .unwrap()
                .push((frame.data.id, at, wall_micros()));
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// `ports` receivers answering 200 to everything, counting into `sink`; their URLs.
async fn start_receivers(sink: &Arc<Sink>, ports: usize) -> Vec<String> {
    let mut urls = Vec::with_capacity(ports);
    for _ in 0..ports {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        urls.push(format!("http://{addr}/hook"));
        let sink = sink.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            sink.arrived(&body);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    urls
}

// ---------------------------------------------------------------------------------------------
// The machine: CPU by process, PostgreSQL's view.

/// CPU time so far: the machine's (busy, all) in jiffies, and each kind of process's.
struct CpuSnapshot {
    busy: u64,
    all: u64,
    by_kind: HashMap<&'static str, u64>,
}

fn cpu_snapshot() -> CpuSnapshot {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let all: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let me = std::process::id().to_string();
    let mut by_kind: HashMap<&'static str, u64> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
                continue;
            };
            let comm = &text[open + 1..close];
            let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
            let ticks = rest
                .get(11)
                .and_then(|u| u.parse::<u64>().ok())
                .unwrap_or(0)
                + rest
                    .get(12)
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
            let kind = if pid == me {
                "bench"
            } else if comm == "postgres" {
                "postgres"
            } else if comm == "beam.smp" {
                "rabbitmq"
            } else {
                "other"
            };
            *by_kind.entry(kind).or_default() += ticks;
        }
    }
    CpuSnapshot {
        busy: all - idle,
        all,
        by_kind,
    }
}

/// Cores used between two snapshots: the machine's, and by kind of process.
fn cores_between(a: &CpuSnapshot, b: &CpuSnapshot) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let per_core = (b.all - a.all) as f64 / cpus;
    if per_core <= 0.0 {
        return "-".into();
    }
    let kind = |k: &str| {
        (b.by_kind.get(k).copied().unwrap_or(0) as f64
            - a.by_kind.get(k).copied().unwrap_or(0) as f64)
            / per_core
    };
    let busy = (b.busy - a.busy) as f64 / per_core;
    let (pg, mq, me) = (kind("postgres"), kind("rabbitmq"), kind("bench"));
    // The rest by difference: processes that ended in the window took their time with them.
    format!(
        "machine {busy:.2} of {cpus:.0} cores: postgres {pg:.2}, rabbitmq {mq:.2}, this process {me:.2}, the rest {:.2}",
        busy - pg - mq - me,
    )
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Activity {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    class: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    wait: String,
}

/// Each non-idle session of this database: what its statement is for (by its text) and what
/// it is waiting for.
const ACTIVITY_SQL: &str = r#"SELECT pid,
  CASE
    WHEN query LIKE 'UPDATE "deliveries" SET "attempts"%'
      OR query LIKE 'SELECT "deliveries"."id"%'
      OR query LIKE 'SELECT min("deliveries"."tm_next_attempt")%'
      OR (query LIKE 'SELECT "webhooks".%' AND query LIKE '%"webhooks"."id" = $1%')
      THEN 'webhooks: claim'
    WHEN query LIKE 'UPDATE "deliveries" SET "status"%' THEN 'webhooks: record a result'
    WHEN query LIKE 'INSERT INTO "deliveries"%' OR query LIKE 'INSERT INTO processed_events%'
      OR (query LIKE 'SELECT "webhooks".%' AND query LIKE '%"webhooks"."customer_id" = $1%')
      THEN 'webhooks: consumer'
    WHEN query LIKE 'WITH message AS%' OR query LIKE 'SELECT CAST(0 AS BIGINT) AS part%'
      THEN 'message-manager: send'
    WHEN query ILIKE '%outbox%' THEN 'relays (outbox)'
    WHEN query IN ('BEGIN', 'COMMIT', 'ROLLBACK') THEN query
    ELSE left(regexp_replace(query, '\s+', ' ', 'g'), 50)
  END AS class,
  CASE
    WHEN state LIKE 'idle in transaction%' THEN 'in a transaction, waiting for the client'
    WHEN wait_event IN ('WALSync', 'WALWrite', 'WALInsert') THEN 'WAL write/flush'
    WHEN wait_event_type IS NULL THEN 'on CPU'
    WHEN wait_event_type = 'Client' THEN 'waiting for the client'
    ELSE wait_event_type || ':' || wait_event
  END AS wait
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND state <> 'idle'"#;

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .map_or(-1, |c| c.n)
}

/// What PostgreSQL says while a window runs, sampled on a thread of its own.
#[derive(Default)]
struct PgView {
    /// Non-idle sessions of this database by (what for, waiting for what), in samples.
    activity: HashMap<(String, String), u64>,
    samples: u64,
    /// The delivery rows not yet done, once a second.
    pending: Vec<i64>,
}

fn sample_pg(url: String, schema: String, stop: Arc<AtomicBool>, activity: bool) -> PgView {
    let mut view = PgView::default();
    let Ok(mut conn) = PgConnection::establish(&url) else {
        return view;
    };
    let pending_sql = format!(
        "SELECT count(*) AS n FROM \"{schema}\".deliveries WHERE status IN ('pending', 'retrying')"
    );
    // A BEGIN or COMMIT is put down to what its session was last seen doing.
    let mut last: HashMap<i32, String> = HashMap::new();
    let mut next_count = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_count {
            view.pending.push(count(&mut conn, &pending_sql));
            next_count += Duration::from_secs(1);
        }
        if activity {
            if let Ok(rows) = diesel::sql_query(ACTIVITY_SQL).load::<Activity>(&mut conn) {
                for r in rows {
                    let class = match r.class.as_str() {
                        "BEGIN" | "COMMIT" | "ROLLBACK" => last
                            .get(&r.pid)
                            .map_or(r.class.clone(), |c| format!("{c} (its {})", r.class)),
                        _ => {
                            last.insert(r.pid, r.class.clone());
                            r.class
                        }
                    };
                    *view.activity.entry((class, r.wait)).or_default() += 1;
                }
            }
            view.samples += 1;
        }
        std::thread::sleep(Duration::from_millis(if activity { 100 } else { 250 }));
    }
    view
}

/// When each of the tenant's messages had its delivery rows planned (µs since the epoch).
async fn planned_at(url: &str, schema: &str, customer: &str) -> HashMap<String, u64> {
    #[derive(QueryableByName)]
    struct Planned {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        us: i64,
    }
    let sql = format!(
        "SELECT DISTINCT body::json->'data'->>'id' AS id, \
         (extract(epoch FROM tm_create) * 1000000)::bigint AS us \
         FROM \"{schema}\".deliveries WHERE customer_id = $1"
    );
    let (url, customer) = (url.to_owned(), customer.to_owned());
    tokio::task::spawn_blocking(move || {
        let Ok(mut conn) = PgConnection::establish(&url) else {
            return HashMap::new();
        };
        diesel::sql_query(sql)
            .bind::<diesel::sql_types::Text, _>(customer)
            .load::<Planned>(&mut conn)
            .map(|rows| rows.into_iter().map(|r| (r.id, r.us as u64)).collect())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// Transactions committed in the database so far (every service's).
async fn commits(url: &str) -> i64 {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        PgConnection::establish(&url).map_or(-1, |mut c| {
            count(
                &mut c,
                "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()",
            )
        })
    })
    .await
    .unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------------
// Set-up through the API.

struct Tenant {
    customer: String,
    admin: String,
    /// 2-person chats and the agent who sends to each.
    chats: Vec<(String, String)>,
}

async fn tenant(stack: &Stack, chats: usize) -> Tenant {
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut made = Vec::new();
    for _ in 0..chats {
        let (a, b) = (new_id(), new_id());
        let chat = stack
            .post(
                "/chats",
                &admin,
                &chat_body("normal", &a, &[&a, &b], "bench"),
            )
            .await
            .ok()
            .clone();
        made.push((chat["id"].as_str().unwrap().to_owned(), a));
    }
    Tenant {
        customer,
        admin,
        chats: made,
    }
}

async fn create_webhook(stack: &Stack, admin: &str, uri: &str) -> String {
    let body = json!({"name": "bench", "uri": uri, "event_types": ["messagechat_created"]});
    let hook = stack.post("/webhooks", admin, &body.to_string()).await;
    hook.ok()["id"].as_str().unwrap().to_owned()
}

fn message_body(chat: &str, sender: &str, n: u64) -> String {
    json!({"chat_id": chat, "source": {"type": "agent", "target": sender}, "text": format!("m{n}")})
        .to_string()
}

/// Waits until `sink` has `expected` deliveries (or `limit` passes); how long it took.
async fn drained(sink: &Sink, expected: u64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while sink.received.load(Ordering::Relaxed) < expected {
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(started.elapsed())
}

struct Env {
    stack: Arc<Stack>,
    pg_url: String,
    webhook_schema: String,
    queue: String,
    bus: pipeline::bus::EventBus,
    senders: usize,
    pg_samples: bool,
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput.

/// Returns the events/s delivered (each to every webhook).
async fn throughput(env: &Env, webhooks: usize, warmup: u64, seconds: u64) -> f64 {
    let stack = &env.stack;
    let t = Arc::new(tenant(stack, env.senders).await);
    let sink = Arc::new(Sink::default());
    for url in start_receivers(&sink, webhooks).await {
        create_webhook(stack, &t.admin, &url).await;
    }
    let cap = env_or("BENCH_BACKLOG", (40 * webhooks as u64).max(2000));
    let w = webhooks as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let held_us = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..env.senders {
        let (stack, t, sink) = (stack.clone(), t.clone(), sink.clone());
        let (stop, sent, errors, held_us) =
            (stop.clone(), sent.clone(), errors.clone(), held_us.clone());
        tasks.push(tokio::spawn(async move {
            let (chat, sender) = &t.chats[i % t.chats.len()];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let waited = Instant::now();
                let mut held = false;
                while sent.load(Ordering::Relaxed) * w > sink.received.load(Ordering::Relaxed) + cap
                    && !stop.load(Ordering::Relaxed)
                {
                    held = true;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if held {
                    held_us.fetch_add(waited.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                n += 1;
                // Counted before it is sent: the cap bounds what may be in the pipeline.
                sent.fetch_add(1, Ordering::Relaxed);
                let reply = stack
                    .post("/chatmessages", &t.admin, &message_body(chat, sender, n))
                    .await;
                if reply.status != 200 {
                    sent.fetch_sub(1, Ordering::Relaxed);
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(warmup)).await;

    // The window.
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (url, schema, stop, act) = (
            env.pg_url.clone(),
            env.webhook_schema.clone(),
            sampling.clone(),
            env.pg_samples,
        );
        std::thread::spawn(move || sample_pg(url, schema, stop, act))
    };
    // Once a second: the webhook queue's depth, and deliveries received so far.
    let depths = {
        let (bus, queue, stop, sink) = (
            env.bus.clone(),
            env.queue.clone(),
            sampling.clone(),
            sink.clone(),
        );
        tokio::spawn(async move {
            let (mut depths, mut counts) = (Vec::new(), Vec::new());
            let start = tokio::time::Instant::now();
            let mut tick = 0u32;
            while !stop.load(Ordering::Relaxed) {
                counts.push(sink.received.load(Ordering::Relaxed));
                depths.push(bus.queue_depth(&queue).await.ok().flatten().unwrap_or(0));
                tick += 1;
                tokio::time::sleep_until(start + Duration::from_secs(u64::from(tick))).await;
            }
            (depths, counts)
        })
    };
    let commits0 = commits(&env.pg_url).await;
    let cpu0 = cpu_snapshot();
    let (r0, s0, h0, t0) = (
        sink.received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        held_us.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (r1, s1, h1, elapsed) = (
        sink.received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        held_us.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    let cpu1 = cpu_snapshot();
    let commits1 = commits(&env.pg_url).await;
    sampling.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let view = sampler.join().unwrap_or_default();
    let (depths, counts) = depths.await.unwrap_or_default();
    let outstanding_end = s1 * w - r1.min(s1 * w);
    let expected = sent.load(Ordering::Relaxed) * w;
    let drain = drained(&sink, expected, Duration::from_secs(120)).await;

    let deliveries = (r1 - r0) as f64 / elapsed;
    let events = deliveries / w.max(1) as f64;
    println!(
        "| {webhooks} | {deliveries:.0} | {events:.1} | {:.0} | {:.0}% | {outstanding_end} | {} | {:.0} | {} | {} | {} |",
        (s1 - s0) as f64 / elapsed,
        (h1 - h0) as f64 / 1e6 / (elapsed * env.senders as f64) * 100.0,
        summary(&depths.iter().map(|&d| i64::from(d)).collect::<Vec<_>>()),
        match (depths.first(), depths.last()) {
            (Some(&a), Some(&b)) if depths.len() > 1 => {
                (f64::from(b) - f64::from(a)) / (depths.len() - 1) as f64
            }
            _ => 0.0,
        },
        summary(&view.pending),
        drain.map_or("not within 120 s".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
        if r1 > r0 && commits1 >= commits0 && commits0 >= 0 {
            format!("{:.2}", (commits1 - commits0) as f64 / (r1 - r0) as f64)
        } else {
            "-".into()
        },
    );
    let slices: Vec<String> = counts
        .windows(6)
        .step_by(5)
        .map(|c| format!("{:.0}", (c[5] - c[0]) as f64 / 5.0))
        .collect();
    println!(
        "    deliveries/s by 5 s of the window: {}",
        slices.join(", ")
    );
    println!(
        "    CPU in the window: {}; send errors: {}",
        cores_between(&cpu0, &cpu1),
        errors.load(Ordering::Relaxed)
    );
    if view.samples > 0 {
        print_activity(&view);
    }
    events
}

/// PostgreSQL's sessions by what they were for: how many at a time on average, and waiting
/// for what.
fn print_activity(view: &PgView) {
    let mut by_class: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
    for ((class, wait), n) in &view.activity {
        by_class.entry(class).or_default().push((wait, *n));
    }
    type Class<'a> = (&'a str, u64, Vec<(&'a str, u64)>);
    let mut classes: Vec<Class> = by_class
        .into_iter()
        .map(|(c, mut waits)| {
            waits.sort_by_key(|w| std::cmp::Reverse(w.1));
            (c, waits.iter().map(|w| w.1).sum(), waits)
        })
        .collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let per = |n: u64| n as f64 / view.samples as f64;
    println!(
        "    PostgreSQL sessions not idle, sessions at a time on average over {} samples (a BEGIN/COMMIT counted with what its session last ran):",
        view.samples
    );
    for (class, total, waits) in classes.into_iter().take(10) {
        let waits: Vec<String> = waits
            .iter()
            .filter(|w| per(w.1) >= 0.01)
            .map(|(w, n)| format!("{w} {:.2}", per(*n)))
            .collect();
        println!("      {:.2}  {class}: {}", per(total), waits.join(", "));
    }
}

/// "mean (max)" of samples.
fn summary(samples: &[i64]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let mean = samples.iter().sum::<i64>() as f64 / samples.len() as f64;
    format!("{mean:.0} ({})", samples.iter().max().unwrap())
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Paced.

async fn paced(env: &Env, webhooks: usize, rate: f64, seconds: u64, hang: bool) {
    let stack = &env.stack;
    // A customer may have at most 100 webhooks: the hanging one takes a healthy one's place.
    let max = webhook_manager::webhooks::MAX_WEBHOOKS_PER_CUSTOMER as usize;
    let webhooks = if hang {
        webhooks.min(max - 1)
    } else {
        webhooks
    };
    let t = Arc::new(tenant(stack, env.senders).await);
    let sink = Arc::new(Sink::default());
    for url in start_receivers(&sink, webhooks).await {
        create_webhook(stack, &t.admin, &url).await;
    }
    let hanging = if hang {
        let receiver = WebhookReceiver::start().await;
        receiver.answer_with(vec![], Answer::Hang);
        let id = create_webhook(stack, &t.admin, &receiver.url()).await;
        Some((receiver, id))
    } else {
        None
    };
    sink.noting.store(true, Ordering::Relaxed);
    let commits: Arc<Mutex<HashMap<String, (Instant, u64)>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(Semaphore::new(64));
    let total = (rate * seconds as f64) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let commits0 = self::commits(&env.pg_url).await;
    let cpu0 = cpu_snapshot();
    let started = Instant::now();
    let mut posts = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (stack, t, commits, errors) =
            (stack.clone(), t.clone(), commits.clone(), errors.clone());
        posts.push(tokio::spawn(async move {
            let (chat, sender) = &t.chats[i as usize % t.chats.len()];
            let reply = stack
                .post("/chatmessages", &t.admin, &message_body(chat, sender, i))
                .await;
            let at = (Instant::now(), wall_micros());
            match reply.json["id"].as_str() {
                Some(id) if reply.status == 200 => {
                    commits.lock().unwrap().insert(id.to_owned(), at);
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let cpu1 = cpu_snapshot();
    let sent = commits.lock().unwrap().len() as u64;
    let expected = sent * webhooks as u64;
    let _ = drained(&sink, expected, Duration::from_secs(60)).await;
    sink.noting.store(false, Ordering::Relaxed);
    let commits1 = self::commits(&env.pg_url).await;

    let commits = std::mem::take(&mut *commits.lock().unwrap());
    let arrivals = std::mem::take(&mut *sink.arrivals.lock().unwrap());
    let (mut delays, mut early) = (Vec::with_capacity(arrivals.len()), 0u64);
    for (id, at, _) in &arrivals {
        let Some((committed, _)) = commits.get(id) else {
            continue;
        };
        match at.checked_duration_since(*committed) {
            Some(d) => delays.push(d.as_micros() as u64),
            None => {
                // Delivered before the sender had its answer: counted as 0.
                early += 1;
                delays.push(0);
            }
        }
    }
    delays.sort_unstable();
    println!(
        "| {webhooks}{} | {rate:.1} ({achieved:.1}) | {} / {expected} | {:.1} | {:.1} | {:.1} | {:.1} | {early} | {} |",
        if hang { " + 1 hanging" } else { "" },
        delays.len(),
        percentile_ms(&delays, 0.5),
        percentile_ms(&delays, 0.9),
        percentile_ms(&delays, 0.99),
        delays.last().copied().unwrap_or(0) as f64 / 1000.0,
        errors.load(Ordering::Relaxed),
    );
    println!(
        "    CPU while sending: {}; database commits per delivery (every service's, until the last delivery): {:.2}",
        cores_between(&cpu0, &cpu1),
        (commits1 - commits0) as f64 / expected.max(1) as f64
    );
    // Where the delay went: webhook-manager stamps a delivery row when its consumer plans it.
    let planned = planned_at(&env.pg_url, &env.webhook_schema, &t.customer).await;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (id, _, arrived) in &arrivals {
        if let (Some((_, committed)), Some(planned)) = (commits.get(id), planned.get(id)) {
            before.push(planned.saturating_sub(*committed));
            after.push(arrived.saturating_sub(*planned));
        }
    }
    before.sort_unstable();
    after.sort_unstable();
    // How far apart an event's deliveries to its webhooks arrived: first to last.
    let mut span: HashMap<&str, (u64, u64)> = HashMap::new();
    for (id, _, arrived) in &arrivals {
        let s = span.entry(id.as_str()).or_insert((*arrived, *arrived));
        s.0 = s.0.min(*arrived);
        s.1 = s.1.max(*arrived);
    }
    let mut spans: Vec<u64> = span.values().map(|(a, b)| b - a).collect();
    spans.sort_unstable();
    println!(
        "    commit -> delivery row planned (relay, RabbitMQ, consumer) p50 {:.1} / p99 {:.1} ms; planned -> received (consumer's commit, dispatcher, HTTP) p50 {:.1} / p99 {:.1} ms",
        percentile_ms(&before, 0.5),
        percentile_ms(&before, 0.99),
        percentile_ms(&after, 0.5),
        percentile_ms(&after, 0.99),
    );
    if webhooks > 1 {
        println!(
            "    an event's first to last delivery: p50 {:.1} / p99 {:.1} / max {:.1} ms",
            percentile_ms(&spans, 0.5),
            percentile_ms(&spans, 0.99),
            spans.last().copied().unwrap_or(0) as f64 / 1000.0
        );
    }
    if let Some((receiver, id)) = hanging {
        println!(
            "    the hanging receiver got {} requests",
            receiver.received().len()
        );
        // Its deliveries end (failed), so they are not retried into the next phases.
        stack
            .delete(&format!("/webhooks/{id}"), &t.admin)
            .await
            .ok();
    }
}

// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    format!(
        "{} cores ({model})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

#[tokio::main]
async fn main() {
    let hooks: Vec<usize> = std::env::var("BENCH_WEBHOOKS")
        .unwrap_or_else(|_| "1 100".into())
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "throughput paced hang".into());
    let seconds = env_or("BENCH_SECONDS", 15);
    let warmup = env_or("BENCH_WARMUP", 3);
    let paced_seconds = env_or("BENCH_PACED_SECONDS", 15);
    let fixed_rate = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok());
    let defaults = DispatchSettings::default();
    let settings = DispatchSettings {
        address: AddressPolicy {
            allow_private: true,
        },
        endpoint_concurrency: env_or(
            "BENCH_ENDPOINT_CONCURRENCY",
            defaults.endpoint_concurrency as u64,
        ) as usize,
        ..defaults
    };

    let Some((mut split, guards)) =
        split_env_with_webhooks("bench::webhook_delivery", settings).await
    else {
        eprintln!("PostgreSQL or RabbitMQ not reachable: nothing measured");
        return;
    };
    // As scripts/bench-send runs the services: PostgreSQL over loopback without TLS (libpq
    // would otherwise negotiate it), unless BENCH_PGSSLMODE says otherwise.
    if !split.pg_url.contains("sslmode=") {
        let mode = std::env::var("BENCH_PGSSLMODE").unwrap_or_else(|_| "disable".into());
        let sep = if split.pg_url.contains('?') { '&' } else { '?' };
        split.pg_url = format!("{}{sep}sslmode={mode}", split.pg_url);
    }
    // The services' own default pool, not the tests' small one; no rate limits.
    split.db_pool_size = env_or(
        "BENCH_POOL_SIZE",
        u64::from(common::db::DbOptions::default().pool_size),
    ) as u32;
    split.limits = Limits::from(RateLimit::off());
    let mut stack = Stack::split(&split).await;
    stack.keep(guards);
    let env = Env {
        stack: Arc::new(stack),
        pg_url: split.pg_url.clone(),
        webhook_schema: split.webhooks.as_ref().unwrap().0.clone(),
        queue: split.webhook_events_queue.clone(),
        bus: pipeline::bus::EventBus::amqp(&split.amqp_url),
        senders: env_or("BENCH_SENDERS", 16) as usize,
        pg_samples: env_or("BENCH_PG_SAMPLES", 1) != 0,
    };
    println!(
        "webhook_delivery: split deployment, {}; pool {} connections per service ({}); endpoint concurrency {}, max in flight {}; {} senders",
        machine(),
        split.db_pool_size,
        split.pg_url.rsplit_once('?').map_or("", |(_, q)| q),
        settings.endpoint_concurrency,
        settings.max_in_flight,
        env.senders
    );

    for &w in &hooks {
        let mut rate = fixed_rate;
        if phases.contains("throughput") {
            println!();
            println!(
                "Throughput, closed loop ({warmup} s warm-up, {seconds} s window; backlog cap {}):",
                env_or("BENCH_BACKLOG", (40 * w as u64).max(2000))
            );
            println!(
                "| webhooks | deliveries/s | events/s | sends/s | senders held back | outstanding at the end | webhook queue depth mean (max) | its growth /s | delivery rows not done mean (max) | drained after | commits per delivery |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            let events = throughput(&env, w, warmup, seconds).await;
            rate = rate.or((w > 0).then_some(events / 2.0));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let Some(rate) = rate.filter(|r| *r > 0.0) else {
            continue;
        };
        if phases.contains("paced") || phases.contains("hang") {
            println!();
            println!("Commit to delivery, paced ({paced_seconds} s):");
            println!(
                "| webhooks | events/s offered (achieved) | deliveries timed / expected | p50 ms | p90 ms | p99 ms | max ms | before the answer | send errors |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
        }
        if phases.contains("paced") {
            paced(&env, w, rate, paced_seconds, false).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if phases.contains("hang") {
            paced(&env, w, rate, paced_seconds, true).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
