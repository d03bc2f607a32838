//! The published OpenAPI document: served without a token, lists every endpoint the gateway
//! routes (and nothing it does not), and describes the responses the gateway really sends:
//! every operation's success, driven once with valid data, and errors of each kind.
//! `scripts/api-fuzz` then checks it against the live gateway with schemathesis.

mod support;

use serde_json::{Value, json};
use support::*;

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

async fn document(s: &Stack) -> Value {
    let reply = s.send(s.http.get(format!("{}/openapi.json", s.base))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "served as JSON"
    );
    reply.json
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_served_without_a_token() {
    let s = Stack::embedded().await;
    let doc = document(&s).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "VoIPbin chat API");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["token"]["in"], "query");
    // Every operation documents the error JSON, and creates take an Idempotency-Key.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            operations += 1;
            for status in ["400", "401", "403", "404", "429", "503"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path}: {status}"
                );
            }
            let takes_key = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
            assert_eq!(takes_key, method == "post", "{method} {path}");
        }
    }
    assert_eq!(operations, 45, "every operation of the contract");
    // The request a webhook receives is documented too (OpenAPI 3.1 `webhooks`).
    let delivery = &doc["webhooks"]["chatEvent"]["post"];
    let headers: Vec<&str> = delivery["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header" && p["required"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "X-VoIPBIN-Signature"
        ]
    );
    let frame = &delivery["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(frame["required"], json!(["type", "data"]));
    assert_eq!(
        frame["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        13
    );
}

/// Calls every documented operation with well-formed ids: none may fall through to the
/// router's "no such endpoint" or "method not allowed", so the document lists nothing the
/// gateway does not serve. Undocumented methods on documented paths are 405.
#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else() {
    let s = Stack::embedded().await;
    let doc = document(&s).await;
    let admin = customer_token(&new_id());
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .trim_start_matches("/v1.0")
            .replace("{id}", &new_id())
            .replace("{participant_id}", &new_id())
            .replace("{delivery_id}", &new_id());
        for method in METHODS {
            let reply = s
                .call(&method.to_uppercase(), &concrete, &admin, Some("{}"))
                .await;
            if item.get(method).is_some() {
                assert!(
                    reply.status != 405
                        && !reply.text.contains("no such endpoint")
                        && reply.status < 500,
                    "{method} {path}: {} {}",
                    reply.status,
                    reply.text
                );
                checked.push(format!("{method} {path}"));
            } else {
                assert_eq!(reply.status, 405, "{method} {path} is not documented");
            }
        }
    }
    assert_eq!(checked.len(), 45, "{checked:#?}");
}

/// A small JSON Schema check for what the document uses: `$ref`, `type` (with `null`),
/// `properties`, `required`, `items`, `oneOf`, `enum`. Returns the first mismatch.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        let matching = variants
            .iter()
            .filter(|v| conforms(doc, v, value, at).is_ok())
            .count();
        return if matching == 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches {matching} of oneOf"))
        };
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} not in {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let integer_as_number = actual == "integer" && types.contains(&"number");
    if !types.contains(&actual) && !integer_as_number {
        return Err(format!("{at}: {actual}, expected {types:?}"));
    }
    match value {
        Value::Object(map) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !map.contains_key(name) {
                    return Err(format!("{at}.{name}: required, missing"));
                }
            }
            let properties = schema["properties"].as_object();
            for (name, v) in map {
                match properties.and_then(|p| p.get(name)) {
                    Some(s) => conforms(doc, s, v, &format!("{at}.{name}"))?,
                    None => return Err(format!("{at}.{name}: not in the schema")),
                }
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| conforms(doc, &schema["items"], v, &format!("{at}[{i}]"))),
        _ => Ok(()),
    }
}

/// The schema of `method path`'s answer with `status`.
fn response_schema(doc: &Value, method: &str, path: &str, status: &str) -> Value {
    doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"].clone()
}

#[track_caller]
fn assert_conforms(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let status = reply.status.to_string();
    let schema = response_schema(doc, method, path, &status);
    assert!(
        !schema.is_null(),
        "{method} {path}: {status} is not documented"
    );
    if let Err(e) = conforms(doc, &schema, &reply.json, "$") {
        panic!(
            "{method} {path} ({status}) breaks its schema: {e}\n{}",
            reply.text
        );
    }
}

/// Real answers of each kind, successes and errors, validated against the document.
#[tokio::test]
async fn responses_match_the_document() {
    let s = Stack::embedded().await;
    let doc = document(&s).await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let alice = agent_token(&customer, &a, 0x10);

    let chat = s
        .post("/chats", &admin, &chat_body("normal", &a, &[&a, &b], "c"))
        .await;
    assert_conforms(&doc, "post", "/v1.0/chats", &chat);
    let chat_id = chat.ok()["id"].as_str().unwrap().to_owned();
    let list = s.get("/chats?page_size=5", &admin).await;
    assert_conforms(&doc, "get", "/v1.0/chats", &list);

    let message = s
        .post(
            "/chatmessages",
            &admin,
            &json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": "hi",
                    "medias": [{"type": "link", "link_url": "https://example.com/x"},
                               {"type": "agent", "agent": {"id": b}},
                               {"type": "address", "address": {"type": "tel", "target": "+1555"}}]})
            .to_string(),
        )
        .await;
    assert_conforms(&doc, "post", "/v1.0/chatmessages", &message);
    let list = s
        .get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
        .await;
    assert_conforms(&doc, "get", "/v1.0/chatmessages", &list);

    let rooms = s.get("/service_agents/chatrooms", &alice).await;
    assert_conforms(&doc, "get", "/v1.0/service_agents/chatrooms", &rooms);
    let room_id = rooms.ok()["result"][0]["id"].as_str().unwrap().to_owned();
    let copy = s
        .post(
            "/service_agents/chatroommessages",
            &alice,
            &json!({"chatroom_id": room_id, "text": "back"}).to_string(),
        )
        .await;
    assert_conforms(&doc, "post", "/v1.0/service_agents/chatroommessages", &copy);
    let copies = s
        .get(&format!("/chatroommessages?chatroom_id={room_id}"), &admin)
        .await;
    assert_conforms(&doc, "get", "/v1.0/chatroommessages", &copies);
    assert_eq!(copies.ok()["result"].as_array().unwrap().len(), 2);

    // Errors too.
    let missing = s.get(&format!("/chats/{}", new_id()), &admin).await;
    assert_eq!(missing.status, 404);
    assert_conforms(&doc, "get", "/v1.0/chats/{id}", &missing);
    let refused = s.get("/chats", &alice).await;
    assert_eq!(refused.status, 403);
    assert_conforms(&doc, "get", "/v1.0/chats", &refused);
}

/// Checks a success against the document and records the operation as driven.
struct Driven<'a> {
    doc: &'a Value,
    seen: std::collections::BTreeSet<String>,
}

impl Driven<'_> {
    /// `reply` to `method path` (the documented template) is a 200 that matches its schema;
    /// returns its JSON.
    #[track_caller]
    fn check(&mut self, method: &str, path: &str, reply: &Reply) -> Value {
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text);
        assert_conforms(self.doc, method, path, reply);
        self.seen.insert(format!("{method} {path}"));
        reply.json.clone()
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Every documented operation, driven once with valid data in a sensible order: each answers
/// 200 with a body that matches its documented schema, and none is left out.
#[tokio::test]
async fn every_operation_succeeds_as_documented() {
    let s = Stack::embedded().await;
    let doc = document(&s).await;
    let mut d = Driven {
        doc: &doc,
        seen: Default::default(),
    };
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c, e) = (new_id(), new_id(), new_id(), new_id());
    // Agent `a` as a plain agent, and as an admin agent (customer-level creates as an agent).
    let alice = agent_token(&customer, &a, 0x10);
    let boss = agent_token(&customer, &a, 0x20);

    // A webhook, which the changes below are delivered to.
    let receiver = testkit::receiver::WebhookReceiver::start().await;
    let webhook = d.check(
        "post",
        "/v1.0/webhooks",
        &s.post(
            "/webhooks",
            &admin,
            &json!({"name": "crm", "uri": receiver.url(), "event_types": ["chat_created"]})
                .to_string(),
        )
        .await,
    );
    let hook = format!("/webhooks/{}", id_of(&webhook));

    // Chats.
    let chat = d.check(
        "post",
        "/v1.0/chats",
        &s.post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "team"))
            .await,
    );
    let chat_id = id_of(&chat);
    let group = format!("/chats/{chat_id}");
    d.check("get", "/v1.0/chats", &s.get("/chats", &admin).await);
    d.check("get", "/v1.0/chats/{id}", &s.get(&group, &admin).await);
    d.check(
        "put",
        "/v1.0/chats/{id}",
        &s.put(&group, &admin, r#"{"name": "renamed", "detail": "d"}"#)
            .await,
    );
    d.check(
        "post",
        "/v1.0/chats/{id}/participant_ids",
        &s.post(
            &format!("{group}/participant_ids"),
            &admin,
            &json!({"participant_id": c}).to_string(),
        )
        .await,
    );
    d.check(
        "delete",
        "/v1.0/chats/{id}/participant_ids/{participant_id}",
        &s.delete(&format!("{group}/participant_ids/{c}"), &admin)
            .await,
    );
    d.check(
        "put",
        "/v1.0/chats/{id}/owner_id",
        &s.put(
            &format!("{group}/owner_id"),
            &admin,
            &json!({"owner_id": b}).to_string(),
        )
        .await,
    );
    d.check(
        "put",
        "/v1.0/chats/{id}/room_owner_id",
        &s.put(
            &format!("{group}/room_owner_id"),
            &admin,
            &json!({"room_owner_id": a}).to_string(),
        )
        .await,
    );

    // Chatrooms, customer level.
    let rooms = d.check(
        "get",
        "/v1.0/chatrooms",
        &s.get(&format!("/chatrooms?owner_id={a}"), &admin).await,
    );
    let room_id = id_of(&rooms["result"][0]);
    let room = format!("/chatrooms/{room_id}");
    d.check("get", "/v1.0/chatrooms/{id}", &s.get(&room, &admin).await);
    d.check(
        "put",
        "/v1.0/chatrooms/{id}",
        &s.put(&room, &admin, r#"{"name": "mine"}"#).await,
    );
    let direct = d.check(
        "post",
        "/v1.0/chatrooms",
        &s.post(
            "/chatrooms",
            &boss,
            &json!({"participant_ids": [c], "name": "a and c"}).to_string(),
        )
        .await,
    );

    // Chatmessages and their copies, customer level.
    let message = d.check(
        "post",
        "/v1.0/chatmessages",
        &s.post(
            "/chatmessages",
            &admin,
            &json!({"chat_id": chat_id, "source": {"type": "agent", "target": a},
                    "type": "normal", "text": "hello",
                    "medias": [{"type": "link", "link_url": "https://example.com/x"}]})
            .to_string(),
        )
        .await,
    );
    let message_id = id_of(&message);
    d.check(
        "get",
        "/v1.0/chatmessages",
        &s.get(&format!("/chatmessages?chat_id={chat_id}"), &admin)
            .await,
    );
    d.check(
        "get",
        "/v1.0/chatmessages/{id}",
        &s.get(&format!("/chatmessages/{message_id}"), &admin).await,
    );
    d.check(
        "put",
        "/v1.0/chatmessages/{id}",
        &s.put(
            &format!("/chatmessages/{message_id}"),
            &admin,
            r#"{"text": "hello, edited"}"#,
        )
        .await,
    );
    let copies = d.check(
        "get",
        "/v1.0/chatroommessages",
        &s.get(&format!("/chatroommessages?chatroom_id={room_id}"), &admin)
            .await,
    );
    let copy_id = id_of(&copies["result"][0]);
    d.check(
        "get",
        "/v1.0/chatroommessages/{id}",
        &s.get(&format!("/chatroommessages/{copy_id}"), &admin).await,
    );
    let posted = d.check(
        "post",
        "/v1.0/chatroommessages",
        &s.post(
            "/chatroommessages",
            &boss,
            &json!({"chatroom_id": room_id, "text": "as the admin agent"}).to_string(),
        )
        .await,
    );

    // The agent's own view.
    d.check(
        "get",
        "/v1.0/service_agents/chatrooms",
        &s.get("/service_agents/chatrooms", &alice).await,
    );
    let own_room = format!("/service_agents/chatrooms/{room_id}");
    d.check(
        "get",
        "/v1.0/service_agents/chatrooms/{id}",
        &s.get(&own_room, &alice).await,
    );
    d.check(
        "put",
        "/v1.0/service_agents/chatrooms/{id}",
        &s.put(&own_room, &alice, r#"{"detail": "my notes"}"#).await,
    );
    let opened = d.check(
        "post",
        "/v1.0/service_agents/chatrooms",
        &s.post(
            "/service_agents/chatrooms",
            &alice,
            &json!({"participant_ids": [e], "name": "a and e"}).to_string(),
        )
        .await,
    );
    let own_copy = d.check(
        "post",
        "/v1.0/service_agents/chatroommessages",
        &s.post(
            "/service_agents/chatroommessages",
            &alice,
            &json!({"chatroom_id": room_id, "text": "as myself"}).to_string(),
        )
        .await,
    );
    d.check(
        "get",
        "/v1.0/service_agents/chatroommessages",
        &s.get(
            &format!("/service_agents/chatroommessages?chatroom_id={room_id}"),
            &alice,
        )
        .await,
    );
    let read_path = format!("/service_agents/chatrooms/{room_id}/read");
    d.check(
        "get",
        "/v1.0/service_agents/unread",
        &s.get("/service_agents/unread", &alice).await,
    );
    d.check(
        "get",
        "/v1.0/service_agents/chatrooms/{id}/read",
        &s.get(&read_path, &alice).await,
    );
    d.check(
        "put",
        "/v1.0/service_agents/chatrooms/{id}/read",
        &s.put(
            &read_path,
            &alice,
            &json!({"messagechat_id": own_copy["messagechat_id"]}).to_string(),
        )
        .await,
    );
    d.check(
        "get",
        "/v1.0/service_agents/chatrooms/{id}/reads",
        &s.get(
            &format!("/service_agents/chatrooms/{room_id}/reads"),
            &alice,
        )
        .await,
    );
    let own_copy_path = format!("/service_agents/chatroommessages/{}", id_of(&own_copy));
    d.check(
        "put",
        "/v1.0/service_agents/chatroommessages/{id}",
        &s.put(&own_copy_path, &alice, r#"{"text": "as myself, edited"}"#)
            .await,
    );
    d.check(
        "get",
        "/v1.0/service_agents/chatroommessages/{id}",
        &s.get(&own_copy_path, &alice).await,
    );
    d.check(
        "delete",
        "/v1.0/service_agents/chatroommessages/{id}",
        &s.delete(&own_copy_path, &alice).await,
    );
    d.check(
        "delete",
        "/v1.0/service_agents/chatrooms/{id}",
        &s.delete(
            &format!("/service_agents/chatrooms/{}", id_of(&opened)),
            &alice,
        )
        .await,
    );

    // The webhook and its deliveries.
    receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    d.check("get", "/v1.0/webhooks", &s.get("/webhooks", &admin).await);
    d.check("get", "/v1.0/webhooks/{id}", &s.get(&hook, &admin).await);
    d.check(
        "put",
        "/v1.0/webhooks/{id}",
        &s.put(&hook, &admin, r#"{"name": "renamed", "status": "enabled"}"#)
            .await,
    );
    d.check(
        "post",
        "/v1.0/webhooks/{id}/secret",
        &s.post(&format!("{hook}/secret"), &admin, "").await,
    );
    let delivered = d.check(
        "get",
        "/v1.0/webhooks/{id}/deliveries",
        &s.get(&format!("{hook}/deliveries"), &admin).await,
    );
    let delivery_id = id_of(&delivered["result"][0]);
    d.check(
        "post",
        "/v1.0/webhooks/{id}/deliveries/{delivery_id}/retry",
        &s.post(
            &format!("{hook}/deliveries/{delivery_id}/retry"),
            &admin,
            "",
        )
        .await,
    );
    d.check(
        "delete",
        "/v1.0/webhooks/{id}",
        &s.delete(&hook, &admin).await,
    );

    // Deletes, customer level.
    d.check(
        "delete",
        "/v1.0/chatroommessages/{id}",
        &s.delete(&format!("/chatroommessages/{}", id_of(&posted)), &admin)
            .await,
    );
    d.check(
        "delete",
        "/v1.0/chatmessages/{id}",
        &s.delete(&format!("/chatmessages/{message_id}"), &admin)
            .await,
    );
    d.check(
        "delete",
        "/v1.0/chatrooms/{id}",
        &s.delete(&format!("/chatrooms/{}", id_of(&direct)), &admin)
            .await,
    );
    d.check(
        "delete",
        "/v1.0/chats/{id}",
        &s.delete(&group, &admin).await,
    );

    let documented: std::collections::BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| format!("{m} {path}"))
        })
        .collect();
    let missed: Vec<&String> = documented.difference(&d.seen).collect();
    assert!(missed.is_empty(), "not driven: {missed:#?}");
    assert_eq!(d.seen.len(), 45);
}

/// Found by the fuzzer: serde reads a struct from an array by position, so `[null, null]`
/// used to be taken as a body. Bodies are objects; anything else is 400 and writes nothing.
#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused() {
    let s = Stack::embedded().await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let array = json!(["normal", a, [a, b], "n", "d"]).to_string();
    for body in [array.as_str(), "[]", "\"normal\"", "42", "null", "   "] {
        let reply = s.post("/chats", &admin, body).await;
        reply.assert_error(400, "invalid_argument", "body");
    }
    s.post("/chats", &admin, "[1,")
        .await
        .assert_error(400, "invalid_argument", "this is not JSON");
    s.post("/chats", &admin, "{\"type\": ").await.assert_error(
        400,
        "invalid_argument",
        "malformed JSON",
    );
    // Form fields (what `curl -d type=group` sends): the message says the body must be JSON.
    s.post("/chats", &admin, "type=group&name=x")
        .await
        .assert_error(400, "invalid_argument", "body: must be JSON");
    let list = s.get("/chats", &admin).await;
    assert_eq!(list.ok()["result"], json!([]), "nothing was written");
}
