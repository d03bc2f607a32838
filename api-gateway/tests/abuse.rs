//! The gateway under a client that misbehaves on purpose: floods of junk tokens keep its
//! memory flat, one caller's rate cannot be multiplied by writing its token differently, an
//! address that keeps failing to authenticate is turned away before its tokens are checked,
//! and a caller's WebSockets and their frames are capped.

mod support;

use std::time::Duration;

use api_gateway::rate_limit::RateLimit;
use futures_util::StreamExt;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_api-gateway");

/// Resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A junk token of `len` characters, different for each `i`, shaped like a JWT (three
/// base64url parts), so that a short one goes all the way to signature checking.
fn junk_token(i: usize, len: usize) -> String {
    let head = format!("eyJhbGciOiJIUzI1NiJ9.{i:08}");
    format!(
        "{head}{}.c2ln",
        "A".repeat(len.saturating_sub(head.len() + 5))
    )
}

/// 10,000 requests with distinct 64 KiB tokens, then 10,000 with distinct 7 KiB ones that
/// must be verified to be refused: the gateway's memory stays where it was. (Before, every
/// token presented got a rate-limit bucket keyed by its text: hundreds of megabytes.) Failed
/// authentications are not limited here, so that every junk token is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_junk_tokens_keeps_the_gateways_memory_flat() {
    let dir = temp_data_dir();
    let free = || testkit::ops::free_addr().to_string();
    let (listen, metrics) = (free(), free());
    let log = dir.with_extension("log");
    let gateway = testkit::ops::spawn(
        BIN,
        &[],
        &[
            ("DATA_DIR", dir.to_string_lossy().into_owned()),
            ("LISTEN_ADDR", listen.clone()),
            ("METRICS_ADDR", metrics),
            ("AUTH_FAILURES_PER_SECOND", "0".into()),
            ("RUST_LOG", "warn".into()),
        ],
        &log,
    );
    let pid = gateway.0.id();
    let http = reqwest::Client::new();
    let url = format!("http://{listen}/v1.0/chats");
    for _ in 0..100 {
        if http.get(&url).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let flood = |count: usize, len: usize, offset: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            futures_util::stream::iter(0..count)
                .map(|i| {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        let res = http
                            .get(&url)
                            .bearer_auth(junk_token(offset + i, len))
                            .send()
                            .await
                            .unwrap();
                        res.status().as_u16()
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<u16>>()
                .await
        }
    };
    // Warm up the gateway's buffers and pools first.
    assert!(flood(500, 64 * 1024, 0).await.iter().all(|s| *s == 401));
    let before = rss_kib(pid);
    let long = flood(10_000, 64 * 1024, 1_000_000).await;
    let after_long = rss_kib(pid);
    let short = flood(10_000, 7 * 1024, 2_000_000).await;
    let after_short = rss_kib(pid);
    println!(
        "gateway RSS: {before} KiB before, {after_long} KiB after 10,000 distinct 64 KiB tokens, \
         {after_short} KiB after 10,000 distinct 7 KiB tokens"
    );
    assert!(long.iter().chain(&short).all(|s| *s == 401));
    // 10,000 tokens of 7 KiB kept anywhere would be 70 MiB; of 64 KiB, 640 MiB.
    assert!(
        after_short < before + 16 * 1024,
        "RSS grew from {before} to {after_short} KiB"
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
}

/// One caller's allowance, however its token is written: in the query plain, with a leading
/// `+` (a space) or `%20`, percent-encoded, or as a Bearer header. (Before, each spelling was a
/// bucket of its own: an unlimited rate for one token.)
#[tokio::test]
async fn spellings_of_one_token_share_one_bucket() {
    let limit = RateLimit {
        per_second: 1,
        burst: 4,
    };
    let stack = Stack::embedded_limited(temp_data_dir(), true, limit).await;
    let token = customer_token(&new_id());
    let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    let url = |query: &str| format!("{}/chats?{query}", stack.base);
    let spellings = [
        stack.http.get(url(&format!("token={token}"))),
        stack.http.get(url(&format!("token=+{token}"))),
        stack.http.get(url(&format!("token=%20{token}%20"))),
        stack.http.get(url(&format!("token={encoded}"))),
    ];
    for request in spellings {
        stack.send(request).await.ok();
    }
    let bearer = stack
        .send(stack.http.get(url("")).bearer_auth(format!(" {token}")))
        .await;
    bearer.assert_error(429, "rate_limited", "retry after");
}

/// An address failing to authenticate gets its burst of 401s, then 429 before any token it
/// sends is checked: a new valid token from it too, until its allowance refills. A token it
/// used before keeps working, and other addresses are not affected.
#[tokio::test]
async fn an_address_that_keeps_failing_to_authenticate_is_turned_away() {
    let limits = Limits {
        failures: RateLimit {
            per_second: 1,
            burst: 5,
        },
        // Client addresses as a load balancer would name them.
        client_ip_header: Some(http::HeaderName::from_static("x-forwarded-for")),
        ..Limits::default()
    };
    let stack = Stack::embedded_limited(temp_data_dir(), true, limits).await;
    let customer = new_id();
    let known = customer_token(&customer);
    let from = |addr: &str, token: &str| {
        stack
            .http
            .get(format!("{}/chats", stack.base))
            .header("x-forwarded-for", format!("198.51.100.1, {addr}"))
            .bearer_auth(token)
    };
    stack.send(from("203.0.113.7", &known)).await.ok();
    for i in 0..5 {
        let reply = stack.send(from("203.0.113.7", &format!("junk-{i}"))).await;
        reply.assert_error(401, "unauthenticated", "token");
    }
    let refused = stack.send(from("203.0.113.7", "junk-6")).await;
    refused.assert_error(429, "rate_limited", "retry after");
    assert_eq!(refused.headers["retry-after"], "1");
    let fresh = agent_token(&customer, &new_id(), 0x20);
    stack
        .send(from("203.0.113.7", &fresh))
        .await
        .assert_error(429, "rate_limited", "retry after");
    // No token at all counts as a failure too.
    let bare = stack
        .send(
            stack
                .http
                .get(format!("{}/chats", stack.base))
                .header("x-forwarded-for", "203.0.113.7"),
        )
        .await;
    bare.assert_error(429, "rate_limited", "retry after");
    stack.send(from("203.0.113.7", &known)).await.ok();
    stack.send(from("203.0.113.8", &fresh)).await.ok();
    stack
        .send(from("203.0.113.8", "junk"))
        .await
        .assert_error(401, "unauthenticated", "token");
    // Once its allowance refills, the address is heard again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    stack
        .send(from(
            "203.0.113.7",
            &agent_token(&customer, &new_id(), 0x20),
        ))
        .await
        .ok();
}

/// A token over 8 KiB is refused as too long (in the query or a header), whatever it holds.
#[tokio::test]
async fn over_long_tokens_are_refused_by_their_length() {
    let stack = Stack::embedded().await;
    let long = "x".repeat(api_gateway::auth::MAX_TOKEN_LEN + 1);
    stack
        .get("/chats", &long)
        .await
        .assert_error(401, "unauthenticated", "too long");
    stack
        .send(
            stack
                .http
                .get(format!("{}/chats", stack.base))
                .bearer_auth(&long),
        )
        .await
        .assert_error(401, "unauthenticated", "too long");
}

/// A caller holds at most so many sockets (429 on the next upgrade, free again once one
/// closes), and a socket's frames beyond its rate are answered with an error frame, not
/// handled.
#[tokio::test]
async fn sockets_per_caller_and_frames_per_socket_are_capped() {
    let ws = api_gateway::ws::WsSettings {
        max_sockets_per_caller: 2,
        frames_per_second: 1,
        frame_burst: 3,
        ..test_ws_settings()
    };
    let stack = Stack::embedded_with_ws(ws).await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut first = stack.ws(&admin).await;
    let second = stack.ws(&admin).await;
    let url = format!(
        "{}/ws?token={admin}",
        stack.base.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 429);
            let body: serde_json::Value =
                serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("at most 2 WebSockets"),
                "{body}"
            );
        }
        other => panic!("a third socket opened: {:?}", other.map(|_| ())),
    }
    // Another caller of the tenant is not affected.
    let _other = stack.ws(&agent_token(&customer, &new_id(), 0x20)).await;
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let _third = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((socket, _)) => break socket,
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "never freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let topic = format!("customer_id:{customer}:chat");
    for _ in 0..3 {
        first.subscribe(std::slice::from_ref(&topic)).await;
    }
    first
        .send_text(&serde_json::json!({"type": "subscribe", "topics": [topic]}).to_string())
        .await;
    let frame = first.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["error"]["code"], "rate_limited", "{frame}");
    assert!(
        frame["error"]["message"]
            .as_str()
            .unwrap()
            .contains("frames a second"),
        "{frame}"
    );
}
