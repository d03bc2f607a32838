//! Events on the real RabbitMQ: what a change publishes, and that nothing is lost while the
//! broker is unreachable.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::*;

/// Reads everything the queue holds now, waiting up to `wait` for the first `min` events.
async fn collect(
    reader: &mut testkit::EventReader,
    min: usize,
    wait: Duration,
) -> Vec<(String, lapin::BasicProperties, serde_json::Value)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < min {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match reader.next_within(left).await {
            Some(e) => out.push(e),
            None => break,
        }
    }
    // Anything more that is already on its way (there should be nothing).
    while let Some(e) = reader.next_within(Duration::from_millis(300)).await {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn changes_publish_cloudevents_to_the_chat_exchange() {
    let test = "events::changes_publish_cloudevents_to_the_chat_exchange";
    let Some((env, _guards)) = split_env(test).await else {
        return;
    };
    let stack = Stack::split(&env).await;
    let mut reader = testkit::EventReader::bind(&env.amqp_url, &env.chat_exchange).await;

    let customer = new_id();
    let token = customer_token(&customer);
    let (a, b, c) = (new_id(), new_id(), new_id());
    let created = s_post(&stack, &token, &chat_body("group", &a, &[&a, &b], "team")).await;
    let request_id = created.headers["x-request-id"].to_str().unwrap().to_owned();
    let chat = created.ok().clone();
    let id = chat["id"].as_str().unwrap();

    // One event for the change: the chat and its two chatrooms.
    let events = collect(&mut reader, 1, Duration::from_secs(10)).await;
    let keys: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, [format!("chat_created.{customer}")]);
    let (_, props, body) = &events[0];
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["type"], "chat_created");
    assert_eq!(body["source"], "chat-manager");
    assert_eq!(body["datacontenttype"], "application/json");
    assert_eq!(body["customerid"], customer.as_str());
    assert!(chrono::DateTime::parse_from_rfc3339(body["time"].as_str().unwrap()).is_ok());
    let mut data = body["data"].clone();
    let rooms = data.as_object_mut().unwrap().remove("chatrooms").unwrap();
    assert_eq!(
        data, chat,
        "data is the resource JSON the API returned, and its chatrooms"
    );
    assert_eq!(
        props.message_id().as_ref().map(|m| m.as_str()),
        body["id"].as_str()
    );
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    let header = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-request-id").cloned());
    assert_eq!(
        header.and_then(|v| v.as_long_string().map(|s| s.to_string())),
        Some(request_id),
        "the gateway's request id travels into the event headers"
    );
    let owners = |items: &serde_json::Value| -> HashSet<String> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["owner_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(rooms.as_object().unwrap().len(), 1, "only created: {rooms}");
    assert_eq!(
        owners(&rooms["created"]),
        HashSet::from([a.clone(), b.clone()])
    );
    // Each room as the API has it follows from the event.
    let event = pipeline::cloudevent::parse(body.to_string().as_bytes()).unwrap();
    let listed = stack
        .get("/chatrooms?page_size=10", &token)
        .await
        .ok()
        .clone();
    for n in 1..3 {
        let room: serde_json::Value = serde_json::from_str(&event.item_json(n).unwrap()).unwrap();
        assert!(
            listed["result"].as_array().unwrap().contains(&room),
            "{room} is as listed: {listed}"
        );
    }

    // Adding a participant: one chat_updated with the new room and the others updated.
    stack
        .post(
            &format!("/chats/{id}/participant_ids"),
            &token,
            &json!({"participant_id": c}).to_string(),
        )
        .await
        .ok();
    let events = collect(&mut reader, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "one event per change");
    let (key, _, body) = &events[0];
    assert_eq!(key, &format!("chat_updated.{customer}"));
    let rooms = &body["data"]["chatrooms"];
    assert_eq!(owners(&rooms["created"]), HashSet::from([c.clone()]));
    assert_eq!(
        owners(&rooms["updated"]),
        HashSet::from([a.clone(), b.clone()])
    );

    // Deleting: one chat_deleted naming every live room.
    stack.delete(&format!("/chats/{id}"), &token).await.ok();
    let events = collect(&mut reader, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "one event per change");
    let (key, _, body) = &events[0];
    assert_eq!(key, &format!("chat_deleted.{customer}"));
    assert_eq!(
        owners(&body["data"]["chatrooms"]["deleted"]),
        HashSet::from([a.clone(), b.clone(), c.clone()])
    );

    // A failed request publishes nothing.
    stack
        .post("/chats", &token, "{\"type\": \"group\"}")
        .await
        .assert_error(400, "invalid_argument", "owner_id");
    assert!(
        collect(&mut reader, 0, Duration::from_millis(500))
            .await
            .is_empty()
    );
    stack.stop().await;
}

async fn s_post(stack: &Stack, token: &str, body: &str) -> Reply {
    stack.post("/chats", token, body).await
}

#[tokio::test]
async fn events_written_while_the_broker_is_unreachable_arrive_once_it_is_back() {
    let test = "events::events_written_while_the_broker_is_unreachable_arrive_once_it_is_back";
    let Some((mut env, _guards)) = split_env(test).await else {
        return;
    };
    // Bind the reader first, straight to the broker, so the exchange and queue exist.
    let mut reader = testkit::EventReader::bind(&env.amqp_url, &env.chat_exchange).await;
    // chat-manager's relay reaches RabbitMQ only through a proxy we can cut.
    let amqp_host = env
        .amqp_url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let amqp_addr = tokio::net::lookup_host(&amqp_host)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = testkit::TcpProxy::start(amqp_addr).await;
    env.chat_amqp_url = env.amqp_url.replace(&amqp_host, &proxy.addr().to_string());
    assert_ne!(
        env.chat_amqp_url, env.amqp_url,
        "the relay must go through the proxy"
    );
    let stack = Stack::split(&env).await;
    let token = customer_token(&new_id());

    // Warm up: one chat while the broker is reachable.
    let (a, b) = (new_id(), new_id());
    stack
        .post(
            "/chats",
            &token,
            &chat_body("group", &a, &[&a, &b], "before"),
        )
        .await
        .ok();
    assert_eq!(
        collect(&mut reader, 1, Duration::from_secs(10)).await.len(),
        1
    );

    // Cut the broker off and keep writing: every write still succeeds.
    proxy.set_up(false);
    let mut chat_ids = HashSet::new();
    for i in 0..10 {
        let (a, b) = (new_id(), new_id());
        let chat = stack
            .post(
                "/chats",
                &token,
                &chat_body("group", &a, &[&a, &b], &format!("during {i}")),
            )
            .await
            .ok()
            .clone();
        chat_ids.insert(chat["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        collect(&mut reader, 0, Duration::from_millis(200))
            .await
            .is_empty(),
        "nothing can have been published while the broker was unreachable"
    );

    // Back: all 10 chats (with their rooms) arrive, in order, each event once.
    proxy.set_up(true);
    let events = collect(&mut reader, 10, Duration::from_secs(30)).await;
    let created: HashSet<String> = events
        .iter()
        .filter(|(k, _, _)| k.starts_with("chat_created."))
        .map(|(_, _, b)| b["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, chat_ids);
    let ids: HashSet<&str> = events
        .iter()
        .map(|(_, _, b)| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        events.len(),
        10,
        "each event exactly once: {:?}",
        events.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    assert_eq!(ids.len(), 10);
    eprintln!(
        "broker outage: 10 writes accepted while cut off, {} events delivered after reconnect",
        events.len()
    );
    stack.stop().await;
}

/// A subscriber of this system that starts after its publisher gets every event all the same:
/// chat-manager runs alone and publishes five chats' events; only then does message-manager
/// start, for the first time, with no chat-manager to ask, and its membership view has every
/// chat from its queue. (Before, chat-manager's relay published to an exchange no queue was
/// bound to yet, and the broker dropped them.)
#[tokio::test]
async fn a_subscriber_starting_after_the_publisher_gets_every_event() {
    let test = "events::a_subscriber_starting_after_the_publisher_gets_every_event";
    let Some((env, _guards)) = split_env(test).await else {
        return;
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let chat_db = connect(
        &env.pg_url,
        &env.chat_schema,
        chat_manager::db::MIGRATIONS,
        2,
        Default::default(),
    )
    .await;
    let bus = pipeline::bus::EventBus::amqp(&env.amqp_url).with_subscribers(vec![
        pipeline::topology::chat_events_subscriber(&env.chat_exchange, &env.chat_events_queue),
    ]);
    let (chat_service, _relay) =
        chat_manager::service(chat_db.clone(), bus, &env.chat_exchange, stopped.clone());
    let mut chat =
        common::grpc_client::ChatClient::new(common::grpc_client::in_process(chat_service));
    let customer = new_id();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (a, b) = (new_id(), new_id());
        let created = chat
            .create_chat(proto::chat::v1::CreateChatRequest {
                customer_id: customer.clone(),
                r#type: proto::chat::v1::ChatType::Group as i32,
                owner_id: a.clone(),
                participant_ids: vec![a, b],
                name: format!("early {i}"),
                detail: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(created.id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while chat_db
        .run(|c| pipeline::outbox::backlog(c).map_err(common::db::DbError::from))
        .await
        .unwrap()
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Now message-manager, for the first time.
    let message_db = connect(
        &env.pg_url,
        &env.message_schema,
        message_manager::db::MIGRATIONS,
        2,
        Default::default(),
    )
    .await;
    let message_bus = pipeline::bus::EventBus::amqp(&env.amqp_url);
    let topology = message_manager::Topology {
        exchange: env.message_exchange.clone(),
        chat_exchange: env.chat_exchange.clone(),
        chat_events_queue: env.chat_events_queue.clone(),
    };
    let subscription = message_manager::subscribe_chat_events(
        &message_bus,
        &topology.chat_exchange,
        &topology.chat_events_queue,
    )
    .await
    .unwrap();
    let (_service, _tasks) = message_manager::service(
        message_db.clone(),
        message_bus,
        topology,
        subscription,
        None,
        stopped,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (customer, wanted) = (customer.clone(), ids.clone());
        let known = message_db
            .run(move |c| {
                let mut known = 0;
                for id in &wanted {
                    let members = message_manager::membership::load(c, &customer, id)
                        .map_err(|e| common::db::DbError::Unavailable(e.to_string()))?;
                    known += usize::from(members.is_some_and(|m| m.rooms.len() == 2));
                }
                Ok::<_, common::db::DbError>(known)
            })
            .await
            .unwrap();
        if known == ids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message-manager's view has {known} of the {} chats",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
