//! The REST API, driven over HTTP, against both ways of running: the embedded default
//! (SQLite, in-process bus) and the split deployment (chat-manager over gRPC on a socket, the
//! real PostgreSQL and RabbitMQ of this machine). The same scenarios run against each.

#[macro_use]
mod support;

use serde_json::{Value, json};
use support::*;

against_both!(
    "api";
    seed_tutorial_requests_work_as_written,
    bad_input_is_refused_naming_the_field_and_writes_nothing,
    second_live_normal_chat_for_a_pair_is_a_conflict,
    tenants_never_see_each_other,
    tokens_are_checked,
    participants_and_owner_follow_the_rules,
    deleting_a_chat_deletes_its_chatrooms,
    chatrooms_can_be_renamed_and_deleted,
    pages_return_every_chat_exactly_once,
    oversized_bodies_are_refused,
    a_chat_holds_at_most_1000_participants,
);

/// The seed's "Create a new chat" body, byte for byte.
const SEED_CREATE_CHAT: &str = r#"{
            "type": "normal",
            "owner_id": "eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b",
            "participant_ids": [
                "eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b",
                "47fe0b7c-7333-46cf-8b23-61e14e62490a"
            ],
            "name": "test chat normal",
            "detail": "test chat with agent 1 and agent2"
        }"#;

fn keys(v: &Value) -> Vec<String> {
    // serde_json keeps object keys sorted unless preserve_order is on, so read the order off
    // the text instead.
    v.as_object().unwrap().keys().cloned().collect()
}

fn assert_key_order(text: &str, order: &[&str]) {
    let positions: Vec<usize> = order
        .iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} missing in {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order differs from the seed: {text}"
    );
}

const CHAT_FIELDS: [&str; 10] = [
    "id",
    "customer_id",
    "type",
    "owner_id",
    "participant_ids",
    "name",
    "detail",
    "tm_create",
    "tm_update",
    "tm_delete",
];
const CHATROOM_FIELDS: [&str; 11] = [
    "id",
    "customer_id",
    "type",
    "chat_id",
    "owner_id",
    "participant_ids",
    "name",
    "detail",
    "tm_create",
    "tm_update",
    "tm_delete",
];

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.6f").is_ok() && s.len() == 26
}

async fn seed_tutorial_requests_work_as_written(s: &Stack) {
    let token = customer_token(SEED_CUSTOMER);

    // Create a new chat.
    let created = s.post("/chats", &token, SEED_CREATE_CHAT).await;
    let chat = created.ok().clone();
    assert_key_order(&created.text, &CHAT_FIELDS);
    assert_eq!(keys(&chat).len(), CHAT_FIELDS.len());
    assert_eq!(chat["customer_id"], SEED_CUSTOMER);
    assert_eq!(chat["type"], "normal");
    assert_eq!(chat["owner_id"], AGENT_1);
    assert_eq!(
        chat["participant_ids"],
        json!([AGENT_2, AGENT_1]),
        "sorted ascending"
    );
    assert_eq!(chat["name"], "test chat normal");
    assert_eq!(chat["detail"], "test chat with agent 1 and agent2");
    assert!(is_timestamp(&chat["tm_create"]), "{}", chat["tm_create"]);
    assert_eq!(chat["tm_update"], chat["tm_create"]);
    assert_eq!(chat["tm_delete"], "9999-01-01 00:00:00.000000");
    let id = chat["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());

    // Get list of chats.
    let list = s.get("/chats", &token).await;
    let list_json = list.ok();
    assert_key_order(&list.text, &["result", "next_page_token"]);
    assert_eq!(list_json["result"], json!([chat.clone()]));
    assert_eq!(list_json["next_page_token"], chat["tm_create"]);

    // Get detail of chat.
    let detail = s.get(&format!("/chats/{id}"), &token).await;
    assert_eq!(detail.ok(), &chat);

    // Get list of chatrooms (with owner_id, as in the seed).
    let rooms = s
        .get(&format!("/chatrooms?owner_id={AGENT_1}"), &token)
        .await;
    let rooms_json = rooms.ok();
    let result = rooms_json["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{}", rooms.text);
    let room = &result[0];
    assert_key_order(&rooms.text, &CHATROOM_FIELDS);
    assert_eq!(keys(room).len(), CHATROOM_FIELDS.len());
    assert_eq!(room["customer_id"], SEED_CUSTOMER);
    assert_eq!(room["type"], "normal");
    assert_eq!(room["chat_id"], id);
    assert_eq!(room["owner_id"], AGENT_1);
    assert_eq!(room["participant_ids"], json!([AGENT_2, AGENT_1]));
    assert_eq!(room["name"], "test chat normal");
    assert_eq!(room["detail"], "test chat with agent 1 and agent2");
    assert_eq!(room["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(rooms_json["next_page_token"], room["tm_create"]);

    // One chatroom per participant.
    let all_rooms = s.get("/chatrooms", &token).await;
    let owners: Vec<&str> = all_rooms.ok()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["owner_id"].as_str().unwrap())
        .collect();
    let mut sorted = owners.clone();
    sorted.sort();
    assert_eq!(sorted, vec![AGENT_2, AGENT_1]);
}

async fn chat_count(s: &Stack, token: &str) -> usize {
    s.get("/chats?page_size=100", token).await.ok()["result"]
        .as_array()
        .unwrap()
        .len()
}

async fn room_count(s: &Stack, token: &str) -> usize {
    s.get("/chatrooms?page_size=100", token).await.ok()["result"]
        .as_array()
        .unwrap()
        .len()
}

async fn bad_input_is_refused_naming_the_field_and_writes_nothing(s: &Stack) {
    let token = customer_token(&new_id());
    let (a, b, c) = (new_id(), new_id(), new_id());
    let cases: Vec<(String, &str)> = vec![
        ("{\"type\": \"normal\",".into(), "body"),
        ("[1, 2]".into(), "body"),
        ("".into(), "body"),
        (
            json!({"type": "normal", "owner_id": a, "participant_ids": [a, b], "name": 5})
                .to_string(),
            "name",
        ),
        (
            json!({"type": "normal", "owner_id": a, "participant_ids": a, "name": "x"}).to_string(),
            "participant_ids",
        ),
        (
            json!({"type": "normal", "owner_id": "not-a-uuid", "participant_ids": [a, b]})
                .to_string(),
            "owner_id",
        ),
        (
            json!({"type": "normal", "owner_id": a, "participant_ids": [a, "nope"]}).to_string(),
            "participant_ids[1]",
        ),
        (
            json!({"type": "private", "owner_id": a, "participant_ids": [a, b]}).to_string(),
            "type",
        ),
        (
            json!({"owner_id": a, "participant_ids": [a, b]}).to_string(),
            "type",
        ),
        (
            json!({"type": "normal", "participant_ids": [a, b]}).to_string(),
            "owner_id",
        ),
        (
            json!({"type": "normal", "owner_id": a}).to_string(),
            "participant_ids",
        ),
        (
            json!({"type": "normal", "owner_id": a, "participant_ids": [a, b, c]}).to_string(),
            "participant_ids",
        ),
        (
            json!({"type": "normal", "owner_id": a, "participant_ids": [a, a]}).to_string(),
            "participant_ids",
        ),
        (
            json!({"type": "group", "owner_id": a, "participant_ids": [a]}).to_string(),
            "participant_ids",
        ),
        (
            json!({"type": "group", "owner_id": c, "participant_ids": [a, b]}).to_string(),
            "owner_id",
        ),
        (
            json!({"type": "group", "owner_id": a, "participant_ids": [a, b], "name": "a\u{0}b"})
                .to_string(),
            "name",
        ),
    ];
    for (body, field) in &cases {
        let reply = s.post("/chats", &token, body).await;
        reply.assert_error(400, "invalid_argument", field);
    }
    // Unknown fields are ignored.
    let ok = s
        .post(
            "/chats",
            &token,
            &json!({"type": "group", "owner_id": a, "participant_ids": [a, b], "color": "red"})
                .to_string(),
        )
        .await;
    let chat_id = ok.ok()["id"].as_str().unwrap().to_owned();

    // Bad ids in paths and queries.
    s.get("/chats/not-a-uuid", &token)
        .await
        .assert_error(400, "invalid_argument", "id");
    s.get("/chatrooms?owner_id=zzz", &token).await.assert_error(
        400,
        "invalid_argument",
        "owner_id",
    );
    s.delete(&format!("/chats/{chat_id}/participant_ids/xyz"), &token)
        .await
        .assert_error(400, "invalid_argument", "participant_id");
    s.put(&format!("/chats/{chat_id}"), &token, "{\"name\": [1]}")
        .await
        .assert_error(400, "invalid_argument", "name");
    s.put(
        &format!("/chats/{chat_id}/owner_id"),
        &token,
        "{\"owner_id\": \"q\"}",
    )
    .await
    .assert_error(400, "invalid_argument", "owner_id");

    // Nothing but the one good chat (and its two rooms) was written.
    assert_eq!(chat_count(s, &token).await, 1);
    assert_eq!(room_count(s, &token).await, 2);
    let chat = s
        .get(&format!("/chats/{chat_id}"), &token)
        .await
        .ok()
        .clone();
    assert_eq!(
        chat["tm_update"], chat["tm_create"],
        "no failed update touched it"
    );
}

async fn second_live_normal_chat_for_a_pair_is_a_conflict(s: &Stack) {
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let first = s
        .post("/chats", &token, &chat_body("normal", &a, &[&a, &b], "one"))
        .await;
    let id = first.ok()["id"].as_str().unwrap().to_owned();
    // The same pair in the other order, owned by the other participant.
    s.post("/chats", &token, &chat_body("normal", &b, &[&b, &a], "two"))
        .await
        .assert_error(409, "conflict", "participant_ids");
    // A group of the same two is fine.
    s.post(
        "/chats",
        &token,
        &chat_body("group", &a, &[&a, &b], "group"),
    )
    .await
    .ok();
    assert_eq!(chat_count(s, &token).await, 2);
    // Once the first is deleted, the pair is free again.
    s.delete(&format!("/chats/{id}"), &token).await.ok();
    s.post(
        "/chats",
        &token,
        &chat_body("normal", &b, &[&a, &b], "again"),
    )
    .await
    .ok();
    // The same pair in another tenant is no conflict.
    let other = customer_token(&new_id());
    s.post(
        "/chats",
        &other,
        &chat_body("normal", &a, &[&a, &b], "elsewhere"),
    )
    .await
    .ok();
}

async fn tenants_never_see_each_other(s: &Stack) {
    let mine = customer_token(&new_id());
    let theirs = customer_token(&new_id());
    let (a, b, c) = (new_id(), new_id(), new_id());
    let chat = s
        .post("/chats", &mine, &chat_body("group", &a, &[&a, &b], "mine"))
        .await
        .ok()
        .clone();
    let id = chat["id"].as_str().unwrap();
    let room_id = s.get(&format!("/chatrooms?owner_id={a}"), &mine).await.ok()["result"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(chat_count(s, &theirs).await, 0);
    assert_eq!(room_count(s, &theirs).await, 0);
    let attempts = [
        s.get(&format!("/chats/{id}"), &theirs).await,
        s.put(&format!("/chats/{id}"), &theirs, "{\"name\": \"x\"}")
            .await,
        s.delete(&format!("/chats/{id}"), &theirs).await,
        s.put(
            &format!("/chats/{id}/owner_id"),
            &theirs,
            &json!({"owner_id": b}).to_string(),
        )
        .await,
        s.put(
            &format!("/chats/{id}/room_owner_id"),
            &theirs,
            &json!({"room_owner_id": b}).to_string(),
        )
        .await,
        s.post(
            &format!("/chats/{id}/participant_ids"),
            &theirs,
            &json!({"participant_id": c}).to_string(),
        )
        .await,
        s.delete(&format!("/chats/{id}/participant_ids/{b}"), &theirs)
            .await,
        s.get(&format!("/chatrooms/{room_id}"), &theirs).await,
        s.put(
            &format!("/chatrooms/{room_id}"),
            &theirs,
            "{\"name\": \"x\"}",
        )
        .await,
        s.delete(&format!("/chatrooms/{room_id}"), &theirs).await,
    ];
    for reply in &attempts {
        reply.assert_error(404, "not_found", "not found");
    }
    // Untouched.
    assert_eq!(s.get(&format!("/chats/{id}"), &mine).await.ok(), &chat);
    assert_eq!(room_count(s, &mine).await, 2);
}

async fn tokens_are_checked(s: &Stack) {
    let customer = new_id();
    // No token at all.
    let res = s
        .http
        .get(format!("{}/chats", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    // Garbage and expired.
    s.get("/chats", "garbage")
        .await
        .assert_error(401, "unauthenticated", "token");
    let expired = token(&customer, None, 0x20, std::time::Duration::ZERO);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.get("/chats", &expired)
        .await
        .assert_error(401, "unauthenticated", "token");
    // Bearer header works as well as the query.
    let good = customer_token(&customer);
    let res = s
        .http
        .get(format!("{}/chats", s.base))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // An agent-only token may not use customer-level endpoints; managers and admins may.
    let agent = agent_token(&customer, &new_id(), 0x10);
    s.get("/chats", &agent)
        .await
        .assert_error(403, "permission_denied", "permission");
    s.post(
        "/chats",
        &agent,
        &chat_body("group", &customer, &[&customer, &new_id()], "x"),
    )
    .await
    .assert_error(403, "permission_denied", "permission");
    s.get("/chatrooms", &agent)
        .await
        .assert_error(403, "permission_denied", "permission");
    for perm in [0x20, 0x40, 0x01, 0x30] {
        s.get("/chats", &agent_token(&customer, &new_id(), perm))
            .await
            .ok();
    }
    // A super admin acts within its own customer only.
    let (a, b) = (new_id(), new_id());
    let other_chat = s
        .post(
            "/chats",
            &customer_token(&new_id()),
            &chat_body("group", &a, &[&a, &b], "x"),
        )
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.get(
        &format!("/chats/{other_chat}"),
        &agent_token(&customer, &new_id(), 0x01),
    )
    .await
    .assert_error(404, "not_found", "chat");
    // Unknown paths and methods are JSON errors too.
    s.get("/nothing-here", &good)
        .await
        .assert_error(404, "not_found", "endpoint");
    s.call("PATCH", "/chats", &good, None)
        .await
        .assert_error(405, "method_not_allowed", "method");
}

async fn participants_and_owner_follow_the_rules(s: &Stack) {
    let token = customer_token(&new_id());
    let (a, b, c, d) = (new_id(), new_id(), new_id(), new_id());
    let group = s
        .post("/chats", &token, &chat_body("group", &a, &[&a, &b], "team"))
        .await
        .ok()
        .clone();
    let id = group["id"].as_str().unwrap();

    // Add a participant: their own chatroom, and the new list everywhere.
    let added = s
        .post(
            &format!("/chats/{id}/participant_ids"),
            &token,
            &json!({"participant_id": c}).to_string(),
        )
        .await
        .ok()
        .clone();
    let mut expected = vec![a.clone(), b.clone(), c.clone()];
    expected.sort();
    assert_eq!(added["participant_ids"], json!(expected));
    let rooms = s.get("/chatrooms?page_size=100", &token).await.ok()["result"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rooms.len(), 3);
    for room in &rooms {
        assert_eq!(room["participant_ids"], json!(expected), "{room}");
        assert_eq!(room["type"], "group");
    }
    // Twice is refused.
    s.post(
        &format!("/chats/{id}/participant_ids"),
        &token,
        &json!({"participant_id": c}).to_string(),
    )
    .await
    .assert_error(400, "invalid_argument", "participant_id");

    // Ownership moves only to a participant.
    s.put(
        &format!("/chats/{id}/owner_id"),
        &token,
        &json!({"owner_id": d}).to_string(),
    )
    .await
    .assert_error(400, "invalid_argument", "owner_id");
    let moved = s
        .put(
            &format!("/chats/{id}/room_owner_id"),
            &token,
            &json!({"room_owner_id": b}).to_string(),
        )
        .await
        .ok()
        .clone();
    assert_eq!(moved["owner_id"], b.as_str());
    // The owner cannot be removed; another participant can.
    s.delete(&format!("/chats/{id}/participant_ids/{b}"), &token)
        .await
        .assert_error(400, "invalid_argument", "owner");
    let removed = s
        .delete(&format!("/chats/{id}/participant_ids/{a}"), &token)
        .await
        .ok()
        .clone();
    let mut left = vec![b.clone(), c.clone()];
    left.sort();
    assert_eq!(removed["participant_ids"], json!(left));
    s.get(&format!("/chatrooms?owner_id={a}"), &token)
        .await
        .ok()["result"]
        .as_array()
        .map(|r| assert!(r.is_empty(), "a's chatroom is deleted"))
        .unwrap();
    for room in s.get("/chatrooms", &token).await.ok()["result"]
        .as_array()
        .unwrap()
    {
        assert_eq!(room["participant_ids"], json!(left));
    }
    // A group keeps at least two; someone not in the chat is not found.
    s.delete(&format!("/chats/{id}/participant_ids/{c}"), &token)
        .await
        .assert_error(400, "invalid_argument", "participant_id");
    s.delete(&format!("/chats/{id}/participant_ids/{d}"), &token)
        .await
        .assert_error(404, "not_found", "participant");

    // A normal chat stays 1:1.
    let normal = s
        .post("/chats", &token, &chat_body("normal", &a, &[&a, &b], "dm"))
        .await
        .ok()
        .clone();
    let nid = normal["id"].as_str().unwrap();
    s.post(
        &format!("/chats/{nid}/participant_ids"),
        &token,
        &json!({"participant_id": c}).to_string(),
    )
    .await
    .assert_error(400, "invalid_argument", "participant_id");
    s.delete(&format!("/chats/{nid}/participant_ids/{b}"), &token)
        .await
        .assert_error(400, "invalid_argument", "participant_id");

    // Name and detail: update only what is given.
    let renamed = s
        .put(&format!("/chats/{id}"), &token, "{\"name\": \"renamed\"}")
        .await
        .ok()
        .clone();
    assert_eq!(renamed["name"], "renamed");
    assert_eq!(renamed["detail"], "");
    assert_ne!(renamed["tm_update"], renamed["tm_create"]);
}

async fn deleting_a_chat_deletes_its_chatrooms(s: &Stack) {
    let token = customer_token(&new_id());
    let (a, b, c) = (new_id(), new_id(), new_id());
    let keep = s
        .post("/chats", &token, &chat_body("group", &a, &[&a, &c], "keep"))
        .await
        .ok()
        .clone();
    let chat = s
        .post(
            "/chats",
            &token,
            &chat_body("group", &a, &[&a, &b, &c], "gone"),
        )
        .await
        .ok()
        .clone();
    let id = chat["id"].as_str().unwrap();
    let rooms: Vec<String> = s.get("/chatrooms?page_size=100", &token).await.ok()["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["chat_id"] == id)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rooms.len(), 3);

    let deleted = s.delete(&format!("/chats/{id}"), &token).await.ok().clone();
    assert_ne!(deleted["tm_delete"], "9999-01-01 00:00:00.000000");
    assert!(is_timestamp(&deleted["tm_delete"]));
    // Still readable, with tm_delete set; no longer listed; no longer changeable.
    assert_eq!(s.get(&format!("/chats/{id}"), &token).await.ok(), &deleted);
    let listed = s.get("/chats", &token).await.ok()["result"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed, vec![keep.clone()]);
    s.put(&format!("/chats/{id}"), &token, "{\"name\": \"x\"}")
        .await
        .assert_error(404, "not_found", "chat");
    s.delete(&format!("/chats/{id}"), &token)
        .await
        .assert_error(404, "not_found", "chat");
    // Its chatrooms are deleted too; the other chat's are not.
    for room in &rooms {
        let r = s
            .get(&format!("/chatrooms/{room}"), &token)
            .await
            .ok()
            .clone();
        assert_eq!(r["tm_delete"], deleted["tm_delete"], "{r}");
    }
    let live: Vec<Value> = s.get("/chatrooms?page_size=100", &token).await.ok()["result"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|r| r["chat_id"] == keep["id"]));
}

async fn chatrooms_can_be_renamed_and_deleted(s: &Stack) {
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post(
            "/chats",
            &token,
            &chat_body("normal", &a, &[&a, &b], "pair"),
        )
        .await
        .ok()
        .clone();
    let room = s
        .get(&format!("/chatrooms?owner_id={b}"), &token)
        .await
        .ok()["result"][0]
        .clone();
    let rid = room["id"].as_str().unwrap();
    let renamed = s
        .put(
            &format!("/chatrooms/{rid}"),
            &token,
            "{\"name\": \"my view\", \"detail\": \"d\"}",
        )
        .await
        .ok()
        .clone();
    assert_eq!(renamed["name"], "my view");
    assert_eq!(renamed["detail"], "d");
    // The chat and the other participant's room keep their names.
    assert_eq!(
        s.get(&format!("/chats/{}", chat["id"].as_str().unwrap()), &token)
            .await
            .ok()["name"],
        "pair"
    );
    assert_eq!(
        s.get(&format!("/chatrooms?owner_id={a}"), &token)
            .await
            .ok()["result"][0]["name"],
        "pair"
    );

    let deleted = s
        .delete(&format!("/chatrooms/{rid}"), &token)
        .await
        .ok()
        .clone();
    assert_ne!(deleted["tm_delete"], "9999-01-01 00:00:00.000000");
    assert_eq!(
        s.get(&format!("/chatrooms/{rid}"), &token).await.ok()["tm_delete"],
        deleted["tm_delete"]
    );
    assert_eq!(room_count(s, &token).await, 1);
    s.put(&format!("/chatrooms/{rid}"), &token, "{\"name\": \"x\"}")
        .await
        .assert_error(404, "not_found", "chatroom");
}

async fn pages_return_every_chat_exactly_once(s: &Stack) {
    let token = customer_token(&new_id());
    let owner = new_id();
    let mut created = Vec::new();
    for i in 0..23 {
        let chat = s
            .post(
                "/chats",
                &token,
                &chat_body("group", &owner, &[&owner, &new_id()], &format!("c{i}")),
            )
            .await
            .ok()
            .clone();
        created.push(chat["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut token_param = String::new();
    loop {
        let path = if token_param.is_empty() {
            "/chats?page_size=7".to_owned()
        } else {
            format!("/chats?page_size=7&page_token={}", urlencode(&token_param))
        };
        let page = s.get(&path, &token).await.ok().clone();
        let result = page["result"].as_array().unwrap();
        if result.is_empty() {
            break;
        }
        assert!(result.len() <= 7);
        seen.extend(result.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        token_param = page["next_page_token"].as_str().unwrap().to_owned();
        assert!(!token_param.is_empty());
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, each exactly once");

    // Sizes: default 10, capped at 100, and bad ones refused.
    assert_eq!(
        s.get("/chats", &token).await.ok()["result"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        s.get("/chats?page_size=1000", &token).await.ok()["result"]
            .as_array()
            .unwrap()
            .len(),
        23
    );
    for bad in ["0", "-1", "abc", ""] {
        s.get(&format!("/chats?page_size={bad}"), &token)
            .await
            .assert_error(400, "invalid_argument", "page_size");
    }
    s.get("/chats?page_token=yesterday", &token)
        .await
        .assert_error(400, "invalid_argument", "page_token");
    // Years outside the contract's are refused here, on both backends, before any query.
    for year in ["0000", "10000", "%2B10000", "-0001"] {
        let token_param = urlencode(&format!("{year}-01-01 00:00:00.000000"));
        for path in ["/chats", "/chatrooms"] {
            s.get(&format!("{path}?page_token={token_param}"), &token)
                .await
                .assert_error(400, "invalid_argument", "page_token");
        }
    }
}

fn urlencode(s: &str) -> String {
    s.replace(' ', "%20")
        .replace(',', "%2C")
        .replace(':', "%3A")
}

async fn oversized_bodies_are_refused(s: &Stack) {
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let big = "x".repeat(1024 * 1024 + 1);
    let body = json!({"type": "group", "owner_id": a, "participant_ids": [a, b], "detail": big})
        .to_string();
    s.post("/chats", &token, &body)
        .await
        .assert_error(413, "payload_too_large", "body");
    assert_eq!(chat_count(s, &token).await, 0);
}

async fn a_chat_holds_at_most_1000_participants(s: &Stack) {
    let token = customer_token(&new_id());
    let people: Vec<String> = (0..=1000).map(|_| new_id()).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let owner = refs[0];

    // 1,001 participants: refused, nothing written.
    s.post(
        "/chats",
        &token,
        &chat_body("group", owner, &refs, "too many"),
    )
    .await
    .assert_error(400, "invalid_argument", "participant_ids");
    assert_eq!(chat_count(s, &token).await, 0);

    // 1,000: accepted, with a chatroom each.
    let chat = s
        .post(
            "/chats",
            &token,
            &chat_body("group", owner, &refs[..1000], "full"),
        )
        .await;
    let id = chat.ok()["id"].as_str().unwrap().to_owned();
    assert_eq!(chat.json["participant_ids"].as_array().unwrap().len(), 1000);
    let last = s
        .get(&format!("/chatrooms?owner_id={}", refs[999]), &token)
        .await;
    assert_eq!(last.ok()["result"].as_array().unwrap().len(), 1);

    // A 1,001st added to it: refused, the chat as it was, no chatroom for them.
    let before = s.get(&format!("/chats/{id}"), &token).await.ok().clone();
    s.post(
        &format!("/chats/{id}/participant_ids"),
        &token,
        &json!({"participant_id": refs[1000]}).to_string(),
    )
    .await
    .assert_error(400, "invalid_argument", "participant_id");
    assert_eq!(s.get(&format!("/chats/{id}"), &token).await.ok(), &before);
    let theirs = s
        .get(&format!("/chatrooms?owner_id={}", refs[1000]), &token)
        .await;
    assert_eq!(theirs.ok()["result"], json!([]));
}

/// chat-manager not running: the gateway answers 503 with the error JSON, not a hang or a 500.
#[tokio::test]
async fn an_unreachable_chat_manager_is_a_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stack = Stack::remote_only(&url).await;
    let token = customer_token(&new_id());
    stack
        .get("/chats", &token)
        .await
        .assert_error(503, "unavailable", "unavailable");
    let (a, b) = (new_id(), new_id());
    stack
        .post("/chats", &token, &chat_body("group", &a, &[&a, &b], "x"))
        .await
        .assert_error(503, "unavailable", "unavailable");
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_writes_nothing() {
    let limit = api_gateway::rate_limit::RateLimit {
        per_second: 1,
        burst: 3,
    };
    let stack = Stack::embedded_limited(temp_data_dir(), true, limit).await;
    let customer = new_id();
    let token = customer_token(&customer);
    for _ in 0..3 {
        stack.get("/chats", &token).await.ok();
    }
    let (a, b) = (new_id(), new_id());
    let refused = stack
        .post("/chats", &token, &chat_body("group", &a, &[&a, &b], "x"))
        .await;
    refused.assert_error(429, "rate_limited", "retry after");
    assert_eq!(refused.headers["retry-after"], "1");

    // Another token of the same caller shares its allowance: the limit is the caller's, not
    // the token text's.
    let same_caller = support::token(
        &customer,
        None,
        api_gateway::auth::permission::CUSTOMER_ADMIN,
        std::time::Duration::from_secs(7200),
    );
    assert_ne!(same_caller, token);
    stack
        .get("/chats", &same_caller)
        .await
        .assert_error(429, "rate_limited", "retry after");
    // Another caller of the same tenant (an admin agent) has its own, and sees no chat written.
    let other = agent_token(
        &customer,
        &new_id(),
        api_gateway::auth::permission::CUSTOMER_ADMIN,
    );
    let chats = stack.get("/chats", &other).await;
    assert_eq!(chats.ok()["result"].as_array().unwrap().len(), 0);
    // Probes are never limited.
    let health = stack
        .http
        .get(stack.base.replace("/v1.0", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
