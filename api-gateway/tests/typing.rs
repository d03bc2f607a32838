//! "Is typing" over the WebSocket: an agent types in its own chatroom, and every other
//! participant's socket subscribed to its own chatroom hears it, through whichever gateway
//! holds it; repeats are held back, a start lapses, nothing is stored.

#[macro_use]
mod support;

use std::time::Duration;

use api_gateway::auth::permission::CUSTOMER_AGENT;
use api_gateway::ws::WsSettings;
use serde_json::{Value, json};
use support::*;

/// The tests' WebSocket settings, with a start lapsing after a second.
fn typing_ws() -> WsSettings {
    WsSettings {
        typing_lapse: Duration::from_secs(1),
        ..test_ws_settings()
    }
}

against_both!(
    "typing", ws = super::typing_ws();
    typing_reaches_the_other_participants_in_their_own_rooms_through_any_gateway,
    typing_is_refused_for_what_is_not_the_agents_own,
);

fn typing(room: &str, state: &str) -> Value {
    json!({"type": "typing", "chatroom_id": room, "state": state})
}

/// The next `chatroom_typing` frame within `d` (other frames skipped).
async fn next_typing(ws: &mut WsClient, d: Duration) -> Option<Value> {
    ws.collect("chatroom_typing", 1, d).await.pop()
}

async fn typing_reaches_the_other_participants_in_their_own_rooms_through_any_gateway(s: &Stack) {
    let other_gateway = s.second_gateway().await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let (chat, rooms) = group(s, &admin, &[&a, &b, &c]).await;
    let token = |agent: &str| agent_token(&customer, agent, CUSTOMER_AGENT);

    let mut alice = s.ws(&token(&a)).await;
    alice.subscribe(&[format!("agent_id:{a}:chatroom")]).await;
    // Bob on the other gateway, on all his chatrooms; Carol here, narrowed to hers.
    let mut bob = other_gateway.ws(&token(&b)).await;
    bob.subscribe(&[format!("agent_id:{b}:chatroom")]).await;
    let mut carol = s.ws(&token(&c)).await;
    carol
        .subscribe(&[format!("agent_id:{c}:chatroom:{}", rooms[2])])
        .await;
    // A customer-level socket on the chatrooms: typing is for the participants only.
    let mut supervisor = other_gateway.ws(&admin).await;
    supervisor
        .subscribe(&[format!("customer_id:{customer}:chatroom")])
        .await;

    alice.send(typing(&rooms[0], "start")).await;
    let wait = Duration::from_secs(10);
    let heard = next_typing(&mut bob, wait).await.expect("bob hears alice");
    assert_eq!(
        heard,
        json!({"type": "chatroom_typing", "data": {"chat_id": chat, "chatroom_id": rooms[1], "agent_id": a, "state": "start"}})
    );
    let heard = next_typing(&mut carol, wait)
        .await
        .expect("carol hears alice");
    assert_eq!(heard["data"]["chatroom_id"], rooms[2].as_str());
    assert_eq!(heard["data"]["state"], "start");

    // A repeat within the second is held back; a stop goes at once.
    alice.send(typing(&rooms[0], "start")).await;
    alice.send(typing(&rooms[0], "stop")).await;
    let heard = next_typing(&mut bob, wait).await.unwrap();
    assert_eq!(
        heard["data"]["state"], "stop",
        "the repeat was not forwarded"
    );
    assert_eq!(
        next_typing(&mut carol, wait).await.unwrap()["data"]["state"],
        "stop"
    );

    // A start lapses (after a second here) without another one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice.send(typing(&rooms[0], "start")).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        next_typing(&mut bob, wait).await.unwrap()["data"]["state"],
        "start"
    );
    assert_eq!(
        next_typing(&mut bob, wait).await.unwrap()["data"]["state"],
        "stop"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // An agent who goes away while typing stops typing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice.send(typing(&rooms[0], "start")).await;
    assert_eq!(
        next_typing(&mut bob, wait).await.unwrap()["data"]["state"],
        "start"
    );
    let mut quiet = Vec::new();
    while let Some(frame) = alice.next_within(Duration::from_millis(300)).await {
        quiet.push(frame);
    }
    drop(alice);
    assert_eq!(
        next_typing(&mut bob, wait).await.unwrap()["data"]["state"],
        "stop"
    );

    // The typer's own socket and the supervisor's heard none of it.
    assert!(
        quiet.iter().all(|f| f["type"] != "chatroom_typing"),
        "{quiet:?}"
    );
    assert!(
        next_typing(&mut supervisor, Duration::from_millis(300))
            .await
            .is_none()
    );
    // Typing is not stored: nothing about it in the room's messages.
    assert!(
        s.list_all(
            &admin,
            &format!("/chatroommessages?chatroom_id={}", rooms[1])
        )
        .await
        .is_empty()
    );
}

async fn typing_is_refused_for_what_is_not_the_agents_own(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let (_, rooms) = group(s, &admin, &[&a, &b]).await;
    let mut alice = s.ws(&agent_token(&customer, &a, CUSTOMER_AGENT)).await;
    let mut bob = s.ws(&agent_token(&customer, &b, CUSTOMER_AGENT)).await;
    bob.subscribe(&[format!("agent_id:{b}:chatroom")]).await;

    let refused = |frame: &Value, code: &str, field: &str| {
        assert_eq!(frame["type"], "error", "{frame}");
        assert_eq!(frame["error"]["code"], code, "{frame}");
        let message = frame["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message:?} should name {field:?}");
    };
    let wait = Duration::from_secs(5);
    // Bob's chatroom is not Alice's; a made-up one is nobody's.
    alice.send(typing(&rooms[1], "start")).await;
    refused(
        &alice.next_within(wait).await.unwrap(),
        "not_found",
        "chatroom_id",
    );
    alice.send(typing(&new_id(), "start")).await;
    refused(
        &alice.next_within(wait).await.unwrap(),
        "not_found",
        "chatroom_id",
    );
    alice
        .send(json!({"type": "typing", "state": "start"}))
        .await;
    refused(
        &alice.next_within(wait).await.unwrap(),
        "invalid_argument",
        "chatroom_id",
    );
    alice.send(typing(&rooms[0], "typing")).await;
    refused(
        &alice.next_within(wait).await.unwrap(),
        "invalid_argument",
        "state",
    );
    // A customer-level token has no agent to type as.
    let mut admin_socket = s.ws(&admin).await;
    admin_socket.send(typing(&rooms[0], "start")).await;
    refused(
        &admin_socket.next_within(wait).await.unwrap(),
        "permission_denied",
        "typing",
    );
    // A deleted chatroom is gone.
    s.delete(&format!("/chatrooms/{}", rooms[0]), &admin)
        .await
        .ok();
    alice.send(typing(&rooms[0], "start")).await;
    refused(
        &alice.next_within(wait).await.unwrap(),
        "not_found",
        "chatroom_id",
    );
    // None of it reached Bob, and the connection is still open.
    assert!(
        next_typing(&mut bob, Duration::from_millis(300))
            .await
            .is_none()
    );
    alice.subscribe(&[format!("agent_id:{a}:chatroom")]).await;
}
