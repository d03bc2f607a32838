//! The outbox relay against this machine's PostgreSQL and RabbitMQ: several replicas publish
//! each event once and in commit order, a standby takes over from a stopped leader, and the
//! request's ids reach the event headers.

use std::collections::HashMap;
use std::time::Duration;

use chat_manager::ChatManager;
use chat_manager::chats::{self, ChatType, NewChat};
use chat_manager::events::ChatRecord;
use common::RequestMeta;
use common::db::{Db, DbConnection, DbError, DbOptions, DbTarget};
use pipeline::bus::EventBus;
use pipeline::outbox::{self, Relay, RelaySignal};
use testkit::{EventReader, ReceivedEvent, header};
use tokio::sync::watch;

struct Env {
    db: Db,
    url: String,
    exchange: String,
    /// Dropped last: the schema goes with it.
    _pg: testkit::PgSchema,
    amqp: testkit::AmqpNames,
}

async fn env(test: &str) -> Option<Env> {
    let pg = testkit::require_postgres(test).await?;
    let amqp = testkit::require_rabbitmq(test).await?;
    let db = migrated(&pg).await;
    Some(Env {
        db,
        url: amqp.url.clone(),
        exchange: amqp.name("chat.events"),
        _pg: pg,
        amqp,
    })
}

/// chat-manager's schema in the test's own PostgreSQL schema, migrated.
async fn migrated(pg: &testkit::PgSchema) -> Db {
    let target = DbTarget::Postgres {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
    };
    Db::open(target, chat_manager::db::MIGRATIONS, DbOptions::default())
        .await
        .expect("connect")
}

/// Writes to the env's schema (without waking a relay: the tests start theirs).
fn manager(env: &Env) -> ChatManager {
    ChatManager::new(env.db.clone(), RelaySignal::default())
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A relay polling every 10 ms, so that competing replicas would collide without the lock.
fn eager_relay(env: &Env) -> Relay<ChatRecord> {
    let mut relay = chat_manager::relay(
        env.db.clone(),
        EventBus::amqp(env.url.clone()),
        &env.exchange,
        RelaySignal::default(),
    );
    relay.poll_interval = Duration::from_millis(10);
    relay
}

async fn create_chats(manager: &ChatManager, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (a, b) = (id(), id());
        let new = NewChat {
            customer_id: id(),
            chat_type: ChatType::Normal,
            owner_id: a.clone(),
            participant_ids: vec![a, b],
            name: String::new(),
            detail: String::new(),
        };
        let chat = manager
            .write(RequestMeta::default(), move |c| chats::create(c, new))
            .await
            .expect("create chat");
        ids.push(chat.id);
    }
    ids
}

async fn backlog(db: &Db) -> i64 {
    db.run(|c| outbox::backlog(c).map_err(DbError::from))
        .await
        .unwrap()
}

async fn drain(reader: &mut EventReader, expected: usize) -> Vec<ReceivedEvent> {
    let mut events = Vec::new();
    while events.len() < expected {
        match reader.next_within(Duration::from_secs(10)).await {
            Some(e) => events.push(e),
            None => break,
        }
    }
    // Anything published twice would arrive right behind.
    events.extend(reader.collect_for(Duration::from_millis(500)).await);
    events
}

#[tokio::test]
async fn two_relays_publish_every_event_once_in_commit_order() {
    let Some(env) = env("relay::two_relays_publish_every_event_once_in_commit_order").await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let (stop, stopped) = watch::channel(false);
    let relays = [
        tokio::spawn(eager_relay(&env).run(stopped.clone())),
        tokio::spawn(eager_relay(&env).run(stopped.clone())),
    ];
    let manager = manager(&env);
    let chats = create_chats(&manager, 40).await;

    let events = drain(&mut reader, chats.len()).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *seen
            .entry(e.2["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    println!(
        "2 relays, {} chats: {} events received, {} distinct, {} published more than once",
        chats.len(),
        events.len(),
        seen.len(),
        twice
    );
    assert_eq!(seen.len(), chats.len(), "every event arrives");
    assert_eq!(twice, 0, "no event is published twice");
    // Commit order: each chat's events follow the chats' creation order.
    let order: Vec<&str> = events
        .iter()
        .filter(|e| e.0.starts_with("chat_created."))
        .map(|e| e.2["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, chats.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(backlog(&env.db).await, 0);

    stop.send(true).unwrap();
    for r in relays {
        r.await.unwrap();
    }
    env.amqp.cleanup().await;
}

#[tokio::test]
async fn a_standby_relay_publishes_once_the_leader_stops() {
    let Some(env) = env("relay::a_standby_relay_publishes_once_the_leader_stops").await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let manager = manager(&env);
    let (stop_leader, leader_stopped) = watch::channel(false);
    let leader = tokio::spawn(eager_relay(&env).run(leader_stopped));
    create_chats(&manager, 1).await;
    assert_eq!(drain(&mut reader, 1).await.len(), 1, "the leader publishes");

    // The standby starts while the leader holds the lock.
    let (stop_standby, standby_stopped) = watch::channel(false);
    let standby = tokio::spawn(eager_relay(&env).run(standby_stopped));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_leader.send(true).unwrap();
    leader.await.unwrap();

    let chats = create_chats(&manager, 2).await;
    let events = drain(&mut reader, 2).await;
    println!("after the leader stopped: {} events", events.len());
    assert_eq!(events.len(), 2, "the standby took over");
    assert!(
        events
            .iter()
            .any(|e| e.2["data"]["id"] == chats[1].as_str())
    );
    assert_eq!(backlog(&env.db).await, 0);

    stop_standby.send(true).unwrap();
    standby.await.unwrap();
    env.amqp.cleanup().await;
}

#[tokio::test]
async fn events_carry_the_request_id_and_traceparent() {
    let Some(env) = env("relay::events_carry_the_request_id_and_traceparent").await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(eager_relay(&env).run(stopped));
    let manager = manager(&env);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let meta = RequestMeta {
        request_id: Some("req-relay-1".into()),
        traceparent: Some(traceparent.into()),
    };
    let (a, b) = (id(), id());
    let new = NewChat {
        customer_id: id(),
        chat_type: ChatType::Normal,
        owner_id: a.clone(),
        participant_ids: vec![a, b],
        name: String::new(),
        detail: String::new(),
    };
    manager
        .write(meta, move |c| chats::create(c, new))
        .await
        .unwrap();

    let events = drain(&mut reader, 1).await;
    assert_eq!(events.len(), 1);
    for e in &events {
        assert_eq!(header(e, "x-request-id").as_deref(), Some("req-relay-1"));
        assert_eq!(header(e, "traceparent").as_deref(), Some(traceparent));
        assert_eq!(
            e.1.message_id().as_ref().map(|m| m.to_string()),
            e.2["id"].as_str().map(str::to_owned),
            "message id = CloudEvents id"
        );
    }
    stop.send(true).unwrap();
    relay.await.unwrap();
    env.amqp.cleanup().await;
}

#[tokio::test]
async fn rows_committed_out_of_seq_order_are_all_published() {
    let Some(env) = env("relay::rows_committed_out_of_seq_order_are_all_published").await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(eager_relay(&env).run(stopped));
    let manager = manager(&env);
    // Sixteen writers at once: transactions take their seqs in one order and commit in another,
    // while the relay keeps sending rounds without waiting for confirms.
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let m = manager.clone();
            tokio::spawn(async move { create_chats(&m, 40).await })
        })
        .collect();
    let mut created = 0;
    for w in writers {
        created += w.await.unwrap().len();
    }
    let events = drain(&mut reader, created).await;
    let distinct: std::collections::HashSet<&str> =
        events.iter().map(|e| e.2["id"].as_str().unwrap()).collect();
    println!(
        "{created} chats by 16 concurrent writers: {} events received, {} distinct",
        events.len(),
        distinct.len()
    );
    assert_eq!(
        distinct.len(),
        created,
        "every committed event is published"
    );
    assert_eq!(backlog(&env.db).await, 0);
    stop.send(true).unwrap();
    relay.await.unwrap();
    env.amqp.cleanup().await;
}

/// A change to a large chat is one event naming its chatrooms (a 400-person group's creation:
/// its 400 participants, and an id and an owner per chatroom), however many chatrooms; rows
/// weighing more than a round go out over several rounds, each event once and in commit order.
#[tokio::test]
async fn a_large_change_is_one_event_and_rounds_keep_to_their_budget_in_order() {
    let test = "relay::a_large_change_is_one_event_and_rounds_keep_to_their_budget_in_order";
    let Some(env) = env(test).await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let manager = manager(&env);
    let before = create_chats(&manager, 3).await;
    let mut groups = Vec::new();
    let mut participants = Vec::new();
    for _ in 0..30 {
        let members: Vec<String> = (0..400).map(|_| id()).collect();
        let group = NewChat {
            customer_id: id(),
            chat_type: ChatType::Group,
            owner_id: members[0].clone(),
            participant_ids: members.clone(),
            name: "team".into(),
            detail: String::new(),
        };
        let group = manager
            .write(RequestMeta::default(), move |c| chats::create(c, group))
            .await
            .expect("create group");
        groups.push(group.id);
        participants.push(members);
    }
    let after = create_chats(&manager, 3).await;
    assert_eq!(backlog(&env.db).await, 36, "one event per change");

    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(eager_relay(&env).run(stopped));
    let events = drain(&mut reader, 36).await;
    let group_bytes = events
        .iter()
        .find(|e| e.2["data"]["id"] == groups[0].as_str())
        .map(|e| e.2.to_string().len())
        .unwrap();
    let total: usize = events.iter().map(|e| e.2.to_string().len()).sum();
    println!(
        "a 400-person group's creation: one event of {group_bytes} bytes (its 400 room events \
         would hold 400 x 400 participant ids, about 6 MB); {} events, {total} bytes in all",
        events.len()
    );
    assert!(group_bytes < 60_000, "{group_bytes}");
    assert!(
        total as i64 > outbox::ROUND_BYTES,
        "more than one round's worth: {total}"
    );
    assert_eq!(events.len(), 36, "every event, once");
    let order: Vec<&str> = events
        .iter()
        .map(|e| e.2["data"]["id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = before.iter().map(String::as_str).collect();
    want.extend(groups.iter().map(String::as_str));
    want.extend(after.iter().map(String::as_str));
    assert_eq!(order, want, "commit order holds across rounds");
    // Every room follows from the event: one per participant, the whole participant list.
    let event = pipeline::cloudevent::parse(
        events
            .iter()
            .find(|e| e.2["data"]["id"] == groups[0].as_str())
            .unwrap()
            .2
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let mut sorted = participants[0].clone();
    sorted.sort();
    let mut owners = Vec::new();
    for n in 1..event.len() {
        let room: serde_json::Value = serde_json::from_str(&event.item_json(n).unwrap()).unwrap();
        assert_eq!(room["chat_id"], groups[0].as_str());
        assert_eq!(room["name"], "team");
        assert_eq!(room["participant_ids"], serde_json::json!(sorted));
        owners.push(room["owner_id"].as_str().unwrap().to_owned());
    }
    owners.sort();
    assert_eq!(owners, sorted, "one room per participant");
    assert_eq!(backlog(&env.db).await, 0);
    stop.send(true).unwrap();
    relay.await.unwrap();
    env.amqp.cleanup().await;
}

/// A relay told to stop with several rounds' worth of events waiting publishes them all
/// before it returns, not just one round.
#[tokio::test]
async fn a_stopping_relay_flushes_a_backlog_of_several_rounds() {
    let test = "relay::a_stopping_relay_flushes_a_backlog_of_several_rounds";
    let Some(env) = env(test).await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let manager = manager(&env);
    // 1,200 chats, an event each: three rounds of 500 at least.
    create_chats(&manager, 1200).await;
    assert_eq!(backlog(&env.db).await, 1200);
    let (stop, stopped) = watch::channel(true);
    let relay = eager_relay(&env);
    tokio::time::timeout(Duration::from_secs(30), relay.run(stopped))
        .await
        .expect("the relay stops within its flush limit");
    drop(stop);
    assert_eq!(backlog(&env.db).await, 0, "everything was published");
    assert_eq!(drain(&mut reader, 1200).await.len(), 1200);
    env.amqp.cleanup().await;
}

/// A relay meeting a row of a newer format (written by a newer release) publishes nothing
/// from that row on, and marks nothing: the outbox waits, in order, for a relay that reads it.
#[tokio::test]
async fn a_row_of_a_newer_format_holds_the_outbox_rather_than_being_skipped() {
    let test = "relay::a_row_of_a_newer_format_holds_the_outbox_rather_than_being_skipped";
    let Some(env) = env(test).await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let manager = manager(&env);
    create_chats(&manager, 1).await;
    insert_row(&env.db, r#"{"v":99,"records":[{"something":"new"}]}"#, 2).await;
    create_chats(&manager, 1).await;
    assert_eq!(backlog(&env.db).await, 1 + 2 + 1);

    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(eager_relay(&env).run(stopped));
    let events = drain(&mut reader, 1).await;
    // Give it rounds enough to have skipped the row, had it done so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = reader.collect_for(Duration::from_millis(300)).await;
    println!(
        "published {} events before the newer row, {} after it; backlog {}",
        events.len(),
        late.len(),
        backlog(&env.db).await
    );
    assert_eq!(events.len(), 1, "the row before it is published");
    assert!(late.is_empty(), "nothing from the newer row on: {late:?}");
    assert_eq!(
        backlog(&env.db).await,
        2 + 1,
        "the newer row and the row after it wait"
    );
    stop.send(true).unwrap();
    relay.await.unwrap();
    env.amqp.cleanup().await;
}

/// An outbox row as written by hand.
async fn insert_row(db: &Db, events: &'static str, count: i32) {
    db.run(move |c| {
        use diesel::prelude::*;
        diesel::insert_into(outbox::outbox::table)
            .values((
                outbox::outbox::events.eq(events),
                outbox::outbox::event_count.eq(count),
                outbox::outbox::created_at.eq(common::time::now()),
            ))
            .execute(c)
            .map_err(DbError::from)
    })
    .await
    .unwrap();
}

/// Rows the relay cannot publish (a line of the previous format that does not parse, records
/// that do not decode) are never marked sent with their events missing: they stay unsent,
/// counted in `outbox_held_rows`, and the rows after them go out. (Before, both were marked
/// sent: their events were lost without a trace but a log line.)
#[tokio::test]
async fn rows_that_cannot_be_published_are_held_unsent_counted_and_the_rest_go_out() {
    let test = "relay::rows_that_cannot_be_published_are_held_unsent_counted_and_the_rest_go_out";
    let Some(env) = env(test).await else {
        return;
    };
    let mut reader = EventReader::bind(&env.url, &env.exchange).await;
    let manager = manager(&env);
    create_chats(&manager, 1).await;
    insert_row(&env.db, "a line that is not an event", 1).await;
    insert_row(
        &env.db,
        r#"{"v":1,"records":[{"event":"not an event"}]}"#,
        2,
    )
    .await;
    create_chats(&manager, 1).await;
    assert_eq!(backlog(&env.db).await, 1 + 1 + 2 + 1);

    let (stop, stopped) = watch::channel(false);
    let relay = tokio::spawn(eager_relay(&env).run(stopped));
    let events = drain(&mut reader, 2).await;
    assert_eq!(events.len(), 2, "the rows before and after are published");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backlog(&env.db).await > 3 {
        assert!(tokio::time::Instant::now() < deadline, "never marked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backlog(&env.db).await,
        1 + 2,
        "the two rows that cannot be published stay unsent"
    );
    let page = common::metrics::metrics().encode();
    assert_eq!(
        testkit::ops::sample(&page, r#"outbox_held_rows{service="chat-manager"}"#),
        Some(2.0),
        "{page}"
    );
    stop.send(true).unwrap();
    relay.await.unwrap();
    env.amqp.cleanup().await;
}

/// The relay's session finds a round's rows by key through an index even when its plan was
/// made while the outbox held two rows and the table has no statistics (autovacuum off, as on
/// this machine, or not run yet): a sequential scan there reads the whole outbox every round,
/// and at a few thousand sends a second the relay fell behind within seconds.
#[tokio::test]
async fn the_relay_session_reads_rows_by_key_through_an_index_whatever_the_outbox_held_at_first() {
    use diesel::{QueryableByName, RunQueryDsl};
    let test = "relay::the_relay_session_reads_rows_by_key_through_an_index_whatever_the_outbox_held_at_first";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    // Creates the schema and its outbox.
    let db = migrated(&pg).await;
    // The session as the relay has it: a service session (`Db::dedicated`, as the relay
    // opens its own), then the relay's settings.
    let mut session = db.dedicated().await.expect("a session");
    session
        .run(|conn| -> Result<(), DbError> {
            let DbConnection::Pg(conn) = conn else {
                unreachable!("a PostgreSQL session")
            };
            let mut run = |sql: &str| {
                diesel::sql_query(sql)
                    .execute(conn)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            };
            for setting in outbox::RELAY_SESSION {
                run(setting);
            }
            // The worst case: one plan for the session's life, made while the outbox is two rows.
            run("SET plan_cache_mode = force_generic_plan");
            let fill = |n: u32| {
                format!(
                    "INSERT INTO outbox (events, event_count, created_at) \
             SELECT 'chat_created' || chr(9) || g || chr(9) || '{{}}', 1, now() \
             FROM generate_series(1, {n}) g"
                )
            };
            run(&fill(2));
            run("PREPARE rows_by_seq(bigint[]) AS \
         SELECT seq, events FROM outbox WHERE seq = ANY($1) ORDER BY seq");
            run("PREPARE pending(bigint[], bigint) AS \
         SELECT seq, event_count FROM outbox \
         WHERE sent_at IS NULL AND seq NOT IN (SELECT unnest($1)) ORDER BY seq LIMIT $2");
            run("EXECUTE rows_by_seq('{1,2}')");
            run("EXECUTE pending('{1}', 500)");
            run(&fill(20_000));

            #[derive(QueryableByName)]
            struct Line {
                #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
                line: String,
            }
            for statement in ["rows_by_seq('{1,2}')", "pending('{1}', 500)"] {
                let plan: Vec<String> = diesel::sql_query(format!("EXPLAIN EXECUTE {statement}"))
                    .load::<Line>(conn)
                    .unwrap()
                    .into_iter()
                    .map(|l| l.line)
                    .collect();
                let plan = plan.join("\n");
                eprintln!("--- {statement}\n{plan}");
                assert!(
                    plan.contains("Index Scan") && !plan.contains("Seq Scan"),
                    "{statement} on 20,002 rows, planned on 2: {plan}"
                );
            }
            Ok(())
        })
        .await
        .unwrap();
}

/// The oldest unsent rows' weights (what the pressure gate sums), oldest first.
async fn unsent_weights(db: &Db) -> Vec<i32> {
    db.run(|c| {
        use diesel::prelude::*;
        outbox::outbox::table
            .filter(outbox::outbox::sent_at.is_null())
            .order(outbox::outbox::seq.asc())
            .select(diesel::dsl::sql::<diesel::sql_types::Integer>(
                "coalesce(publish_bytes, length(events))",
            ))
            .load(c)
            .map_err(DbError::from)
    })
    .await
    .unwrap()
}

/// Marks the oldest unsent row sent, as a relay would once the broker confirmed it.
async fn publish_oldest(db: &Db) {
    db.run(|c| {
        use diesel::prelude::*;
        diesel::sql_query(
            "UPDATE outbox SET sent_at = localtimestamp \
             WHERE seq = (SELECT min(seq) FROM outbox WHERE sent_at IS NULL)",
        )
        .execute(c)
        .map_err(DbError::from)
    })
    .await
    .unwrap();
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writers wait while the outbox's unsent events weigh more than its limit and the relay is
/// publishing them (here a stand-in marking the oldest row sent every 50 ms), and go ahead once
/// they weigh no more; with nothing publishing (the broker down) they are not held back, as
/// waiting would publish nothing sooner.
#[tokio::test]
async fn writes_wait_for_a_publishing_relay_while_the_outbox_is_over_its_limit() {
    let test = "relay::writes_wait_for_a_publishing_relay_while_the_outbox_is_over_its_limit";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let db = migrated(&pg).await;
    let signal = RelaySignal::default();
    let manager = ChatManager::new(db.clone(), signal.clone());
    create_chats(&manager, 12).await;
    let weights = unsent_weights(&db).await;
    assert_eq!(weights.len(), 12);
    // Over the limit until the 4 oldest rows are sent.
    let limit: i64 = weights[4..].iter().map(|w| i64::from(*w)).sum();

    let publisher = {
        let db = db.clone();
        tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                publish_oldest(&db).await;
            }
        })
    };
    let (stop, stopped) = watch::channel(false);
    let gate = outbox::watch_pressure(db.clone(), signal.clone(), "test", limit, stopped);
    eventually("writers held back", Duration::from_secs(2), || {
        signal.holding()
    })
    .await;
    signal.admit().await;
    assert_eq!(
        backlog(&db).await,
        8,
        "the write went ahead once the 4 oldest events were published, not before"
    );
    assert!(!signal.holding());
    publisher.await.unwrap();

    stop.send(true).unwrap();
    gate.await.unwrap();
    assert!(!signal.holding(), "a stopped gate holds no writer back");

    // Over the limit again, and nothing publishing: held back until the relay counts as
    // stalled, then not at all.
    create_chats(&manager, 4).await;
    let (stop, stopped) = watch::channel(false);
    let gate = outbox::watch_pressure(db.clone(), signal.clone(), "test", limit, stopped);
    eventually("writers held back", outbox::RELAY_STALLED_AFTER, || {
        signal.holding()
    })
    .await;
    eventually(
        "writers not held back by a stalled relay",
        outbox::RELAY_STALLED_AFTER * 3,
        || !signal.holding(),
    )
    .await;
    let started = tokio::time::Instant::now();
    signal.admit().await;
    assert!(started.elapsed() < outbox::MAX_WRITE_WAIT / 2);
    assert_eq!(backlog(&db).await, 12, "nothing was published meanwhile");

    stop.send(true).unwrap();
    gate.await.unwrap();
    assert!(!signal.holding(), "a stopped gate holds no writer back");
}
