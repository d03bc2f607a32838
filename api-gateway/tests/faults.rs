//! Fault tests with the services as real processes (the workspace's debug binaries) on this
//! machine's PostgreSQL and RabbitMQ: a service killed with SIGKILL in the middle of a stream
//! of sends loses nothing it acknowledged.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
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

/// A workspace binary next to this test's own directory (`target/<profile>/<name>`), built by
/// `cargo nextest run --workspace` / `cargo test --workspace` with the tests.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries (cargo build --workspace)",
        path.display()
    );
    path
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A service process, killed when dropped.
struct Service {
    name: &'static str,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Service {
    async fn start(name: &'static str, env: Vec<(String, String)>, addr: SocketAddr) -> Service {
        let mut s = Service {
            name,
            env,
            addr,
            child: None,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary(self.name))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("LISTEN_ADDR", self.addr.to_string())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env("INTERNAL_AUTH_SECRET", testkit::INTERNAL_AUTH_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not start listening on {}", self.name, self.addr);
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn kill_9_message_manager_during_sends_loses_no_acknowledged_message() {
    let test = "faults::kill_9_message_manager_during_sends_loses_no_acknowledged_message";
    let Some((env, _guards)) = split_env(test).await else {
        return;
    };
    let chat_addr = free_addr();
    let message_addr = free_addr();
    let chat_manager = Service::start(
        "chat-manager",
        vec![
            ("DATABASE_URL".into(), env.pg_url.clone()),
            ("DATABASE_SCHEMA".into(), env.chat_schema.clone()),
            ("AMQP_URL".into(), env.amqp_url.clone()),
            ("CHAT_EVENTS_EXCHANGE".into(), env.chat_exchange.clone()),
            ("CHAT_EVENTS_QUEUE".into(), env.chat_events_queue.clone()),
            (
                "WEBHOOK_EVENTS_QUEUE".into(),
                env.webhook_events_queue.clone(),
            ),
        ],
        chat_addr,
    )
    .await;
    let mut message_manager = Service::start(
        "message-manager",
        vec![
            ("DATABASE_URL".into(), env.pg_url.clone()),
            ("DATABASE_SCHEMA".into(), env.message_schema.clone()),
            ("AMQP_URL".into(), env.amqp_url.clone()),
            ("CHAT_EVENTS_EXCHANGE".into(), env.chat_exchange.clone()),
            (
                "MESSAGE_EVENTS_EXCHANGE".into(),
                env.message_exchange.clone(),
            ),
            ("CHAT_EVENTS_QUEUE".into(), env.chat_events_queue.clone()),
            (
                "WEBHOOK_EVENTS_QUEUE".into(),
                env.webhook_events_queue.clone(),
            ),
            ("CHAT_MANAGER_URL".into(), format!("http://{chat_addr}")),
        ],
        message_addr,
    )
    .await;
    let mut events = testkit::EventReader::bind(&env.amqp_url, &env.message_exchange).await;
    let stack = Arc::new(
        Stack::gateway_to(
            &format!("http://{chat_addr}"),
            &format!("http://{message_addr}"),
        )
        .await,
    );

    let customer = new_id();
    let admin = customer_token(&customer);
    let (alice, bob) = (new_id(), new_id());
    let chat = stack
        .post(
            "/chats",
            &admin,
            &chat_body("normal", &alice, &[&alice, &bob], "f"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();

    // 400 sends, 8 at a time, while message-manager is killed once 100 are acknowledged and
    // started again 0.5 s later (sends go on meanwhile).
    const SENDS: usize = 400;
    let limit = Arc::new(Semaphore::new(8));
    let acked = Arc::new(std::sync::Mutex::new(HashMap::<String, String>::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chaos = {
        let acked = acked.clone();
        tokio::spawn(async move {
            while acked.lock().unwrap().len() < 100 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            message_manager.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            message_manager.spawn().await;
            message_manager
        })
    };
    let mut tasks = Vec::new();
    for i in 0..SENDS {
        let permit = limit.clone().acquire_owned().await.unwrap();
        // A token per send: this is a fault test, not one client over its rate limit.
        let admin = sender_token(&customer, i);
        let (stack, acked, failed) = (stack.clone(), acked.clone(), failed.clone());
        let body = json!({"chat_id": chat_id, "source": {"type": "agent", "target": alice},
                          "type": "normal", "text": format!("m-{i}")})
        .to_string();
        tasks.push(tokio::spawn(async move {
            let reply = stack.post("/chatmessages", &admin, &body).await;
            if reply.status == 200 {
                let text = reply.json["text"].as_str().unwrap().to_owned();
                let id = reply.json["id"].as_str().unwrap().to_owned();
                acked.lock().unwrap().insert(text, id);
            } else {
                assert_eq!(reply.status, 503, "a failed send is 503: {}", reply.text);
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(permit);
        }));
        // A steady stream rather than one burst, so sends arrive before, during and after.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let message_manager = chaos.await.expect("message-manager killed and restarted");
    let acked = acked.lock().unwrap().clone();

    // Stored exactly once, with a copy in each of the two chatrooms.
    let stored = stack
        .list_all(&admin, &format!("/chatmessages?chat_id={chat_id}"))
        .await;
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for m in &stored {
        *per_text
            .entry(m["text"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut copies = 0;
    for agent in [&alice, &bob] {
        let rooms = stack
            .get(
                &format!("/chatrooms?owner_id={agent}&page_size=100"),
                &admin,
            )
            .await;
        let room = rooms.ok()["result"].as_array().unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let in_room = stack
            .list_all(&admin, &format!("/chatroommessages?chatroom_id={room}"))
            .await;
        let ids: HashSet<&str> = in_room
            .iter()
            .map(|c| c["messagechat_id"].as_str().unwrap())
            .collect();
        for id in acked.values() {
            assert!(
                ids.contains(id.as_str()),
                "{agent}'s room has a copy of {id}"
            );
        }
        copies += in_room.len();
    }

    // Every acknowledged message's event is published (the relay of the restarted process
    // publishes what the killed one had not).
    let mut announced = HashSet::new();
    let wanted: HashSet<&str> = acked.values().map(String::as_str).collect();
    while !wanted.iter().all(|id| announced.contains(*id)) {
        let Some((key, _, body)) = events.next_within(Duration::from_secs(15)).await else {
            break;
        };
        if key.starts_with("messagechat_created.") {
            announced.insert(body["data"]["id"].as_str().unwrap().to_owned());
        }
    }
    println!(
        "kill -9 during {SENDS} sends: {} acknowledged, {} failed with 503, {} stored ({} copies), \
         {} acknowledged messages announced by events",
        acked.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        stored.len(),
        copies,
        wanted.iter().filter(|id| announced.contains(**id)).count()
    );
    for text in acked.keys() {
        assert_eq!(
            per_text.get(text),
            Some(&1),
            "{text} is stored exactly once"
        );
    }
    assert!(
        stored.len() <= SENDS,
        "nothing stored twice: {} stored",
        stored.len()
    );
    assert!(
        wanted.iter().all(|id| announced.contains(*id)),
        "every acknowledged message has its event"
    );
    drop(message_manager);
    drop(chat_manager);
}
