//! How the newest page of a chat's messages costs as the chat grows: 1,000 / 10,000 / 100,000
//! / 1,000,000 stored messages in one chat (the same table grown step by step), the latency of
//! `ListChatmessages` through the real service (the generated gRPC server called in-process,
//! as the gateway's embedded default does, over PostgreSQL), and of the list query alone.
//! Prints figures; asserts nothing about time.
//!
//! ```sh
//! cargo bench -p message-manager --bench list_scale    # TEST_DATABASE_URL, BENCH_CALLS
//! ```
//!
//! Uses the PostgreSQL of `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own, dropped at the end.

use std::time::{Duration, Instant};

use common::db::{Db, DbError, DbOptions, DbTarget};
use common::grpc_client::{self, MessageClient};
use common::grpc_server::ObserveLayer;
use common::page::Page;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Text;
use message_manager::db::models::MemberChat;
use message_manager::db::queries;
use pipeline::bus::EventBus;
use proto::message::v1 as pb;
use tonic::service::LayerExt;

const STEPS: [i64; 4] = [1_000, 10_000, 100_000, 1_000_000];
const WARM_UP: usize = 20;

/// p50, p99 and max of the samples, in milliseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99), at(1.0))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let Some(pg) = testkit::require_postgres("bench::list_scale").await else {
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
    .expect("connect");

    // The chat, as the membership view knows it once chat-manager's events arrived.
    let customer = uuid::Uuid::new_v4().to_string();
    let chat = uuid::Uuid::new_v4().to_string();
    let member = MemberChat {
        id: chat.clone(),
        customer_id: customer.clone(),
        participant_ids: serde_json::to_string(std::slice::from_ref(&customer)).unwrap(),
        tm_update: common::time::now(),
        tm_delete: common::time::live(),
        tm_checked: common::time::now(),
    };
    db.run(move |c| queries::upsert_member_chat(c, &member).map_err(DbError::from))
        .await
        .expect("member chat");

    // The service as the gateway's embedded default runs it, over this PostgreSQL schema.
    let bus = EventBus::in_process();
    let topology = message_manager::Topology::default();
    let subscription = message_manager::subscribe_chat_events(
        &bus,
        &topology.chat_exchange,
        &topology.chat_events_queue,
    )
    .await
    .expect("subscribe");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (server, tasks) =
        message_manager::service(db.clone(), bus, topology, subscription, None, shutdown);
    let client: MessageClient =
        MessageClient::new(grpc_client::in_process(ObserveLayer.named_layer(server)));

    let mut conn = {
        let (url, schema) = (pg.url.clone(), pg.schema.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = PgConnection::establish(&url).expect("connect");
            diesel::sql_query(format!("SET search_path TO \"{schema}\""))
                .execute(&mut conn)
                .expect("search_path");
            conn
        })
        .await
        .expect("connect task")
    };

    println!(
        "list_scale: newest page (10 messages) of one chat; {calls} calls each after \
         {WARM_UP} warm-up calls; times in ms"
    );
    println!(
        "{:>9} | {:>9} {:>8} | {:>22} | {:>22} | {:>22}",
        "stored",
        "insert s",
        "analyze",
        "service p50/p99/max",
        "2nd page p50/p99/max",
        "query p50/p99/max"
    );
    let mut stored = 0i64;
    for step in STEPS {
        let (from, to) = (stored + 1, step);
        let (c, customer_id, chat_id) = (conn, customer.clone(), chat.clone());
        let (c, insert, analyze) = tokio::task::spawn_blocking(move || {
            let mut c = c;
            let started = Instant::now();
            diesel::sql_query(format!(
                "INSERT INTO chatmessages (no, id, customer_id, chat_id, source, message_type, \
                   text, medias, tm_create, tm_update, tm_delete) \
                 SELECT ('x' || lpad(substr(m.id, 1, 8) || substr(m.id, 10, 4) || \
                   substr(m.id, 16, 3), 16, '0'))::bit(64)::bigint, \
                   m.id, '{customer_id}', '{chat_id}', \
                   '{{\"type\":\"agent\",\"target\":\"{customer_id}\",\"target_name\":\"\",\"name\":\"\",\"detail\":\"\"}}', \
                   'normal', 'message number ' || i, '[]', \
                   timestamp '2026-01-01' + i * interval '1 millisecond', \
                   timestamp '2026-01-01' + i * interval '1 millisecond', \
                   timestamp '9999-01-01' \
                 FROM generate_series({from}, {to}) AS i, \
                   LATERAL (SELECT md5('message ' || i)::uuid::text AS id) AS m"
            ))
            .execute(&mut c)
            .expect("insert");
            let insert = started.elapsed();
            let started = Instant::now();
            diesel::sql_query("ANALYZE chatmessages")
                .execute(&mut c)
                .expect("analyze");
            (c, insert, started.elapsed())
        })
        .await
        .expect("insert task");
        conn = c;
        stored = step;

        let list = |token: String| {
            let mut client = client.clone();
            let request = pb::ListChatmessagesRequest {
                customer_id: customer.clone(),
                chat_id: chat.clone(),
                page: Some(pb::PageRequest {
                    page_size: 10,
                    page_token: token,
                }),
            };
            async move {
                let started = Instant::now();
                let reply = client
                    .list_chatmessages(request)
                    .await
                    .expect("ListChatmessages")
                    .into_inner();
                (started.elapsed(), reply)
            }
        };
        let (_, first) = list(String::new()).await;
        assert_eq!(first.chatmessages.len(), 10);
        let token = first.next_page_token.clone();
        for _ in 0..WARM_UP {
            list(String::new()).await;
            list(token.clone()).await;
        }
        let mut newest = Vec::with_capacity(calls);
        let mut second = Vec::with_capacity(calls);
        for _ in 0..calls {
            newest.push(list(String::new()).await.0);
            second.push(list(token.clone()).await.0);
        }
        let mut query = Vec::with_capacity(calls);
        for i in 0..WARM_UP + calls {
            let (customer_id, chat_id) = (customer.clone(), chat.clone());
            let (elapsed, rows) = db
                .run(move |c| {
                    let page = Page::new(10, "").expect("page");
                    let started = Instant::now();
                    let rows = queries::list_messages(c, &customer_id, &chat_id, &page)?;
                    Ok::<_, DbError>((started.elapsed(), rows.len()))
                })
                .await
                .expect("list_messages");
            assert_eq!(rows, 11);
            if i >= WARM_UP {
                query.push(elapsed);
            }
        }
        let fmt = |(p50, p99, max): (f64, f64, f64)| format!("{p50:.3} / {p99:.3} / {max:.3}");
        println!(
            "{:>9} | {:>9.2} {:>8.2} | {:>22} | {:>22} | {:>22}",
            step,
            insert.as_secs_f64(),
            analyze.as_secs_f64(),
            fmt(summary(newest)),
            fmt(summary(second)),
            fmt(summary(query)),
        );
    }

    let (chat_id, token) = (chat.clone(), {
        let mut c = client.clone();
        c.list_chatmessages(pb::ListChatmessagesRequest {
            customer_id: customer.clone(),
            chat_id: chat.clone(),
            page: Some(pb::PageRequest {
                page_size: 10,
                page_token: String::new(),
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .next_page_token
    });
    let conn = tokio::task::spawn_blocking(move || {
        let mut conn = conn;
        let size: String = diesel::select(diesel::dsl::sql::<Text>(
            "pg_size_pretty(pg_total_relation_size('chatmessages'))",
        ))
        .get_result(&mut conn)
        .expect("size");
        println!("\nchatmessages at {stored} rows: {size} (table and indexes)");
        for (what, token) in [("newest page", String::new()), ("second page", token)] {
            let page = Page::new(10, &token).expect("page");
            let query = queries::list_messages_pg(&customer, &chat_id, &page);
            println!(
                "\nEXPLAIN ANALYZE, {what} at {stored} messages:\n{}",
                diesel::debug_query::<Pg, _>(&query)
            );
            let plan = testkit::explain::explain(&mut conn, "ANALYZE, BUFFERS", query);
            println!("{plan}");
        }
        conn
    })
    .await
    .expect("explain task");
    drop(conn);

    stop.send(true).expect("stop");
    for task in tasks {
        let _ = task.await;
    }
    drop(client);
    drop(db);
    drop(pg);
}
