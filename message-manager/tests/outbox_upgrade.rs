//! Upgrading a database whose outbox holds unsent rows of the format before typed records: a
//! send's compact record (`@messagechat_created\t<message>\t<event id base>\t<room numbers>`)
//! and a rendered copy deletion are published in today's form: the send as one event naming
//! its copies, under the id of the first event it stood for.

use std::time::Duration;

use diesel::migration::{MigrationConnection, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use message_manager::chatroommessages::{CopyKey, message_no};
use message_manager::db::queries;
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
const MESSAGE: &str = "7f000001-0000-4000-8000-000000000000";
const SENT: &str = "2026-12-01 10:00:01";
const LIVE: &str = "9999-01-01 00:00:00";

fn room_id(n: usize) -> String {
    format!("9a1c1a30-0000-4000-8000-00000000010{n}")
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
    let (base, deletion) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (url, schema) = (pg.url.clone(), pg.schema.clone());
    // The database as the previous release left it: its migrations, a chat of three rooms, a
    // message sent to all three and its unsent compact record, and a copy deleted on its own
    // (a rendered line).
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        diesel::sql_query(format!("SET search_path TO \"{schema}\""))
            .execute(&mut conn)
            .unwrap();
        conn.setup().unwrap();
        let migrations =
            MigrationSource::<Pg>::migrations(message_manager::db::MIGRATIONS.postgres).unwrap();
        for m in &migrations[..4] {
            conn.run_migration(&**m).unwrap();
        }
        let mut run = |sql: String| {
            diesel::sql_query(&sql)
                .execute(&mut conn)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        };
        run(format!(
            "INSERT INTO member_chats (id, customer_id, participant_ids, tm_update, tm_delete) \
             VALUES ('{CHAT}', '{CUSTOMER}', '{}', '2026-12-01 10:00:00', '{LIVE}')",
            json!(OWNERS)
        ));
        for (n, owner) in OWNERS.iter().enumerate() {
            run(format!(
                "INSERT INTO member_chatrooms (id, customer_id, chat_id, owner_id, tm_create, \
                   tm_update, tm_delete) \
                 VALUES ('{}', '{CUSTOMER}', '{CHAT}', '{owner}', '2026-12-01 10:00:00', \
                   '2026-12-01 10:00:00', '{LIVE}')",
                room_id(n)
            ));
        }
        let no = message_no(&MESSAGE.parse().unwrap());
        run(format!(
            "INSERT INTO chatmessages (no, id, customer_id, chat_id, source, message_type, text, \
               medias, tm_create, tm_update, tm_delete) \
             VALUES ({no}, '{MESSAGE}', '{CUSTOMER}', '{CHAT}', \
               '{{\"type\":\"agent\",\"target\":\"{}\"}}', 'normal', 'hello', '[]', '{SENT}', \
               '{SENT}', '{LIVE}')",
            OWNERS[0]
        ));
        run(format!(
            "INSERT INTO outbox (events, event_count, created_at) \
             SELECT '@messagechat_created' || chr(9) || '{MESSAGE}' || chr(9) || '{base}' \
               || chr(9) || string_agg(no::text, ',' ORDER BY no), 4, now() \
             FROM member_chatrooms"
        ));
        let copy = json!({
            "id": "00000000-0000-4000-8000-000000000000", "customer_id": CUSTOMER,
            "chatroom_id": room_id(2), "messagechat_id": MESSAGE,
            "source": {"type": "agent", "target": OWNERS[0], "target_name": "", "name": "",
                       "detail": ""},
            "type": "normal", "text": "hello", "medias": [],
            "tm_create": "2026-12-01 10:00:01.000000", "tm_update": "2026-12-01 10:00:02.000000",
            "tm_delete": "2026-12-01 10:00:02.000000",
        });
        let event = json!({
            "specversion": "1.0", "id": deletion, "source": "message-manager",
            "type": "messagechatroom_deleted", "time": "2026-12-01T10:00:02.000000Z",
            "datacontenttype": "application/json", "customerid": CUSTOMER, "ownerid": OWNERS[2],
            "data": copy,
        });
        let line = format!("messagechatroom_deleted\t{deletion}\t{event}");
        run(format!(
            "INSERT INTO outbox (events, event_count, created_at) VALUES ('{}', 1, now())",
            line.replace('\'', "''")
        ));
    })
    .await
    .unwrap();

    // This release starts on it: the rest of the migrations, then its relay.
    let db = common::db::Db::open(
        common::db::DbTarget::Postgres {
            url: pg.url.clone(),
            schema: pg.schema.clone(),
        },
        message_manager::db::MIGRATIONS,
        common::db::DbOptions::default(),
    )
    .await
    .unwrap();
    let exchange = amqp.name("message.events");
    let mut reader = testkit::EventReader::bind(&amqp.url, &exchange).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relay = message_manager::relay(
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
            format!("messagechat_created.{CUSTOMER}"),
            format!("messagechatroom_deleted.{CUSTOMER}")
        ],
        "one event per change, in order, each once"
    );
    let sent = &events[0].2;
    assert_eq!(sent["id"], base.to_string(), "the id of its first event");
    assert_eq!(sent["data"]["text"], "hello");
    let copies = sent["data"]["chatroommessages"].as_array().unwrap();
    assert_eq!(copies.len(), 3, "a copy per room");
    let rooms = db
        .run(|c| {
            let mut rooms = Vec::new();
            for n in 0..3 {
                rooms.push(queries::member_room(c, &room_id(n))?.unwrap());
            }
            Ok::<_, common::db::DbError>(rooms)
        })
        .await
        .unwrap();
    let message = db
        .run(|c| {
            Ok::<_, common::db::DbError>(
                queries::messages_by_no(c, &[message_no(&MESSAGE.parse().unwrap())])?
                    .pop()
                    .unwrap(),
            )
        })
        .await
        .unwrap();
    for (copy, room) in copies.iter().zip(&rooms) {
        let expected = [
            CopyKey::of(room, &message).id().to_string(),
            room.id.clone(),
            room.owner_id.clone(),
        ];
        assert_eq!(copy, &json!(expected), "the copy's id, room and owner");
    }
    let deleted: &Value = &events[1].2;
    assert_eq!(deleted["id"], deletion.to_string());
    assert_eq!(deleted["ownerid"], OWNERS[2]);
    let unsent = db
        .run(|c| pipeline::outbox::backlog(c).map_err(common::db::DbError::from))
        .await
        .unwrap();
    assert_eq!(unsent, 0, "both rows marked sent");
    amqp.cleanup().await;
}
