//! The chat-event consumer against real storage: an event applied twice has one effect, and
//! a late, older event never undoes a newer state or a deletion.

use common::db::{Db, DbError, DbOptions, DbTarget};
use message_manager::db::queries;
use message_manager::events::{Handled, handle};
use message_manager::membership;
use serde_json::json;

fn event(id: &str, kind: &str, data: serde_json::Value) -> Vec<u8> {
    json!({"specversion": "1.0", "id": id, "source": "chat-manager", "type": kind,
           "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
           "customerid": data["customer_id"], "data": data})
    .to_string()
    .into_bytes()
}

fn chat(
    id: &str,
    customer: &str,
    participants: &[&str],
    tm_update: &str,
    tm_delete: &str,
) -> serde_json::Value {
    json!({"id": id, "customer_id": customer, "type": "group", "owner_id": participants[0],
           "participant_ids": participants, "name": "", "detail": "",
           "tm_create": "2026-01-01 00:00:00.000000", "tm_update": tm_update, "tm_delete": tm_delete})
}

/// message-manager's storage in the test's own PostgreSQL schema, migrated.
async fn migrated(pg: &testkit::PgSchema) -> Db {
    let target = DbTarget::Postgres {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
    };
    Db::open(
        target,
        message_manager::db::MIGRATIONS,
        DbOptions::default(),
    )
    .await
    .unwrap()
}

const LIVE: &str = "9999-01-01 00:00:00.000000";

async fn scenario(db: Db) {
    let (chat_id, customer) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let created = event(
        "e1",
        "chat_created",
        chat(
            &chat_id,
            &customer,
            &["a", "b"],
            "2026-01-01 00:00:01.000000",
            LIVE,
        ),
    );
    assert_eq!(handle(&db, &created).await.unwrap(), Handled::Applied);
    assert_eq!(
        handle(&db, &created).await.unwrap(),
        Handled::Duplicate,
        "a redelivery changes nothing"
    );

    let updated = event(
        "e2",
        "chat_updated",
        chat(
            &chat_id,
            &customer,
            &["a", "b", "c"],
            "2026-01-01 00:00:03.000000",
            LIVE,
        ),
    );
    assert_eq!(handle(&db, &updated).await.unwrap(), Handled::Applied);
    // An older update arriving late (say, after a fill from chat-manager) is ignored.
    let stale = event(
        "e3",
        "chat_updated",
        chat(
            &chat_id,
            &customer,
            &["a"],
            "2026-01-01 00:00:02.000000",
            LIVE,
        ),
    );
    assert_eq!(handle(&db, &stale).await.unwrap(), Handled::Applied);
    let (c, id) = (customer.clone(), chat_id.clone());
    let members = db
        .run(move |conn| membership::load(conn, &c, &id))
        .await
        .map_err(|e: message_manager::error::MessageError| e)
        .unwrap()
        .unwrap();
    assert_eq!(members.chat.participants(), ["a", "b", "c"]);

    // Deletion is final: nothing after it brings the chat back.
    let deleted = event(
        "e4",
        "chat_deleted",
        chat(
            &chat_id,
            &customer,
            &["a", "b", "c"],
            "2026-01-01 00:00:04.000000",
            "2026-01-01 00:00:04.000000",
        ),
    );
    handle(&db, &deleted).await.unwrap();
    let later = event(
        "e5",
        "chat_updated",
        chat(
            &chat_id,
            &customer,
            &["a", "b", "c"],
            "2026-01-01 00:00:05.000000",
            LIVE,
        ),
    );
    handle(&db, &later).await.unwrap();
    let (c, id) = (customer.clone(), chat_id.clone());
    let members = db
        .run(move |conn| membership::load(conn, &c, &id))
        .await
        .map_err(|e: message_manager::error::MessageError| e)
        .unwrap()
        .unwrap();
    assert!(!members.is_live());

    // Another tenant does not see it; a malformed event is refused, not applied.
    let (other, id) = (uuid::Uuid::new_v4().to_string(), chat_id.clone());
    let none = db
        .run(move |conn| membership::load(conn, &other, &id))
        .await
        .map_err(|e: message_manager::error::MessageError| e)
        .unwrap();
    assert!(none.is_none());
    assert!(handle(&db, b"not json").await.is_err());
    assert!(
        handle(&db, &event("e6", "chat_created", json!({"id": "x"})))
            .await
            .is_err()
    );
    let seen = db
        .run(|conn| queries::mark_processed(conn, "e6").map_err(DbError::from))
        .await
        .unwrap();
    assert!(seen, "a refused event is not recorded as processed");
}

#[tokio::test]
async fn duplicate_and_stale_events_on_sqlite() {
    let path = std::env::temp_dir().join(format!("mm-{}.db", uuid::Uuid::new_v4().simple()));
    let target = DbTarget::Sqlite {
        path: path.to_string_lossy().into_owned(),
    };
    let db = Db::open(
        target,
        message_manager::db::MIGRATIONS,
        DbOptions::default(),
    )
    .await
    .unwrap();
    scenario(db).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn duplicate_and_stale_events_on_postgres() {
    let Some(pg) =
        testkit::require_postgres("consumer::duplicate_and_stale_events_on_postgres").await
    else {
        return;
    };
    let db = migrated(&pg).await;
    scenario(db.clone()).await;
    drop(db);
}

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    n: i32,
}

/// A consumer's transaction that claims `event_id`, says whether it did (and its session's
/// pid), and commits or rolls back when told (holding the transaction open until then).
async fn claim_and_wait(
    db: Db,
    event_id: &'static str,
    claimed: tokio::sync::oneshot::Sender<(bool, i32)>,
    commit: std::sync::mpsc::Receiver<bool>,
) -> Result<bool, DbError> {
    db.run(move |conn| {
        use diesel::{Connection, RunQueryDsl};
        conn.transaction(|conn| {
            let applied = queries::mark_processed(conn, event_id)?;
            let pid =
                diesel::sql_query("SELECT pg_backend_pid() AS n").get_result::<Number>(conn)?;
            claimed.send((applied, pid.n)).unwrap();
            if commit.recv().unwrap() {
                Ok(applied)
            } else {
                Err(diesel::result::Error::RollbackTransaction)
            }
        })
        .map_err(DbError::from)
    })
    .await
}

/// Waits (up to 10 s) until a session is blocked by the session `pid`: the racing consumer
/// has reached the first one's uncommitted row.
async fn wait_until_blocked_by(db: &Db, pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting = db
            .run(move |conn| {
                use diesel::RunQueryDsl;
                diesel::sql_query(format!(
                    "SELECT count(*)::int AS n FROM pg_stat_activity \
                     WHERE {pid} = ANY(pg_blocking_pids(pid))"
                ))
                .get_result::<Number>(conn)
                .map_err(DbError::from)
            })
            .await
            .unwrap();
        if waiting.n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second consumer never waited for the first's transaction"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A first consumer claims `event_id` and holds its transaction open; a second tries to claim
/// it too and is seen waiting; then the first commits (or rolls back). Both results.
async fn race(
    db: &Db,
    event_id: &'static str,
    commit_first: bool,
) -> (Result<bool, DbError>, Result<bool, DbError>) {
    let (first_claimed, claimed) = tokio::sync::oneshot::channel();
    let (commit, committed) = std::sync::mpsc::channel::<bool>();
    let first = tokio::spawn(claim_and_wait(
        db.clone(),
        event_id,
        first_claimed,
        committed,
    ));
    let (applied, first_pid) = claimed.await.unwrap();
    assert!(applied, "the first delivery claims {event_id}");
    let second = tokio::spawn({
        let db = db.clone();
        async move {
            db.run(move |conn| queries::mark_processed(conn, event_id).map_err(DbError::from))
                .await
        }
    });
    wait_until_blocked_by(db, first_pid).await;
    assert!(
        !second.is_finished(),
        "the second waits for the first's transaction"
    );
    commit.send(commit_first).unwrap();
    (first.await.unwrap(), second.await.unwrap())
}

/// Two consumers applying the same event at once (a redelivery racing the first delivery):
/// the second waits for the first's transaction and is told the event is a duplicate; had the
/// first rolled back, the second would apply it.
#[tokio::test]
async fn an_event_applied_concurrently_is_applied_once() {
    let test = "consumer::an_event_applied_concurrently_is_applied_once";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let db = migrated(&pg).await;
    let (first, second) = race(&db, "raced", true).await;
    assert!(first.unwrap());
    assert!(!second.unwrap(), "then it is told the event was applied");

    // The same race where the first rolls back: the second applies the event.
    let (first, second) = race(&db, "rolled back", false).await;
    assert!(first.is_err(), "the first rolled back");
    assert!(
        second.unwrap(),
        "the second applies what the first did not keep"
    );
    drop(db);
}

/// Publishes one raw body to the chat exchange, as chat-manager's relay would.
async fn publish_raw(
    bus: &pipeline::bus::EventBus,
    exchange: &str,
    kind: &str,
    id: &str,
    body: Vec<u8>,
) {
    bus.publish(&[pipeline::bus::EventMessage {
        exchange: exchange.to_owned(),
        routing_key: kind.to_owned(),
        message_id: id.to_owned(),
        payload: body.into(),
        request_id: None,
        traceparent: None,
    }])
    .await
    .expect("publish");
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_do_not_hold_up_the_queue() {
    let test = "consumer::poison_events_are_dead_lettered_and_do_not_hold_up_the_queue";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let db = migrated(&pg).await;
    let (exchange, queue) = (amqp.name("chat.events"), amqp.name("chat-events"));
    let dead_letters = amqp.name("chat-events.dead-letter");
    assert_eq!(
        dead_letters,
        message_manager::events::dead_letter_queue(&queue)
    );
    let bus = pipeline::bus::EventBus::amqp(amqp.url.clone());
    let subscription = message_manager::subscribe_chat_events(&bus, &exchange, &queue)
        .await
        .expect("subscribe");
    let consumer = message_manager::events::ChatEventConsumer {
        db: db.clone(),
        bus: bus.clone(),
        spec: message_manager::events::subscription_spec(&exchange, &queue),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(consumer.run(subscription, stopped));
    let before = common::metrics::dead_lettered(&queue);

    let customer = uuid::Uuid::new_v4().to_string();
    let (poisoned_chat, good_chat) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    // Not JSON at all: dead-lettered at once.
    publish_raw(
        &bus,
        &exchange,
        &format!("chat_created.{customer}"),
        "bad-json",
        b"{not json".to_vec(),
    )
    .await;
    // Well-formed but never applicable (a timestamp that does not parse): set aside.
    let unparsable = chat(&poisoned_chat, &customer, &["a", "b"], "yesterday", LIVE);
    publish_raw(
        &bus,
        &exchange,
        &format!("chat_created.{customer}"),
        "bad-time",
        event("bad-time", "chat_created", unparsable),
    )
    .await;
    // A good event behind them still applies.
    let good = chat(
        &good_chat,
        &customer,
        &["a", "b"],
        "2026-01-01 00:00:01.000000",
        LIVE,
    );
    publish_raw(
        &bus,
        &exchange,
        &format!("chat_created.{customer}"),
        "good",
        event("good", "chat_created", good),
    )
    .await;

    let mut applied = false;
    for _ in 0..100 {
        let (c, id) = (customer.clone(), good_chat.clone());
        let known = db
            .run(move |conn| membership::load(conn, &c, &id))
            .await
            .unwrap();
        if known.is_some() {
            applied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        applied,
        "the good event behind two poison events was applied"
    );
    let aside = testkit::drain_queue(&amqp.url, &dead_letters).await;
    let ids: Vec<&str> = aside.iter().map(|(id, _)| id.as_str()).collect();
    println!(
        "dead-lettered: {ids:?}; counter +{}",
        common::metrics::dead_lettered(&queue) - before
    );
    assert_eq!(
        ids,
        ["bad-json", "bad-time"],
        "both poison events are set aside, in order"
    );
    assert_eq!(aside[0].1, "{not json", "the body is kept as it was");
    assert!(common::metrics::dead_lettered(&queue) - before >= 2);
    let (c, id) = (customer.clone(), poisoned_chat.clone());
    let poisoned = db
        .run(move |conn| membership::load(conn, &c, &id))
        .await
        .unwrap();
    assert!(poisoned.is_none(), "a dead-lettered event has no effect");

    stop.send(true).unwrap();
    task.await.unwrap();
    amqp.cleanup().await;
}
