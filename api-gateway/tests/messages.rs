//! Messages and the agent API, over HTTP, against both ways of running (embedded default and
//! the split deployment on this machine's PostgreSQL and RabbitMQ).

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

against_both!(
    "messages";
    the_seed_send_works_as_written,
    a_group_message_fans_out_to_every_live_chatroom,
    deletes_cascade_to_what_is_listed,
    agents_see_only_their_own_rooms_and_messages,
    a_retry_with_the_same_idempotency_key_creates_nothing,
    concurrent_requests_with_one_key_create_once,
    sending_right_after_creating_reaches_every_chatroom,
    bad_messages_are_refused_naming_the_field,
    copies_live_and_end_with_their_message_and_chatroom,
);

const SEED_SEND: &str = r#"{
            "chat_id": "CHAT_ID",
            "source": {
                "type": "agent",
                "target": "eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b"
            },
            "type": "normal",
            "text": "test message"
        }"#;

fn ids_of(list: &Value) -> Vec<String> {
    list["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `check` until it holds (events travel asynchronously to message-manager's view).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The chatroom of `agent` in `chat`.
async fn room_of(s: &Stack, admin: &str, chat_id: &str, agent: &str) -> String {
    let rooms = s
        .get(&format!("/chatrooms?owner_id={agent}&page_size=100"), admin)
        .await;
    rooms.ok()["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chat_id"] == chat_id)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no chatroom of {agent} in {chat_id}"))
}

async fn copies_in(s: &Stack, token: &str, room: &str) -> Vec<Value> {
    s.get(
        &format!("/chatroommessages?chatroom_id={room}&page_size=100"),
        token,
    )
    .await
    .ok()["result"]
        .as_array()
        .unwrap()
        .clone()
}

async fn the_seed_send_works_as_written(s: &Stack) {
    let token = customer_token(SEED_CUSTOMER);
    let chat = s
        .post(
            "/chats",
            &token,
            &chat_body("normal", AGENT_1, &[AGENT_1, AGENT_2], "test chat normal"),
        )
        .await;
    let chat_id = chat.ok()["id"].as_str().unwrap().to_owned();

    let sent = s
        .post(
            "/chatmessages",
            &token,
            &SEED_SEND.replace("CHAT_ID", &chat_id),
        )
        .await;
    let message = sent.ok().clone();
    let order = [
        "\"id\":",
        "\"customer_id\":",
        "\"chat_id\":",
        "\"source\":",
        "\"type\":\"normal\"",
        "\"text\":",
        "\"medias\":",
        "\"tm_create\":",
        "\"tm_update\":",
        "\"tm_delete\":",
    ];
    let positions: Vec<usize> = order.iter().map(|k| sent.text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", sent.text);
    assert_eq!(message["customer_id"], SEED_CUSTOMER);
    assert_eq!(message["chat_id"], chat_id.as_str());
    assert_eq!(
        message["source"],
        json!({"type": "agent", "target": AGENT_1, "target_name": "", "name": "", "detail": ""})
    );
    assert!(sent.text.contains(r#""source":{"type":"agent","target":"eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b","target_name":"","name":"","detail":""}"#));
    assert_eq!(message["type"], "normal");
    assert_eq!(message["text"], "test message");
    assert_eq!(message["medias"], json!([]));
    assert_eq!(message["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(message["tm_update"], message["tm_create"]);

    let id = message["id"].as_str().unwrap();
    assert_eq!(
        s.get(&format!("/chatmessages/{id}"), &token).await.ok(),
        &message
    );
    let list = s
        .get(&format!("/chatmessages?chat_id={chat_id}"), &token)
        .await
        .ok()
        .clone();
    assert_eq!(list["result"], json!([message.clone()]));
    assert_eq!(list["next_page_token"], message["tm_create"]);

    // One copy in each participant's chatroom.
    for agent in [AGENT_1, AGENT_2] {
        let room = room_of(s, &token, &chat_id, agent).await;
        let copies = copies_in(s, &token, &room).await;
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0]["messagechat_id"], id);
        assert_eq!(copies[0]["chatroom_id"], room.as_str());
        assert_eq!(copies[0]["text"], "test message");
        assert_eq!(copies[0]["source"], message["source"]);
    }
}

async fn a_group_message_fans_out_to_every_live_chatroom(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c, d) = (new_id(), new_id(), new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b, &c], "three"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let send = |text: &str| {
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": text})
            .to_string()
    };

    let first = s
        .post("/chatmessages", &admin, &send("first"))
        .await
        .ok()
        .clone();
    let mut copy_rooms = Vec::new();
    for agent in [&a, &b, &c] {
        let room = room_of(s, &admin, &chat_id, agent).await;
        let copies = copies_in(s, &admin, &room).await;
        assert_eq!(copies.len(), 1, "{agent}");
        assert_eq!(copies[0]["messagechat_id"], first["id"]);
        copy_rooms.push(room);
    }
    copy_rooms.sort();
    copy_rooms.dedup();
    assert_eq!(copy_rooms.len(), 3, "three distinct chatrooms");

    // A participant added later gets only newer messages, and may send at once.
    s.post(
        &format!("/chats/{chat_id}/participant_ids"),
        &admin,
        &json!({"participant_id": d}).to_string(),
    )
    .await
    .ok();
    s.post(
        "/chatmessages",
        &admin,
        &json!({"chat_id": chat_id, "source": {"type": "agent", "target": d}, "text": "hi"})
            .to_string(),
    )
    .await
    .ok();
    let second = s
        .post("/chatmessages", &admin, &send("second"))
        .await
        .ok()
        .clone();
    let d_room = room_of(s, &admin, &chat_id, &d).await;
    let d_texts: Vec<Value> = copies_in(s, &admin, &d_room)
        .await
        .iter()
        .map(|c| c["text"].clone())
        .collect();
    assert_eq!(
        d_texts,
        [json!("second"), json!("hi")],
        "nothing from before d joined"
    );
    let a_room = room_of(s, &admin, &chat_id, &a).await;
    let a_copies = copies_in(s, &admin, &a_room).await;
    let texts: Vec<Value> = a_copies.iter().map(|c| c["text"].clone()).collect();
    assert_eq!(
        texts,
        [json!("second"), json!("hi"), json!("first")],
        "newest first"
    );
    assert_eq!(a_copies[0]["messagechat_id"], second["id"]);
    // A stranger may not send.
    s.post(
        "/chatmessages",
        &admin,
        &json!({"chat_id": chat_id, "source": {"type": "agent", "target": new_id()}, "text": "hi"})
            .to_string(),
    )
    .await
    .assert_error(400, "invalid_argument", "source");
    // A system message may carry any source.
    let system = s
        .post("/chatmessages", &admin, &json!({"chat_id": chat_id, "type": "system", "source": {"type": "tel", "target": "+15551234"}, "text": "joined"}).to_string())
        .await
        .ok()
        .clone();
    assert_eq!(system["type"], "system");
    assert_eq!(copies_in(s, &admin, &d_room).await.len(), 3);
}

/// A chatroom holds a copy of each message sent while it was live: its copy can be read by id
/// (also after it ended, with `tm_delete` set: deleted with the message, with the chatroom, or
/// on its own, whichever came first), and a chatroom created later has none of the older ones.
async fn copies_live_and_end_with_their_message_and_chatroom(s: &Stack) {
    let admin = customer_token(&new_id());
    let (a, b, c, late) = (new_id(), new_id(), new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b, &c], "g"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let send = |text: &str| {
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": text})
            .to_string()
    };
    let m1 = s
        .post("/chatmessages", &admin, &send("one"))
        .await
        .ok()
        .clone();
    let (ra, rb, rc) = (
        room_of(s, &admin, &chat_id, &a).await,
        room_of(s, &admin, &chat_id, &b).await,
        room_of(s, &admin, &chat_id, &c).await,
    );
    let copy_in = |room: &str, copies: &[Value]| -> Value {
        copies
            .iter()
            .find(|c| c["messagechat_id"] == m1["id"])
            .unwrap_or_else(|| panic!("{room} has a copy of the message"))
            .clone()
    };
    let (ca, cb, cc) = (
        copy_in(&ra, &copies_in(s, &admin, &ra).await),
        copy_in(&rb, &copies_in(s, &admin, &rb).await),
        copy_in(&rc, &copies_in(s, &admin, &rc).await),
    );
    let live = "9999-01-01 00:00:00.000000";
    for (copy, room) in [(&ca, &ra), (&cb, &rb), (&cc, &rc)] {
        let got = s
            .get(
                &format!("/chatroommessages/{}", copy["id"].as_str().unwrap()),
                &admin,
            )
            .await
            .ok()
            .clone();
        assert_eq!(&got, copy);
        assert_eq!(got["chatroom_id"], room.as_str());
        assert_eq!(
            (got["tm_delete"].as_str(), got["tm_create"].clone()),
            (Some(live), m1["tm_create"].clone())
        );
    }
    assert_eq!(
        [&ca["id"], &cb["id"], &cc["id"]]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3,
        "each room's copy has its own id"
    );

    // A participant added now: no copy of the older message; the next one reaches them.
    s.post(
        &format!("/chats/{chat_id}/participant_ids"),
        &admin,
        &json!({"participant_id": late}).to_string(),
    )
    .await
    .ok();
    let rl = room_of(s, &admin, &chat_id, &late).await;
    assert!(copies_in(s, &admin, &rl).await.is_empty());
    let m2 = s
        .post("/chatmessages", &admin, &send("two"))
        .await
        .ok()
        .clone();
    let late_copies = copies_in(s, &admin, &rl).await;
    assert_eq!(late_copies.len(), 1);
    assert_eq!(late_copies[0]["messagechat_id"], m2["id"]);

    // c leaves: their chatroom is deleted, and its copy ends with it.
    let left = s
        .delete(&format!("/chats/{chat_id}/participant_ids/{c}"), &admin)
        .await
        .ok()
        .clone();
    assert!(
        !left["participant_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == c.as_str())
    );
    let room_c = s
        .get(&format!("/chatrooms/{rc}"), &admin)
        .await
        .ok()
        .clone();
    assert_ne!(room_c["tm_delete"], live);
    eventually("c's copy ends with their chatroom", || async {
        let got = s
            .get(
                &format!("/chatroommessages/{}", cc["id"].as_str().unwrap()),
                &admin,
            )
            .await
            .ok()
            .clone();
        got["tm_delete"] == room_c["tm_delete"] && got["tm_update"] == room_c["tm_delete"]
    })
    .await;

    // b deletes their copy on its own; then the message is deleted: a's copy ends with it,
    // b's keeps the earlier end.
    let b_deleted = s
        .delete(
            &format!("/chatroommessages/{}", cb["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    assert_ne!(b_deleted["tm_delete"], live);
    assert_eq!(
        s.delete(
            &format!("/chatroommessages/{}", cb["id"].as_str().unwrap()),
            &admin
        )
        .await
        .status,
        404,
        "a deleted copy cannot be deleted again"
    );
    let gone = s
        .delete(
            &format!("/chatmessages/{}", m1["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    let got_a = s
        .get(
            &format!("/chatroommessages/{}", ca["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    assert_eq!(got_a["tm_delete"], gone["tm_delete"]);
    let got_b = s
        .get(
            &format!("/chatroommessages/{}", cb["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    assert_eq!(got_b["tm_delete"], b_deleted["tm_delete"]);

    // An id of the right shape (a version 8 copy id) that names no copy.
    let nowhere = "00000000-0000-8000-8000-000000000001";
    assert_eq!(
        s.get(&format!("/chatroommessages/{nowhere}"), &admin)
            .await
            .status,
        404
    );
}

async fn deletes_cascade_to_what_is_listed(s: &Stack) {
    let admin = customer_token(&new_id());
    let (a, b, c) = (new_id(), new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b, &c], "g"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let send = |text: &str| {
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": text})
            .to_string()
    };
    let m1 = s
        .post("/chatmessages", &admin, &send("one"))
        .await
        .ok()
        .clone();
    let m2 = s
        .post("/chatmessages", &admin, &send("two"))
        .await
        .ok()
        .clone();
    let (ra, rb, rc) = (
        room_of(s, &admin, &chat_id, &a).await,
        room_of(s, &admin, &chat_id, &b).await,
        room_of(s, &admin, &chat_id, &c).await,
    );

    // Deleting a chatmessage deletes its copies.
    let deleted = s
        .delete(
            &format!("/chatmessages/{}", m1["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    assert_ne!(deleted["tm_delete"], "9999-01-01 00:00:00.000000");
    let listed = s
        .get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
        .await
        .ok()
        .clone();
    assert_eq!(ids_of(&listed), vec![m2["id"].as_str().unwrap().to_owned()]);
    for room in [&ra, &rb, &rc] {
        let copies = copies_in(s, &admin, room).await;
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0]["messagechat_id"], m2["id"]);
    }

    // Deleting a chatroommessage hides only that copy.
    let b_copy = copies_in(s, &admin, &rb).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.delete(&format!("/chatroommessages/{b_copy}"), &admin)
        .await
        .ok();
    assert!(copies_in(s, &admin, &rb).await.is_empty());
    assert_eq!(copies_in(s, &admin, &ra).await.len(), 1);

    // Removing a participant deletes their chatroom, and its copies stop being listed.
    s.delete(&format!("/chats/{chat_id}/participant_ids/{c}"), &admin)
        .await
        .ok();
    eventually("c's chatroom lists nothing", || async {
        copies_in(s, &admin, &rc).await.is_empty()
    })
    .await;
    // Later messages reach only the live rooms.
    s.post("/chatmessages", &admin, &send("three")).await.ok();
    assert_eq!(copies_in(s, &admin, &ra).await.len(), 2);
    assert_eq!(copies_in(s, &admin, &rb).await.len(), 1);

    // Deleting a chatroom hides its copies.
    s.delete(&format!("/chatrooms/{rb}"), &admin).await.ok();
    eventually("b's deleted chatroom lists nothing", || async {
        copies_in(s, &admin, &rb).await.is_empty()
    })
    .await;

    // Deleting the chat: its messages stop being listed; posting into it is 404.
    s.delete(&format!("/chats/{chat_id}"), &admin).await.ok();
    eventually("the deleted chat lists nothing", || async {
        s.get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
            .await
            .ok()["result"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert!(copies_in(s, &admin, &ra).await.is_empty());
    s.post("/chatmessages", &admin, &send("too late"))
        .await
        .assert_error(404, "not_found", "chat");
}

async fn agents_see_only_their_own_rooms_and_messages(s: &Stack) {
    let customer = new_id();
    let (alice, bob, carol) = (new_id(), new_id(), new_id());
    let alice_token = named_agent_token(&customer, &alice, "Alice");
    let bob_token = agent_token(&customer, &bob, 0x10);
    let carol_token = agent_token(&customer, &carol, 0x10);

    // Alice opens a direct chat with Bob: her own chatroom comes back.
    let room = s
        .post(
            "/service_agents/chatrooms",
            &alice_token,
            &json!({"participant_ids": [bob], "name": "dm"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(room["owner_id"], alice.as_str());
    assert_eq!(room["type"], "normal");
    let mut pair = vec![alice.clone(), bob.clone()];
    pair.sort();
    assert_eq!(room["participant_ids"], json!(pair));
    let room_id = room["id"].as_str().unwrap().to_owned();
    // Opening it again (from either side) returns the existing chat's room, no new chat.
    let again = s
        .post(
            "/service_agents/chatrooms",
            &alice_token,
            &json!({"participant_ids": [bob, alice]}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(again["id"], room["id"]);
    let bobs = s
        .post(
            "/service_agents/chatrooms",
            &bob_token,
            &json!({"participant_ids": [alice]}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(bobs["chat_id"], room["chat_id"]);
    assert_eq!(bobs["owner_id"], bob.as_str());
    let bob_room = bobs["id"].as_str().unwrap().to_owned();

    // Alice posts as herself: source filled from the token, her own copy comes back.
    let copy = s
        .post(
            "/service_agents/chatroommessages",
            &alice_token,
            &json!({"chatroom_id": room_id, "text": "hello bob"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(copy["chatroom_id"], room_id.as_str());
    assert_eq!(
        copy["source"],
        json!({"type": "agent", "target": alice, "target_name": "Alice", "name": "", "detail": ""})
    );
    let copy_id = copy["id"].as_str().unwrap().to_owned();

    // Bob sees the message in his room; each sees only their own rooms.
    let bob_list = s
        .get(
            &format!("/service_agents/chatroommessages?chatroom_id={bob_room}"),
            &bob_token,
        )
        .await
        .ok()
        .clone();
    assert_eq!(bob_list["result"][0]["text"], "hello bob");
    let alice_rooms = s
        .get("/service_agents/chatrooms", &alice_token)
        .await
        .ok()
        .clone();
    assert_eq!(ids_of(&alice_rooms), vec![room_id.clone()]);

    // Bob (a participant, but not the room's owner) and Carol (a stranger) get 404 on
    // Alice's room and copy through every agent endpoint.
    for token in [&bob_token, &carol_token] {
        let attempts = [
            s.get(&format!("/service_agents/chatrooms/{room_id}"), token)
                .await,
            s.put(
                &format!("/service_agents/chatrooms/{room_id}"),
                token,
                "{\"name\": \"x\"}",
            )
            .await,
            s.delete(&format!("/service_agents/chatrooms/{room_id}"), token)
                .await,
            s.get(
                &format!("/service_agents/chatroommessages?chatroom_id={room_id}"),
                token,
            )
            .await,
            s.post(
                "/service_agents/chatroommessages",
                token,
                &json!({"chatroom_id": room_id, "text": "x"}).to_string(),
            )
            .await,
            s.get(
                &format!("/service_agents/chatroommessages/{copy_id}"),
                token,
            )
            .await,
            s.delete(
                &format!("/service_agents/chatroommessages/{copy_id}"),
                token,
            )
            .await,
        ];
        for reply in &attempts {
            reply.assert_error(404, "not_found", "not found");
        }
    }
    // Still there for Alice.
    assert_eq!(
        s.get(
            &format!("/service_agents/chatroommessages/{copy_id}"),
            &alice_token
        )
        .await
        .ok()["text"],
        "hello bob"
    );
    assert_eq!(
        s.get(
            &format!("/service_agents/chatrooms/{room_id}"),
            &alice_token
        )
        .await
        .ok()["name"],
        "dm"
    );

    // An agent-only token may not use customer-level endpoints; a customer token may not act
    // as an agent; another tenant's agent sees nothing.
    for path in [
        "/chatmessages?chat_id=".to_owned() + room["chat_id"].as_str().unwrap(),
        format!("/chatroommessages?chatroom_id={room_id}"),
        format!("/chatroommessages/{copy_id}"),
    ] {
        s.get(&path, &alice_token)
            .await
            .assert_error(403, "permission_denied", "permission");
    }
    s.post(
        "/chatroommessages",
        &alice_token,
        &json!({"chatroom_id": room_id, "text": "x"}).to_string(),
    )
    .await
    .assert_error(403, "permission_denied", "permission");
    let customer_admin = customer_token(&customer);
    s.get("/service_agents/chatrooms", &customer_admin)
        .await
        .assert_error(403, "permission_denied", "agent");
    s.post(
        "/chatrooms",
        &customer_admin,
        &json!({"participant_ids": [bob]}).to_string(),
    )
    .await
    .assert_error(403, "permission_denied", "agent");
    let outsider = agent_token(&new_id(), &alice, 0x10);
    s.get(&format!("/service_agents/chatrooms/{room_id}"), &outsider)
        .await
        .assert_error(404, "not_found", "not found");
    assert!(ids_of(s.get("/service_agents/chatrooms", &outsider).await.ok()).is_empty());

    // An admin agent may post as itself through the customer-level endpoint too.
    let admin_agent = agent_token(&customer, &alice, 0x30);
    let posted = s
        .post(
            "/chatroommessages",
            &admin_agent,
            &json!({"chatroom_id": room_id, "text": "as admin"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(posted["source"]["target"], alice.as_str());
    let created = s
        .post(
            "/chatrooms",
            &admin_agent,
            &json!({"participant_ids": [bob, carol], "name": "trio"}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(created["type"], "group");
    assert_eq!(created["owner_id"], alice.as_str());
}

fn named_agent_token(customer: &str, agent: &str, name: &str) -> String {
    api_gateway::auth::mint_token(
        SECRET,
        &api_gateway::auth::TokenRequest {
            customer_id: customer.parse().unwrap(),
            agent_id: Some(agent.parse().unwrap()),
            agent_name: name.into(),
            permission: 0x10,
            ttl: Duration::from_secs(600),
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

async fn post_with_key(s: &Stack, path: &str, token: &str, key: &str, body: &str) -> Reply {
    s.send(
        s.http
            .post(format!("{}{path}", s.base))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .body(body.to_owned()),
    )
    .await
}

async fn a_retry_with_the_same_idempotency_key_creates_nothing(s: &Stack) {
    let admin = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let body = chat_body("group", &a, &[&a, &b], "once");
    let first = post_with_key(s, "/chats", &admin, "chat-1", &body)
        .await
        .ok()
        .clone();
    let retry = post_with_key(s, "/chats", &admin, "chat-1", &body)
        .await
        .ok()
        .clone();
    assert_eq!(first, retry, "the retry returns the first result");
    assert_eq!(ids_of(s.get("/chats", &admin).await.ok()).len(), 1);
    // The same key with another body is a conflict; another caller's same key is independent.
    post_with_key(
        s,
        "/chats",
        &admin,
        "chat-1",
        &chat_body("group", &a, &[&a, &b], "other"),
    )
    .await
    .assert_error(409, "conflict", "Idempotency-Key");
    let other = customer_token(&new_id());
    let theirs = post_with_key(s, "/chats", &other, "chat-1", &body)
        .await
        .ok()
        .clone();
    assert_ne!(theirs["id"], first["id"]);

    let chat_id = first["id"].as_str().unwrap();
    let send =
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": "once"})
            .to_string();
    let m1 = post_with_key(s, "/chatmessages", &admin, "msg-1", &send)
        .await
        .ok()
        .clone();
    let m2 = post_with_key(s, "/chatmessages", &admin, "msg-1", &send)
        .await
        .ok()
        .clone();
    assert_eq!(m1, m2);
    assert_eq!(
        ids_of(
            s.get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
                .await
                .ok()
        )
        .len(),
        1
    );
    // A failed request is not remembered: the same key works once the body is right.
    let bad =
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": new_id()}, "text": "x"})
            .to_string();
    post_with_key(s, "/chatmessages", &admin, "msg-2", &bad)
        .await
        .assert_error(400, "invalid_argument", "source");
    post_with_key(s, "/chatmessages", &admin, "msg-2", &send)
        .await
        .ok();
    assert_eq!(
        ids_of(
            s.get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
                .await
                .ok()
        )
        .len(),
        2
    );

    // Agents: the key is the agent's own.
    let agent = agent_token(&ids_customer(&admin), &a, 0x10);
    let room = room_of(s, &admin, chat_id, &a).await;
    let post = json!({"chatroom_id": room, "text": "agent once"}).to_string();
    let c1 = post_with_key(s, "/service_agents/chatroommessages", &agent, "k", &post)
        .await
        .ok()
        .clone();
    let c2 = post_with_key(s, "/service_agents/chatroommessages", &agent, "k", &post)
        .await
        .ok()
        .clone();
    assert_eq!(c1, c2);
    assert_eq!(copies_in(s, &admin, &room).await.len(), 3);
}

/// The customer id inside a customer token minted by `customer_token`.
fn ids_customer(token: &str) -> String {
    api_gateway::auth::TokenVerifier::new(SECRET)
        .verify(token)
        .unwrap()
        .customer_id
        .to_string()
}

async fn concurrent_requests_with_one_key_create_once(s: &Stack) {
    let admin = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "c"))
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let send =
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": "race"})
            .to_string();
    let replies = futures_util::future::join_all(
        (0..6).map(|_| post_with_key(s, "/chatmessages", &admin, "same-key", &send)),
    )
    .await;
    let ids: Vec<&Value> = replies.iter().map(|r| &r.ok()["id"]).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "every reply is the one message: {ids:?}"
    );
    assert_eq!(
        ids_of(
            s.get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
                .await
                .ok()
        )
        .len(),
        1
    );
    let room = room_of(s, &admin, &chat_id, &b).await;
    assert_eq!(copies_in(s, &admin, &room).await.len(), 1);
}

async fn sending_right_after_creating_reaches_every_chatroom(s: &Stack) {
    let admin = customer_token(&new_id());
    for i in 0..5 {
        let people: Vec<String> = (0..4).map(|_| new_id()).collect();
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        let chat = s
            .post(
                "/chats",
                &admin,
                &chat_body("group", refs[0], &refs, &format!("r{i}")),
            )
            .await
            .ok()
            .clone();
        let chat_id = chat["id"].as_str().unwrap().to_owned();
        // No wait: the chat's events may not have reached message-manager yet.
        let message = s
            .post("/chatmessages", &admin, &json!({"chat_id": chat_id, "source": {"type": "agent", "target": refs[1]}, "text": "fast"}).to_string())
            .await
            .ok()
            .clone();
        for person in &people {
            let room = room_of(s, &admin, &chat_id, person).await;
            let copies = copies_in(s, &admin, &room).await;
            assert_eq!(
                copies.len(),
                1,
                "round {i}: {person}'s chatroom got the message"
            );
            assert_eq!(copies[0]["messagechat_id"], message["id"]);
        }
    }
}

async fn bad_messages_are_refused_naming_the_field(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &admin, &chat_body("normal", &a, &[&a, &b], "n"))
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let src = json!({"type": "agent", "target": a});
    let cases = [
        (json!({"source": src, "text": "x"}), 400, "chat_id"),
        (
            json!({"chat_id": "nope", "source": src, "text": "x"}),
            400,
            "chat_id",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "text": "x", "type": "shout"}),
            400,
            "type",
        ),
        (
            json!({"chat_id": chat_id, "source": {"type": "fax", "target": a}, "text": "x"}),
            400,
            "source.type",
        ),
        (
            json!({"chat_id": chat_id, "source": {"type": "tel", "target": "+1"}, "text": "x"}),
            400,
            "source",
        ),
        (json!({"chat_id": chat_id, "source": src}), 400, "text"),
        (
            json!({"chat_id": chat_id, "source": src, "text": "x".repeat(65_537)}),
            400,
            "text",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "text": "a\u{0}b"}),
            400,
            "text",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "text": 5}),
            400,
            "text",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "medias": [{"type": "link"}]}),
            400,
            "medias[0]",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "medias": [{"type": "link", "link_url": "not a url"}]}),
            400,
            "medias[0].link_url",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "medias": [{"type": "file", "file_id": "x"}]}),
            400,
            "medias[0].file_id",
        ),
        (
            json!({"chat_id": chat_id, "source": src, "medias": [{"type": "video", "link_url": "https://a.b"}]}),
            400,
            "medias[0]",
        ),
        (
            json!({"chat_id": new_id(), "source": src, "text": "x"}),
            404,
            "chat",
        ),
    ];
    for (body, status, field) in &cases {
        let code = if *status == 400 {
            "invalid_argument"
        } else {
            "not_found"
        };
        s.post("/chatmessages", &admin, &body.to_string())
            .await
            .assert_error(*status, code, field);
    }
    assert!(
        ids_of(
            s.get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
                .await
                .ok()
        )
        .is_empty(),
        "nothing written"
    );

    // Medias come back with only the field of their type.
    let file = new_id();
    let ok = s
        .post(
            "/chatmessages",
            &admin,
            &json!({"chat_id": chat_id, "source": src, "medias": [
                {"type": "link", "link_url": "https://example.com/x", "file_id": "ignored"},
                {"type": "file", "file_id": file},
                {"type": "agent", "agent": {"id": b, "name": "not stored"}},
                {"type": "address", "address": {"type": "tel", "target": "+15551234"}}
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(
        ok.ok()["medias"],
        json!([
            {"type": "link", "link_url": "https://example.com/x"},
            {"type": "file", "file_id": file},
            {"type": "agent", "agent": {"id": b}},
            {"type": "address", "address": {"type": "tel", "target": "+15551234", "target_name": "", "name": "", "detail": ""}}
        ])
    );

    // Lists: chat_id required; another tenant's chat is 404.
    s.get("/chatmessages", &admin)
        .await
        .assert_error(400, "invalid_argument", "chat_id");
    s.get("/chatroommessages", &admin)
        .await
        .assert_error(400, "invalid_argument", "chatroom_id");
    let other = customer_token(&new_id());
    s.get(&format!("/chatmessages?chat_id={chat_id}"), &other)
        .await
        .assert_error(404, "not_found", "chat");
    s.post(
        "/chatmessages",
        &other,
        &json!({"chat_id": chat_id, "source": src, "text": "x"}).to_string(),
    )
    .await
    .assert_error(404, "not_found", "chat");
}

/// chat-manager stopped (message-manager's link to it cut): messages to chats the view knows
/// are still accepted and fanned out; a chat it has never heard of is 503, not a guess.
#[tokio::test]
async fn with_chat_manager_unreachable_known_chats_still_take_messages() {
    let test = "messages::with_chat_manager_unreachable_known_chats_still_take_messages";
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let mut s = Stack::split(&env).await;
    s.keep(guards);
    let admin = customer_token(&new_id());
    let (a, b, c) = (new_id(), new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b, &c], "g"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let send =
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": b}, "text": "still here"})
            .to_string();
    // The first send makes sure message-manager knows the chat.
    s.post("/chatmessages", &admin, &send).await.ok();

    s.chat_link.as_ref().unwrap().set_up(false);
    let mut accepted = 0;
    for _ in 0..5 {
        s.post("/chatmessages", &admin, &send).await.ok();
        accepted += 1;
    }
    for person in [&a, &b, &c] {
        let room = room_of(&s, &admin, &chat_id, person).await;
        assert_eq!(copies_in(&s, &admin, &room).await.len(), 6);
    }
    // A chat message-manager has never seen cannot be checked: 503.
    let unknown = s
        .post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "new"))
        .await
        .ok()
        .clone();
    let fresh =
        json!({"chat_id": unknown["id"], "source": {"type": "agent", "target": a}, "text": "x"})
            .to_string();
    // (Unless its events already arrived; then it is known and accepted.)
    let reply = s.post("/chatmessages", &admin, &fresh).await;
    assert!(reply.status == 503 || reply.status == 200, "{}", reply.text);
    if reply.status == 503 {
        reply.assert_error(503, "unavailable", "unavailable");
    }
    let unknown_chat =
        json!({"chat_id": new_id(), "source": {"type": "agent", "target": a}, "text": "x"})
            .to_string();
    s.post("/chatmessages", &admin, &unknown_chat)
        .await
        .assert_error(503, "unavailable", "unavailable");
    eprintln!(
        "chat-manager unreachable: {accepted} of 5 sends to a known chat accepted, each fanned out to 3 chatrooms"
    );
    s.chat_link.as_ref().unwrap().set_up(true);
}

/// The next `n` events (fewer if they stop coming).
async fn take(n: usize, reader: &mut testkit::EventReader) -> Vec<testkit::ReceivedEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        match reader.next_within(Duration::from_secs(10)).await {
            Some(e) => events.push(e),
            None => break,
        }
    }
    events
}

/// message-manager publishes one event per change: a send is one `messagechat_created`
/// naming the copy in every chatroom, as a CloudEvent on its exchange under
/// `<type>.<customer id>`, carrying the message exactly as the REST API returns it. Each copy
/// it names, expanded as a subscriber would, is the copy the REST API serves, field for field
/// and in order, its owner the chatroom's.
#[tokio::test]
async fn a_send_publishes_message_events() {
    let test = "messages::a_send_publishes_message_events";
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let mut s = Stack::split(&env).await;
    s.keep(guards);
    let mut reader = testkit::EventReader::bind(&env.amqp_url, &env.message_exchange).await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let agents: Vec<String> = (0..5).map(|_| new_id()).collect();
    let refs: Vec<&str> = agents.iter().map(String::as_str).collect();
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &agents[0], &refs, "g"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let mut room_owner = std::collections::HashMap::new();
    for agent in &agents {
        room_owner.insert(room_of(&s, &admin, &chat_id, agent).await, agent.clone());
    }
    let message = s
        .post("/chatmessages", &admin, &json!({"chat_id": chat_id, "source": {"type": "agent", "target": agents[0]}, "text": "evented"}).to_string())
        .await
        .ok()
        .clone();
    let mut events = take(1, &mut reader).await;
    events.extend(reader.collect_for(Duration::from_millis(300)).await);
    let keys: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [format!("messagechat_created.{customer}")],
        "one event"
    );
    let (_, props, body) = &events[0];
    assert_eq!(body["source"], "message-manager");
    assert_eq!(
        props.message_id().as_ref().map(|m| m.as_str()),
        body["id"].as_str()
    );
    assert_eq!(body["customerid"], message["customer_id"]);
    let mut data = body["data"].clone();
    let copies = data
        .as_object_mut()
        .unwrap()
        .remove("chatroommessages")
        .unwrap();
    assert_eq!(data, message, "the message as the API returned it");
    assert_eq!(
        copies.as_array().unwrap().len(),
        agents.len(),
        "a copy per room"
    );
    let event = pipeline::cloudevent::parse(body.to_string().as_bytes()).unwrap();
    let mut rooms_seen = std::collections::HashSet::new();
    let mut first_copy = String::new();
    for (n, item) in event.items().enumerate().skip(1) {
        assert_eq!(item.event_type.as_str(), "messagechatroom_created");
        let copy: serde_json::Value = serde_json::from_str(&event.item_json(n).unwrap()).unwrap();
        let room = copy["chatroom_id"].as_str().unwrap().to_owned();
        assert_eq!(item.owner_id, room_owner.get(&room).map(String::as_str));
        assert!(rooms_seen.insert(room.clone()), "one copy per room");
        // The copy the event names is the copy the REST API serves, field for field and in
        // order.
        let served = s
            .get(
                &format!("/chatroommessages/{}", copy["id"].as_str().unwrap()),
                &admin,
            )
            .await
            .ok()
            .clone();
        assert_eq!(
            event.item_json(n).unwrap(),
            serde_json::to_string(&served).unwrap()
        );
        assert_eq!(copy["messagechat_id"], message["id"]);
        assert_eq!(copy["text"], "evented");
        if first_copy.is_empty() {
            first_copy = copy["id"].as_str().unwrap().to_owned();
        }
    }
    assert_eq!(rooms_seen.len(), agents.len());

    // One copy deleted on its own first (its own event), then the message: one event naming
    // the other four copies.
    let own = s
        .delete(&format!("/chatroommessages/{first_copy}"), &admin)
        .await
        .ok()
        .clone();
    assert_ne!(own["tm_delete"], "9999-01-01 00:00:00.000000");
    let deleted_copy = take(1, &mut reader).await;
    assert_eq!(
        deleted_copy[0].0,
        format!("messagechatroom_deleted.{customer}")
    );
    assert_eq!(deleted_copy[0].2["data"], own);
    let gone = s
        .delete(
            &format!("/chatmessages/{}", message["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    let deleted = take(1, &mut reader).await;
    assert_eq!(deleted[0].0, format!("messagechat_deleted.{customer}"));
    let event = pipeline::cloudevent::parse(deleted[0].2.to_string().as_bytes()).unwrap();
    assert_eq!(
        event.len(),
        agents.len(),
        "the message and its four live copies"
    );
    let mut data = deleted[0].2["data"].clone();
    data.as_object_mut().unwrap().remove("chatroommessages");
    assert_eq!(data, gone);
    for n in 1..event.len() {
        let copy: serde_json::Value = serde_json::from_str(&event.item_json(n).unwrap()).unwrap();
        assert_ne!(copy["id"], first_copy.as_str());
        assert_eq!(copy["tm_delete"], gone["tm_delete"]);
        let served = s
            .get(
                &format!("/chatroommessages/{}", copy["id"].as_str().unwrap()),
                &admin,
            )
            .await
            .ok()
            .clone();
        assert_eq!(copy, served);
    }
}

/// A participant is removed while chat-manager's events never reach message-manager (its
/// queue unbound from them, as if they were lost or dead-lettered). Once the view's
/// confirmation age has passed, the next send asks chat-manager: the removed agent's room
/// gets no copy and no event of it, and listing that room shows it deleted (an empty list),
/// not the new message. (Before, the view kept the room live until its event came, for ever if
/// it never did, and a refresh never retired rooms missing from chat-manager's answer.)
#[tokio::test]
async fn a_removed_participants_room_stops_receiving_copies_when_its_event_is_lost() {
    let test =
        "messages::a_removed_participants_room_stops_receiving_copies_when_its_event_is_lost";
    let Some((mut env, guards)) = split_env(test).await else {
        return;
    };
    env.membership_max_age = Duration::from_secs(1);
    let mut s = Stack::split(&env).await;
    s.keep(guards);
    let customer = new_id();
    let admin = customer_token(&customer);
    // A WebSocket's queue takes chat events too: what chat-manager publishes is routed
    // somewhere, so the broker returns nothing (which would make chat-manager declare
    // message-manager's bindings again) and only message-manager misses them.
    let mut socket = s.ws(&admin).await;
    socket
        .subscribe(&[format!("customer_id:{customer}:chat")])
        .await;
    let (a, b, c) = (new_id(), new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b, &c], "lost"),
        )
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let send = |text: &str| {
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": text})
            .to_string()
    };
    let first = s
        .post("/chatmessages", &admin, &send("before"))
        .await
        .ok()
        .clone();
    let (room_b, room_c) = (
        room_of(&s, &admin, &chat_id, &b).await,
        room_of(&s, &admin, &chat_id, &c).await,
    );
    let messages = |copies: Vec<Value>| -> Vec<String> {
        copies
            .iter()
            .map(|c| c["messagechat_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        messages(copies_in(&s, &admin, &room_c).await),
        [first["id"].as_str().unwrap()]
    );

    // From here on no chat event reaches message-manager.
    let conn = lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    for event_type in pipeline::topology::chat_event_types() {
        channel
            .queue_unbind(
                env.chat_events_queue.as_str().into(),
                env.chat_exchange.as_str().into(),
                event_type.any_tenant().as_str().into(),
                Default::default(),
            )
            .await
            .unwrap();
    }
    s.delete(&format!("/chats/{chat_id}/participant_ids/{c}"), &admin)
        .await
        .ok();
    let updated = socket
        .collect("chat_updated", 1, Duration::from_secs(10))
        .await;
    assert_eq!(updated.len(), 1, "the removal was published");
    tokio::time::sleep(env.membership_max_age + Duration::from_millis(300)).await;

    let mut reader = testkit::EventReader::bind(&env.amqp_url, &env.message_exchange).await;
    let second = s
        .post("/chatmessages", &admin, &send("after"))
        .await
        .ok()
        .clone();
    let events = take(1, &mut reader).await;
    let extra = reader.collect_for(Duration::from_millis(500)).await;
    assert!(extra.is_empty(), "one event for the send: {extra:?}");
    let owners: Vec<String> = events[0].2["data"]["chatroommessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|copy| copy[2].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(owners.len(), 2, "one copy each for a and b: {owners:?}");
    assert!(
        !owners.contains(&c),
        "no copy, no event for the removed agent"
    );
    assert_eq!(
        messages(copies_in(&s, &admin, &room_b).await),
        [
            second["id"].as_str().unwrap(),
            first["id"].as_str().unwrap()
        ]
    );
    assert!(
        copies_in(&s, &admin, &room_c).await.is_empty(),
        "the removed agent's room is deleted: it lists nothing"
    );
    let _ = conn.close(200, "OK".into()).await;
}
