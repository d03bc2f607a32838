//! Webhooks through the REST API, delivered to real HTTP receivers on loopback: in the
//! embedded default and in the split deployment (PostgreSQL, RabbitMQ).

mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use testkit::receiver::{Answer, Received, WebhookReceiver};

/// Runs each scenario against the embedded default and the split deployment (skipped, and
/// listed, without PostgreSQL and RabbitMQ), both delivering with `quick(true)`.
macro_rules! against_both_delivering {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let stack = super::Stack::embedded_with_webhooks(super::quick(true)).await;
                    super::$scenario(&stack).await;
                }
            )*
        }
        mod split {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let test = concat!("webhooks::split::", stringify!($scenario));
                    let Some((env, guards)) =
                        super::split_env_with_webhooks(test, super::quick(true)).await
                    else {
                        return;
                    };
                    let mut stack = super::Stack::split(&env).await;
                    stack.keep(guards);
                    super::$scenario(&stack).await;
                }
            )*
        }
    };
}

against_both_delivering!(
    every_event_type_is_delivered_signed_to_the_webhooks_of_its_tenant_that_list_it,
    a_failing_receiver_is_retried_until_it_answers_and_keeps_its_webhook_id,
    retry_after_is_honoured,
    gone_and_bad_request_are_final_and_can_be_retried_by_hand,
    a_hanging_receiver_does_not_delay_another_webhook,
    a_rotated_secret_signs_at_once_and_the_old_one_no_longer,
    a_deleted_webhook_gets_nothing_more_and_its_pending_deliveries_end,
    webhooks_are_checked_scoped_to_their_tenant_and_idempotent,
);

const WAIT: Duration = Duration::from_secs(20);

/// Creates a webhook to `uri` (with `extra` fields) and returns it, secret included.
async fn create_webhook(s: &Stack, token: &str, uri: &str, extra: Value) -> Value {
    let mut body = json!({"name": "hook", "uri": uri});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let webhook = s
        .post("/webhooks", token, &body.to_string())
        .await
        .ok()
        .clone();
    assert!(
        webhook["secret"].as_str().unwrap().starts_with("whsec_"),
        "{webhook}"
    );
    webhook
}

/// Asserts both signatures of a request, made with `secret`.
#[track_caller]
fn assert_signed(r: &Received, secret: &str) {
    let id = r.header("webhook-id");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - ts).abs() < 60,
        "timestamp {ts}"
    );
    let expected = webhook_manager::signature::sign(secret, id, ts, r.body.as_bytes());
    assert_eq!(r.header("webhook-signature"), expected.standard);
    assert_eq!(r.header("x-voipbin-signature"), expected.voipbin);
    assert_eq!(r.header("content-type"), "application/json");
}

fn signed_with(r: &Received, secret: &str) -> bool {
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    let expected =
        webhook_manager::signature::sign(secret, r.header("webhook-id"), ts, r.body.as_bytes());
    r.header("webhook-signature") == expected.standard
}

fn types_of(received: &[Received]) -> BTreeSet<String> {
    received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A group chat of three agents of `customer`; returns its id and the agents.
async fn group_chat(s: &Stack, token: &str) -> (String, [String; 3]) {
    let agents = [new_id(), new_id(), new_id()];
    let body = chat_body(
        "group",
        &agents[0],
        &[&agents[0], &agents[1], &agents[2]],
        "team",
    );
    let chat = s.post("/chats", token, &body).await.ok().clone();
    (chat["id"].as_str().unwrap().to_owned(), agents)
}

async fn send_message(s: &Stack, token: &str, chat: &str, agent: &str, text: &str) -> Value {
    let body = json!({
        "chat_id": chat,
        "source": {"type": "agent", "target": agent},
        "type": "normal",
        "text": text,
    });
    s.post("/chatmessages", token, &body.to_string())
        .await
        .ok()
        .clone()
}

/// The webhook's deliveries (every page).
async fn deliveries(s: &Stack, token: &str, webhook: &str, query: &str) -> Vec<Value> {
    s.list_all(token, &format!("/webhooks/{webhook}/deliveries?x=1{query}"))
        .await
}

/// Waits until the webhook's deliveries satisfy `done`.
async fn deliveries_until(
    s: &Stack,
    token: &str,
    webhook: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = deliveries(s, token, webhook, "").await;
        if done(&found) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never got there: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn every_event_type_is_delivered_signed_to_the_webhooks_of_its_tenant_that_list_it(
    s: &Stack,
) {
    let customer = new_id();
    let token = customer_token(&customer);
    let (all, chat_level, other_tenant) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    let every_type: Vec<&str> = pipeline::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    let hook_all = create_webhook(
        s,
        &token,
        &all.url(),
        json!({"event_types": every_type, "method": "PUT"}),
    )
    .await;
    let hook_default = create_webhook(s, &token, &chat_level.url(), json!({})).await;
    assert_eq!(
        hook_default["event_types"],
        json!([
            "chat_created",
            "chat_updated",
            "chat_deleted",
            "messagechat_created",
            "messagechat_updated",
            "messagechat_deleted"
        ])
    );
    assert_eq!(hook_default["method"], "POST");
    assert_eq!(hook_default["status"], "enabled");
    let other_token = customer_token(&new_id());
    create_webhook(
        s,
        &other_token,
        &other_tenant.url(),
        json!({"event_types": every_type}),
    )
    .await;

    // What each change publishes: chat_created (and a chatroom_created per participant) ...
    let (chat, agents) = group_chat(s, &token).await;
    s.put(&format!("/chats/{chat}"), &token, r#"{"name":"renamed"}"#)
        .await
        .ok();
    let message = send_message(s, &token, &chat, &agents[0], "hello").await;
    let rooms = s
        .list_all(&token, &format!("/chatrooms?owner_id={}", agents[1]))
        .await;
    let room = rooms[0]["id"].as_str().unwrap();
    s.put(&format!("/chatrooms/{room}"), &token, r#"{"name":"mine"}"#)
        .await
        .ok();
    // chatroom_read_updated: once, though the other two participants' sockets hear of it too.
    let reader = agent_token(
        &customer,
        &agents[1],
        api_gateway::auth::permission::CUSTOMER_AGENT,
    );
    s.call(
        "PUT",
        &format!("/service_agents/chatrooms/{room}/read"),
        &reader,
        None,
    )
    .await
    .ok();
    let copies = s
        .list_all(&token, &format!("/chatroommessages?chatroom_id={room}"))
        .await;
    s.delete(
        &format!("/chatroommessages/{}", copies[0]["id"].as_str().unwrap()),
        &token,
    )
    .await
    .ok();
    s.delete(
        &format!("/chatmessages/{}", message["id"].as_str().unwrap()),
        &token,
    )
    .await
    .ok();
    s.delete(&format!("/chatrooms/{room}"), &token).await.ok();
    s.delete(&format!("/chats/{chat}"), &token).await.ok();

    let produced: BTreeSet<String> = [
        "chat_created",
        "chat_updated",
        "chat_deleted",
        "chatroom_created",
        "chatroom_updated",
        "chatroom_deleted",
        "messagechat_created",
        "messagechat_deleted",
        "messagechatroom_created",
        "messagechatroom_deleted",
        "chatroom_read_updated",
    ]
    .map(String::from)
    .into();
    let deadline = tokio::time::Instant::now() + WAIT;
    while types_of(&all.received()) != produced {
        assert!(
            tokio::time::Instant::now() < deadline,
            "types so far: {:?}",
            types_of(&all.received())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chat_types: BTreeSet<String> = [
        "chat_created",
        "chat_updated",
        "chat_deleted",
        "messagechat_created",
        "messagechat_deleted",
    ]
    .map(String::from)
    .into();
    let deadline = tokio::time::Instant::now() + WAIT;
    while types_of(&chat_level.received()) != chat_types {
        assert!(
            tokio::time::Instant::now() < deadline,
            "types so far: {:?}",
            types_of(&chat_level.received())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let secret = hook_all["secret"].as_str().unwrap();
    let received = all.received();
    // A per-resource frame each, as on the WebSocket: three chatrooms created with the chat,
    // a copy created in each of the three rooms.
    let count = |t: &str| received.iter().filter(|r| r.json()["type"] == t).count();
    assert_eq!(count("chatroom_created"), 3);
    assert_eq!(count("messagechatroom_created"), 3);
    assert_eq!(count("chatroom_read_updated"), 1);
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), received.len(), "a webhook-id per delivery");
    for r in &received {
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/hook");
        assert_signed(r, secret);
        let frame = r.json();
        assert_eq!(frame["data"]["customer_id"], customer.as_str(), "{frame}");
    }
    let created = received
        .iter()
        .find(|r| r.json()["type"] == "messagechat_created")
        .unwrap()
        .json();
    assert_eq!(created["data"]["id"], message["id"]);
    assert_eq!(created["data"]["text"], "hello");
    for r in chat_level.received() {
        assert_eq!(r.method, "POST");
        assert_signed(&r, hook_default["secret"].as_str().unwrap());
    }

    // Every delivery is recorded as succeeded, at the first attempt.
    let hook = hook_all["id"].as_str().unwrap();
    let listed = deliveries_until(s, &token, hook, |d| {
        d.len() == received.len() && d.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    for d in &listed {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status_code"], 200);
        assert_eq!(d["webhook_id"], hook);
    }
    let succeeded = deliveries(s, &token, hook, "&status=succeeded").await;
    assert_eq!(succeeded.len(), listed.len());
    assert!(
        deliveries(s, &token, hook, "&status=failed")
            .await
            .is_empty()
    );

    // Another tenant's webhook got none of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        other_tenant.received().is_empty(),
        "{:?}",
        other_tenant.received()
    );
}

async fn a_failing_receiver_is_retried_until_it_answers_and_keeps_its_webhook_id(s: &Stack) {
    let token = customer_token(&new_id());
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(
        vec![Answer::Status(500), Answer::Status(503)],
        Answer::Status(200),
    );
    let webhook = create_webhook(
        s,
        &token,
        &receiver.url(),
        json!({"event_types": ["chat_created"]}),
    )
    .await;
    group_chat(s, &token).await;

    let got = receiver.wait_for(3, WAIT).await;
    let id = got[0].header("webhook-id");
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == id && r.body == got[0].body)
    );
    for r in &got {
        assert_signed(r, webhook["secret"].as_str().unwrap());
    }
    // Backed off: the second retry waited longer than the first.
    let (first, second) = (got[1].at - got[0].at, got[2].at - got[1].at);
    assert!(first >= Duration::from_millis(180), "{first:?}");
    assert!(second > first, "{first:?} then {second:?}");
    let listed = deliveries_until(s, &token, webhook["id"].as_str().unwrap(), |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(listed[0]["attempts"], 3);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["event_type"], "chat_created");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 3, "nothing after the success");
}

async fn retry_after_is_honoured(s: &Stack) {
    let token = customer_token(&new_id());
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(
        vec![Answer::RetryAfter(429, "2".into())],
        Answer::Status(200),
    );
    let webhook = create_webhook(
        s,
        &token,
        &receiver.url(),
        json!({"event_types": ["chat_created"]}),
    )
    .await;
    group_chat(s, &token).await;
    receiver.wait_for(1, WAIT).await;
    let retrying = deliveries_until(s, &token, webhook["id"].as_str().unwrap(), |d| {
        d.len() == 1 && d[0]["status"] == "retrying"
    })
    .await;
    assert_eq!(retrying[0]["last_status_code"], 429);
    assert_eq!(retrying[0]["last_error"], "answered 429");
    let got = receiver.wait_for(2, WAIT).await;
    // The backoff alone would have retried after 0.2 s.
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
}

async fn gone_and_bad_request_are_final_and_can_be_retried_by_hand(s: &Stack) {
    let token = customer_token(&new_id());
    for code in [410, 400] {
        let receiver = WebhookReceiver::start().await;
        receiver.answer_with(vec![], Answer::Status(code));
        let webhook = create_webhook(
            s,
            &token,
            &receiver.url(),
            json!({"event_types": ["chat_created"]}),
        )
        .await;
        let id = webhook["id"].as_str().unwrap();
        group_chat(s, &token).await;
        receiver.wait_for(1, WAIT).await;
        let failed = deliveries_until(s, &token, id, |d| {
            d.len() == 1 && d[0]["status"] == "failed"
        })
        .await;
        assert_eq!(failed[0]["attempts"], 1);
        assert_eq!(failed[0]["last_status_code"], code);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(receiver.received().len(), 1, "{code} is not retried");

        // Queued again through the API, it is attempted again (and answered the same).
        let delivery = failed[0]["id"].as_str().unwrap();
        let queued = s
            .post(
                &format!("/webhooks/{id}/deliveries/{delivery}/retry"),
                &token,
                "",
            )
            .await;
        assert_eq!(queued.ok()["status"], "pending");
        receiver.wait_for(2, WAIT).await;
        deliveries_until(s, &token, id, |d| {
            d[0]["status"] == "failed" && d[0]["attempts"] == 2
        })
        .await;
        // A delivery of another webhook, or none at all, is not found.
        s.post(
            &format!("/webhooks/{id}/deliveries/{}/retry", new_id()),
            &token,
            "",
        )
        .await
        .assert_error(404, "not_found", "delivery");
    }
}

async fn a_hanging_receiver_does_not_delay_another_webhook(s: &Stack) {
    let token = customer_token(&new_id());
    let (hanging, healthy) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    hanging.answer_with(vec![], Answer::Hang);
    let types = json!({"event_types": ["messagechat_created"]});
    let stuck = create_webhook(s, &token, &hanging.url(), types.clone()).await;
    create_webhook(s, &token, &healthy.url(), types).await;
    let (chat, agents) = group_chat(s, &token).await;
    let started = tokio::time::Instant::now();
    for n in 0..20 {
        send_message(s, &token, &chat, &agents[0], &format!("m{n}")).await;
    }
    // Every message reaches the healthy receiver well before the hanging one's first attempts
    // time out (3 s here).
    healthy.wait_for(20, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The hanging one holds only its own two attempts in flight.
    assert_eq!(hanging.received().len(), 2);
    // Its deliveries time out and are retried, not lost.
    let listed = deliveries_until(s, &token, stuck["id"].as_str().unwrap(), |d| {
        d.iter().filter(|d| d["status"] == "retrying").count() >= 2
    })
    .await;
    assert_eq!(listed.len(), 20);
    let timed_out = listed.iter().find(|d| d["status"] == "retrying").unwrap();
    assert!(
        timed_out["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{timed_out}"
    );
}

async fn a_rotated_secret_signs_at_once_and_the_old_one_no_longer(s: &Stack) {
    let token = customer_token(&new_id());
    let receiver = WebhookReceiver::start().await;
    let webhook = create_webhook(
        s,
        &token,
        &receiver.url(),
        json!({"event_types": ["chat_created"]}),
    )
    .await;
    let id = webhook["id"].as_str().unwrap();
    let old = webhook["secret"].as_str().unwrap();
    group_chat(s, &token).await;
    let first = receiver.wait_for(1, WAIT).await;
    assert!(signed_with(&first[0], old));

    let rotated = s
        .post(&format!("/webhooks/{id}/secret"), &token, "")
        .await
        .ok()
        .clone();
    let new = rotated["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != old);
    // Shown only on creation and rotation.
    let read = s.get(&format!("/webhooks/{id}"), &token).await.ok().clone();
    assert!(read.get("secret").is_none(), "{read}");
    assert_eq!(read["id"], id);

    group_chat(s, &token).await;
    let second = receiver.wait_for(2, WAIT).await;
    assert_signed(&second[1], new);
    assert!(!signed_with(&second[1], old));
}

async fn a_deleted_webhook_gets_nothing_more_and_its_pending_deliveries_end(s: &Stack) {
    let token = customer_token(&new_id());
    let (failing, probe) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    failing.answer_with(vec![], Answer::Status(503));
    let types = json!({"event_types": ["chat_created"]});
    let webhook = create_webhook(s, &token, &failing.url(), types.clone()).await;
    let id = webhook["id"].as_str().unwrap();
    create_webhook(s, &token, &probe.url(), types).await;
    group_chat(s, &token).await;
    failing.wait_for(1, WAIT).await;
    probe.wait_for(1, WAIT).await;

    let deleted = s
        .delete(&format!("/webhooks/{id}"), &token)
        .await
        .ok()
        .clone();
    assert_ne!(deleted["tm_delete"], common::time::LIVE);
    let ended = deliveries_until(s, &token, id, |d| {
        d.len() == 1 && d[0]["status"] == "failed"
    })
    .await;
    assert_eq!(ended[0]["last_error"], "webhook deleted");
    let attempts_then = failing.received().len();

    // The next event reaches the other webhook, and not the deleted one.
    group_chat(s, &token).await;
    probe.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(failing.received().len(), attempts_then);
    assert_eq!(deliveries(s, &token, id, "").await.len(), 1);
    // It is no longer listed; read, it shows its deletion; changes are refused.
    let listed = s.list_all(&token, "/webhooks?x=1").await;
    assert!(listed.iter().all(|w| w["id"] != id));
    assert_eq!(
        s.get(&format!("/webhooks/{id}"), &token).await.ok()["tm_delete"],
        deleted["tm_delete"]
    );
    s.put(&format!("/webhooks/{id}"), &token, r#"{"name":"x"}"#)
        .await
        .assert_error(404, "not_found", "webhook");
}

async fn webhooks_are_checked_scoped_to_their_tenant_and_idempotent(s: &Stack) {
    let customer = new_id();
    let token = customer_token(&customer);
    let receiver = WebhookReceiver::start().await;
    let uri = receiver.url();

    // Bad input names the field and writes nothing.
    s.post("/webhooks", &token, r#"{"name":"x"}"#)
        .await
        .assert_error(400, "invalid_argument", "uri");
    for (body, field) in [
        (json!({"uri": "ftp://example.com/"}), "uri"),
        (json!({"uri": "/relative"}), "uri"),
        (json!({"uri": uri, "method": "GET"}), "method"),
        (
            json!({"uri": uri, "event_types": ["chat_created", "chat_renamed"]}),
            "event_types[1]",
        ),
        (json!({"uri": uri, "name": "a\u{0}b"}), "name"),
    ] {
        s.post("/webhooks", &token, &body.to_string())
            .await
            .assert_error(400, "invalid_argument", field);
    }
    assert!(s.list_all(&token, "/webhooks?x=1").await.is_empty());

    // Agents may not manage webhooks; another tenant cannot see them.
    let agent = agent_token(
        &customer,
        &new_id(),
        api_gateway::auth::permission::CUSTOMER_AGENT,
    );
    s.post("/webhooks", &agent, &json!({"uri": uri}).to_string())
        .await
        .assert_error(403, "permission_denied", "");
    let webhook = create_webhook(s, &token, &uri, json!({"name": "first"})).await;
    let id = webhook["id"].as_str().unwrap();
    let stranger = customer_token(&new_id());
    s.get(&format!("/webhooks/{id}"), &stranger)
        .await
        .assert_error(404, "not_found", "webhook");
    s.delete(&format!("/webhooks/{id}"), &stranger)
        .await
        .assert_error(404, "not_found", "webhook");
    s.post(&format!("/webhooks/{id}/secret"), &stranger, "")
        .await
        .assert_error(404, "not_found", "webhook");
    s.get(&format!("/webhooks/{id}/deliveries"), &stranger)
        .await
        .assert_error(404, "not_found", "webhook");
    s.get("/webhooks/not-a-uuid", &token)
        .await
        .assert_error(400, "invalid_argument", "id");

    // Changes: each field checked; left out, kept.
    s.put(&format!("/webhooks/{id}"), &token, r#"{"status":"paused"}"#)
        .await
        .assert_error(400, "invalid_argument", "status");
    let changed = s
        .put(
            &format!("/webhooks/{id}"),
            &token,
            r#"{"name":"renamed","method":"PUT","event_types":["chatroom_created"]}"#,
        )
        .await
        .ok()
        .clone();
    assert_eq!(changed["name"], "renamed");
    assert_eq!(changed["method"], "PUT");
    assert_eq!(changed["uri"], uri.as_str());
    assert_eq!(changed["event_types"], json!(["chatroom_created"]));
    assert!(changed.get("secret").is_none());

    // An Idempotency-Key replays the first creation, secret and all.
    let create = |key: &'static str, name: &'static str| {
        let body = json!({"uri": uri, "name": name}).to_string();
        s.http
            .post(format!("{}/webhooks?token={token}", s.base))
            .header("Idempotency-Key", key)
            .body(body)
    };
    let first = s.send(create("k-1", "keyed")).await.ok().clone();
    let again = s.send(create("k-1", "keyed")).await.ok().clone();
    assert_eq!(first, again);
    s.send(create("k-1", "other"))
        .await
        .assert_error(409, "conflict", "Idempotency-Key");
    let names: Vec<String> = s
        .list_all(&token, "/webhooks?x=1")
        .await
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["keyed", "renamed"]);

    // A disabled webhook gets no new deliveries.
    s.put(
        &format!("/webhooks/{id}"),
        &token,
        r#"{"status":"disabled","event_types":["chat_created"]}"#,
    )
    .await
    .ok();
    group_chat(s, &token).await;
    let keyed = first["id"].as_str().unwrap();
    deliveries_until(s, &token, keyed, |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    })
    .await;
    assert!(deliveries(s, &token, id, "").await.is_empty());
    s.get(&format!("/webhooks/{id}/deliveries?status=done"), &token)
        .await
        .assert_error(400, "invalid_argument", "status");

    // At most 100 live webhooks a customer (two exist); a deleted one makes room.
    for n in 2..100 {
        create_webhook(s, &token, &uri, json!({"name": format!("hook {n}")})).await;
    }
    s.post("/webhooks", &token, &json!({"uri": uri}).to_string())
        .await
        .assert_error(409, "conflict", "at most 100");
    s.delete(&format!("/webhooks/{id}"), &token).await.ok();
    create_webhook(s, &token, &uri, json!({})).await;
}

/// In the split deployment (unless the operator allows them), webhooks may not point at
/// loopback, private or link-local addresses, named or literal.
#[tokio::test]
async fn private_addresses_are_refused_in_the_split_deployment() {
    let test = "webhooks::private_addresses_are_refused_in_the_split_deployment";
    let Some((env, guards)) = split_env_with_webhooks(test, quick(false)).await else {
        return;
    };
    let mut s = Stack::split(&env).await;
    s.keep(guards);
    let token = customer_token(&new_id());
    let receiver = WebhookReceiver::start().await;
    for uri in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://[::1]:8080/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
    ] {
        let body = json!({"uri": uri}).to_string();
        s.post("/webhooks", &token, &body)
            .await
            .assert_error(400, "invalid_argument", "uri");
    }
    assert!(s.list_all(&token, "/webhooks?x=1").await.is_empty());
    // A public address is accepted (nothing is sent to it: no event happens).
    create_webhook(&s, &token, "http://8.8.8.8/hook", json!({})).await;
    assert!(receiver.received().is_empty());
}
