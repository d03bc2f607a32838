//! The event hub holds its subscription to the exchanges only while sockets are open: a
//! gateway without sockets is not sent every event. Against the in-process bus and RabbitMQ.

use std::sync::Arc;
use std::time::Duration;

use api_gateway::ws::WsSettings;
use api_gateway::ws::hub::{EventHub, HubMessage, Registration};
use api_gateway::ws::topic::Topic;
use common::bus::{EventBus, EventMessage};
use tokio::sync::watch;

const LINGER: Duration = Duration::from_millis(300);

fn chat_created(exchange: &str, customer: &str, name: &str) -> EventMessage {
    let id = uuid::Uuid::new_v4().to_string();
    let payload = serde_json::json!({
        "specversion": "1.0", "id": id, "type": "chat_created", "customerid": customer,
        "data": {"id": id, "customer_id": customer, "name": name},
    });
    EventMessage {
        exchange: exchange.to_owned(),
        routing_key: "chat_created".to_owned(),
        message_id: id,
        payload: Arc::from(payload.to_string().into_bytes()),
        request_id: None,
        traceparent: None,
    }
}

async fn publish_chat(bus: &EventBus, exchange: &str, customer: &str, name: &str) {
    bus.publish(&[chat_created(exchange, customer, name)])
        .await
        .unwrap();
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a "socket" of `customer` on its chats and waits for the hub's feed, as a subscribe
/// frame does before it is answered.
async fn open_socket(hub: &EventHub, customer: &str) -> Registration {
    let registration = hub.register(customer);
    registration.set_topics(vec![
        Topic::parse(&format!("customer_id:{customer}:chat")).unwrap(),
    ]);
    registration.wait_for_feed(api_gateway::ws::FEED_WAIT).await;
    registration
}

async fn next_chat_name(registration: &mut Registration) -> String {
    let message = tokio::time::timeout(Duration::from_secs(10), registration.events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the hub is running");
    let HubMessage::Event(event) = message else {
        panic!("expected an event, got {message:?}");
    };
    let frame: serde_json::Value = serde_json::from_str(&event.frame).unwrap();
    frame["data"]["name"].as_str().unwrap().to_owned()
}

async fn subscribes_only_while_sockets_are_open(bus: EventBus, chat_ex: &str, message_ex: &str) {
    let settings = WsSettings {
        idle_unsubscribe_after: LINGER,
        ..WsSettings::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let (hub, task) = EventHub::start(bus.clone(), chat_ex, message_ex, &settings, shutdown);
    let customer = uuid::Uuid::new_v4().to_string();

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!hub.is_consuming(), "no socket: no subscription");

    // The first socket subscribes the hub, and is answered once the subscription is in place:
    // an event published right after reaches it.
    let mut socket = open_socket(&hub, &customer).await;
    assert!(hub.is_consuming());
    publish_chat(&bus, chat_ex, &customer, "first").await;
    assert_eq!(next_chat_name(&mut socket).await, "first");

    // A socket that closes and another that opens within the linger: the subscription stays.
    drop(socket);
    let mut socket = open_socket(&hub, &customer).await;
    tokio::time::sleep(LINGER * 2).await;
    assert!(hub.is_consuming(), "a socket is open: still subscribed");
    publish_chat(&bus, chat_ex, &customer, "second").await;
    assert_eq!(next_chat_name(&mut socket).await, "second");

    // The last socket closes: the hub unsubscribes after the linger.
    drop(socket);
    assert!(hub.is_consuming(), "within the linger");
    wait_until("the hub unsubscribes", || !hub.is_consuming()).await;
    publish_chat(&bus, chat_ex, &customer, "while idle").await;

    // A new socket subscribes it again; what was published meanwhile was for nobody.
    let mut socket = open_socket(&hub, &customer).await;
    assert!(hub.is_consuming());
    publish_chat(&bus, chat_ex, &customer, "third").await;
    assert_eq!(next_chat_name(&mut socket).await, "third");

    drop(socket);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the hub stops")
        .unwrap();
}

#[tokio::test]
async fn in_process_hub_subscribes_only_while_sockets_are_open() {
    subscribes_only_while_sockets_are_open(EventBus::in_process(), "chat", "message").await;
}

#[tokio::test]
async fn rabbitmq_hub_subscribes_only_while_sockets_are_open() {
    let Some(names) =
        testkit::require_rabbitmq("hub_feed::rabbitmq_hub_subscribes_only_while_sockets_are_open")
            .await
    else {
        return;
    };
    let (chat_ex, message_ex) = (names.name("chat.events"), names.name("message.events"));
    subscribes_only_while_sockets_are_open(
        EventBus::amqp(names.url.clone()),
        &chat_ex,
        &message_ex,
    )
    .await;
    names.cleanup().await;
}
