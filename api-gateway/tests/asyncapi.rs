//! The AsyncAPI document (proto/proto/asyncapi.yaml) against real events: every change the API
//! offers is made in the split deployment, what the services publish to RabbitMQ is read, and
//! each event is checked against its message's payload schema (and its routing key against
//! `<type>.<customer id>`). Every resource a multi-item event stands for is expanded as a
//! subscriber would and checked against that resource's schema.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use pipeline::contract::{EventData, EventType, Resource};
use serde_json::{Value, json};
use support::*;

const DOCUMENT: &str = "file:///asyncapi.json";

/// The document's schemas, compiled.
struct Document {
    schemas: boon::Schemas,
    payloads: HashMap<EventType, boon::SchemaIndex>,
    resources: HashMap<Resource, boon::SchemaIndex>,
    read_state: boon::SchemaIndex,
}

impl Document {
    fn load() -> Document {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto/asyncapi.yaml");
        let text = std::fs::read_to_string(path).expect("the AsyncAPI document");
        let document: Value = serde_yaml_ng::from_str(&text).expect("the document is YAML");
        assert_eq!(document["asyncapi"], "3.0.0");
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V7);
        compiler.enable_format_assertions();
        compiler
            .add_resource(DOCUMENT, document.clone())
            .expect("the document loads");
        let mut compile = |pointer: &str| {
            compiler
                .compile(&format!("{DOCUMENT}#{pointer}"), &mut schemas)
                .unwrap_or_else(|e| panic!("{pointer}: {e:#}"))
        };
        let payloads = EventType::ALL
            .into_iter()
            .map(|t| {
                let message = &document["components"]["messages"][t.as_str()];
                assert_eq!(
                    message["name"],
                    t.as_str(),
                    "a message for every event type"
                );
                (t, compile(&format!("/components/messages/{t}/payload")))
            })
            .collect();
        let resources = [
            (Resource::Chat, "Chat"),
            (Resource::Chatroom, "Chatroom"),
            (Resource::Messagechat, "Chatmessage"),
            (Resource::Messagechatroom, "Chatroommessage"),
        ]
        .into_iter()
        .map(|(r, name)| (r, compile(&format!("/components/schemas/{name}"))))
        .collect();
        let read_state = compile("/components/schemas/ReadState");
        Document {
            schemas,
            payloads,
            resources,
            read_state,
        }
    }

    /// Checks one event body; returns its type.
    fn check(&self, routing_key: &str, body: &Value) -> EventType {
        let event_type = EventType::parse(body["type"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("an event of no known type: {body}"));
        let customer = body["customerid"].as_str().unwrap();
        assert_eq!(routing_key, event_type.routing_key(customer));
        if let Err(e) = self.schemas.validate(body, self.payloads[&event_type]) {
            panic!("{event_type} does not match the document: {e:#}\n{body:#}");
        }
        // Every resource it stands for, as a subscriber expands it.
        let parsed = pipeline::cloudevent::parse(body.to_string().as_bytes()).unwrap();
        for (n, item) in parsed.items().enumerate() {
            let resource: Value = serde_json::from_str(&parsed.item_json(n).unwrap()).unwrap();
            let schema = if item.event_type == EventType::CHATROOM_READ_UPDATED {
                self.read_state
            } else {
                self.resources[&item.event_type.resource]
            };
            if let Err(e) = self.schemas.validate(&resource, schema) {
                panic!("item {n} of {event_type} ({}): {e:#}", item.event_type);
            }
        }
        event_type
    }
}

#[test]
fn the_document_describes_both_exchanges_and_every_event_type() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/proto/asyncapi.yaml"
    ))
    .unwrap();
    let document: Value = serde_yaml_ng::from_str(&text).unwrap();
    let channels = &document["channels"];
    assert_eq!(channels["chatEvents"]["address"], "chat.events");
    assert_eq!(channels["messageEvents"]["address"], "message.events");
    for t in EventType::ALL {
        let channel = match t.resource {
            // Read state is message-manager's.
            _ if t == EventType::CHATROOM_READ_UPDATED => "messageEvents",
            Resource::Chat | Resource::Chatroom => "chatEvents",
            Resource::Messagechat | Resource::Messagechatroom => "messageEvents",
        };
        assert!(
            channels[channel]["messages"][t.as_str()].is_object(),
            "{t} on {channel}"
        );
        let operation = &document["operations"][t.as_str()];
        assert_eq!(
            operation["bindings"]["amqp"]["cc"][0],
            format!("{t}.{{customer id}}"),
            "{t}'s routing key"
        );
    }
    Document::load();
}

#[tokio::test]
async fn every_event_published_matches_the_asyncapi_document() {
    let test = "asyncapi::every_event_published_matches_the_asyncapi_document";
    let Some((env, _guards)) = split_env(test).await else {
        return;
    };
    let document = Document::load();
    let stack = Stack::split(&env).await;
    let mut chat_events = testkit::EventReader::bind(&env.amqp_url, &env.chat_exchange).await;
    let mut message_events = testkit::EventReader::bind(&env.amqp_url, &env.message_exchange).await;

    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let a_token = agent_token(&customer, &a, 0x10);

    // chat_created; chat_updated (renamed, a participant added, one removed); chatroom_updated
    // and chatroom_deleted of one room; chat_deleted.
    let chat = stack
        .post("/chats", &admin, &chat_body("group", &a, &[&a, &b], "team"))
        .await
        .ok()
        .clone();
    let chat_id = chat["id"].as_str().unwrap();
    stack
        .put(
            &format!("/chats/{chat_id}"),
            &admin,
            r#"{"name": "renamed"}"#,
        )
        .await
        .ok();
    let participants = format!("/chats/{chat_id}/participant_ids");
    stack
        .post(
            &participants,
            &admin,
            &json!({"participant_id": c}).to_string(),
        )
        .await
        .ok();
    stack
        .delete(&format!("{participants}/{b}"), &admin)
        .await
        .ok();
    let rooms = stack
        .get("/service_agents/chatrooms", &a_token)
        .await
        .ok()
        .clone();
    let room_id = rooms["result"][0]["id"].as_str().unwrap().to_owned();
    stack
        .put(
            &format!("/service_agents/chatrooms/{room_id}"),
            &a_token,
            r#"{"name": "mine"}"#,
        )
        .await
        .ok();

    // messagechat_created, messagechatroom_deleted (one copy), messagechat_deleted.
    let send = |text: &str| {
        json!({"chat_id": chat_id, "source": {"type": "agent", "target": a}, "text": text,
               "medias": [{"type": "link", "link_url": "https://example.com/a"}]})
        .to_string()
    };
    let message = stack
        .post("/chatmessages", &admin, &send("hello"))
        .await
        .ok()
        .clone();
    let message_id = message["id"].as_str().unwrap();
    let copies = stack
        .get(
            &format!("/service_agents/chatroommessages?chatroom_id={room_id}"),
            &a_token,
        )
        .await
        .ok()
        .clone();
    let copy = copies["result"][0].clone();
    stack
        .delete(
            &format!(
                "/service_agents/chatroommessages/{}",
                copy["id"].as_str().unwrap()
            ),
            &a_token,
        )
        .await
        .ok();
    let second = stack
        .post("/chatmessages", &admin, &send("again"))
        .await
        .ok()
        .clone();
    stack
        .delete(&format!("/chatmessages/{message_id}"), &admin)
        .await
        .ok();
    // messagechat_updated: an edit (its copies' updates are items of it).
    stack
        .put(
            &format!("/chatmessages/{}", second["id"].as_str().unwrap()),
            &admin,
            r#"{"text": "again, edited"}"#,
        )
        .await
        .ok();

    // chatroom_read_updated: a reads up to the newest copy.
    stack
        .call(
            "PUT",
            &format!("/service_agents/chatrooms/{room_id}/read"),
            &a_token,
            None,
        )
        .await
        .ok();

    // chatroom_created: a direct chat whose agent deleted its room opens it again.
    let direct = stack
        .post(
            "/service_agents/chatrooms",
            &a_token,
            &json!({"participant_ids": [b]}).to_string(),
        )
        .await
        .ok()
        .clone();
    let direct_room = direct["id"].as_str().unwrap();
    stack
        .delete(
            &format!("/service_agents/chatrooms/{direct_room}"),
            &a_token,
        )
        .await
        .ok();
    stack
        .post(
            "/service_agents/chatrooms",
            &a_token,
            &json!({"participant_ids": [b]}).to_string(),
        )
        .await
        .ok();
    stack
        .delete(&format!("/chats/{chat_id}"), &admin)
        .await
        .ok();

    let mut seen = BTreeSet::new();
    let mut events = chat_events.collect_for(Duration::from_secs(3)).await;
    events.extend(message_events.collect_for(Duration::from_secs(1)).await);
    for (routing_key, _, body) in &events {
        seen.insert(document.check(routing_key, body).as_str());
    }
    let published: BTreeSet<&str> = [
        "chat_created",
        "chat_updated",
        "chat_deleted",
        "chatroom_created",
        "chatroom_updated",
        "chatroom_deleted",
        "messagechat_created",
        "messagechat_updated",
        "messagechat_deleted",
        "messagechatroom_deleted",
        "chatroom_read_updated",
    ]
    .into();
    assert_eq!(seen, published, "what the changes above publish");

    // No change publishes the other two on their own (copies are created and edited with their
    // message, as items of its event): rendered from real resources by the relay's own code.
    let at = common::time::now();
    let copy_data = EventData::Messagechatroom(serde_json::from_value(copy).unwrap());
    for (event_type, data, owner) in [
        (EventType::MESSAGECHATROOM_CREATED, &copy_data, Some(&a)),
        (EventType::MESSAGECHATROOM_UPDATED, &copy_data, Some(&a)),
    ] {
        let mut event = pipeline::Event::new(event_type, data);
        if let Some(owner) = owner {
            event = event.owned_by(owner);
        }
        let body: Value =
            serde_json::from_str(&event.to_cloudevent(message_manager::EVENT_SOURCE, at)).unwrap();
        document.check(&event.routing_key(), &body);
    }
    stack.stop().await;
}

/// The gateways' typing signal, as `pipeline::typing` serializes it, is what the document's
/// typing channel says.
#[test]
fn a_typing_signal_matches_the_asyncapi_document() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto/asyncapi.yaml");
    let document: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        document["channels"]["typingSignals"]["address"],
        "typing.events"
    );
    assert_eq!(
        document["operations"]["chatroom_typing"]["bindings"]["amqp"]["cc"][0],
        "chatroom_typing.{customer id}"
    );
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V7);
    compiler.enable_format_assertions();
    compiler.add_resource(DOCUMENT, document).unwrap();
    let payload = compiler
        .compile(
            &format!("{DOCUMENT}#/components/messages/chatroom_typing/payload"),
            &mut schemas,
        )
        .unwrap();
    let id = || new_id();
    let signal = pipeline::typing::TypingSignal {
        v: pipeline::typing::TypingSignal::VERSION,
        customer_id: id(),
        chat_id: id(),
        agent_id: id(),
        state: pipeline::typing::TypingState::Stop,
        chatrooms: vec![(id(), id()), (id(), id())],
    };
    let body = serde_json::to_value(&signal).unwrap();
    schemas
        .validate(&body, payload)
        .expect("the signal matches");
    let mut stray = body.clone();
    stray["state"] = "typing".into();
    assert!(
        schemas.validate(&stray, payload).is_err(),
        "the schema checks"
    );
}
