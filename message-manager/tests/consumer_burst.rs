//! message-manager's consumer takes a burst of chat events without falling over: a thousand
//! chats' changes (each created with three participants, joined by a fourth, renamed: three
//! events naming ten chatroom changes and three chat states) published as fast as the broker
//! confirms them, in the format chat-manager's relay publishes (sent in rounds of 500 without
//! waiting for earlier confirms), against the real RabbitMQ and PostgreSQL. Every event takes
//! effect exactly once in the membership view, the queue drains, nothing is dead-lettered.
//! Prints the time taken and the rate.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::{Db, DbError, DbOptions, DbTarget};
use common::resources::ChatJson;
use diesel::prelude::*;
use message_manager::db::models::{MemberChat, MemberChatroom};
use message_manager::db::schema::{member_chatrooms, member_chats, processed_events};
use pipeline::bus::{EventBus, EventMessage};
use pipeline::contract::{ChatEventData, ChatroomChanges, ChatroomItem, EventData, EventType};
use proto::chat::v1 as chat_pb;

/// Chats in the burst; each is created with three participants, gets a fourth participant and
/// is renamed: three events a chat.
const CHATS: usize = 1_000;
const EVENTS: usize = CHATS * 3;
/// Events per publishing round, as chat-manager's relay sends them.
const ROUND: usize = 500;
/// How long the consumer may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(180);

const LIVE: &str = "9999-01-01 00:00:00.000000";
const CREATED: &str = "2026-01-01 00:00:01.000000";
const JOINED: &str = "2026-01-01 00:00:02.000000";
const RENAMED: &str = "2026-01-01 00:00:03.000000";

struct ChatPlan {
    id: String,
    /// Sorted, as chat-manager lists them; the last one joins later.
    participants: Vec<String>,
    rooms: Vec<String>,
}

fn chat(c: &ChatPlan, customer: &str, members: &[String], name: &str, tm: &str) -> ChatJson {
    ChatJson::from(chat_pb::Chat {
        id: c.id.clone(),
        customer_id: customer.to_owned(),
        r#type: chat_pb::ChatType::Group as i32,
        owner_id: c.participants[0].clone(),
        participant_ids: members.to_vec(),
        name: name.to_owned(),
        detail: String::new(),
        tm_create: CREATED.to_owned(),
        tm_update: tm.to_owned(),
        tm_delete: LIVE.to_owned(),
    })
}

/// Room `i` of the chat, as its chat's event names it.
fn room(c: &ChatPlan, i: usize, tm_create: Option<&str>) -> ChatroomItem {
    ChatroomItem {
        id: c.rooms[i].clone(),
        owner_id: c.participants[i].clone(),
        tm_create: tm_create.map(str::to_owned),
        name: None,
        detail: None,
    }
}

/// The events chat-manager would publish for one chat, in order.
fn events(c: &ChatPlan, customer: &str) -> Vec<pipeline::Event> {
    let first = &c.participants[..3];
    let all = &c.participants[..];
    let event = |event_type, chat, chatrooms| {
        pipeline::Event::new(
            event_type,
            &EventData::Chat(ChatEventData { chat, chatrooms }),
        )
    };
    vec![
        event(
            EventType::CHAT_CREATED,
            chat(c, customer, first, "burst", CREATED),
            ChatroomChanges {
                created: (0..3).map(|i| room(c, i, None)).collect(),
                ..Default::default()
            },
        ),
        event(
            EventType::CHAT_UPDATED,
            chat(c, customer, all, "burst", JOINED),
            ChatroomChanges {
                created: vec![room(c, 3, Some(JOINED))],
                updated: (0..3).map(|i| room(c, i, None)).collect(),
                ..Default::default()
            },
        ),
        event(
            EventType::CHAT_UPDATED,
            chat(c, customer, all, "burst, renamed", RENAMED),
            ChatroomChanges::default(),
        ),
    ]
}

/// An event as the relay publishes it.
fn as_published(exchange: &str, event: &pipeline::Event) -> EventMessage {
    let payload = event.to_cloudevent("chat-manager", common::time::now());
    EventMessage {
        exchange: exchange.to_owned(),
        routing_key: event.routing_key(),
        message_id: event.id.to_string(),
        payload: Arc::from(payload.into_bytes()),
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        traceparent: None,
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_chats_changes_applies_once_each_and_drains() {
    let test = "consumer_burst::a_burst_of_a_thousand_chats_changes_applies_once_each_and_drains";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let target = DbTarget::Postgres {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
    };
    let db = Db::open(
        target,
        message_manager::db::MIGRATIONS,
        DbOptions::default(),
    )
    .await
    .unwrap();
    let (exchange, queue) = (amqp.name("chat.events"), amqp.name("chat-events"));
    let dead_letters = amqp.name("chat-events.dead-letter");
    assert_eq!(
        dead_letters,
        message_manager::events::dead_letter_queue(&queue)
    );

    // The burst, built before the clock starts: chat-manager's transactions in commit order
    // (every chat created, then each joined by a fourth participant, then each renamed).
    let customer = uuid();
    let plans: Vec<ChatPlan> = (0..CHATS)
        .map(|_| {
            let mut participants: Vec<String> = (0..4).map(|_| uuid()).collect();
            participants.sort();
            ChatPlan {
                id: uuid(),
                participants,
                rooms: (0..4).map(|_| uuid()).collect(),
            }
        })
        .collect();
    let by_chat: Vec<Vec<pipeline::Event>> = plans.iter().map(|c| events(c, &customer)).collect();
    let messages: Vec<EventMessage> = (0..3)
        .flat_map(|stage| by_chat.iter().map(move |events| &events[stage]))
        .map(|event| as_published(&exchange, event))
        .collect();
    assert_eq!(messages.len(), EVENTS);
    let published_ids: BTreeSet<String> = messages.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(published_ids.len(), EVENTS, "event ids are unique");

    // The consumer as the service runs it, on its own connection to the broker.
    let bus = EventBus::amqp(amqp.url.clone());
    let subscription = message_manager::subscribe_chat_events(&bus, &exchange, &queue)
        .await
        .expect("subscribe");
    let consumer = message_manager::events::ChatEventConsumer {
        db: db.clone(),
        bus: bus.clone(),
        spec: message_manager::events::subscription_spec(&exchange, &queue),
    };
    let dead_before = common::metrics::dead_lettered(&queue);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let consumer_task = tokio::spawn(consumer.run(subscription, stopped));

    // chat-manager's side: another connection, rounds sent without waiting for the previous
    // round's confirms.
    let publisher = EventBus::amqp(amqp.url.clone());
    let started = Instant::now();
    let mut pending = Vec::new();
    for round in messages.chunks(ROUND) {
        pending.push(publisher.send(round).await.expect("send a round"));
    }
    for confirms in pending {
        confirms.confirmed().await.expect("confirmed");
    }
    let published_in = started.elapsed();
    eprintln!(
        "published {EVENTS} events in {:.2} s ({:.0} events/s), confirmed by the broker",
        published_in.as_secs_f64(),
        EVENTS as f64 / published_in.as_secs_f64()
    );

    // Wait for every event to be applied, watching the queue.
    let mut max_depth = 0u32;
    let mut last_report = Instant::now();
    let applied_in = loop {
        let applied = db
            .run(|c| {
                processed_events::table
                    .count()
                    .get_result::<i64>(c)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        if let Ok(Some(depth)) = bus.queue_depth(&queue).await {
            max_depth = max_depth.max(depth);
        }
        if applied as usize >= EVENTS {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "only {applied} of {EVENTS} events applied after {DEADLINE:?}"
        );
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {applied} applied after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "applied {EVENTS} events {:.2} s after the first was published ({:.0} events/s); \
         deepest queue seen: {max_depth} ready",
        applied_in.as_secs_f64(),
        EVENTS as f64 / applied_in.as_secs_f64()
    );

    // Stop the consumer: its channel closes, so a delivery left unacknowledged would be
    // requeued and show in the depth below.
    stop.send(true).unwrap();
    consumer_task.await.unwrap();
    let mut depth = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        depth = bus.queue_depth(&queue).await.expect("queue depth");
    }
    assert_eq!(
        depth,
        Some(0),
        "the queue drained, every delivery acknowledged"
    );
    let aside = testkit::drain_queue(&amqp.url, &dead_letters).await;
    assert!(aside.is_empty(), "nothing dead-lettered: {aside:?}");
    assert_eq!(common::metrics::dead_lettered(&queue), dead_before);

    // Exactly once: every published event id recorded once (the primary key), no other.
    let recorded: Vec<String> = db
        .run(|c| {
            processed_events::table
                .select(processed_events::id)
                .load::<String>(c)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(recorded.len(), EVENTS);
    assert_eq!(
        recorded.into_iter().collect::<BTreeSet<_>>(),
        published_ids,
        "each published event recorded as applied, once"
    );

    // And their effects: each chat's last state, each chatroom live, nothing else.
    let c = customer.clone();
    let (chats, rooms) = db
        .run(move |conn| {
            let chats = member_chats::table
                .filter(member_chats::customer_id.eq(&c))
                .select(MemberChat::as_select())
                .load(conn)?;
            let rooms = member_chatrooms::table
                .filter(member_chatrooms::customer_id.eq(&c))
                .select(MemberChatroom::as_select())
                .load(conn)?;
            Ok::<_, DbError>((chats, rooms))
        })
        .await
        .unwrap();
    assert_eq!(chats.len(), CHATS, "one view row per chat");
    assert_eq!(rooms.len(), CHATS * 4, "one view row per chatroom");
    let renamed = common::time::parse(RENAMED).unwrap();
    let joined = common::time::parse(JOINED).unwrap();
    let chats: std::collections::HashMap<&str, &MemberChat> =
        chats.iter().map(|c| (c.id.as_str(), c)).collect();
    let rooms: std::collections::HashMap<&str, &MemberChatroom> =
        rooms.iter().map(|r| (r.id.as_str(), r)).collect();
    for plan in &plans {
        let chat = chats[plan.id.as_str()];
        assert_eq!(chat.participants(), plan.participants, "chat {}", plan.id);
        assert_eq!(
            chat.tm_update, renamed,
            "chat {}: the rename applied",
            plan.id
        );
        assert_eq!(chat.tm_delete, common::time::live());
        for (i, room_id) in plan.rooms.iter().enumerate() {
            let room = rooms[room_id.as_str()];
            assert_eq!(room.chat_id, plan.id);
            assert_eq!(room.owner_id, plan.participants[i]);
            assert_eq!(
                room.tm_update, joined,
                "room {room_id}: its last update applied"
            );
            assert_eq!(room.tm_delete, common::time::live());
        }
    }

    drop(bus);
    drop(publisher);
    amqp.cleanup().await;
    drop(db);
}
