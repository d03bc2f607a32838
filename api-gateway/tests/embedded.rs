//! The embedded default as a newcomer runs it: data and idempotency keys survive a restart.
//! (The binary's key and admin token: tests/secrets.rs.)

mod support;

use support::*;

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = temp_data_dir();
    let token = customer_token(SEED_CUSTOMER);
    let (a, b) = (new_id(), new_id());

    let first = Stack::embedded_in(dir.clone(), false).await;
    let chat = first
        .post(
            "/chats",
            &token,
            &chat_body("normal", &a, &[&a, &b], "kept"),
        )
        .await
        .ok()
        .clone();
    first.stop().await;

    let second = Stack::embedded_in(dir.clone(), true).await;
    let id = chat["id"].as_str().unwrap();
    assert_eq!(
        second.get(&format!("/chats/{id}"), &token).await.ok(),
        &chat
    );
    assert_eq!(
        second.get("/chatrooms", &token).await.ok()["result"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The pair is still taken after the restart.
    second
        .post(
            "/chats",
            &token,
            &chat_body("normal", &b, &[&a, &b], "again"),
        )
        .await
        .assert_error(409, "conflict", "participant_ids");
}

/// Idempotency keys live with the data, not in gateway memory: a retry after a restart still
/// returns the first result.
#[tokio::test]
async fn idempotency_keys_survive_a_restart() {
    let dir = temp_data_dir();
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let body = chat_body("group", &a, &[&a, &b], "once");

    let first = Stack::embedded_in(dir.clone(), false).await;
    let chat = post(&first, &token, "/chats", body.clone())
        .await
        .ok()
        .clone();
    let send = serde_json::json!({"chat_id": chat["id"], "source": {"type": "agent", "target": a}, "text": "hi"}).to_string();
    let message = post(&first, &token, "/chatmessages", send.clone())
        .await
        .ok()
        .clone();
    first.stop().await;

    let second = Stack::embedded_in(dir, true).await;
    assert_eq!(post(&second, &token, "/chats", body).await.ok(), &chat);
    assert_eq!(
        post(&second, &token, "/chatmessages", send).await.ok(),
        &message
    );
    assert_eq!(
        second.get("/chats", &token).await.ok()["result"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let listed = second
        .get(
            &format!("/chatmessages?chat_id={}", chat["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(listed.ok()["result"].as_array().unwrap().len(), 1);
}

async fn post(s: &Stack, token: &str, path: &str, body: String) -> Reply {
    let req = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .header("Idempotency-Key", "restart-key")
        .body(body);
    s.send(req).await
}
