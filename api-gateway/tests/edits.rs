//! Edits of chatmessages (customer level) and of an agent's own chatroommessages: the message
//! and every live copy change together, with one event; the agent rule on every path.

#[macro_use]
mod support;

use std::time::Duration;

use api_gateway::auth::permission::{CUSTOMER_ADMIN, CUSTOMER_AGENT};
use serde_json::{Value, json};
use support::*;

against_both!(
    "edits";
    an_edit_changes_the_message_and_every_live_copy_with_one_event,
    only_the_agent_who_sent_a_message_may_edit_it_on_every_path,
    edits_are_checked_as_creation_is_and_write_nothing_when_refused,
);

/// The copy of `message` in `room`.
async fn copy_in(s: &Stack, admin: &str, room: &str, message: &str) -> Value {
    let copies = s
        .list_all(admin, &format!("/chatroommessages?chatroom_id={room}"))
        .await;
    copies
        .into_iter()
        .find(|c| c["messagechat_id"] == message)
        .unwrap_or_else(|| panic!("no copy of {message} in {room}"))
}

async fn an_edit_changes_the_message_and_every_live_copy_with_one_event(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let (chat, rooms) = group(s, &admin, &[&a, &b, &c]).await;
    let body = json!({"chat_id": chat, "source": {"type": "agent", "target": a}, "text": "helo",
                      "medias": [{"type": "link", "link_url": "https://example.com/a"}]});
    let message = s
        .post("/chatmessages", &admin, &body.to_string())
        .await
        .ok()
        .clone();
    let id = message["id"].as_str().unwrap();
    // c's copy deleted on its own: it stays deleted through the edit.
    let c_copy = copy_in(s, &admin, &rooms[2], id).await;
    s.delete(
        &format!("/chatroommessages/{}", c_copy["id"].as_str().unwrap()),
        &admin,
    )
    .await
    .ok();

    let mut ws = s.ws(&admin).await;
    ws.subscribe(&[
        format!("customer_id:{customer}:messagechat:{chat}"),
        format!("customer_id:{customer}:messagechatroom"),
    ])
    .await;
    let edited = s
        .put(
            &format!("/chatmessages/{id}"),
            &admin,
            r#"{"text": "hello"}"#,
        )
        .await
        .ok()
        .clone();
    assert_eq!(edited["text"], "hello");
    assert_eq!(edited["medias"], message["medias"], "left out: kept");
    assert_eq!(edited["tm_create"], message["tm_create"]);
    assert!(
        edited["tm_update"].as_str() > message["tm_update"].as_str(),
        "{edited}"
    );
    assert_eq!(
        s.get(&format!("/chatmessages/{id}"), &admin).await.ok(),
        &edited
    );

    // Both live copies changed with it, at the same time.
    for room in &rooms[..2] {
        let copy = copy_in(s, &admin, room, id).await;
        assert_eq!(copy["text"], "hello");
        assert_eq!(copy["tm_update"], edited["tm_update"]);
        assert_eq!(copy["tm_delete"], common::time::LIVE);
    }
    let c_after = s
        .get(
            &format!("/chatroommessages/{}", c_copy["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .ok()
        .clone();
    assert_ne!(c_after["tm_delete"], common::time::LIVE);
    assert!(
        s.list_all(
            &admin,
            &format!("/chatroommessages?chatroom_id={}", rooms[2])
        )
        .await
        .is_empty()
    );

    // One change: the message's frame, and one per live copy.
    let updated = ws
        .collect("messagechat_updated", 1, Duration::from_secs(10))
        .await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["data"], edited);
    let copies = ws
        .collect("messagechatroom_updated", 2, Duration::from_secs(10))
        .await;
    let mut in_rooms: Vec<&str> = copies
        .iter()
        .map(|f| f["data"]["chatroom_id"].as_str().unwrap())
        .collect();
    in_rooms.sort_unstable();
    let mut live_rooms = vec![rooms[0].as_str(), rooms[1].as_str()];
    live_rooms.sort_unstable();
    assert_eq!(in_rooms, live_rooms);
    for f in &copies {
        assert_eq!(f["data"]["text"], "hello");
        assert_eq!(f["data"]["messagechat_id"], id);
    }
    assert!(
        ws.next_within(Duration::from_millis(300)).await.is_none(),
        "nothing more"
    );

    // Medias replaced as a whole; the text stays.
    let edited = s
        .put(&format!("/chatmessages/{id}"), &admin, r#"{"medias": []}"#)
        .await
        .ok()
        .clone();
    assert_eq!(edited["medias"], json!([]));
    assert_eq!(edited["text"], "hello");
}

async fn only_the_agent_who_sent_a_message_may_edit_it_on_every_path(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let (alice, bob) = (
        agent_token(&customer, &a, CUSTOMER_AGENT),
        agent_token(&customer, &b, CUSTOMER_AGENT),
    );
    let (chat, rooms) = group(s, &admin, &[&a, &b]).await;
    let posted = s
        .post(
            "/service_agents/chatroommessages",
            &alice,
            &json!({"chatroom_id": rooms[0], "text": "from alice"}).to_string(),
        )
        .await
        .ok()
        .clone();
    let message = posted["messagechat_id"].as_str().unwrap();
    let alice_copy = posted["id"].as_str().unwrap();
    let bob_copy = copy_in(s, &admin, &rooms[1], message).await;
    let bob_copy = bob_copy["id"].as_str().unwrap();

    // The sender edits through her own copy; every copy changes.
    let edited = s
        .put(
            &format!("/service_agents/chatroommessages/{alice_copy}"),
            &alice,
            r#"{"text": "from alice, edited"}"#,
        )
        .await
        .ok()
        .clone();
    assert_eq!(edited["id"], alice_copy);
    assert_eq!(edited["text"], "from alice, edited");
    assert_eq!(
        copy_in(s, &admin, &rooms[1], message).await["text"],
        "from alice, edited"
    );

    // Bob may not edit it through his own copy (403), nor reach Alice's copy (404).
    s.put(
        &format!("/service_agents/chatroommessages/{bob_copy}"),
        &bob,
        r#"{"text": "bob was here"}"#,
    )
    .await
    .assert_error(403, "permission_denied", "chatroommessage");
    s.put(
        &format!("/service_agents/chatroommessages/{alice_copy}"),
        &bob,
        r#"{"text": "bob was here"}"#,
    )
    .await
    .assert_error(404, "not_found", "chatroommessage");
    // A system message is nobody's to edit as an agent.
    let system = s
        .post(
            "/chatmessages",
            &admin,
            &json!({"chat_id": chat, "type": "system", "source": {"type": "tel", "target": "+15550100"}, "text": "call ended"})
                .to_string(),
        )
        .await
        .ok()
        .clone();
    let system_copy = copy_in(s, &admin, &rooms[0], system["id"].as_str().unwrap()).await;
    s.put(
        &format!(
            "/service_agents/chatroommessages/{}",
            system_copy["id"].as_str().unwrap()
        ),
        &alice,
        r#"{"text": "x"}"#,
    )
    .await
    .assert_error(403, "permission_denied", "chatroommessage");
    // Roles: the customer-level edit needs admin or manager rights; the agent one an agent.
    s.put(
        &format!("/chatmessages/{message}"),
        &alice,
        r#"{"text": "x"}"#,
    )
    .await
    .assert_error(403, "permission_denied", "");
    s.put(
        &format!("/service_agents/chatroommessages/{alice_copy}"),
        &admin,
        r#"{"text": "x"}"#,
    )
    .await
    .assert_error(403, "permission_denied", "");
    // Another tenant's admin, or an agent of another tenant with the same id, finds nothing.
    let stranger = new_id();
    s.put(
        &format!("/chatmessages/{message}"),
        &customer_token(&stranger),
        r#"{"text": "x"}"#,
    )
    .await
    .assert_error(404, "not_found", "chatmessage");
    let impostor = agent_token(&stranger, &a, CUSTOMER_ADMIN);
    s.put(
        &format!("/service_agents/chatroommessages/{alice_copy}"),
        &impostor,
        r#"{"text": "x"}"#,
    )
    .await
    .assert_error(404, "not_found", "chatroommessage");
    // None of the refused edits changed anything.
    let now = s
        .get(&format!("/chatmessages/{message}"), &admin)
        .await
        .ok()
        .clone();
    assert_eq!(now["text"], "from alice, edited");
    assert_eq!(now["tm_update"], edited["tm_update"]);
}

async fn edits_are_checked_as_creation_is_and_write_nothing_when_refused(s: &Stack) {
    let customer = new_id();
    let admin = customer_token(&customer);
    let a = new_id();
    let (chat, _) = group(s, &admin, &[&a, &new_id()]).await;
    let body = json!({"chat_id": chat, "source": {"type": "agent", "target": a}, "text": "hi"});
    let message = s
        .post("/chatmessages", &admin, &body.to_string())
        .await
        .ok()
        .clone();
    let path = format!("/chatmessages/{}", message["id"].as_str().unwrap());
    for (body, field) in [
        (json!({"text": "x".repeat(65_537)}), "text"),
        (json!({"text": ""}), "text"),
        (json!({"text": "a\u{0}b"}), "text"),
        (
            json!({"medias": [{"type": "link", "link_url": "ftp://x"}]}),
            "medias[0]",
        ),
        (json!({"text": 5}), "text"),
    ] {
        s.put(&path, &admin, &body.to_string())
            .await
            .assert_error(400, "invalid_argument", field);
    }
    assert_eq!(s.get(&path, &admin).await.ok(), &message);
    s.put(
        &format!("/chatmessages/{}", new_id()),
        &admin,
        r#"{"text": "x"}"#,
    )
    .await
    .assert_error(404, "not_found", "chatmessage");
    s.delete(&path, &admin).await.ok();
    s.put(&path, &admin, r#"{"text": "too late"}"#)
        .await
        .assert_error(404, "not_found", "chatmessage");
}
