//! Delivery latency from `POST /v1.0/chatmessages` to the WebSocket of every recipient, in the
//! split deployment (chat-manager, message-manager, gateway over gRPC sockets, this machine's
//! PostgreSQL and RabbitMQ). Every participant of every chat has a socket subscribed to its own
//! rooms' copies; each send is measured at each of the chat's other participants. Prints
//! p50/p90/p99/max for each offered send rate, one after another on the same stack: the curve
//! of p99 against rate shows the knee.
//!
//! `cargo bench -p api-gateway --bench ws_latency`; tune with BENCH_PARTICIPANTS (per chat,
//! default 2), BENCH_SOCKETS (connected sockets in all, default 200: BENCH_SOCKETS /
//! BENCH_PARTICIPANTS chats), BENCH_RATES (sends/s, one run each, default "1000"),
//! BENCH_SECONDS (per rate, default 10), BENCH_CONCURRENCY (in-flight POSTs, default 64).
//! Load generator and servers share this process and its cores; the gateway's rate limits are
//! off.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use api_gateway::rate_limit::RateLimit;
use serde_json::json;
use support::*;
use tokio::sync::Semaphore;

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The send time a frame's `text` carries, found without parsing the frame (the readers share
/// the cores with everything measured).
fn sent_at(frame: &str) -> Option<u64> {
    let start = frame.find("\"text\":\"")? + 8;
    let digits = &frame[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// What the readers record: latencies of the current rate's run, and every delivery.
#[derive(Default)]
struct Deliveries {
    latencies: std::sync::Mutex<Vec<u64>>,
    received: AtomicU64,
}

#[tokio::main]
async fn main() {
    let participants = env_or("BENCH_PARTICIPANTS", 2).max(2) as usize;
    let sockets = env_or("BENCH_SOCKETS", 200) as usize;
    let seconds = env_or("BENCH_SECONDS", 10);
    let concurrency = env_or("BENCH_CONCURRENCY", 64) as usize;
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1000".into())
        .split_whitespace()
        .filter_map(|r| r.parse().ok())
        .collect();

    let Some((mut env, _guards)) = split_env("bench::ws_latency").await else {
        eprintln!("PostgreSQL or RabbitMQ not reachable: nothing measured");
        return;
    };
    // The services' own default pool, not the tests' small one; no rate limits.
    env.db_pool_size = common::db::DbOptions::default().pool_size;
    env.limits = Limits::from(RateLimit::off());
    let stack = Arc::new(Stack::split(&env).await);
    let customer = new_id();
    let admin = customer_token(&customer);

    // Chats of `participants` agents each; the first of each chat sends.
    let chat_count = (sockets / participants).max(1);
    let mut chats = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..chat_count {
        let members: Vec<String> = (0..participants).map(|_| new_id()).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let kind = if participants == 2 { "normal" } else { "group" };
        let chat = stack
            .post(
                "/chats",
                &admin,
                &chat_body(kind, &members[0], &refs, "bench"),
            )
            .await
            .ok()
            .clone();
        chats.push((chat["id"].as_str().unwrap().to_owned(), members[0].clone()));
        agents.extend(members.iter().skip(1).cloned());
        agents.push(members[0].clone());
    }
    let deliveries = Arc::new(Deliveries::default());
    let mut readers = Vec::new();
    let senders: std::collections::HashSet<String> =
        chats.iter().map(|(_, sender)| sender.clone()).collect();
    for agent in &agents {
        let mut ws = stack.ws(&agent_token(&customer, agent, 0x10)).await;
        ws.subscribe(&[format!("agent_id:{agent}:messagechatroom")])
            .await;
        let deliveries = deliveries.clone();
        // Only recipients' copies count: delivery to the other participants.
        let recipient = !senders.contains(agent);
        readers.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(message)) = ws.stream.next().await {
                let tokio_tungstenite::tungstenite::Message::Text(frame) = message else {
                    continue;
                };
                if !recipient {
                    continue;
                }
                if let Some(sent) = sent_at(frame.as_str()) {
                    deliveries
                        .latencies
                        .lock()
                        .unwrap()
                        .push(now_micros().saturating_sub(sent));
                    deliveries.received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Let subscriptions and the hub settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "ws_latency: split deployment, {} cores, {} chats of {participants} participants, {} sockets",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        chats.len(),
        agents.len()
    );
    println!(
        "| sends/s offered | achieved | errors | copies delivered / expected | p50 ms | p90 ms | p99 ms | max ms | POST p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for rate in rates {
        run_rate(
            &stack,
            &admin,
            &chats,
            participants,
            &deliveries,
            rate,
            seconds,
            concurrency,
        )
        .await;
    }
    for r in readers {
        r.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_rate(
    stack: &Arc<Stack>,
    admin: &str,
    chats: &[(String, String)],
    participants: usize,
    deliveries: &Arc<Deliveries>,
    rate: u64,
    seconds: u64,
    concurrency: usize,
) {
    deliveries.latencies.lock().unwrap().clear();
    let received_before = deliveries.received.load(Ordering::Relaxed);
    let total = rate * seconds;
    let limit = Arc::new(Semaphore::new(concurrency));
    let errors = Arc::new(AtomicU64::new(0));
    let post_times = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut posts = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (stack, errors, post_times) = (stack.clone(), errors.clone(), post_times.clone());
        let (chat_id, sender) = chats[i as usize % chats.len()].clone();
        let admin = admin.to_owned();
        posts.push(tokio::spawn(async move {
            let body = json!({"chat_id": chat_id, "source": {"type": "agent", "target": sender}, "text": now_micros().to_string()}).to_string();
            let t = Instant::now();
            if stack.post("/chatmessages", &admin, &body).await.status != 200 {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            post_times.lock().unwrap().push(t.elapsed().as_micros() as u64);
            drop(permit);
        }));
    }
    for p in posts {
        let _ = p.await;
    }
    let send_time = started.elapsed();
    let errors = errors.load(Ordering::Relaxed);
    let expected = (total - errors.min(total)) * (participants as u64 - 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.received.load(Ordering::Relaxed) - received_before < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat = deliveries.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| percentile_ms(&lat, p);
    let mut posts_us = post_times.lock().unwrap().clone();
    posts_us.sort_unstable();
    println!(
        "| {rate} | {:.0} | {errors} | {} / {expected} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} |",
        total as f64 / send_time.as_secs_f64(),
        lat.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        percentile_ms(&posts_us, 0.50),
        percentile_ms(&posts_us, 0.99)
    );
    // A pause between rates: the next run starts from a quiet system.
    tokio::time::sleep(Duration::from_secs(2)).await;
}
