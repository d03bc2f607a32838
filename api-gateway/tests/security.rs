//! Hostile input against both ways of running: another tenant's ids in every path, body field
//! and filter; forged, expired, unsigned and algorithm-confused tokens, and another tenant's
//! valid token, on every method and the WebSocket; deeply nested and oversized JSON; junk in
//! query strings. Each is refused with the right status and the error JSON, and nothing
//! changes.

#[macro_use]
mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

against_both!(
    "security";
    another_tenants_messages_are_out_of_reach_everywhere,
    bad_tokens_are_refused_on_every_method_and_the_websocket,
    another_tenants_valid_token_finds_nothing_on_every_method_and_the_websocket,
    deeply_nested_and_oversized_json_is_refused,
    junk_in_query_strings_is_refused_naming_the_parameter,
);

/// What a tenant has: a chat of two agents with one message, the two chatrooms and copies.
struct Victim {
    token: String,
    token_customer: String,
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
        token_customer: customer,
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

/// Base64url without padding, as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Standard base64 (with padding) to bytes, for the key below.
fn b64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A throwaway 1024-bit RSA key (PKCS#1 DER), made for this test only: a token genuinely
/// signed with RS256.
const TEST_RSA_KEY: &str = "
MIICXgIBAAKBgQCrDSw/2p1Bml1PAyxSXo/c5L7YgrZW//wUPvmt8w2m+E6y/DipKQqNrQlKvP8rngMhA7d7QzUsqgJsydhj
wItKwZ8HZGT39IZB56SG2Ynly5lK7ZyxMXmzlw4xMVNJmr7bHF+hSJVZ28ohZPWTmFZOJTjFA2ONyCPdbc+w8GCtrwIDAQAB
AoGAGkZcvLZFH7WpjaCMJ171NFZC5pk1jymlPCrsSYcjWrmbxSyvO3TddSPWYI+llrqf+mtKvPl26pR26OUcgz4pZyMK9Dzn
a21myGBNkFr5VLYuQXpd/DEjQvf32Fritn10Q0CQ6uHpMvLqrf/1fiqdnROLvyRaEsrgMOdOYXFkBEkCQQDRw10OoD1liJ+P
lzlX3Smu/Ns8361oNBQxL7ANJhO6r8EljliJ8RyLxfxHbvihNILbz4tVH68akig4uhd4XyEbAkEA0MFdL2dkw3jfK1+nDlV+
aA/Er46KaFKdTo4P9f6jppGjnnh/eT33ErB70GkhFBOWNgnFPGlF7G5+UU3UrLxC/QJBAKgzyEMaKyFn1MsHsGvMZMh06jh+
BEcyu55VZw6kId3pYTAEXOr/9KwALrP5QFXEDcrFOi0gIwFjge07C+byIVECQQCKkS+3vZvnHJ6WfeG35AwKKx1VovpAkUYV
1LrHgQVEFbxT/owvAHC2mSs2hfIND4tPx2CC3yYo8JcshMs89aJJAkEAliXdm48yVEi1n7hZOAp/vDaYEfSGx+GMj48QOnsj
Mh/uUGTqd0g6MMsyoW7vCed406bTqSI1gGhDddlK2jOmtQ==";

/// A token with exactly this header and these claims, signed (HMAC-SHA256) with `secret`
/// whatever the header says; `None`: no signature at all.
fn forge(header: &Value, claims: &Value, secret: Option<&[u8]>) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = match secret {
        Some(secret) => jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap(),
        None => String::new(),
    };
    format!("{message}.{signature}")
}

/// The gateway's claims for an admin of `customer`, expiring at `exp`.
fn admin_claims(customer: &str, exp: i64) -> Value {
    json!({"customer": json!({"id": customer}).to_string(), "exp": exp})
}

/// Tokens that must never get in, each for the victim's own customer: named for the messages.
fn bad_tokens(customer: &str) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let claims = admin_claims(customer, now + 3600);
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let rsa = EncodingKey::from_rsa_der(&b64_decode(TEST_RSA_KEY));
    vec![
        (
            "forged signature (another secret)",
            forge(&hs256, &claims, Some(b"not-the-gateways-secret")),
        ),
        (
            "expired",
            forge(&hs256, &admin_claims(customer, now - 60), Some(SECRET)),
        ),
        (
            "alg none, unsigned",
            forge(&json!({"alg": "none", "typ": "JWT"}), &claims, None),
        ),
        (
            "alg none, with an HMAC of the secret",
            forge(&json!({"alg": "none", "typ": "JWT"}), &claims, Some(SECRET)),
        ),
        (
            "claims RS256, HMAC-signed with the secret (algorithm confusion)",
            forge(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims,
                Some(SECRET),
            ),
        ),
        (
            "signed with RS256",
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &rsa).unwrap(),
        ),
        (
            "HS256 keyed with the RSA key's bytes",
            forge(&hs256, &claims, Some(&b64_decode(TEST_RSA_KEY))),
        ),
    ]
}

/// `GET /v1.0/ws` with `token`: the HTTP status and body of a refused upgrade (None when the
/// socket opened).
async fn ws_refusal(s: &Stack, token: &str) -> Option<(u16, Value)> {
    let url = format!("{}/ws?token={token}", s.base.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_deref().unwrap_or_default();
            Some((
                res.status().as_u16(),
                serde_json::from_slice(body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn bad_tokens_are_refused_on_every_method_and_the_websocket(s: &Stack) {
    let v = victim(s).await;
    let before = snapshot(s, &v).await;
    let customer = v.token_customer.clone();
    let send = json!({"chat_id": v.chat_id, "source": {"type": "agent", "target": v.owner},
                      "type": "normal", "text": "forged"})
    .to_string();
    let (a, b) = (new_id(), new_id());
    let create = chat_body("group", &a, &[&a, &b], "forged");
    let chat = format!("/chats/{}", v.chat_id);
    let mut refused = 0;
    for (what, token) in bad_tokens(&customer) {
        let bearer = s
            .send(s.http.get(format!("{}{chat}", s.base)).bearer_auth(&token))
            .await;
        let attempts = [
            ("GET (query)", s.get(&chat, &token).await),
            ("GET (Bearer)", bearer),
            ("GET list", s.get("/chats", &token).await),
            ("POST chat", s.post("/chats", &token, &create).await),
            (
                "POST chatmessage",
                s.post("/chatmessages", &token, &send).await,
            ),
            (
                "PUT chat",
                s.put(&chat, &token, r#"{"name": "renamed"}"#).await,
            ),
            ("DELETE chat", s.delete(&chat, &token).await),
            (
                "DELETE chatmessage",
                s.delete(&format!("/chatmessages/{}", v.message_id), &token)
                    .await,
            ),
        ];
        for (method, reply) in &attempts {
            assert_eq!(reply.status, 401, "{what}: {method}: {}", reply.text);
            assert_eq!(
                reply.json["error"]["code"], "unauthenticated",
                "{what}: {method}"
            );
            let message = reply.json["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("token: "),
                "{what}: {method}: {message}"
            );
            refused += 1;
        }
        // The WebSocket is refused before the upgrade, with the same error JSON.
        let (status, body) = ws_refusal(s, &token)
            .await
            .unwrap_or_else(|| panic!("{what}: the WebSocket opened"));
        assert_eq!(status, 401, "{what}: ws: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{what}: ws");
        refused += 1;
    }
    // The control: the victim's own token does open the socket.
    assert!(ws_refusal(s, &v.token).await.is_none());
    assert_eq!(refused, 7 * 9);
    assert_eq!(
        snapshot(s, &v).await,
        before,
        "the victim's data is unchanged"
    );
    let chats = s.get("/chats?page_size=100", &v.token).await;
    assert_eq!(
        chats.ok()["result"].as_array().unwrap().len(),
        1,
        "no chat made"
    );
}

async fn another_tenants_valid_token_finds_nothing_on_every_method_and_the_websocket(s: &Stack) {
    let v = victim(s).await;
    let before = snapshot(s, &v).await;
    let other = customer_token(&new_id());
    let chat = format!("/chats/{}", v.chat_id);
    let (room, copy) = (&v.rooms[0], &v.copies[0]);
    let send = json!({"chat_id": v.chat_id, "source": {"type": "agent", "target": v.owner},
                      "type": "normal", "text": "intrusion"})
    .to_string();
    let attempts = [
        ("GET chat", s.get(&chat, &other).await),
        (
            "GET chatroom",
            s.get(&format!("/chatrooms/{room}"), &other).await,
        ),
        (
            "POST participant",
            s.post(
                &format!("{chat}/participant_ids"),
                &other,
                &json!({"participant_id": new_id()}).to_string(),
            )
            .await,
        ),
        (
            "POST chatmessage",
            s.post("/chatmessages", &other, &send).await,
        ),
        (
            "PUT chat",
            s.put(&chat, &other, r#"{"name": "taken"}"#).await,
        ),
        (
            "PUT chatroom",
            s.put(
                &format!("/chatrooms/{room}"),
                &other,
                r#"{"name": "taken"}"#,
            )
            .await,
        ),
        ("DELETE chat", s.delete(&chat, &other).await),
        (
            "DELETE chatroom",
            s.delete(&format!("/chatrooms/{room}"), &other).await,
        ),
        (
            "DELETE chatroommessage",
            s.delete(&format!("/chatroommessages/{copy}"), &other).await,
        ),
    ];
    for (what, reply) in &attempts {
        assert_eq!(reply.status, 404, "{what}: {}", reply.text);
        assert_eq!(reply.json["error"]["code"], "not_found", "{what}");
    }
    // The socket opens (the token is valid), but the victim's topics are refused and nothing
    // of theirs arrives.
    let mut ws = s.ws(&other).await;
    for topic in [
        format!("customer_id:{}:chat", v.token_customer),
        format!("customer_id:{}:messagechat:{}", v.token_customer, v.chat_id),
        format!("agent_id:{}:chatroom", v.owner),
    ] {
        ws.send(json!({"type": "subscribe", "topics": [topic]}))
            .await;
        let reply = ws
            .next_within(Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(reply["type"], "error", "{topic}: {reply}");
        assert_eq!(
            reply["error"]["code"], "permission_denied",
            "{topic}: {reply}"
        );
    }
    assert_eq!(
        snapshot(s, &v).await,
        before,
        "the victim's data is unchanged"
    );
    // What the victim does next never reaches the other tenant's socket.
    s.post("/chatmessages", &v.token, &send).await.ok();
    assert_eq!(ws.next_within(Duration::from_millis(500)).await, None);
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

/// A body that trickles in (a byte every 300 ms, so it would take minutes) does not hold its
/// share of the body budget for ever: after `BODY_READ_TIMEOUT` the request is 408 with the
/// error JSON naming `body`, the budget is whole again, and nothing was written.
#[tokio::test]
async fn a_body_that_trickles_in_is_a_408_and_gives_its_budget_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Stack::embedded().await;
    let token = customer_token(&new_id());
    let addr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/v1.0");
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    // Headers promising 1,000 bytes, then the body a byte at a time.
    writer
        .write_all(
            format!(
                "POST /v1.0/chats?token={token} HTTP/1.1\r\nHost: {addr}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in format!("{{\"name\": \"{}\"}}", "x".repeat(985)).bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        api_gateway::json::BODY_BUDGET
            .reserve(api_gateway::json::MAX_BUFFERED_BODY_BYTES)
            .is_none(),
        "the body being read holds its share meanwhile"
    );
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        api_gateway::json::BODY_READ_TIMEOUT + Duration::from_secs(5),
        reader.read_to_end(&mut reply),
    )
    .await;
    let took = started.elapsed();
    trickle.abort();
    assert!(read.is_ok(), "answered and closed within the deadline");
    let reply = String::from_utf8_lossy(&reply);
    println!("a trickling body was answered after {took:?}");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let body: Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("body: "),
        "{body}"
    );
    assert!(
        took >= api_gateway::json::BODY_READ_TIMEOUT - Duration::from_secs(1),
        "{took:?}"
    );
    let whole = api_gateway::json::BODY_BUDGET.reserve(api_gateway::json::MAX_BUFFERED_BODY_BYTES);
    assert!(whole.is_some(), "the budget is whole again");
    drop(whole);
    let listed = s.get("/chats", &token).await;
    assert_eq!(listed.ok()["result"], json!([]), "nothing written");
}
