//! Hostile input against both ways of running: another tenant's ids in every path, body field
//! and filter; deeply nested and oversized JSON; junk in query strings. Each is refused with
//! the right status and the error JSON, and nothing changes.

#[macro_use]
mod support;

use serde_json::{Value, json};
use support::*;

against_both!(
    "security";
    another_tenants_messages_are_out_of_reach_everywhere,
    deeply_nested_and_oversized_json_is_refused,
    junk_in_query_strings_is_refused_naming_the_parameter,
);

/// What a tenant has: a chat of two agents with one message, the two chatrooms and copies.
struct Victim {
    token: String,
    chat_id: String,
    message_id: String,
    rooms: Vec<String>,
    copies: Vec<String>,
    owner: String,
}

async fn victim(s: &Stack) -> Victim {
    let customer = new_id();
    let token = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let chat = s
        .post("/chats", &token, &chat_body("normal", &a, &[&a, &b], "v"))
        .await;
    let chat_id = chat.ok()["id"].as_str().unwrap().to_owned();
    let message = s
        .post(
            "/chatmessages",
            &token,
            &json!({"chat_id": chat_id, "source": {"type": "agent", "target": a},
                    "type": "normal", "text": "secret"})
            .to_string(),
        )
        .await;
    let message_id = message.ok()["id"].as_str().unwrap().to_owned();
    let mut rooms = Vec::new();
    let mut copies = Vec::new();
    for agent in [&a, &b] {
        let listed = s.get(&format!("/chatrooms?owner_id={agent}"), &token).await;
        let room = listed.ok()["result"][0]["id"].as_str().unwrap().to_owned();
        let in_room = s
            .get(&format!("/chatroommessages?chatroom_id={room}"), &token)
            .await;
        copies.push(in_room.ok()["result"][0]["id"].as_str().unwrap().to_owned());
        rooms.push(room);
    }
    Victim {
        token,
        chat_id,
        message_id,
        rooms,
        copies,
        owner: a,
    }
}

/// Everything the victim can see, to compare before and after.
async fn snapshot(s: &Stack, v: &Victim) -> Vec<Value> {
    let mut seen = vec![
        s.get(&format!("/chats/{}", v.chat_id), &v.token)
            .await
            .ok()
            .clone(),
        s.get(&format!("/chatmessages?chat_id={}", v.chat_id), &v.token)
            .await
            .ok()
            .clone(),
    ];
    for room in &v.rooms {
        seen.push(
            s.get(&format!("/chatrooms/{room}"), &v.token)
                .await
                .ok()
                .clone(),
        );
        seen.push(
            s.get(&format!("/chatroommessages?chatroom_id={room}"), &v.token)
                .await
                .ok()
                .clone(),
        );
    }
    seen
}

async fn another_tenants_messages_are_out_of_reach_everywhere(s: &Stack) {
    let v = victim(s).await;
    let before = snapshot(s, &v).await;
    let intruder_customer = new_id();
    let intruder = customer_token(&intruder_customer);
    // An agent of the intruding tenant claiming the victim's agent id as its own.
    let impostor = agent_token(&intruder_customer, &v.owner, 0x10);
    let (room, copy) = (&v.rooms[0], &v.copies[0]);
    let send = |chat_id: &str| {
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": v.owner},
               "type": "normal", "text": "intrusion"})
        .to_string()
    };
    let attempts = [
        (
            "GET chatmessage",
            s.get(&format!("/chatmessages/{}", v.message_id), &intruder)
                .await,
        ),
        (
            "DELETE chatmessage",
            s.delete(&format!("/chatmessages/{}", v.message_id), &intruder)
                .await,
        ),
        (
            "list chatmessages by chat_id",
            s.get(&format!("/chatmessages?chat_id={}", v.chat_id), &intruder)
                .await,
        ),
        (
            "POST chatmessage into the chat",
            s.post("/chatmessages", &intruder, &send(&v.chat_id)).await,
        ),
        (
            "GET chatroommessage",
            s.get(&format!("/chatroommessages/{copy}"), &intruder).await,
        ),
        (
            "DELETE chatroommessage",
            s.delete(&format!("/chatroommessages/{copy}"), &intruder)
                .await,
        ),
        (
            "list chatroommessages by chatroom_id",
            s.get(&format!("/chatroommessages?chatroom_id={room}"), &intruder)
                .await,
        ),
        (
            "agent: GET chatroom",
            s.get(&format!("/service_agents/chatrooms/{room}"), &impostor)
                .await,
        ),
        (
            "agent: list copies",
            s.get(
                &format!("/service_agents/chatroommessages?chatroom_id={room}"),
                &impostor,
            )
            .await,
        ),
        (
            "agent: GET copy",
            s.get(
                &format!("/service_agents/chatroommessages/{copy}"),
                &impostor,
            )
            .await,
        ),
        (
            "agent: POST into the chatroom",
            s.post(
                "/service_agents/chatroommessages",
                &impostor,
                &json!({"chatroom_id": room, "text": "intrusion"}).to_string(),
            )
            .await,
        ),
    ];
    for (what, reply) in &attempts {
        assert_eq!(reply.status, 404, "{what}: {}", reply.text);
        assert_eq!(reply.json["error"]["code"], "not_found", "{what}");
    }
    // The intruder's own lists show nothing of the victim's.
    let rooms = s
        .get(&format!("/chatrooms?owner_id={}", v.owner), &intruder)
        .await;
    assert_eq!(rooms.ok()["result"], json!([]));
    let own = s.get("/service_agents/chatrooms", &impostor).await;
    assert_eq!(own.ok()["result"], json!([]));

    assert_eq!(
        snapshot(s, &v).await,
        before,
        "the victim's data is unchanged"
    );
}

async fn deeply_nested_and_oversized_json_is_refused(s: &Stack) {
    let v = victim(s).await;
    let before = snapshot(s, &v).await;
    let (a, b) = (new_id(), new_id());
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let cases = [
        ("deeply nested array as the body", deep_array.clone(), 400),
        ("deeply nested object as the body", deep_object.clone(), 400),
        (
            "deeply nested value in a field",
            format!(
                r#"{{"type": "group", "owner_id": "{a}", "participant_ids": ["{a}", "{b}"], "name": {deep_array}}}"#
            ),
            400,
        ),
        (
            "a body over 1 MiB",
            json!({"type": "group", "owner_id": a, "participant_ids": [a, b],
                   "name": "x".repeat(1_100_000)})
            .to_string(),
            413,
        ),
        ("not JSON", "{\"type\": ".to_owned(), 400),
        ("a JSON string, not an object", "\"group\"".to_owned(), 400),
        ("null", "null".to_owned(), 400),
    ];
    for (what, body, status) in &cases {
        let reply = s.post("/chats", &v.token, body).await;
        assert_eq!(
            reply.status,
            *status,
            "{what}: {}",
            &reply.text[..reply.text.len().min(200)]
        );
        assert!(
            reply.json["error"]["code"].is_string(),
            "{what}: error JSON"
        );
    }
    // Nested junk in a message body too.
    let reply = s
        .post(
            "/chatmessages",
            &v.token,
            &format!(
                r#"{{"chat_id": "{}", "text": "x", "medias": {deep_array}}}"#,
                v.chat_id
            ),
        )
        .await;
    assert_eq!(
        reply.status,
        400,
        "{}",
        &reply.text[..reply.text.len().min(200)]
    );
    // Nothing was written, and the service still answers.
    let chats = s.get("/chats?page_size=100", &v.token).await;
    assert_eq!(chats.ok()["result"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot(s, &v).await, before);
}

async fn junk_in_query_strings_is_refused_naming_the_parameter(s: &Stack) {
    let v = victim(s).await;
    let before = snapshot(s, &v).await;
    let cases = [
        ("/chats?page_size=abc", "page_size"),
        ("/chats?page_size=-1", "page_size"),
        ("/chats?page_size=99999999999999999999999", "page_size"),
        ("/chats?page_token=not-a-token", "page_token"),
        ("/chats?page_token=%FF%FE", "page_token"),
        ("/chatmessages?chat_id=not-a-uuid", "chat_id"),
        ("/chatmessages?chat_id=%00", "chat_id"),
        ("/chatmessages", "chat_id"),
        (
            "/chatroommessages?chatroom_id='%20OR%201=1--",
            "chatroom_id",
        ),
        ("/chatrooms?owner_id=../../etc/passwd", "owner_id"),
    ];
    for (path, field) in cases {
        let reply = s.get(path, &v.token).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert_eq!(reply.json["error"]["code"], "invalid_argument", "{path}");
        assert!(
            reply.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{path}: the message names {field}: {}",
            reply.text
        );
    }
    // A very long query string is refused or ignored, never a server error.
    let long = format!("/chats?junk={}", "x".repeat(60_000));
    let reply = s.get(&long, &v.token).await;
    assert!(reply.status < 500, "long query: {}", reply.status);
    assert_eq!(snapshot(s, &v).await, before);
}

#[tokio::test]
async fn bodies_beyond_the_gateways_memory_budget_are_turned_away() {
    let s = Stack::embedded().await;
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let body = chat_body("group", &a, &[&a, &b], "x");
    // Other requests' bodies hold the whole budget (this process runs one gateway).
    let held = api_gateway::json::BODY_BUDGET
        .reserve(api_gateway::json::MAX_BUFFERED_BODY_BYTES)
        .expect("the budget is free");
    let refused = s.post("/chats", &token, &body).await;
    refused.assert_error(503, "unavailable", "too many large requests");
    let listed = s.get("/chats", &token).await;
    assert_eq!(
        listed.ok()["result"],
        json!([]),
        "nothing written; reads need no body"
    );
    drop(held);
    s.post("/chats", &token, &body).await.ok();
}
