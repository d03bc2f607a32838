//! Delivery latency from `POST /v1.0/chatmessages` to the recipient's WebSocket, in the split
//! deployment (chat-manager, message-manager, gateway over gRPC sockets, this machine's
//! PostgreSQL and RabbitMQ). Prints p50/p90/p99/max at the offered send rate.
//!
//! `cargo bench -p api-gateway --bench ws_latency`; tune with BENCH_RATE (messages/s, default
//! 1000), BENCH_SECONDS (default 10), BENCH_SOCKETS (connected sockets, default 200),
//! BENCH_CONCURRENCY (in-flight POSTs, default 64). Load generator and servers share this
//! process and its cores.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::sync::Semaphore;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[tokio::main]
async fn main() {
    let rate = env_or("BENCH_RATE", 1000);
    let seconds = env_or("BENCH_SECONDS", 10);
    let sockets = env_or("BENCH_SOCKETS", 200) as usize;
    let concurrency = env_or("BENCH_CONCURRENCY", 64) as usize;

    let Some((mut env, _guards)) = split_env("bench::ws_latency").await else {
        eprintln!("PostgreSQL or RabbitMQ not reachable: nothing measured");
        return;
    };
    // The services' own default pool, not the tests' small one.
    env.db_pool_size = common::db::DbOptions::default().pool_size;
    let stack = Arc::new(Stack::split(&env).await);
    let customer = new_id();
    let admin = customer_token(&customer);

    // Pairs of agents, each pair a normal chat; every agent has a socket on its own rooms.
    let agents: Vec<String> = (0..sockets.max(2)).map(|_| new_id()).collect();
    let mut chats = Vec::new();
    for pair in agents.chunks(2) {
        if pair.len() < 2 {
            break;
        }
        let chat = stack
            .post(
                "/chats",
                &admin,
                &chat_body("normal", &pair[0], &[&pair[0], &pair[1]], "bench"),
            )
            .await
            .ok()
            .clone();
        chats.push((chat["id"].as_str().unwrap().to_owned(), pair[0].clone()));
    }
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut readers = Vec::new();
    for agent in &agents[..chats.len() * 2] {
        let mut ws = stack.ws(&agent_token(&customer, agent, 0x10)).await;
        ws.subscribe(&[format!("agent_id:{agent}:messagechatroom")])
            .await;
        let (received, latencies) = (received.clone(), latencies.clone());
        let sender_side = chats.iter().any(|(_, sender)| sender == agent);
        readers.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next_frame(Duration::from_secs(30)).await {
                // Only the recipient's copy counts: delivery to the other side.
                if sender_side {
                    continue;
                }
                if let Some(sent) = frame["data"]["text"]
                    .as_str()
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    latencies
                        .lock()
                        .unwrap()
                        .push(now_micros().saturating_sub(sent));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Let subscriptions and the hub settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let total = rate * seconds;
    let limit = Arc::new(Semaphore::new(concurrency));
    let errors = Arc::new(AtomicU64::new(0));
    let post_times = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sender_tokens: Vec<String> = (0..chats.len())
        .map(|i| {
            token(
                &customer,
                None,
                api_gateway::auth::permission::CUSTOMER_ADMIN,
                Duration::from_secs(3600 + i as u64),
            )
        })
        .collect();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut posts = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (stack, errors, post_times) = (stack.clone(), errors.clone(), post_times.clone());
        let chat = i as usize % chats.len();
        let (chat_id, sender) = chats[chat].clone();
        // Each chat's sender posts with its own token, as separate clients would: the rate
        // limit is per token.
        let admin = sender_tokens[chat].clone();
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pct = |p: f64| percentile_ms(&lat, p);
    let mut posts_us = post_times.lock().unwrap().clone();
    posts_us.sort_unstable();
    println!(
        "ws_latency: split deployment, {} cores, {} sockets, {} chats",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        chats.len() * 2,
        chats.len()
    );
    println!(
        "offered {rate} msg/s for {seconds} s: sent {total} in {:.2} s ({:.0} msg/s achieved), {} errors, {} delivered",
        send_time.as_secs_f64(),
        total as f64 / send_time.as_secs_f64(),
        errors.load(Ordering::Relaxed),
        lat.len()
    );
    println!(
        "POST -> recipient socket latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "POST round trip alone: p50 {:.1} ms, p99 {:.1} ms",
        percentile_ms(&posts_us, 0.50),
        percentile_ms(&posts_us, 0.99)
    );
    for r in readers {
        r.abort();
    }
}
