//! The webhook-manager binary on the real PostgreSQL and RabbitMQ: killed (-9) with deliveries
//! pending and events still arriving, then started again, it delivers every one.

use std::collections::HashSet;
use std::time::Duration;

use common::grpc_client::{self, WebhookClient};
use common::resources::ChatJson;
use common::service_auth::{InternalKey, ServiceName};
use pipeline::bus::{EventBus, EventMessage};
use pipeline::contract::{ChatEventData, EventData, EventType};
use proto::webhook::v1 as pb;
use testkit::ops::{free_addr, http_get, sample, spawn, until_healthy};
use testkit::receiver::{Answer, WebhookReceiver};

const BIN: &str = env!("CARGO_BIN_EXE_webhook-manager");

/// A `chat_created` event of `customer`, as chat-manager publishes it; returns it and the
/// chat's id.
fn chat_created(exchange: &str, customer: &str) -> (EventMessage, String) {
    let id = uuid::Uuid::new_v4().to_string();
    let now = common::time::format(common::time::now());
    let owner = uuid::Uuid::new_v4().to_string();
    let chat = ChatJson {
        id: id.clone(),
        customer_id: customer.to_owned(),
        chat_type: "normal".into(),
        owner_id: owner.clone(),
        participant_ids: vec![owner],
        name: "n".into(),
        detail: String::new(),
        tm_create: now.clone(),
        tm_update: now,
        tm_delete: common::time::LIVE.into(),
    };
    let data = EventData::Chat(ChatEventData {
        chat,
        chatrooms: Default::default(),
    });
    let event = pipeline::Event::new(EventType::CHAT_CREATED, &data);
    let message = EventMessage {
        exchange: exchange.to_owned(),
        routing_key: event.routing_key(),
        message_id: event.id.to_string(),
        payload: event
            .to_cloudevent("chat-manager", common::time::now())
            .into_bytes()
            .into(),
        request_id: None,
        traceparent: None,
    };
    (message, id)
}

#[tokio::test]
async fn killed_with_deliveries_pending_it_delivers_every_one_after_a_restart() {
    let test = "restart::killed_with_deliveries_pending_it_delivers_every_one_after_a_restart";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let (chat_exchange, message_exchange, queue) = (
        amqp.name("chat.events"),
        amqp.name("message.events"),
        amqp.name("webhook-manager.events"),
    );
    amqp.name("webhook-manager.events.dead-letter");
    // The publisher declares the exchanges and webhook-manager's queue, as chat-manager does:
    // what is published while webhook-manager is down waits there.
    let spec =
        pipeline::topology::webhook_events_subscriber(&chat_exchange, &message_exchange, &queue);
    let publisher = EventBus::amqp(amqp.url.clone()).with_subscribers(vec![spec]);
    publisher.prepare(&chat_exchange).await.unwrap();
    publisher.prepare(&message_exchange).await.unwrap();

    let (listen, metrics) = (free_addr(), free_addr());
    let env = vec![
        ("DATABASE_URL", pg.url.clone()),
        ("DATABASE_SCHEMA", pg.schema.clone()),
        ("AMQP_URL", amqp.url.clone()),
        ("CHAT_EVENTS_EXCHANGE", chat_exchange.clone()),
        ("MESSAGE_EVENTS_EXCHANGE", message_exchange.clone()),
        ("WEBHOOK_EVENTS_QUEUE", queue.clone()),
        ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true".into()),
        ("WEBHOOK_FIRST_RETRY", "300ms".into()),
        ("LISTEN_ADDR", listen.to_string()),
        ("METRICS_ADDR", metrics.to_string()),
    ];
    let dir = std::env::temp_dir().join(format!("webhook-restart-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = |n: usize| spawn(BIN, &[], &env, &dir.join(format!("run-{n}.log")));
    let probe = [("LISTEN_ADDR", listen.to_string())];
    let healthy = |within| until_healthy(BIN, &probe, within);
    let mut first = start(1);
    healthy(Duration::from_secs(60))
        .await
        .expect("webhook-manager started");

    let key = InternalKey::from_config(Some(testkit::INTERNAL_AUTH_SECRET)).unwrap();
    let client = WebhookClient::new(grpc_client::signed(
        grpc_client::remote(&format!("http://{listen}")).unwrap(),
        key.credentials(ServiceName::ApiGateway, ServiceName::WebhookManager),
    ));
    let customer = uuid::Uuid::new_v4().to_string();
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(vec![], Answer::Status(503));
    let webhook = client
        .clone()
        .create_webhook(pb::CreateWebhookRequest {
            customer_id: customer.clone(),
            name: "restart".into(),
            uri: receiver.url(),
            method: String::new(),
            event_types: vec![],
        })
        .await
        .unwrap()
        .into_inner();

    // Deliveries pending (each answered 503 at least once), then killed mid-retrying.
    let mut chats = Vec::new();
    for _ in 0..20 {
        let (event, chat) = chat_created(&chat_exchange, &customer);
        publisher.publish(&[event]).await.unwrap();
        chats.push(chat);
    }
    let tried = receiver.wait_for(20, Duration::from_secs(30)).await;
    assert!(tried.len() >= 20);
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    // Events published while it is down wait in its queue.
    for _ in 0..10 {
        let (event, chat) = chat_created(&chat_exchange, &customer);
        publisher.publish(&[event]).await.unwrap();
        chats.push(chat);
    }
    receiver.answer_with(vec![], Answer::Status(200));
    let answered_from = receiver.received().len();
    let _second = start(2);
    healthy(Duration::from_secs(60))
        .await
        .expect("webhook-manager restarted");

    // Every chat reaches the receiver (claimed attempts cut off by the kill come due again
    // when their lease ends, 20 s after the claim).
    let wanted: HashSet<String> = chats.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = receiver.received()[answered_from..]
            .iter()
            .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
            .collect();
        if delivered == wanted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} delivered after the restart",
            delivered.len(),
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... each under one webhook-id for all its attempts, before and after the kill.
    let mut ids_per_chat = std::collections::HashMap::<String, HashSet<String>>::new();
    for r in receiver.received() {
        ids_per_chat
            .entry(r.json()["data"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(r.header("webhook-id").to_owned());
    }
    assert!(
        ids_per_chat.values().all(|ids| ids.len() == 1),
        "{ids_per_chat:?}"
    );

    // Recorded: all succeeded, none failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = client
            .clone()
            .list_deliveries(pb::ListDeliveriesRequest {
                customer_id: customer.clone(),
                webhook_id: webhook.id.clone(),
                page: Some(pb::PageRequest {
                    page_size: 100,
                    page_token: String::new(),
                }),
                status: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if listed.len() == 30 && listed.iter().all(|d| d.status == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The metrics show it: successes counted, nothing left in the backlog.
    let (status, page) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        sample(&page, "webhook_deliveries_total{outcome=\"succeeded\"}").unwrap() >= 30.0,
        "{page}"
    );
    assert_eq!(
        sample(&page, "webhook_deliveries_backlog{status=\"pending\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&page, "webhook_deliveries_backlog{status=\"retrying\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&page, "webhook_oldest_pending_age_seconds"),
        Some(0.0)
    );
    assert!(
        page.contains("webhook_attempt_duration_seconds_bucket"),
        "{page}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
