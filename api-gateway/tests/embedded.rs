//! The embedded default as a newcomer runs it: data survives a restart, the binary prints a
//! working token, and `api-gateway token` mints tokens the gateway accepts.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// Runs the real binary with no configuration but a data directory and a free port, reads the
/// token it prints, and uses it.
#[tokio::test]
async fn the_binary_starts_with_no_configuration_and_prints_a_working_token() {
    let dir = temp_data_dir();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", &dir)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start api-gateway");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let token = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the binary prints a token");
        printed.push(line.clone());
        if line.starts_with("eyJ") {
            break line;
        }
    };
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{port}/v1.0"))),
        "{printed:?}"
    );

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1.0/chats?token={token}");
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);

    // `api-gateway token` signs with the same key (kept in DATA_DIR).
    let out = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .env_clear()
        .env("DATA_DIR", &dir)
        .args([
            "token",
            "--customer-id",
            SEED_CUSTOMER,
            "--agent-id",
            AGENT_1,
            "--permission",
            "manager",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let res = http
        .get(format!("http://127.0.0.1:{port}/v1.0/chats"))
        .bearer_auth(&minted)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // And an agent-permission token from it is refused on customer endpoints.
    let out = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .env_clear()
        .env("DATA_DIR", &dir)
        .args(["token", "--agent-id", AGENT_1, "--permission", "agent"])
        .output()
        .unwrap();
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let res = http
        .get(format!("http://127.0.0.1:{port}/v1.0/chats"))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
