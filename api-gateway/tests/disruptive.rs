//! Fault tests that stop this machine's RabbitMQ or PostgreSQL for real, in the middle of a
//! stream of sends. They disturb every other test using those services, so they are ignored in
//! the main run; `scripts/test` runs them afterwards, one at a time, printing what they counted:
//! `cargo nextest run -p api-gateway --test disruptive --run-ignored only --test-threads 1
//! --success-output immediate`.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// An admin token of `customer` for the `i`th send, each of another caller (an agent with
/// admin rights): the gateway limits each caller's rate, and this is a fault test, not one
/// client over its limit.
fn sender_token(customer: &str, i: usize) -> String {
    let agent = uuid::Uuid::from_u128(0x5e4d_0000_0000_4000_8000_0000_0000_0000 | i as u128);
    support::agent_token(
        customer,
        &agent.to_string(),
        api_gateway::auth::permission::CUSTOMER_ADMIN,
    )
}
use tokio::sync::Semaphore;

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

async fn wait_for_port(addr: &str) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} did not come back within a minute");
}

fn postgres_cluster() -> (String, &'static str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql");
    (version, "main")
}

/// Ensures the broker or database is started again even when the test fails midway.
struct Restart(Box<dyn Fn()>);

impl Drop for Restart {
    fn drop(&mut self) {
        (self.0)();
    }
}

struct SendStream {
    acked: Arc<std::sync::Mutex<HashMap<String, String>>>,
    statuses: Arc<std::sync::Mutex<HashMap<u16, usize>>>,
}

/// Sends `n` messages to `chat_id`, 4 at a time and 5 ms apart, recording what each got; calls
/// `fault` (in its own task) once `trigger` sends are acknowledged.
async fn send_stream<F>(
    stack: Arc<Stack>,
    customer: String,
    chat_id: String,
    sender: String,
    n: usize,
    trigger: usize,
    fault: F,
) -> SendStream
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let stream = SendStream {
        acked: Arc::default(),
        statuses: Arc::default(),
    };
    let acked_count = Arc::new(AtomicUsize::new(0));
    let fault_task = {
        let acked_count = acked_count.clone();
        tokio::spawn(async move {
            while acked_count.load(Ordering::Relaxed) < trigger {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            fault.await;
        })
    };
    let limit = Arc::new(Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await.unwrap();
        // A token per send: this is a fault test, not one client over its rate limit.
        let token = sender_token(&customer, i);
        let (stack, acked, statuses, acked_count) = (
            stack.clone(),
            stream.acked.clone(),
            stream.statuses.clone(),
            acked_count.clone(),
        );
        let body = json!({"chat_id": chat_id, "source": {"type": "agent", "target": sender},
                          "type": "normal", "text": format!("m-{i}")})
        .to_string();
        tasks.push(tokio::spawn(async move {
            let reply = stack.post("/chatmessages", &token, &body).await;
            *statuses.lock().unwrap().entry(reply.status).or_default() += 1;
            if reply.status == 200 {
                acked.lock().unwrap().insert(
                    reply.json["text"].as_str().unwrap().to_owned(),
                    reply.json["id"].as_str().unwrap().to_owned(),
                );
                acked_count.fetch_add(1, Ordering::Relaxed);
            } else {
                assert_eq!(reply.status, 503, "a refused send is 503: {}", reply.text);
                assert_eq!(reply.json["error"]["code"], "unavailable");
            }
            drop(permit);
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    fault_task.await.unwrap();
    stream
}

/// A new chat of two agents: its id, the first agent, and the two chatrooms (from
/// chat-manager).
async fn new_chat_with_rooms(stack: &Stack, admin: &str) -> (String, String, Vec<String>) {
    let (alice, bob) = (new_id(), new_id());
    let chat = stack
        .post(
            "/chats",
            admin,
            &chat_body("normal", &alice, &[&alice, &bob], "late"),
        )
        .await;
    let chat_id = chat.ok()["id"].as_str().unwrap().to_owned();
    let mut rooms = Vec::new();
    for agent in [&alice, &bob] {
        let listed = stack
            .get(&format!("/chatrooms?owner_id={agent}"), admin)
            .await;
        rooms.push(listed.ok()["result"][0]["id"].as_str().unwrap().to_owned());
    }
    (chat_id, alice, rooms)
}

async fn new_chat(stack: &Stack, admin: &str) -> (String, String) {
    let (alice, bob) = (new_id(), new_id());
    let chat = stack
        .post(
            "/chats",
            admin,
            &chat_body("normal", &alice, &[&alice, &bob], "f"),
        )
        .await;
    (chat.ok()["id"].as_str().unwrap().to_owned(), alice)
}

#[tokio::test]
#[ignore = "stops the machine's RabbitMQ: scripts/test runs it alone"]
async fn rabbitmq_stopped_during_sends_every_event_is_delivered() {
    let test = "disruptive::rabbitmq_stopped_during_sends_every_event_is_delivered";
    if !testkit::require_tool(test, "rabbitmqctl") {
        return;
    }
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let audit = amqp.name("audit");
    testkit::durable_queue(&env.amqp_url, &env.message_exchange, &audit).await;
    let stack = Arc::new(Stack::split(&env).await);
    let customer = new_id();
    let admin = customer_token(&customer);
    let (chat_id, alice) = new_chat(&stack, &admin).await;
    let _restart = Restart(Box::new(|| {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
    }));

    let broker = testkit::amqp_url();
    let broker_addr = "127.0.0.1:5672".to_owned();
    let stream = send_stream(
        stack.clone(),
        customer.clone(),
        chat_id,
        alice,
        300,
        60,
        async move {
            run("rabbitmqctl", &["stop_app"]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            run("rabbitmqctl", &["start_app"]);
            wait_for_port(&broker_addr).await;
        },
    )
    .await;
    let acked = stream.acked.lock().unwrap().clone();

    // Every acknowledged send's event reaches the durable queue, however often it was sent.
    let wanted: HashSet<String> = acked.values().cloned().collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        for (_, body) in testkit::drain_queue(&broker, &audit).await {
            let event: Value = serde_json::from_str(&body).unwrap();
            if event["type"] == "messagechat_created" {
                *seen
                    .entry(event["data"]["id"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        if wanted.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let delivered = wanted.iter().filter(|id| seen.contains_key(*id)).count();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "RabbitMQ stopped for 2 s during 300 sends: statuses {:?}; {} acknowledged, {} of their \
         events delivered, {} duplicate deliveries (one effect each by event id)",
        stream.statuses.lock().unwrap(),
        acked.len(),
        delivered,
        duplicates
    );
    assert_eq!(
        delivered,
        wanted.len(),
        "every acknowledged send's event is delivered"
    );
    // The broker being away never fails a send: events wait in the outbox.
    assert_eq!(acked.len(), 300, "all sends succeed while RabbitMQ is down");

    // message-manager's consumer of chat events is back too. With its link to chat-manager
    // cut, it can only learn of a chat created now through those events: its chatrooms
    // become readable there, a send reaches both, and the durable queue drains.
    stack.chat_link.as_ref().unwrap().set_up(false);
    let (late_chat, late_sender, late_rooms) = new_chat_with_rooms(&stack, &admin).await;
    let learned = tokio::time::Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut known = 0;
        for room in &late_rooms {
            let reply = stack
                .get(&format!("/chatroommessages?chatroom_id={room}"), &admin)
                .await;
            known += usize::from(reply.status == 200);
        }
        if known == late_rooms.len() {
            break;
        }
        assert!(
            learned.elapsed() < Duration::from_secs(60),
            "message-manager never learned the chat created after the restart (its consumer \
             did not recover)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let learned_after = learned.elapsed();
    let body = json!({"chat_id": late_chat, "source": {"type": "agent", "target": late_sender},
                      "type": "normal", "text": "after the restart"})
    .to_string();
    let late = stack.post("/chatmessages", &admin, &body).await;
    let late_id = late.ok()["id"].as_str().unwrap().to_owned();
    for room in &late_rooms {
        let copies = stack
            .get(&format!("/chatroommessages?chatroom_id={room}"), &admin)
            .await;
        let ids: Vec<&str> = copies.ok()["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["messagechat_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [late_id.as_str()], "a copy in room {room}");
    }
    let bus = pipeline::bus::EventBus::amqp(&env.amqp_url);
    let mut depth = None;
    for _ in 0..100 {
        depth = bus.queue_depth(&env.chat_events_queue).await.ok().flatten();
        if depth == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "after the restart: a new chat reached message-manager through its events in \
         {learned_after:?} ({attempts} looks), a send to it has both copies; chat-events queue \
         depth {depth:?}"
    );
    assert_eq!(depth, Some(0), "the chat-events queue drains");
    stack.chat_link.as_ref().unwrap().set_up(true);
    drop(stack);
    drop(guards);
    amqp.cleanup().await;
}

#[tokio::test]
#[ignore = "stops the machine's PostgreSQL: scripts/test runs it alone"]
async fn postgres_stopped_briefly_requests_fail_cleanly_and_recover() {
    let test = "disruptive::postgres_stopped_briefly_requests_fail_cleanly_and_recover";
    if !testkit::require_tool(test, "pg_ctlcluster") {
        return;
    }
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let stack = Arc::new(Stack::split(&env).await);
    let mut events = testkit::EventReader::bind(&env.amqp_url, &env.message_exchange).await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let (chat_id, alice) = new_chat(&stack, &admin).await;
    let (version, cluster) = postgres_cluster();
    let restart_version = version.clone();
    let _restart = Restart(Box::new(move || {
        let _ = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &restart_version,
                cluster,
                "start",
            ])
            .status();
    }));

    let stream = send_stream(
        stack.clone(),
        customer.clone(),
        chat_id.clone(),
        alice.clone(),
        300,
        60,
        async move {
            run(
                "pg_ctlcluster",
                &[
                    "--skip-systemctl-redirect",
                    &version,
                    cluster,
                    "stop",
                    "-m",
                    "fast",
                ],
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            run(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &version, cluster, "start"],
            );
            wait_for_port("127.0.0.1:5432").await;
        },
    )
    .await;
    let statuses = stream.statuses.lock().unwrap().clone();
    let acked = stream.acked.lock().unwrap().clone();

    // Recovered by itself: a send and a listing work again without restarting anything.
    let mut after = None;
    for _ in 0..100 {
        let body = json!({"chat_id": chat_id, "source": {"type": "agent", "target": alice},
                          "type": "normal", "text": "after"})
        .to_string();
        let reply = stack.post("/chatmessages", &admin, &body).await;
        if reply.status == 200 {
            after = Some(reply.json["id"].as_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = after.is_some();

    // Every acknowledged send is stored exactly once (the "after" ones too: a retried send
    // that got 503 may have been stored, but never twice).
    let stored = stack
        .list_all(&admin, &format!("/chatmessages?chat_id={chat_id}"))
        .await;
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for m in &stored {
        *per_text
            .entry(m["text"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let stored_once = acked
        .keys()
        .filter(|text| per_text.get(*text) == Some(&1))
        .count();

    // Events flow again: every acknowledged send's event, and the one sent after recovery.
    let mut wanted: HashSet<String> = acked.values().cloned().collect();
    wanted.extend(after.clone());
    let mut announced = HashSet::new();
    while !wanted.iter().all(|id| announced.contains(id)) {
        let Some((key, _, body)) = events.next_within(Duration::from_secs(30)).await else {
            break;
        };
        if key.starts_with("messagechat_created.") {
            announced.insert(body["data"]["id"].as_str().unwrap().to_owned());
        }
    }
    let announced_count = wanted.iter().filter(|id| announced.contains(*id)).count();
    println!(
        "PostgreSQL stopped for 2 s during 300 sends: statuses {statuses:?}; {} acknowledged, \
         {stored_once} of them stored exactly once ({} messages stored); recovered without a \
         restart: {recovered}; {announced_count} of {} expected events published after \
         recovery",
        acked.len(),
        stored.len(),
        wanted.len()
    );
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "sends during the outage got 503"
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or 503: {statuses:?}"
    );
    assert!(recovered, "sends succeed again once PostgreSQL is back");
    assert_eq!(
        stored_once,
        acked.len(),
        "every acknowledged send is stored exactly once"
    );
    assert!(
        per_text.values().all(|n| *n == 1),
        "nothing is stored twice: {:?}",
        per_text.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert_eq!(
        announced_count,
        wanted.len(),
        "events flow again: every acknowledged send's event is published"
    );
    drop(stack);
    drop(guards);
}
