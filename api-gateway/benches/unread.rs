//! How long `GET /v1.0/service_agents/unread` takes for an agent in 1,000 chatrooms with 1,000
//! unread copies in each (a million in all), in the split deployment on this machine's
//! PostgreSQL: the gateway, chat-manager and message-manager in this process over gRPC
//! sockets, as the tests run them. Prints the latency of the whole request, of the statement
//! alone, and its plan (`EXPLAIN ANALYZE`); asserts only that the answer is right.
//!
//! The messages are written straight into message-manager's schema with `generate_series` (a
//! million sends through the API would take minutes and measure the send, not the read), as
//! the send writes them: each with its place in its chat, its sender, and the chat's counters.
//! Then `VACUUM ANALYZE`, as autovacuum would have done by then (CI's PostgreSQL runs without
//! it). A second phase gives every room some of what the count subtracts after the read point
//! (the agent's own messages, deleted messages, copies deleted in the room) and reads each room
//! halfway, and measures again.
//!
//! `cargo bench -p api-gateway --bench unread`; tune with BENCH_ROOMS (default 1000),
//! BENCH_UNREAD (per room, default 1000), BENCH_CALLS (default 200), BENCH_PGSSLMODE (default
//! `disable`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use api_gateway::auth::permission::CUSTOMER_AGENT;
use api_gateway::rate_limit::RateLimit;
use diesel::prelude::*;
use message_manager::db::queries::{self, ReadScope};
use serde_json::json;
use support::*;

fn run(conn: &mut PgConnection, sql: &str) -> Duration {
    let started = Instant::now();
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    started.elapsed()
}

/// A message number as `chatroommessages::message_no` makes it from the id (its leading 60
/// bits), in SQL.
const MESSAGE_NO: &str = "('x' || lpad(substr(m.id, 1, 8) || substr(m.id, 10, 4) || \
                          substr(m.id, 16, 3), 16, '0'))::bit(64)::bigint";

/// The agent's `rooms` chats of two (the agent and a peer each), `unread` messages from the
/// peer in each.
fn load(conn: &mut PgConnection, customer: &str, agent: &str, rooms: u64, unread: u64) {
    let chat = "md5('chat ' || i)::uuid::text";
    let peer = "md5('peer ' || i)::uuid::text";
    let live = "timestamp '9999-01-01'";
    let t = run(
        conn,
        &format!(
            "INSERT INTO member_chats (id, customer_id, participant_ids, tm_update, tm_delete, \
               tm_checked, last_seq, last_message_at) \
             SELECT {chat}, '{customer}', json_build_array('{agent}', {peer})::text, \
               timestamp '2026-01-01', {live}, timestamp '2026-01-01', {unread}, \
               timestamp '2026-01-01' + {unread} * interval '1 millisecond' \
             FROM generate_series(1, {rooms}) AS i"
        ),
    );
    let t2 = run(
        conn,
        &format!(
            "INSERT INTO member_chatrooms (id, customer_id, chat_id, owner_id, tm_create, \
               tm_update, tm_delete) \
             SELECT md5('room ' || i || ' ' || o)::uuid::text, '{customer}', {chat}, \
               CASE WHEN o = 0 THEN '{agent}' ELSE {peer} END, timestamp '2026-01-01', \
               timestamp '2026-01-01', {live} \
             FROM generate_series(1, {rooms}) AS i, generate_series(0, 1) AS o"
        ),
    );
    let t3 = run(
        conn,
        &format!(
            "INSERT INTO chatmessages (no, id, customer_id, chat_id, source, message_type, text, \
               medias, tm_create, tm_update, tm_delete, chat_seq, sender_id) \
             SELECT {MESSAGE_NO}, m.id, '{customer}', {chat}, \
               '{{\"type\":\"agent\",\"target\":\"' || {peer} || '\",\"target_name\":\"\",\"name\":\"\",\"detail\":\"\"}}', \
               'normal', 'message ' || j, '[]', \
               timestamp '2026-01-01' + j * interval '1 millisecond', \
               timestamp '2026-01-01' + j * interval '1 millisecond', {live}, j, {peer} \
             FROM generate_series(1, {rooms}) AS i, generate_series(1, {unread}) AS j, \
               LATERAL (SELECT md5('message ' || i || ' ' || j)::uuid::text AS id) AS m"
        ),
    );
    let t4 = run(conn, "VACUUM ANALYZE");
    println!(
        "loaded: {rooms} chats and {} chatrooms in {:.1} s, {} messages in {:.1} s, VACUUM ANALYZE {:.1} s",
        rooms * 2,
        (t + t2).as_secs_f64(),
        rooms * unread,
        t3.as_secs_f64(),
        t4.as_secs_f64()
    );
}

/// In every chat: the agent's room read up to the middle, then after that point 10 of the
/// agent's own messages, 10 deleted messages and 10 copies deleted in the agent's room alone
/// (of the peer's messages).
fn scatter(conn: &mut PgConnection, customer: &str, agent: &str, unread: u64) {
    let half = unread / 2;
    let t = Instant::now();
    run(
        conn,
        &format!(
            "UPDATE chatmessages SET sender_id = '{agent}', \
               source = '{{\"type\":\"agent\",\"target\":\"{agent}\",\"target_name\":\"\",\"name\":\"\",\"detail\":\"\"}}' \
             WHERE customer_id = '{customer}' AND chat_seq > {half} AND chat_seq <= {half} + 10"
        ),
    );
    run(
        conn,
        &format!(
            "UPDATE chatmessages SET tm_delete = timestamp '2026-01-02', tm_update = timestamp '2026-01-02' \
             WHERE customer_id = '{customer}' AND chat_seq > {half} + 10 AND chat_seq <= {half} + 20"
        ),
    );
    run(
        conn,
        &format!(
            "INSERT INTO chatroommessage_deletions (room_no, message_no, tm_delete, chat_seq, \
               sender_id) \
             SELECT r.no, m.no, timestamp '2026-01-02', m.chat_seq, m.sender_id \
             FROM member_chatrooms r \
               JOIN chatmessages m ON m.chat_id = r.chat_id \
             WHERE r.customer_id = '{customer}' AND r.owner_id = '{agent}' \
               AND m.chat_seq > {half} + 20 AND m.chat_seq <= {half} + 30"
        ),
    );
    run(
        conn,
        &format!(
            "INSERT INTO chatroom_reads (chatroom_id, customer_id, read_seq, messagechat_id, \
               tm_last_read, tm_update) \
             SELECT r.id, r.customer_id, m.chat_seq, m.id, m.tm_create, timestamp '2026-01-03' \
             FROM member_chatrooms r JOIN chatmessages m ON m.chat_id = r.chat_id \
             WHERE r.customer_id = '{customer}' AND r.owner_id = '{agent}' AND m.chat_seq = {half}"
        ),
    );
    let v = run(conn, "VACUUM ANALYZE");
    println!(
        "scattered: read to the middle of every room, then 10 own, 10 deleted and 10 deleted-in-room messages after it ({:.1} s, VACUUM ANALYZE {:.1} s)",
        t.elapsed().as_secs_f64() - v.as_secs_f64(),
        v.as_secs_f64()
    );
}

async fn measure(
    stack: &Stack,
    url: &str,
    schema: &str,
    customer: &str,
    agent: &str,
    expected: serde_json::Value,
    calls: usize,
) {
    let token = agent_token(customer, agent, CUSTOMER_AGENT);
    let answer = stack.get("/service_agents/unread", &token).await;
    assert_eq!(answer.ok(), &expected, "the unread total");
    for _ in 0..20 {
        stack.get("/service_agents/unread", &token).await.ok();
    }
    let mut http = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        stack.get("/service_agents/unread", &token).await.ok();
        http.push(started.elapsed().as_micros() as u64);
    }
    http.sort_unstable();

    let (url, schema, customer, agent) = (
        url.to_owned(),
        schema.to_owned(),
        customer.to_owned(),
        agent.to_owned(),
    );
    let (statement, plan) = tokio::task::spawn_blocking(move || {
        let mut conn = testkit::connect_in_schema(&url, &schema);
        // As the services' sessions are (common::db::BY_INDEX: no JIT among others).
        diesel::connection::SimpleConnection::batch_execute(&mut conn, common::db::BY_INDEX)
            .expect("session settings");
        let mut db = common::db::DbConnection::Pg(conn);
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let rows = queries::read_states(&mut db, &customer, ReadScope::Owner(&agent))
                .expect("read states");
            assert!(!rows.is_empty());
            times.push(started.elapsed().as_micros() as u64);
        }
        times.sort_unstable();
        let common::db::DbConnection::Pg(mut conn) = db else {
            unreachable!("a PostgreSQL connection")
        };
        let plan = testkit::explain::explain(
            &mut conn,
            "ANALYZE, BUFFERS",
            queries::read_states_pg(&customer, ReadScope::Owner(&agent)),
        );
        (times, plan)
    })
    .await
    .expect("statement task");

    println!("| what | calls | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (what, samples) in [
        (
            "GET /v1.0/service_agents/unread (HTTP, gateway, gRPC, PostgreSQL)",
            &http,
        ),
        ("the statement alone (diesel, PostgreSQL)", &statement),
    ] {
        println!(
            "| {what} | {calls} | {:.2} | {:.2} | {:.2} | {:.2} |",
            percentile_ms(samples, 0.5),
            percentile_ms(samples, 0.9),
            percentile_ms(samples, 0.99),
            percentile_ms(samples, 1.0),
        );
    }
    println!("\nEXPLAIN (ANALYZE, BUFFERS):\n{plan}\n");
}

#[tokio::main]
async fn main() {
    let rooms = env_or("BENCH_ROOMS", 1000);
    let unread = env_or("BENCH_UNREAD", 1000);
    let calls = env_or("BENCH_CALLS", 200) as usize;
    let Some((mut split, guards)) = split_env("bench::unread").await else {
        eprintln!("PostgreSQL or RabbitMQ not reachable: nothing measured");
        return;
    };
    if !split.pg_url.contains("sslmode=") {
        let mode = std::env::var("BENCH_PGSSLMODE").unwrap_or_else(|_| "disable".into());
        let sep = if split.pg_url.contains('?') { '&' } else { '?' };
        split.pg_url = format!("{}{sep}sslmode={mode}", split.pg_url);
    }
    split.limits = Limits::from(RateLimit::off());
    let mut stack = Stack::split(&split).await;
    stack.keep(guards);
    let (customer, agent) = (new_id(), new_id());
    let (url, schema) = (split.pg_url.clone(), split.message_schema.clone());
    {
        let (url, schema, customer, agent) =
            (url.clone(), schema.clone(), customer.clone(), agent.clone());
        tokio::task::spawn_blocking(move || {
            load(
                &mut testkit::connect_in_schema(&url, &schema),
                &customer,
                &agent,
                rooms,
                unread,
            )
        })
        .await
        .expect("load task");
    }
    println!("\n{rooms} chatrooms x {unread} unread copies, nothing read:");
    let all = json!({"chatrooms": rooms, "chatroommessages": rooms * unread});
    measure(&stack, &url, &schema, &customer, &agent, all, calls).await;

    {
        let (url, schema, customer, agent) =
            (url.clone(), schema.clone(), customer.clone(), agent.clone());
        tokio::task::spawn_blocking(move || {
            scatter(
                &mut testkit::connect_in_schema(&url, &schema),
                &customer,
                &agent,
                unread,
            )
        })
        .await
        .expect("scatter task");
    }
    println!("\n{rooms} chatrooms, each read halfway with 30 to subtract after the read point:");
    let left = unread - unread / 2 - 30;
    let some = json!({"chatrooms": rooms, "chatroommessages": rooms * left});
    measure(&stack, &url, &schema, &customer, &agent, some, calls).await;
    stack.stop().await;
}
