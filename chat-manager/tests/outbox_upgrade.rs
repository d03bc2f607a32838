//! Upgrading a database whose outbox holds unsent rows of the format before typed records
//! (one line per event: rendered events, and compact `@chatrooms` records): nothing is lost,
//! and they are published in today's form, one event per change under its old id, with
//! routing keys `<type>.<customer id>`.

use std::time::Duration;

use diesel::migration::{MigrationConnection, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use pipeline::bus::EventBus;
use pipeline::outbox::RelaySignal;
use serde_json::{Value, json};

const CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";
const CHAT: &str = "9a1c1a30-0000-4000-8000-000000000001";
const OWNERS: [&str; 3] = [
    "a0000000-0000-4000-8000-00000000000a",
    "b0000000-0000-4000-8000-00000000000b",
    "c0000000-0000-4000-8000-00000000000c",
];
const CREATED: &str = "2026-12-01 10:00:00.000000";
const LIVE: &str = "9999-01-01 00:00:00.000000";

fn room_id(n: usize) -> String {
    format!("9a1c1a30-0000-4000-8000-00000000010{n}")
}

/// A rendered line as the previous release wrote it.
fn rendered_line(id: uuid::Uuid, event_type: &str, owner: Option<&str>, data: Value) -> String {
    let mut event = json!({
        "specversion": "1.0", "id": id, "source": "chat-manager", "type": event_type,
        "time": "2026-12-01T10:00:00.000000Z", "datacontenttype": "application/json",
        "customerid": CUSTOMER, "data": data,
    });
    if let Some(owner) = owner {
        event["ownerid"] = json!(owner);
    }
    format!("{event_type}\t{id}\t{event}")
}

fn chat_json() -> Value {
    json!({
        "id": CHAT, "customer_id": CUSTOMER, "type": "group", "owner_id": OWNERS[0],
        "participant_ids": OWNERS, "name": "team", "detail": "", "tm_create": CREATED,
        "tm_update": CREATED, "tm_delete": LIVE,
    })
}

/// The previous release's rows: a chat's creation (its event, then its rooms' compact
/// record), and one room renamed (a rendered line).
fn legacy_rows(chat_event: uuid::Uuid, rooms_base: uuid::Uuid, renamed: uuid::Uuid) -> [String; 2] {
    let rooms: Vec<Value> = (0..3)
        .map(|n| {
            json!({"id": room_id(n), "owner_id": OWNERS[n], "tm_create": "2026-12-01T10:00:00",
                   "tm_update": "2026-12-01T10:00:00", "tm_delete": "9999-01-01T00:00:00"})
        })
        .collect();
    let record = json!({
        "event_type": "chatroom_created", "event_id_base": rooms_base, "customer_id": CUSTOMER,
        "chat_id": CHAT, "chat_type": "group", "participant_ids": OWNERS, "name": "team",
        "detail": "", "rooms": rooms,
    });
    let created = format!(
        "{}\n@chatrooms\t{record}",
        rendered_line(chat_event, "chat_created", None, chat_json())
    );
    let room = json!({
        "id": room_id(1), "customer_id": CUSTOMER, "type": "group", "chat_id": CHAT,
        "owner_id": OWNERS[1], "participant_ids": OWNERS, "name": "mine", "detail": "",
        "tm_create": CREATED, "tm_update": "2026-12-01 10:00:01.000000", "tm_delete": LIVE,
    });
    let renamed = rendered_line(renamed, "chatroom_updated", Some(OWNERS[1]), room);
    [created, renamed]
}

#[tokio::test]
async fn unsent_rows_of_the_previous_format_are_published_in_todays() {
    let test = "outbox_upgrade::unsent_rows_of_the_previous_format_are_published_in_todays";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let (chat_event, rooms_base, renamed) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    // The database as the previous release left it: its migrations, its unsent rows.
    let (url, schema) = (pg.url.clone(), pg.schema.clone());
    let rows = legacy_rows(chat_event, rooms_base, renamed);
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        diesel::sql_query(format!("SET search_path TO \"{schema}\""))
            .execute(&mut conn)
            .unwrap();
        conn.setup().unwrap();
        let migrations =
            MigrationSource::<Pg>::migrations(chat_manager::db::MIGRATIONS.postgres).unwrap();
        for m in &migrations[..3] {
            conn.run_migration(&**m).unwrap();
        }
        for (n, events) in rows.iter().enumerate() {
            diesel::sql_query(
                "INSERT INTO outbox (events, event_count, created_at) VALUES ($1, $2, $3)",
            )
            .bind::<diesel::sql_types::Text, _>(events)
            .bind::<diesel::sql_types::Integer, _>(if n == 0 { 4 } else { 1 })
            .bind::<diesel::sql_types::Timestamp, _>(common::time::now())
            .execute(&mut conn)
            .unwrap();
        }
    })
    .await
    .unwrap();

    // This release starts on it: the rest of the migrations, then its relay.
    let db = common::db::Db::open(
        common::db::DbTarget::Postgres {
            url: pg.url.clone(),
            schema: pg.schema.clone(),
        },
        chat_manager::db::MIGRATIONS,
        common::db::DbOptions::default(),
    )
    .await
    .unwrap();
    let exchange = amqp.name("chat.events");
    let mut reader = testkit::EventReader::bind(&amqp.url, &exchange).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relay = chat_manager::relay(
        db.clone(),
        EventBus::amqp(amqp.url.clone()),
        &exchange,
        RelaySignal::default(),
    );
    let task = tokio::spawn(relay.run(stopped));
    let mut events = Vec::new();
    while events.len() < 2 {
        match reader.next_within(Duration::from_secs(10)).await {
            Some(e) => events.push(e),
            None => break,
        }
    }
    events.extend(reader.collect_for(Duration::from_millis(500)).await);
    let _ = stop.send(true);
    task.await.unwrap();

    let keys: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("chat_created.{CUSTOMER}"),
            format!("chatroom_updated.{CUSTOMER}")
        ],
        "one event per change, in order, each once"
    );
    let created = &events[0].2;
    assert_eq!(
        created["id"],
        chat_event.to_string(),
        "the chat event's old id"
    );
    let parsed = pipeline::cloudevent::parse(created.to_string().as_bytes()).unwrap();
    let items: Vec<_> = parsed.items().collect();
    assert_eq!(items.len(), 4, "the chat and its three rooms");
    for (n, owner) in OWNERS.iter().enumerate() {
        let room: Value = serde_json::from_str(&parsed.item_json(n + 1).unwrap()).unwrap();
        assert_eq!(room["id"], room_id(n));
        assert_eq!(room["owner_id"], *owner);
        assert_eq!(room["participant_ids"], json!(OWNERS));
        assert_eq!(
            (room["tm_create"].as_str(), room["tm_delete"].as_str()),
            (Some(CREATED), Some(LIVE))
        );
    }
    let renamed_event = &events[1].2;
    assert_eq!(renamed_event["id"], renamed.to_string());
    assert_eq!(renamed_event["ownerid"], OWNERS[1]);
    assert_eq!(renamed_event["data"]["name"], "mine");
    let unsent = db
        .run(|c| pipeline::outbox::backlog(c).map_err(common::db::DbError::from))
        .await
        .unwrap();
    assert_eq!(unsent, 0, "both rows marked sent");
    amqp.cleanup().await;
}
