//! Read state and unread counts: a chatroom's read point only moves forward, its unread count
//! is exact through sends, deletions and joins, the agent's total sums its rooms, and a move is
//! pushed to the owner's devices, the customer's topics, and the other participants ("seen").

#[macro_use]
mod support;

use std::time::Duration;

use api_gateway::auth::permission::CUSTOMER_AGENT;
use serde_json::{Value, json};
use support::*;

against_both!(
    "reads";
    unread_counts_copies_after_the_read_point_that_others_sent_and_the_point_only_moves_forward,
    deleted_messages_deleted_copies_and_late_joiners_count_exactly,
    concurrent_sends_read_one_by_one_count_down_by_one_in_list_order,
    a_read_is_pushed_to_the_owner_the_customer_and_the_other_participants,
    read_endpoints_refuse_what_is_not_the_agents_own_and_bad_input,
);

/// Sends `text` into `room` as the agent of `token`; the sender's copy.
async fn say(s: &Stack, token: &str, room: &str, text: &str) -> Value {
    let body = json!({"chatroom_id": room, "text": text}).to_string();
    s.post("/service_agents/chatroommessages", token, &body)
        .await
        .ok()
        .clone()
}

async fn read_state(s: &Stack, token: &str, room: &str) -> Value {
    s.get(&format!("/service_agents/chatrooms/{room}/read"), token)
        .await
        .ok()
        .clone()
}

async fn mark(s: &Stack, token: &str, room: &str, body: Option<Value>) -> Value {
    let path = format!("/service_agents/chatrooms/{room}/read");
    let body = body.map(|b| b.to_string());
    s.call("PUT", &path, token, body.as_deref())
        .await
        .ok()
        .clone()
}

async fn unread(s: &Stack, token: &str) -> Value {
    s.get("/service_agents/unread", token).await.ok().clone()
}

async fn unread_counts_copies_after_the_read_point_that_others_sent_and_the_point_only_moves_forward(
    s: &Stack,
) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let (ta, tb) = (
        agent_token(&customer, &a, CUSTOMER_AGENT),
        agent_token(&customer, &b, CUSTOMER_AGENT),
    );
    let (chat, rooms) = group(s, &admin, &[&a, &b, &c]).await;

    // Before anything is sent or read.
    let fresh = read_state(s, &tb, &rooms[1]).await;
    assert_eq!(
        fresh,
        json!({"chatroom_id": rooms[1], "customer_id": customer, "chat_id": chat,
               "owner_id": b, "last_read_messagechat_id": "", "tm_last_read": "",
               "unread_count": 0, "tm_update": ""})
    );

    let sent: Vec<Value> = [
        say(s, &ta, &rooms[0], "one").await,
        say(s, &ta, &rooms[0], "two").await,
        say(s, &ta, &rooms[0], "three").await,
    ]
    .into();
    let own = say(s, &tb, &rooms[1], "b's own").await;
    assert_eq!(read_state(s, &tb, &rooms[1]).await["unread_count"], 3);
    // The sender's own messages are not unread for it.
    assert_eq!(read_state(s, &ta, &rooms[0]).await["unread_count"], 1);

    // Up to the second: one left.
    let second = sent[1]["messagechat_id"].as_str().unwrap();
    let moved = mark(s, &tb, &rooms[1], Some(json!({"messagechat_id": second}))).await;
    assert_eq!(moved["last_read_messagechat_id"], second);
    assert_eq!(moved["tm_last_read"], sent[1]["tm_create"]);
    assert_eq!(moved["unread_count"], 1);
    assert_ne!(moved["tm_update"], "");
    assert_eq!(read_state(s, &tb, &rooms[1]).await, moved);

    // An earlier message leaves it as it is.
    let first = sent[0]["messagechat_id"].as_str().unwrap();
    let kept = mark(s, &tb, &rooms[1], Some(json!({"messagechat_id": first}))).await;
    assert_eq!(kept, moved);

    // Totals over the agent's rooms: this chat, and a second one with two unread.
    let (_, other_rooms) = group(s, &admin, &[&a, &b]).await;
    say(s, &ta, &other_rooms[0], "x").await;
    say(s, &ta, &other_rooms[0], "y").await;
    assert_eq!(
        unread(s, &tb).await,
        json!({"chatrooms": 2, "chatroommessages": 3})
    );

    // Without a message: up to the newest copy.
    let all = mark(s, &tb, &rooms[1], None).await;
    assert_eq!(all["unread_count"], 0);
    // The newest copy is b's own message.
    assert_eq!(all["last_read_messagechat_id"], own["messagechat_id"]);
    assert_eq!(
        unread(s, &tb).await,
        json!({"chatrooms": 1, "chatroommessages": 2})
    );
    let empty_body = mark(s, &tb, &other_rooms[1], Some(json!({}))).await;
    assert_eq!(empty_body["unread_count"], 0);
    assert_eq!(
        unread(s, &tb).await,
        json!({"chatrooms": 0, "chatroommessages": 0})
    );
}

async fn deleted_messages_deleted_copies_and_late_joiners_count_exactly(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let (ta, tb) = (
        agent_token(&customer, &a, CUSTOMER_AGENT),
        agent_token(&customer, &b, CUSTOMER_AGENT),
    );
    let (chat, rooms) = group(s, &admin, &[&a, &b]).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(say(s, &ta, &rooms[0], &format!("m{n}")).await);
    }
    assert_eq!(read_state(s, &tb, &rooms[1]).await["unread_count"], 5);

    // A deleted message is not unread; neither is a copy b deleted in its own room.
    let gone = sent[1]["messagechat_id"].as_str().unwrap();
    s.delete(&format!("/chatmessages/{gone}"), &admin)
        .await
        .ok();
    assert_eq!(read_state(s, &tb, &rooms[1]).await["unread_count"], 4);
    let copies = s
        .list_all(
            &tb,
            &format!("/service_agents/chatroommessages?chatroom_id={}", rooms[1]),
        )
        .await;
    let m3 = copies.iter().find(|c| c["text"] == "m3").unwrap();
    s.delete(
        &format!(
            "/service_agents/chatroommessages/{}",
            m3["id"].as_str().unwrap()
        ),
        &tb,
    )
    .await
    .ok();
    assert_eq!(read_state(s, &tb, &rooms[1]).await["unread_count"], 3);
    // a's copy of m3 is still live, and a sent it: nothing changes for a.
    assert_eq!(read_state(s, &ta, &rooms[0]).await["unread_count"], 0);

    // The count is exactly the live copies listed after the read point that others sent.
    let listed = s
        .list_all(
            &tb,
            &format!("/service_agents/chatroommessages?chatroom_id={}", rooms[1]),
        )
        .await;
    assert_eq!(listed.len(), 3);

    // c joins now: only what is sent from here on is c's to read.
    s.post(
        &format!("/chats/{chat}/participant_ids"),
        &admin,
        &json!({"participant_id": c}).to_string(),
    )
    .await
    .ok();
    let tc = agent_token(&customer, &c, CUSTOMER_AGENT);
    let c_room = s
        .get("/service_agents/chatrooms?page_size=100", &tc)
        .await
        .ok()["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chat_id"] == chat.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(read_state(s, &tc, &c_room).await["unread_count"], 0);
    say(s, &ta, &rooms[0], "welcome").await;
    assert_eq!(read_state(s, &tc, &c_room).await["unread_count"], 1);
    assert_eq!(read_state(s, &tb, &rooms[1]).await["unread_count"], 4);
    assert_eq!(
        unread(s, &tc).await,
        json!({"chatrooms": 1, "chatroommessages": 1})
    );
}

async fn concurrent_sends_read_one_by_one_count_down_by_one_in_list_order(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let (chat, rooms) = group(s, &admin, &[&a, &b, &c]).await;
    let (ta, tb) = (
        agent_token(&customer, &a, CUSTOMER_AGENT),
        agent_token(&customer, &b, CUSTOMER_AGENT),
    );
    // Two senders at once, twelve messages each.
    let send_all = |token: String, room: String, tag: &'static str| async move {
        for n in 0..12 {
            say(s, &token, &room, &format!("{tag}{n}")).await;
        }
    };
    let tc = agent_token(&customer, &c, CUSTOMER_AGENT);
    tokio::join!(
        send_all(ta.clone(), rooms[0].clone(), "a"),
        send_all(tc, rooms[2].clone(), "c"),
    );
    let mut listed = s
        .list_all(
            &tb,
            &format!("/service_agents/chatroommessages?chatroom_id={}", rooms[1]),
        )
        .await;
    assert_eq!(listed.len(), 24, "chat {chat}");
    listed.reverse(); // oldest first
    // Creation times strictly increase in list order.
    assert!(
        listed
            .windows(2)
            .all(|w| w[0]["tm_create"].as_str() < w[1]["tm_create"].as_str())
    );
    for (n, copy) in listed.iter().enumerate() {
        let state = mark(
            s,
            &tb,
            &rooms[1],
            Some(json!({"messagechat_id": copy["messagechat_id"]})),
        )
        .await;
        assert_eq!(state["unread_count"], 23 - n as i64, "after {copy}");
    }
}

async fn a_read_is_pushed_to_the_owner_the_customer_and_the_other_participants(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let (ta, tb) = (
        agent_token(&customer, &a, CUSTOMER_AGENT),
        agent_token(&customer, &b, CUSTOMER_AGENT),
    );
    let (chat, rooms) = group(s, &admin, &[&a, &b, &c]).await;
    let message = say(s, &ta, &rooms[0], "seen?").await;

    let mut a_ws = s.ws(&ta).await;
    a_ws.subscribe(&[format!("agent_id:{a}:chatroom:{}", rooms[0])])
        .await;
    let mut b_phone = s.ws(&tb).await;
    b_phone.subscribe(&[format!("agent_id:{b}:chatroom")]).await;
    let mut admin_ws = s.ws(&admin).await;
    admin_ws
        .subscribe(&[format!("customer_id:{customer}:chatroom")])
        .await;

    let state = mark(s, &tb, &rooms[1], None).await;
    assert_eq!(state["last_read_messagechat_id"], message["messagechat_id"]);
    let wait = Duration::from_secs(10);
    // b's other device.
    let mine = b_phone.collect("chatroom_read_updated", 1, wait).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["data"], state);
    // a sees that b has seen it.
    let seen = a_ws.collect("chatroom_read_updated", 1, wait).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["data"], state);
    // The customer's topic: once, not once per participant.
    let admin_frames = admin_ws
        .collect("chatroom_read_updated", 2, Duration::from_secs(2))
        .await;
    assert_eq!(admin_frames.len(), 1, "{admin_frames:?}");
    assert_eq!(admin_frames[0]["data"], state);

    // Who has seen what.
    let reads = s
        .get(
            &format!("/service_agents/chatrooms/{}/reads", rooms[0]),
            &ta,
        )
        .await
        .ok()
        .clone();
    let reads = reads["result"].as_array().unwrap();
    assert_eq!(reads.len(), 3, "{reads:?}");
    let of = |owner: &str| reads.iter().find(|r| r["owner_id"] == owner).unwrap();
    assert_eq!(of(&b), &state);
    assert_eq!(of(&c)["last_read_messagechat_id"], "");
    assert_eq!(of(&c)["unread_count"], 1);
    assert!(reads.iter().all(|r| r["chat_id"] == chat.as_str()));

    // Marking again where it already is moves nothing and pushes nothing.
    let again = mark(s, &tb, &rooms[1], None).await;
    assert_eq!(again, state);
    let more = b_phone
        .collect("chatroom_read_updated", 1, Duration::from_millis(700))
        .await;
    assert!(more.is_empty(), "{more:?}");
}

async fn read_endpoints_refuse_what_is_not_the_agents_own_and_bad_input(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let (ta, tb) = (
        agent_token(&customer, &a, CUSTOMER_AGENT),
        agent_token(&customer, &b, CUSTOMER_AGENT),
    );
    let (_, rooms) = group(s, &admin, &[&a, &b]).await;
    let (_, elsewhere) = group(s, &admin, &[&a, &b]).await;
    let other_message = say(s, &ta, &elsewhere[0], "elsewhere").await;
    say(s, &ta, &rooms[0], "here").await;

    // a's room, through b: as good as missing.
    let a_room = &rooms[0];
    for (method, path) in [
        ("GET", format!("/service_agents/chatrooms/{a_room}/read")),
        ("PUT", format!("/service_agents/chatrooms/{a_room}/read")),
        ("GET", format!("/service_agents/chatrooms/{a_room}/reads")),
    ] {
        s.call(method, &path, &tb, None)
            .await
            .assert_error(404, "not_found", "chatroom");
    }
    // Another tenant's agent.
    let stranger = agent_token(&new_id(), &b, CUSTOMER_AGENT);
    s.call(
        "GET",
        &format!("/service_agents/chatrooms/{}/read", rooms[1]),
        &stranger,
        None,
    )
    .await
    .assert_error(404, "not_found", "chatroom");

    let path = format!("/service_agents/chatrooms/{}/read", rooms[1]);
    let before = read_state(s, &tb, &rooms[1]).await;
    let body = json!({"messagechat_id": other_message["messagechat_id"]}).to_string();
    s.call("PUT", &path, &tb, Some(&body)).await.assert_error(
        400,
        "invalid_argument",
        "messagechat_id",
    );
    s.call("PUT", &path, &tb, Some(r#"{"messagechat_id": "nope"}"#))
        .await
        .assert_error(400, "invalid_argument", "messagechat_id");
    s.call("PUT", &path, &tb, Some(r#"{"messagechat": "x"}"#))
        .await
        .assert_error(400, "invalid_argument", "messagechat");
    s.call("PUT", &path, &tb, Some("[1]"))
        .await
        .assert_error(400, "invalid_argument", "body");
    s.call(
        "GET",
        "/service_agents/chatrooms/not-a-uuid/read",
        &tb,
        None,
    )
    .await
    .assert_error(400, "invalid_argument", "id");
    // Nothing moved.
    assert_eq!(read_state(s, &tb, &rooms[1]).await, before);
    // A customer token without an agent has no chatrooms of its own.
    s.call("GET", "/service_agents/unread", &admin, None)
        .await
        .assert_error(403, "permission_denied", "agent");
}
