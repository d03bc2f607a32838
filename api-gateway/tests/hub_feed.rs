//! The event hub holds its subscription to the exchanges only while sockets are open: a
//! gateway without sockets is not sent every event. Against the in-process bus and RabbitMQ.

use std::sync::Arc;
use std::time::Duration;

use api_gateway::ws::WsSettings;
use api_gateway::ws::hub::{EventHub, HubExchanges, HubMessage, Registration};
use api_gateway::ws::topic::Topic;
use pipeline::bus::{EventBus, EventMessage};
use pipeline::contract::{ChatEventData, EventData, EventType};
use tokio::sync::watch;

const LINGER: Duration = Duration::from_millis(300);

/// A `chat_created` of `customer`, as chat-manager's relay publishes it.
fn chat_created(exchange: &str, customer: &str, name: &str) -> EventMessage {
    let owner = uuid::Uuid::new_v4().to_string();
    let chat = common::resources::ChatJson {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: customer.to_owned(),
        chat_type: "group".into(),
        owner_id: owner.clone(),
        participant_ids: vec![owner],
        name: name.to_owned(),
        detail: String::new(),
        tm_create: "2026-01-01 00:00:00.000000".into(),
        tm_update: "2026-01-01 00:00:00.000000".into(),
        tm_delete: common::time::LIVE.into(),
    };
    let data = EventData::Chat(ChatEventData {
        chat,
        chatrooms: Default::default(),
    });
    let event = pipeline::Event::new(EventType::CHAT_CREATED, &data);
    let payload = event.to_cloudevent("chat-manager", common::time::now());
    EventMessage {
        exchange: exchange.to_owned(),
        routing_key: event.routing_key(),
        message_id: event.id.to_string(),
        payload: Arc::from(payload.into_bytes()),
        request_id: None,
        traceparent: None,
    }
}

async fn publish_chat(bus: &EventBus, exchange: &str, customer: &str, name: &str) {
    bus.publish(&[chat_created(exchange, customer, name)])
        .await
        .unwrap();
}

/// The hub's exchanges: the typing one named after the chat exchange (`<chat>.typing`, which
/// the RabbitMQ tests hand out for clean-up).
fn exchanges(chat_ex: &str, message_ex: &str) -> HubExchanges {
    HubExchanges::new(chat_ex, message_ex).with_typing(&format!("{chat_ex}.typing"))
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
    let HubMessage::Event { event, items } = message else {
        panic!("expected an event, got {message:?}");
    };
    let frame = event.item_frame(items[0] as usize).unwrap();
    let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
    frame["data"]["name"].as_str().unwrap().to_owned()
}

async fn subscribes_only_while_sockets_are_open(bus: EventBus, chat_ex: &str, message_ex: &str) {
    let settings = WsSettings {
        idle_unsubscribe_after: LINGER,
        ..WsSettings::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let (hub, task) = EventHub::start(
        bus.clone(),
        &exchanges(chat_ex, message_ex),
        &settings,
        shutdown,
    );
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
    names.name("chat.events.typing");
    subscribes_only_while_sockets_are_open(
        EventBus::amqp(names.url.clone()),
        &chat_ex,
        &message_ex,
    )
    .await;
    names.cleanup().await;
}

/// Waits until the hub has received `n` events from the broker.
async fn received(hub: &EventHub, n: u64) -> (u64, u64) {
    wait_until(&format!("the hub receives {n} events"), || {
        hub.stats().received().0 >= n
    })
    .await;
    // Anything more (there should be nothing) would arrive right behind.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.stats().received()
}

/// Two gateway replicas, each with sockets of one tenant: each one's queue is bound to its own
/// sockets' tenants only, so neither receives the other tenant's events from the broker; and a
/// tenant's binding goes with its last socket.
async fn each_hub_receives_only_the_tenants_of_its_sockets(
    bus: EventBus,
    chat_ex: &str,
    message_ex: &str,
) {
    let settings = WsSettings {
        idle_unsubscribe_after: LINGER,
        ..WsSettings::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let (one, one_task) = EventHub::start(
        bus.clone(),
        &exchanges(chat_ex, message_ex),
        &settings,
        shutdown.clone(),
    );
    let (two, two_task) = EventHub::start(
        bus.clone(),
        &exchanges(chat_ex, message_ex),
        &settings,
        shutdown,
    );
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let mut socket_a = open_socket(&one, &a).await;
    let mut socket_b = open_socket(&two, &b).await;

    for n in 0..3 {
        publish_chat(&bus, chat_ex, &a, &format!("a{n}")).await;
    }
    for n in 0..5 {
        publish_chat(&bus, chat_ex, &b, &format!("b{n}")).await;
    }
    for n in 0..3 {
        assert_eq!(next_chat_name(&mut socket_a).await, format!("a{n}"));
    }
    for n in 0..5 {
        assert_eq!(next_chat_name(&mut socket_b).await, format!("b{n}"));
    }
    let (one_got, two_got) = (received(&one, 3).await, received(&two, 5).await);
    println!(
        "tenant A: 3 events, tenant B: 5; the replica with A's socket received {one_got:?}, \
         the one with B's {two_got:?} (events, of which for no socket there)"
    );
    assert_eq!(one_got, (3, 0), "replica one: A's events only");
    assert_eq!(two_got, (5, 0), "replica two: B's events only");

    // Replica one gets a socket of B and loses its socket of A: it is bound to B now, not A.
    let mut socket_b_on_one = open_socket(&one, &b).await;
    drop(socket_a);
    wait_until("A unbound from replica one", || !one.is_bound(&a)).await;
    assert!(one.is_bound(&b));
    publish_chat(&bus, chat_ex, &a, "a after").await;
    publish_chat(&bus, chat_ex, &b, "b after").await;
    assert_eq!(next_chat_name(&mut socket_b_on_one).await, "b after");
    assert_eq!(next_chat_name(&mut socket_b).await, "b after");
    let one_got = received(&one, 4).await;
    assert_eq!(one_got, (4, 0), "replica one: B's event, not A's");

    drop((socket_b, socket_b_on_one));
    stop.send(true).unwrap();
    for task in [one_task, two_task] {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the hub stops")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_hubs_receive_only_the_tenants_of_their_sockets() {
    each_hub_receives_only_the_tenants_of_its_sockets(EventBus::in_process(), "chat", "message")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_hubs_receive_only_the_tenants_of_their_sockets() {
    let test = "hub_feed::rabbitmq_hubs_receive_only_the_tenants_of_their_sockets";
    let Some(names) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let (chat_ex, message_ex) = (names.name("chat.events"), names.name("message.events"));
    names.name("chat.events.typing");
    each_hub_receives_only_the_tenants_of_its_sockets(
        EventBus::amqp(names.url.clone()),
        &chat_ex,
        &message_ex,
    )
    .await;
    names.cleanup().await;
}

/// What arrives on the exchanges under a tenant's routing key but is not an event of the
/// contract (not JSON, an unknown type, data that does not match its type, items naming
/// nothing a socket could match, a huge body) is skipped: the socket gets no frame of it, and
/// the next event still reaches it.
#[tokio::test]
async fn junk_on_the_exchanges_is_skipped_and_the_next_event_still_arrives() {
    let (chat_ex, message_ex) = ("chat", "message");
    let bus = EventBus::in_process();
    let (stop, shutdown) = watch::channel(false);
    let (hub, task) = EventHub::start(
        bus.clone(),
        &exchanges(chat_ex, message_ex),
        &WsSettings::default(),
        shutdown,
    );
    let customer = uuid::Uuid::new_v4().to_string();
    let mut socket = open_socket(&hub, &customer).await;

    let envelope = |event_type: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"e","source":"s","type":"{event_type}","time":"t","datacontenttype":"application/json","customerid":"{customer}","data":{data}}}"#
        )
    };
    let junk = [
        "not json".to_owned(),
        "{}".to_owned(),
        envelope("chat_renamed", "{}"),
        envelope("chat_created", r#"{"id":"x"}"#),
        envelope("chat_created", &format!("[{}]", "1,".repeat(500_000) + "1")),
        envelope(
            "messagechat_created",
            r#"{"id":"m","chatroommessages":[["a","b"]]}"#,
        ),
    ];
    let messages: Vec<EventMessage> = junk
        .iter()
        .map(|payload| EventMessage {
            exchange: chat_ex.to_owned(),
            routing_key: format!("chat_created.{customer}"),
            message_id: uuid::Uuid::new_v4().to_string(),
            payload: Arc::from(payload.as_bytes()),
            request_id: None,
            traceparent: None,
        })
        .collect();
    bus.publish(&messages).await.unwrap();
    publish_chat(&bus, chat_ex, &customer, "after the junk").await;
    assert_eq!(next_chat_name(&mut socket).await, "after the junk");
    assert!(
        socket.events.try_recv().is_err(),
        "nothing else reached the socket"
    );
    assert!(hub.stats().received().0 > junk.len() as u64);

    drop(socket);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the hub stops")
        .unwrap();
}
