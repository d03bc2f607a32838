//! The WebSocket (`GET /v1.0/ws`): subscription rules (audiences, narrowing ids, limits),
//! delivery and isolation, ordering, several gateway instances, the slow-client rule, token
//! expiry, shutdown, and the resync after the broker connection drops; against both ways of
//! running where it applies.

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

against_both!(
    "ws";
    subscriptions_are_checked_and_answered,
    events_reach_only_those_who_may_see_them,
    events_of_a_chat_arrive_in_commit_order,
    a_client_stuck_beyond_the_send_timeout_is_cut_off_without_holding_up_others,
    an_expired_token_closes_the_socket,
    agent_topics_carry_only_the_agents_own_chatrooms,
    a_narrowing_id_must_name_something_the_caller_may_see,
    narrowed_customer_topics_carry_only_their_chat_or_room,
    concurrent_posts_reach_every_socket_once_and_in_one_order,
    every_gateway_instance_delivers_every_event_to_its_own_sockets,
    a_gateway_receives_only_the_tenants_of_its_sockets,
    a_bearer_token_opens_the_socket,
    an_oversized_client_frame_closes_the_socket_with_1009,
    a_socket_holds_at_most_100_topics,
);

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

/// The next frame, which must be event `kind`; its `data`.
#[track_caller]
fn data_of(frame: Option<Value>, kind: &str) -> Value {
    let frame = frame.unwrap_or_else(|| panic!("no {kind} within {WAIT:?}"));
    assert_eq!(frame["type"], kind, "{frame}");
    frame["data"].clone()
}

async fn next_event(ws: &mut WsClient, kind: &str) -> Value {
    data_of(ws.next_within(WAIT).await, kind)
}

async fn assert_quiet(ws: &mut WsClient, what: &str) {
    if let Some(frame) = ws.next_within(QUIET).await {
        panic!("{what}: expected nothing more, got {frame}");
    }
}

/// The next frame, which must be an error frame with `code` whose message names `field`.
async fn next_error(ws: &mut WsClient, code: &str, field: &str) {
    let frame = ws.next_within(WAIT).await.expect("an error frame");
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["error"]["code"], code, "{frame}");
    let message = frame["error"]["message"].as_str().unwrap();
    assert!(message.contains(field), "{message:?} should name {field:?}");
}

/// `owner`'s chatroom of `chat_id`, as the REST API returns it.
async fn room_of(s: &Stack, admin: &str, chat_id: &Value, owner: &str) -> Value {
    let rooms = s
        .get(&format!("/chatrooms?owner_id={owner}&page_size=100"), admin)
        .await;
    rooms.ok()["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chat_id"] == *chat_id)
        .cloned()
        .unwrap_or_else(|| panic!("{owner} has a chatroom of {chat_id}"))
}

/// Creates a chat (`body` as for `POST /chats`) and waits until its events have gone past
/// the gateway's hub: a socket subscribing after this does not see them arrive late.
async fn create_chat(s: &Stack, admin: &str, customer: &str, body: &str) -> Value {
    let mut tracer = s.ws(admin).await;
    tracer
        .subscribe(&[
            format!("customer_id:{customer}:chat"),
            format!("customer_id:{customer}:chatroom"),
        ])
        .await;
    let chat = s.post("/chats", admin, body).await.ok().clone();
    let rooms = chat["participant_ids"].as_array().unwrap().len();
    let (mut created, mut rooms_created) = (false, 0);
    while !created || rooms_created < rooms {
        let frame = tracer.next_within(WAIT).await.expect("the chat's events");
        match frame["type"].as_str().unwrap() {
            "chat_created" if frame["data"]["id"] == chat["id"] => created = true,
            "chatroom_created" if frame["data"]["chat_id"] == chat["id"] => rooms_created += 1,
            _ => {}
        }
    }
    chat
}

async fn post_message(s: &Stack, admin: &str, chat_id: &Value, agent: &str, text: &str) -> Value {
    let body =
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": agent}, "text": text});
    s.post("/chatmessages", admin, &body.to_string())
        .await
        .ok()
        .clone()
}

async fn subscriptions_are_checked_and_answered(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut ws = s.ws(&admin).await;
    let mine = format!("customer_id:{customer}:chat");
    ws.subscribe(std::slice::from_ref(&mine)).await;

    // Refused topics get an error frame each and are not kept; the socket stays open.
    let refused = [
        format!("customer_id:{}:chat", new_id()),
        format!("agent_id:{}:chatroom", new_id()),
        "customer_id:nope:chat".to_owned(),
        format!("customer_id:{customer}:calls"),
    ];
    ws.send(json!({"type": "subscribe", "topics": refused}))
        .await;
    let mut codes = Vec::new();
    for _ in &refused {
        let frame = ws.next_within(WAIT).await.unwrap();
        assert_eq!(frame["type"], "error", "{frame}");
        codes.push(frame["error"]["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        codes,
        [
            "permission_denied",
            "permission_denied",
            "invalid_argument",
            "invalid_argument"
        ]
    );
    // Malformed frames too.
    ws.send_text("this is not json").await;
    assert_eq!(
        ws.next_within(WAIT).await.unwrap()["error"]["code"],
        "invalid_argument"
    );
    ws.send(json!({"type": "dance"})).await;
    next_error(&mut ws, "invalid_argument", "type").await;
    // A subscribe or unsubscribe without topics is answered, naming `topics`.
    for frame in [
        json!({"type": "subscribe"}),
        json!({"type": "subscribe", "topics": []}),
        json!({"type": "subscribe", "topics": null}),
        json!({"type": "unsubscribe", "topics": []}),
        json!({"type": "subscribe", "topics": mine}),
        json!({"type": "subscribe", "topics": [mine, 7]}),
    ] {
        ws.send(frame).await;
        next_error(&mut ws, "invalid_argument", "topics").await;
    }
    ws.send(json!({"topics": [mine]})).await;
    next_error(&mut ws, "invalid_argument", "type").await;

    // Still subscribed to what was accepted.
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &admin, &chat_body("normal", &a, &[&a, &b], "x"))
        .await
        .ok()
        .clone();
    let frame = ws.next_within(WAIT).await.expect("chat_created");
    assert_eq!(frame, json!({"type": "chat_created", "data": chat}));
    // An agent-only token may not take customer topics.
    let mut agent_ws = s.ws(&agent_token(&customer, &a, 0x10)).await;
    agent_ws
        .send(json!({"type": "subscribe", "topics": [mine]}))
        .await;
    assert_eq!(
        agent_ws.next_within(WAIT).await.unwrap()["error"]["code"],
        "permission_denied"
    );

    // Unsubscribed: nothing more.
    ws.send(json!({"type": "unsubscribe", "topics": [mine]}))
        .await;
    assert_eq!(
        ws.next_within(WAIT).await.unwrap(),
        json!({"type": "unsubscribed", "topics": [mine]})
    );
    s.post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "y"))
        .await
        .ok();
    assert!(ws.next_within(Duration::from_millis(700)).await.is_none());
}

async fn events_reach_only_those_who_may_see_them(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (alice, bob) = (new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("normal", &alice, &[&alice, &bob], "dm"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();

    let mut admin_ws = s.ws(&admin).await;
    admin_ws
        .subscribe(&[format!("customer_id:{customer}:messagechat:{chat_id}")])
        .await;
    let mut alice_ws = s.ws(&agent_token(&customer, &alice, 0x10)).await;
    alice_ws
        .subscribe(&[format!("agent_id:{alice}:messagechatroom")])
        .await;
    let mut bob_ws = s.ws(&agent_token(&customer, &bob, 0x10)).await;
    bob_ws
        .subscribe(&[format!("agent_id:{bob}:messagechatroom")])
        .await;
    let other = new_id();
    let mut other_ws = s.ws(&customer_token(&other)).await;
    other_ws
        .subscribe(&[
            format!("customer_id:{other}:messagechat"),
            format!("customer_id:{other}:messagechatroom"),
        ])
        .await;

    let message = s
        .post("/chatmessages", &admin, &json!({"chat_id": chat_id, "source": {"type": "agent", "target": alice}, "text": "hi"}).to_string())
        .await
        .ok()
        .clone();
    let got = admin_ws.next_within(WAIT).await.unwrap();
    assert_eq!(got, json!({"type": "messagechat_created", "data": message}));
    let alice_room = alice_ws.next_within(WAIT).await.unwrap();
    let bob_room = bob_ws.next_within(WAIT).await.unwrap();
    for (frame, owner) in [(&alice_room, &alice), (&bob_room, &bob)] {
        assert_eq!(frame["type"], "messagechatroom_created");
        assert_eq!(frame["data"]["messagechat_id"], message["id"]);
        let room = s
            .get(
                &format!(
                    "/chatrooms/{}",
                    frame["data"]["chatroom_id"].as_str().unwrap()
                ),
                &admin,
            )
            .await;
        assert_eq!(
            room.ok()["owner_id"],
            owner.as_str(),
            "each agent gets only their own copy"
        );
    }
    // Nobody gets anything more, and the other tenant gets nothing at all.
    for ws in [&mut alice_ws, &mut bob_ws, &mut other_ws, &mut admin_ws] {
        assert!(ws.next_within(Duration::from_millis(500)).await.is_none());
    }
}

async fn events_of_a_chat_arrive_in_commit_order(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b], "ordered"),
        )
        .await
        .ok()
        .clone();
    let mut ws = s.ws(&admin).await;
    ws.subscribe(&[format!("customer_id:{customer}:messagechat")])
        .await;
    let mut sent = Vec::new();
    for i in 0..30 {
        let m = s
            .post("/chatmessages", &admin, &json!({"chat_id": chat["id"], "source": {"type": "agent", "target": a}, "text": format!("m{i}")}).to_string())
            .await
            .ok()
            .clone();
        sent.push(m["id"].clone());
    }
    let got: Vec<Value> = ws
        .collect("messagechat_created", 30, WAIT)
        .await
        .iter()
        .map(|f| f["data"]["id"].clone())
        .collect();
    assert_eq!(got, sent);
}

/// Two sockets of a tenant on a group chat's messages and copies, after `total` messages of
/// 60 kB were posted into it: `slow` never read (its small receive buffer makes the server
/// notice after a few frames), `fast` read and got every message.
struct SlowAndFast {
    slow: WsClient,
    fast: WsClient,
    admin: String,
    chat_id: Value,
    agent: String,
}

async fn post_past_a_silent_socket(s: &Stack, total: usize) -> SlowAndFast {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "big"))
        .await
        .ok()
        .clone();
    let topics = [
        format!("customer_id:{customer}:messagechat"),
        format!("customer_id:{customer}:messagechatroom"),
    ];
    let mut slow = s.ws_small_buffer(&admin).await;
    slow.subscribe(&topics).await;
    let mut fast = s.ws(&admin).await;
    fast.subscribe(&topics).await;

    let text = "x".repeat(60_000);
    let reader = tokio::spawn(async move {
        let got = fast
            .collect("messagechat_created", total, Duration::from_secs(60))
            .await;
        (got.len(), fast)
    });
    // The rate limit is per caller: the posts go out as a few admin agents (300 in a burst is
    // above one caller's allowance).
    let senders: Vec<String> = (0..4)
        .map(|_| agent_token(&customer, &new_id(), 0x20))
        .collect();
    for i in 0..total {
        post_message(s, &senders[i % senders.len()], &chat["id"], &a, &text).await;
    }
    let (fast_got, fast) = reader.await.unwrap();
    assert_eq!(fast_got, total, "the reading client got everything");
    SlowAndFast {
        slow,
        fast,
        admin,
        chat_id: chat["id"].clone(),
        agent: a,
    }
}

/// A client that stops reading while the server is sending it a frame: once that frame has
/// waited the send timeout, the connection is dropped without a close frame (none could reach
/// the client); the client then reads what was already on its way and the connection ends.
async fn a_client_stuck_beyond_the_send_timeout_is_cut_off_without_holding_up_others(s: &Stack) {
    let total = 300;
    let SlowAndFast { mut slow, .. } = post_past_a_silent_socket(s, total).await;

    // The slow one has still not read anything for longer than a frame may take to go out
    // (events may reach the sockets after the last POST was answered). Then it reads: what
    // fitted in the buffers, and the connection is gone.
    tokio::time::sleep(test_ws_settings().send_timeout + Duration::from_secs(1)).await;
    let mut slow_got = 0;
    let ended = loop {
        match slow.next_frame(Duration::from_secs(15)).await {
            Some(Ok(f)) if f["type"] == "messagechat_created" => slow_got += 1,
            Some(Ok(_)) => {}
            Some(Err(code)) => break code,
            None => {
                panic!("the stuck client was never dropped (it had received {slow_got} of {total})")
            }
        }
    };
    assert!(
        slow_got < total,
        "the stuck client cannot have received everything ({slow_got})"
    );
    // 900 events fit its queue (1,024): it was cut off as stuck, not closed as lagged.
    assert_eq!(ended, None, "no close frame can reach a stuck client");
    eprintln!(
        "slow client: received {slow_got} of {total} before being dropped (close code {ended:?}); fast client: all {total}"
    );
}

async fn an_expired_token_closes_the_socket(s: &Stack) {
    let customer = new_id();
    let short = token(&customer, None, 0x20, Duration::from_secs(2));
    let mut ws = s.ws(&short).await;
    ws.subscribe(&[format!("customer_id:{customer}:chat")])
        .await;
    let started = std::time::Instant::now();
    let mut closed = None;
    while closed.is_none() {
        match ws.next_frame(Duration::from_secs(10)).await {
            Some(Ok(f)) => assert_eq!(f["error"]["code"], "unauthenticated", "{f}"),
            Some(Err(code)) => closed = Some(code),
            None => panic!("the socket outlived its token"),
        }
    }
    assert_eq!(closed.unwrap(), Some(api_gateway::ws::CLOSE_TOKEN_EXPIRED));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The gateway's connection to RabbitMQ drops: connected clients are told that events may have
/// been missed, and events flow again once the connection is back.
#[tokio::test]
async fn after_the_broker_connection_drops_clients_are_told_to_resync() {
    let test = "ws::after_the_broker_connection_drops_clients_are_told_to_resync";
    let Some((mut env, guards)) = split_env(test).await else {
        return;
    };
    let amqp_host = env
        .amqp_url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let amqp_addr = tokio::net::lookup_host(&amqp_host)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = testkit::TcpProxy::start(amqp_addr).await;
    env.hub_amqp_url = env.amqp_url.replace(&amqp_host, &proxy.addr().to_string());
    let mut s = Stack::split(&env).await;
    s.keep(guards);
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut ws = s.ws(&admin).await;
    ws.subscribe(&[format!("customer_id:{customer}:chat")])
        .await;
    let (a, b) = (new_id(), new_id());
    // The hub subscribes in the background: wait until an event comes through.
    let mut first = None;
    for i in 0..50 {
        s.post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b], &format!("warm {i}")),
        )
        .await
        .ok();
        if let Some(f) = ws.next_within(Duration::from_millis(200)).await {
            first = Some(f);
            break;
        }
    }
    assert_eq!(first.expect("events flow")["type"], "chat_created");
    while ws.next_within(Duration::from_millis(300)).await.is_some() {}

    proxy.set_up(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set_up(true);
    let resync = loop {
        match ws.next_within(Duration::from_secs(15)).await {
            Some(f) if f["type"] == "resync" => break f,
            Some(_) => {}
            None => panic!("no resync frame after the broker connection came back"),
        }
    };
    assert!(resync["reason"].as_str().unwrap().contains("missed"));
    let after = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b], "after"),
        )
        .await
        .ok()
        .clone();
    let frame = ws.collect("chat_created", 1, Duration::from_secs(10)).await;
    assert_eq!(frame, vec![json!({"type": "chat_created", "data": after})]);
}

/// A client that stops answering pings (here: stops reading, so its pongs never go out) is
/// dropped after two ping intervals.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let s = Stack::embedded().await;
    let customer = new_id();
    let mut ws = s.ws(&customer_token(&customer)).await;
    ws.subscribe(&[format!("customer_id:{customer}:chat")])
        .await;
    let interval = test_ws_settings().ping_interval;
    tokio::time::sleep(interval * 4).await;
    let mut closed = None;
    while closed.is_none() {
        match ws.next_frame(Duration::from_secs(10)).await {
            Some(Ok(frame)) => panic!("no frames expected, got {frame}"),
            Some(Err(code)) => closed = Some(code),
            None => panic!("a silent client was not dropped"),
        }
    }
    // The close frame (4002) if it is read before the client's late pong hits the closed
    // socket; otherwise the connection is simply gone.
    let code = closed.unwrap();
    assert!(
        matches!(code, None | Some(api_gateway::ws::CLOSE_UNRESPONSIVE)),
        "{code:?}"
    );
}

async fn agent_topics_carry_only_the_agents_own_chatrooms(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (alice, bob) = (new_id(), new_id());
    let (alice_token, bob_token) = (
        agent_token(&customer, &alice, 0x10),
        agent_token(&customer, &bob, 0x10),
    );
    let chat = create_chat(
        s,
        &admin,
        &customer,
        &chat_body("group", &alice, &[&alice, &bob], "team"),
    )
    .await;
    let alice_room = room_of(s, &admin, &chat["id"], &alice).await;
    let bob_room = room_of(s, &admin, &chat["id"], &bob).await;

    let mut alice_ws = s.ws(&alice_token).await;
    alice_ws
        .subscribe(&[
            format!("agent_id:{alice}:chatroom"),
            format!("agent_id:{alice}:messagechatroom"),
        ])
        .await;
    // Bob's topics and the tenant's are refused, each naming its topic, and not kept.
    let refused = [
        format!("agent_id:{bob}:chatroom"),
        format!("agent_id:{bob}:messagechatroom"),
        format!("customer_id:{customer}:chatroom"),
        format!("customer_id:{customer}:messagechatroom"),
    ];
    alice_ws
        .send(json!({"type": "subscribe", "topics": refused}))
        .await;
    for topic in &refused {
        next_error(&mut alice_ws, "permission_denied", topic).await;
    }
    let mut bob_ws = s.ws(&bob_token).await;
    bob_ws
        .subscribe(&[format!("agent_id:{bob}:chatroom")])
        .await;

    // Alice renames her room: she hears of it, as REST returns it; Bob does not.
    let renamed = s
        .put(
            &format!(
                "/service_agents/chatrooms/{}",
                alice_room["id"].as_str().unwrap()
            ),
            &alice_token,
            &json!({"name": "mine"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut alice_ws, "chatroom_updated").await, renamed);
    // Bob's room renamed: only Bob hears of it.
    let bob_renamed = s
        .put(
            &format!("/chatrooms/{}", bob_room["id"].as_str().unwrap()),
            &admin,
            &json!({"name": "his"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(
        next_event(&mut bob_ws, "chatroom_updated").await,
        bob_renamed
    );
    // Alice posts: she gets her own copy only (Bob's copy is in his room).
    let copy = s
        .post(
            "/service_agents/chatroommessages",
            &alice_token,
            &json!({"chatroom_id": alice_room["id"], "text": "hi"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(
        next_event(&mut alice_ws, "messagechatroom_created").await,
        copy
    );
    assert_quiet(&mut alice_ws, "alice").await;
    assert_quiet(&mut bob_ws, "bob").await;
}

async fn a_narrowing_id_must_name_something_the_caller_may_see(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (alice, bob) = (new_id(), new_id());
    let chat = create_chat(
        s,
        &admin,
        &customer,
        &chat_body("group", &alice, &[&alice, &bob], "team"),
    )
    .await;
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let alice_room = room_of(s, &admin, &chat["id"], &alice).await;
    let bob_room = room_of(s, &admin, &chat["id"], &bob).await;
    let (alice_room_id, bob_room_id) = (
        alice_room["id"].as_str().unwrap().to_owned(),
        bob_room["id"].as_str().unwrap().to_owned(),
    );
    // Another tenant's chat and chatroom.
    let other = new_id();
    let other_admin = customer_token(&other);
    let foreign_chat = s
        .post(
            "/chats",
            &other_admin,
            &chat_body("group", &alice, &[&alice, &bob], "theirs"),
        )
        .await
        .ok()
        .clone();
    let foreign_room = room_of(s, &other_admin, &foreign_chat["id"], &alice).await;
    let (foreign_chat_id, foreign_room_id) = (
        foreign_chat["id"].as_str().unwrap(),
        foreign_room["id"].as_str().unwrap(),
    );

    // Customer topics: the chat or chatroom must be the tenant's (and of the right kind).
    let mut admin_ws = s.ws(&admin).await;
    let refused = [
        format!("customer_id:{customer}:chat:{foreign_chat_id}"),
        format!("customer_id:{customer}:messagechat:{foreign_chat_id}"),
        format!("customer_id:{customer}:chatroom:{foreign_room_id}"),
        format!("customer_id:{customer}:messagechatroom:{foreign_room_id}"),
        format!("customer_id:{customer}:chat:{}", new_id()),
        format!("customer_id:{customer}:messagechat:{alice_room_id}"),
        format!("customer_id:{customer}:chatroom:{chat_id}"),
    ];
    admin_ws
        .send(json!({"type": "subscribe", "topics": refused}))
        .await;
    for topic in &refused {
        next_error(&mut admin_ws, "not_found", topic).await;
    }
    admin_ws
        .subscribe(&[
            format!("customer_id:{customer}:chat:{chat_id}"),
            format!("customer_id:{customer}:chatroom:{alice_room_id}"),
        ])
        .await;

    // Agent topics: the chatroom must be the agent's own.
    let alice_token = agent_token(&customer, &alice, 0x10);
    let mut alice_ws = s.ws(&alice_token).await;
    let refused = [
        format!("agent_id:{alice}:chatroom:{bob_room_id}"),
        format!("agent_id:{alice}:messagechatroom:{bob_room_id}"),
        format!("agent_id:{alice}:chatroom:{foreign_room_id}"),
    ];
    alice_ws
        .send(json!({"type": "subscribe", "topics": refused}))
        .await;
    for topic in &refused {
        next_error(&mut alice_ws, "not_found", topic).await;
    }
    alice_ws
        .subscribe(&[format!("agent_id:{alice}:chatroom:{alice_room_id}")])
        .await;

    // Nothing refused was kept: Bob's room and the other tenant's changes reach no one here;
    // what was accepted does.
    s.put(
        &format!("/chatrooms/{bob_room_id}"),
        &admin,
        &json!({"name": "bob's"}).to_string(),
    )
    .await
    .ok();
    post_message(s, &admin, &chat["id"], &alice, "hi").await;
    s.put(
        &format!("/chats/{foreign_chat_id}"),
        &other_admin,
        &json!({"name": "x"}).to_string(),
    )
    .await
    .ok();
    s.put(
        &format!("/chatrooms/{foreign_room_id}"),
        &other_admin,
        &json!({"name": "x"}).to_string(),
    )
    .await
    .ok();
    let renamed = s
        .put(
            &format!("/chatrooms/{alice_room_id}"),
            &admin,
            &json!({"name": "alice's"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut alice_ws, "chatroom_updated").await, renamed);
    assert_eq!(next_event(&mut admin_ws, "chatroom_updated").await, renamed);
    assert_quiet(&mut alice_ws, "alice").await;
    assert_quiet(&mut admin_ws, "admin").await;
}

async fn narrowed_customer_topics_carry_only_their_chat_or_room(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (alice, bob, carol) = (new_id(), new_id(), new_id());
    let create = |name: &str| chat_body("group", &alice, &[&alice, &bob], name);
    let chat = create_chat(s, &admin, &customer, &create("this")).await;
    let other_chat = create_chat(s, &admin, &customer, &create("other")).await;
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let room = room_of(s, &admin, &chat["id"], &alice).await;
    let room_id = room["id"].as_str().unwrap().to_owned();
    let bob_room = room_of(s, &admin, &chat["id"], &bob).await;

    let mut chat_ws = s.ws(&admin).await;
    chat_ws
        .subscribe(&[format!("customer_id:{customer}:chat:{chat_id}")])
        .await;
    let mut room_ws = s.ws(&admin).await;
    room_ws
        .subscribe(&[format!("customer_id:{customer}:chatroom:{room_id}")])
        .await;
    let mut messages_ws = s.ws(&admin).await;
    messages_ws
        .subscribe(&[format!("customer_id:{customer}:messagechat:{chat_id}")])
        .await;
    let mut copies_ws = s.ws(&admin).await;
    copies_ws
        .subscribe(&[format!("customer_id:{customer}:messagechatroom:{room_id}")])
        .await;
    let room_now = || async {
        s.get(&format!("/chatrooms/{room_id}"), &admin)
            .await
            .ok()
            .clone()
    };

    // The other chat and Bob's room change: not on these sockets (checked at the end).
    let rename = json!({"name": "renamed"}).to_string();
    s.put(
        &format!("/chats/{}", other_chat["id"].as_str().unwrap()),
        &admin,
        &rename,
    )
    .await
    .ok();
    s.put(
        &format!("/chatrooms/{}", bob_room["id"].as_str().unwrap()),
        &admin,
        &rename,
    )
    .await
    .ok();
    post_message(s, &admin, &other_chat["id"], &alice, "elsewhere").await;

    // Chat renamed.
    let renamed = s
        .put(&format!("/chats/{chat_id}"), &admin, &rename)
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut chat_ws, "chat_updated").await, renamed);
    // Room renamed.
    let room_renamed = s
        .put(&format!("/chatrooms/{room_id}"), &admin, &rename)
        .await
        .ok()
        .clone();
    assert_eq!(
        next_event(&mut room_ws, "chatroom_updated").await,
        room_renamed
    );
    // A participant added, then removed: the chat and the room's participant_ids change.
    let added = s
        .post(
            &format!("/chats/{chat_id}/participant_ids"),
            &admin,
            &json!({"participant_id": carol}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut chat_ws, "chat_updated").await, added);
    let room_with_carol = next_event(&mut room_ws, "chatroom_updated").await;
    assert_eq!(room_with_carol, room_now().await);
    assert!(
        room_with_carol["participant_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(carol))
    );
    let removed = s
        .delete(&format!("/chats/{chat_id}/participant_ids/{carol}"), &admin)
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut chat_ws, "chat_updated").await, removed);
    assert_eq!(
        next_event(&mut room_ws, "chatroom_updated").await,
        room_now().await
    );

    // A message and its deletion: the chat's message, and only this room's copy.
    let message = post_message(s, &admin, &chat["id"], &alice, "here").await;
    assert_eq!(
        next_event(&mut messages_ws, "messagechat_created").await,
        message
    );
    let copy = next_event(&mut copies_ws, "messagechatroom_created").await;
    assert_eq!(
        (&copy["chatroom_id"], &copy["messagechat_id"]),
        (&json!(room_id), &message["id"])
    );
    let copy_id = copy["id"].as_str().unwrap();
    assert_eq!(
        copy,
        s.get(&format!("/chatroommessages/{copy_id}"), &admin)
            .await
            .ok()
            .clone()
    );
    let deleted = s
        .delete(
            &format!("/chatmessages/{}", message["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    assert_eq!(
        next_event(&mut messages_ws, "messagechat_deleted").await,
        deleted
    );
    let copy_deleted = next_event(&mut copies_ws, "messagechatroom_deleted").await;
    assert_eq!(copy_deleted["id"], copy["id"]);
    assert_eq!(copy_deleted["tm_delete"], deleted["tm_delete"]);

    // The chat deleted: its event, and its room's.
    let chat_deleted = s
        .delete(&format!("/chats/{chat_id}"), &admin)
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut chat_ws, "chat_deleted").await, chat_deleted);
    let room_deleted = next_event(&mut room_ws, "chatroom_deleted").await;
    assert_eq!(room_deleted, room_now().await);
    assert_ne!(room_deleted["tm_delete"], "9999-01-01 00:00:00.000000");

    for (ws, what) in [
        (&mut chat_ws, "chat"),
        (&mut room_ws, "chatroom"),
        (&mut messages_ws, "messagechat"),
        (&mut copies_ws, "messagechatroom"),
    ] {
        assert_quiet(ws, what).await;
    }
}

/// Eight posters at once into one chat: two sockets see every message once, in the same
/// order, and each message before its copies.
async fn concurrent_posts_reach_every_socket_once_and_in_one_order(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let people = [new_id(), new_id(), new_id()];
    let participants: Vec<&str> = people.iter().map(String::as_str).collect();
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &people[0], &participants, "busy"),
        )
        .await
        .ok()
        .clone();
    let topics = [
        format!(
            "customer_id:{customer}:messagechat:{}",
            chat["id"].as_str().unwrap()
        ),
        format!("customer_id:{customer}:messagechatroom"),
    ];
    let mut first = s.ws(&admin).await;
    first.subscribe(&topics).await;
    let mut second = s.ws(&admin).await;
    second.subscribe(&topics).await;

    let (posters, each) = (8, 10);
    let posted: Vec<Value> = futures_util::future::join_all((0..posters).map(|p| {
        let (admin, chat, people) = (&admin, &chat, &people);
        async move {
            let mut ids = Vec::new();
            for i in 0..each {
                let m =
                    post_message(s, admin, &chat["id"], &people[p % 3], &format!("{p}.{i}")).await;
                ids.push(m["id"].clone());
            }
            ids
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    let total = posters * each;
    let copies = total * people.len();

    let mut orders = Vec::new();
    for ws in [&mut first, &mut second] {
        let mut messages: Vec<Value> = Vec::new();
        let mut copies_seen = std::collections::HashMap::<Value, usize>::new();
        while messages.len() < total || copies_seen.values().sum::<usize>() < copies {
            let frame = ws
                .next_within(WAIT)
                .await
                .unwrap_or_else(|| panic!("stalled at {} messages", messages.len()));
            let data = &frame["data"];
            match frame["type"].as_str().unwrap() {
                "messagechat_created" => {
                    assert!(!messages.contains(&data["id"]), "twice: {frame}");
                    messages.push(data["id"].clone());
                }
                "messagechatroom_created" => {
                    assert!(
                        messages.contains(&data["messagechat_id"]),
                        "a copy before its message: {frame}"
                    );
                    *copies_seen
                        .entry(data["messagechat_id"].clone())
                        .or_default() += 1;
                }
                _ => panic!("unexpected {frame}"),
            }
        }
        assert!(
            copies_seen.values().all(|n| *n == people.len()),
            "one copy per room"
        );
        let mut sorted = messages.clone();
        sorted.sort_by_key(Value::to_string);
        let mut expected = posted.clone();
        expected.sort_by_key(Value::to_string);
        assert_eq!(sorted, expected, "every message, once");
        assert_quiet(ws, "after everything").await;
        orders.push(messages);
    }
    assert_eq!(orders[0], orders[1], "both sockets in the same order");
}

/// A second gateway on the same services and event source: each instance delivers every
/// event to its own sockets, whichever instance the change came through.
async fn every_gateway_instance_delivers_every_event_to_its_own_sockets(s: &Stack) {
    let other = s.second_gateway().await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "two"))
        .await
        .ok()
        .clone();
    let topic = [format!("customer_id:{customer}:messagechat")];
    let mut here = s.ws(&admin).await;
    here.subscribe(&topic).await;
    let mut there = other.ws(&admin).await;
    there.subscribe(&topic).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let through = if i % 2 == 0 { s } else { &other };
        sent.push(
            post_message(through, &admin, &chat["id"], &a, &format!("m{i}")).await["id"].clone(),
        );
    }
    for ws in [&mut here, &mut there] {
        let got: Vec<Value> = ws
            .collect("messagechat_created", sent.len(), WAIT)
            .await
            .iter()
            .map(|f| f["data"]["id"].clone())
            .collect();
        assert_eq!(got, sent);
        assert_quiet(ws, "each event once").await;
    }
}

/// Two gateways and two tenants: each gateway has sockets of one tenant only, and receives
/// from the event source (its own queue on the broker, in the split deployment) that
/// tenant's events and none of the other's. Counted by each gateway's hub.
async fn a_gateway_receives_only_the_tenants_of_its_sockets(s: &Stack) {
    let other = s.second_gateway().await;
    let (a, b) = (new_id(), new_id());
    let (admin_a, admin_b) = (customer_token(&a), customer_token(&b));
    let mut socket_a = s.ws(&admin_a).await;
    socket_a
        .subscribe(&[format!("customer_id:{a}:messagechat")])
        .await;
    let mut socket_b = other.ws(&admin_b).await;
    socket_b
        .subscribe(&[format!("customer_id:{b}:messagechat")])
        .await;
    // Both tenants change things through both gateways: A one chat and 3 messages (4 events),
    // B one chat and 5 messages (6 events).
    for (admin, messages) in [(&admin_a, 3), (&admin_b, 5)] {
        let (x, y) = (new_id(), new_id());
        let chat = s
            .post("/chats", admin, &chat_body("group", &x, &[&x, &y], "t"))
            .await
            .ok()
            .clone();
        for i in 0..messages {
            let through = if i % 2 == 0 { s } else { &other };
            post_message(through, admin, &chat["id"], &x, &format!("m{i}")).await;
        }
    }
    assert_eq!(
        socket_a.collect("messagechat_created", 3, WAIT).await.len(),
        3
    );
    assert_eq!(
        socket_b.collect("messagechat_created", 5, WAIT).await.len(),
        5
    );
    assert_quiet(&mut socket_a, "A's socket: A's events only").await;
    let (here, there) = (s.hub.as_ref().unwrap(), other.hub.as_ref().unwrap());
    let received = |hub: &api_gateway::ws::hub::EventHub| hub.stats().received();
    println!(
        "A's gateway received {:?}, B's {:?} (events, of which of a tenant with no socket there)",
        received(here),
        received(there)
    );
    assert_eq!(
        received(here),
        (4, 0),
        "A's gateway: A's 4 events, none of B's"
    );
    assert_eq!(
        received(there),
        (6, 0),
        "B's gateway: B's 6 events, none of A's"
    );
}

async fn a_bearer_token_opens_the_socket(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut ws = s.ws_bearer(&admin).await;
    ws.subscribe(&[format!("customer_id:{customer}:chat")])
        .await;
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "x"))
        .await
        .ok()
        .clone();
    assert_eq!(next_event(&mut ws, "chat_created").await, chat);
    // A bad one is refused before the upgrade.
    let refused = s
        .send(
            s.http
                .get(format!("{}/ws", s.base))
                .header("Authorization", "Bearer not-a-token"),
        )
        .await;
    refused.assert_error(401, "unauthenticated", "token");
}

async fn an_oversized_client_frame_closes_the_socket_with_1009(s: &Stack) {
    let customer = new_id();
    let mut ws = s.ws(&customer_token(&customer)).await;
    // Just under the limit: answered, and the socket stays open.
    let under = json!({"type": "subscribe", "topics": ["x".repeat(60 * 1024)]}).to_string();
    assert!(under.len() < api_gateway::ws::MAX_CLIENT_FRAME_BYTES);
    ws.send_text(&under).await;
    next_error(&mut ws, "invalid_argument", "topic").await;
    let over = json!({"type": "subscribe", "topics": ["x".repeat(70 * 1024)]}).to_string();
    ws.send_text(&over).await;
    next_error(&mut ws, "invalid_argument", "frame").await;
    assert_eq!(
        ws.next_frame(WAIT).await,
        Some(Err(Some(api_gateway::ws::CLOSE_FRAME_TOO_BIG)))
    );
}

async fn a_socket_holds_at_most_100_topics(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    // Six narrowed topics per chat of two: 17 chats give 102.
    let mut topics = Vec::new();
    let mut chats = Vec::new();
    for i in 0..17 {
        let (a, b) = (new_id(), new_id());
        let body = chat_body("group", &a, &[&a, &b], &format!("c{i}"));
        let chat = create_chat(s, &admin, &customer, &body).await;
        let id = chat["id"].as_str().unwrap();
        topics.push(format!("customer_id:{customer}:chat:{id}"));
        topics.push(format!("customer_id:{customer}:messagechat:{id}"));
        for owner in [&a, &b] {
            let room = room_of(s, &admin, &chat["id"], owner).await;
            let room = room["id"].as_str().unwrap();
            topics.push(format!("customer_id:{customer}:chatroom:{room}"));
            topics.push(format!("customer_id:{customer}:messagechatroom:{room}"));
        }
        chats.push(chat);
    }
    let max = api_gateway::ws::MAX_TOPICS;
    assert_eq!(max, 100);

    // 101 in one frame: refused as a whole, nothing kept.
    let mut ws = s.ws(&admin).await;
    ws.send(json!({"type": "subscribe", "topics": topics[..=max]}))
        .await;
    next_error(&mut ws, "invalid_argument", "topics").await;
    let first_chat = chats[0]["id"].as_str().unwrap();
    s.put(
        &format!("/chats/{first_chat}"),
        &admin,
        &json!({"name": "r"}).to_string(),
    )
    .await
    .ok();
    assert_quiet(&mut ws, "nothing was kept").await;

    // 100 are held (a repeat within a frame counts once, as does one already held) ...
    let mut hundred = topics[..max].to_vec();
    hundred.push(topics[0].clone());
    ws.send(json!({"type": "subscribe", "topics": hundred}))
        .await;
    let ack = ws.next_within(WAIT).await.unwrap();
    assert_eq!(ack, json!({"type": "subscribed", "topics": topics[..max]}));
    ws.subscribe(&topics[..1]).await;
    // ... and one more is refused and not kept.
    ws.send(json!({"type": "subscribe", "topics": [topics[max]]}))
        .await;
    next_error(&mut ws, "invalid_argument", "topics").await;
    let (_, refused_room) = topics[max].rsplit_once(':').unwrap();
    assert!(topics[max].contains(":chatroom:"));
    s.put(
        &format!("/chatrooms/{refused_room}"),
        &admin,
        &json!({"name": "r"}).to_string(),
    )
    .await
    .ok();
    assert_quiet(&mut ws, "the 101st was not kept").await;
    // After an unsubscribe there is room again.
    ws.send(json!({"type": "unsubscribe", "topics": [topics[0]]}))
        .await;
    assert_eq!(ws.next_within(WAIT).await.unwrap()["type"], "unsubscribed");
    ws.subscribe(&topics[max..=max]).await;
}

/// The slow-client rule proper, with a small queue (64 events) and a send timeout long
/// enough that the client comes back before it: a client that stops reading falls behind,
/// and when it reads again it finds what was already on its way, an error frame `lagged`, and
/// close code 4000. A client that reads gets everything meanwhile.
mod lagging {
    use super::*;

    against_both!(
        "ws::lagging",
        ws = super::small_queue();
        a_client_that_falls_behind_is_told_lagged_and_closed_with_4000,
    );

    pub fn small_queue() -> api_gateway::ws::WsSettings {
        api_gateway::ws::WsSettings {
            ping_interval: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            buffer_events: 64,
            ..api_gateway::ws::WsSettings::default()
        }
    }

    async fn a_client_that_falls_behind_is_told_lagged_and_closed_with_4000(s: &Stack) {
        // 100 messages of 60 kB, three events each: about 18 MB for each socket, far more
        // than the slow one's TCP buffers (4 MiB at most here) and its queue hold.
        let total = 100;
        let SlowAndFast {
            mut slow,
            mut fast,
            admin,
            chat_id,
            agent,
        } = super::post_past_a_silent_socket(s, total).await;

        // Every event has reached the hub (the fast client has them): the slow one's queue
        // overflowed long ago. It reads now.
        let (mut events, mut last_text) = (0, Value::Null);
        let ended = loop {
            match slow.next_frame(Duration::from_secs(15)).await {
                Some(Ok(f)) => {
                    if f["type"] != "error" {
                        events += 1;
                    }
                    last_text = f;
                }
                Some(Err(code)) => break code,
                None => panic!("the lagging client was never closed ({events} events read)"),
            }
        };
        assert!(
            events < 3 * total,
            "it cannot have received everything ({events})"
        );
        assert_eq!(last_text["type"], "error", "{last_text}");
        assert_eq!(last_text["error"]["code"], "lagged", "{last_text}");
        assert_eq!(ended, Some(api_gateway::ws::CLOSE_TOO_SLOW));
        eprintln!("lagging client: {events} events, then lagged and close 4000");
        // The fast one is still served.
        post_message(s, &admin, &chat_id, &agent, "after").await;
        assert_eq!(fast.collect("messagechat_created", 1, WAIT).await.len(), 1);
    }
}

/// A chat-manager that cannot be reached: a narrowed topic cannot be checked and is refused
/// as `unavailable`, naming it; one without an id is subscribed.
#[tokio::test]
async fn a_narrowing_id_that_cannot_be_checked_is_refused_as_unavailable() {
    let s = Stack::gateway_with_hub_to("http://127.0.0.1:1", "http://127.0.0.1:1").await;
    let customer = new_id();
    let mut ws = s.ws(&customer_token(&customer)).await;
    let narrowed = format!("customer_id:{customer}:chat:{}", new_id());
    let plain = format!("customer_id:{customer}:chat");
    ws.send(json!({"type": "subscribe", "topics": [narrowed, plain]}))
        .await;
    assert_eq!(
        ws.next_within(WAIT).await.unwrap(),
        json!({"type": "subscribed", "topics": [plain]})
    );
    next_error(&mut ws, "unavailable", &narrowed).await;
}

/// The gateway shuts down: every socket is closed with 1001, and the stack's stop waits for
/// that rather than cutting the connections.
async fn a_socket_is_closed_with_1001_when_the_gateway_stops(s: Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = s.ws(&admin).await;
        ws.subscribe(&[format!("customer_id:{customer}:chat")])
            .await;
        sockets.push(ws);
    }
    let stopping = tokio::spawn(s.stop());
    for ws in &mut sockets {
        assert_eq!(
            ws.next_frame(WAIT).await,
            Some(Err(Some(api_gateway::ws::CLOSE_SHUTTING_DOWN)))
        );
    }
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the stack stops")
        .unwrap();
}

#[tokio::test]
async fn embedded_shutdown_closes_sockets_with_1001() {
    a_socket_is_closed_with_1001_when_the_gateway_stops(Stack::embedded().await).await;
}

#[tokio::test]
async fn split_shutdown_closes_sockets_with_1001() {
    let test = "ws::split_shutdown_closes_sockets_with_1001";
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let mut s = Stack::split(&env).await;
    s.keep(guards);
    a_socket_is_closed_with_1001_when_the_gateway_stops(s).await;
}
