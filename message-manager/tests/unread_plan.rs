//! The unread statement's cost does not grow with the number unread: on PostgreSQL each of its
//! counts is an index range over the few messages it subtracts (the agent's own, the deleted,
//! the copies deleted in the room), never a walk over the unread ones, and the rooms' starting
//! points are looked up once per room. Checked on the plan of the statement the service runs
//! (`queries::read_states_pg`, the builder behind `read_states`), with the counts it gives.
//! Run with `--no-capture` to see the plan.

use common::db::{Db, DbConnection, DbOptions, DbTarget};
use diesel::prelude::*;
use message_manager::db::queries::{self, ReadScope};
use serde_json::Value;

const ROOMS: i64 = 40;
const MESSAGES: i64 = 400;

fn nodes(plan: &Value) -> Vec<&Value> {
    let mut out = vec![plan];
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            out.extend(nodes(child));
        }
    }
    out
}

fn run(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `ROOMS` chats of the agent and a peer, `MESSAGES` from the peer in each; after the middle,
/// 5 of the agent's own, 5 deleted, and 5 copies deleted in the agent's room; the agent's
/// rooms read to the middle.
fn fill(conn: &mut PgConnection, customer: &str, agent: &str) {
    let (chat, peer) = (
        "md5('chat ' || i)::uuid::text",
        "md5('peer ' || i)::uuid::text",
    );
    let live = "timestamp '9999-01-01'";
    run(
        conn,
        &format!(
            "INSERT INTO member_chats (id, customer_id, participant_ids, tm_update, tm_delete, \
               tm_checked, last_seq, last_message_at) \
             SELECT {chat}, '{customer}', '[]', timestamp '2026-01-01', {live}, \
               timestamp '2026-01-01', {MESSAGES}, timestamp '2026-01-02' \
             FROM generate_series(1, {ROOMS}) AS i"
        ),
    );
    run(
        conn,
        &format!(
            "INSERT INTO member_chatrooms (id, customer_id, chat_id, owner_id, tm_create, \
               tm_update, tm_delete) \
             SELECT md5('room ' || i || ' ' || o)::uuid::text, '{customer}', {chat}, \
               CASE WHEN o = 0 THEN '{agent}' ELSE {peer} END, timestamp '2026-01-01', \
               timestamp '2026-01-01', {live} \
             FROM generate_series(1, {ROOMS}) AS i, generate_series(0, 1) AS o"
        ),
    );
    let half = MESSAGES / 2;
    run(
        conn,
        &format!(
            "INSERT INTO chatmessages (no, id, customer_id, chat_id, source, message_type, text, \
               medias, tm_create, tm_update, tm_delete, chat_seq, sender_id) \
             SELECT i * 100000 + j, md5('message ' || i || ' ' || j)::uuid::text, '{customer}', \
               {chat}, '{{}}', 'normal', 'x', '[]', \
               timestamp '2026-01-01 01:00' + j * interval '1 millisecond', \
               timestamp '2026-01-01 01:00' + j * interval '1 millisecond', \
               CASE WHEN j > {half} + 5 AND j <= {half} + 10 THEN timestamp '2026-01-03' \
                    ELSE {live} END, \
               j, CASE WHEN j > {half} AND j <= {half} + 5 THEN '{agent}' ELSE {peer} END \
             FROM generate_series(1, {ROOMS}) AS i, generate_series(1, {MESSAGES}) AS j"
        ),
    );
    run(
        conn,
        &format!(
            "INSERT INTO chatroommessage_deletions (room_no, message_no, tm_delete, chat_seq, \
               sender_id) \
             SELECT r.no, m.no, timestamp '2026-01-03', m.chat_seq, m.sender_id \
             FROM member_chatrooms r \
               JOIN chatmessages m ON m.chat_id = r.chat_id \
             WHERE r.owner_id = '{agent}' AND m.chat_seq > {half} + 10 AND m.chat_seq <= {half} + 15"
        ),
    );
    run(
        conn,
        &format!(
            "INSERT INTO chatroom_reads (chatroom_id, customer_id, read_seq, messagechat_id, \
               tm_last_read, tm_update) \
             SELECT r.id, r.customer_id, m.chat_seq, m.id, m.tm_create, timestamp '2026-01-04' \
             FROM member_chatrooms r JOIN chatmessages m ON m.chat_id = r.chat_id \
             WHERE r.owner_id = '{agent}' AND m.chat_seq = {half}"
        ),
    );
    run(conn, "VACUUM ANALYZE");
}

#[tokio::test]
async fn unread_counts_are_index_ranges_of_what_they_subtract() {
    let test = "unread_plan::unread_counts_are_index_ranges_of_what_they_subtract";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let (url, schema) = (pg.url.clone(), pg.schema.clone());
    tokio::task::spawn_blocking(move || {
        drop(
            Db::connect(
                DbTarget::Postgres {
                    url: url.clone(),
                    schema: schema.clone(),
                },
                message_manager::db::MIGRATIONS,
                &DbOptions {
                    pool_size: 1,
                    ..DbOptions::default()
                },
            )
            .expect("migrate"),
        );
        let mut conn = testkit::connect_in_schema(&url, &schema);
        // As the services' sessions are set.
        diesel::connection::SimpleConnection::batch_execute(&mut conn, common::db::BY_INDEX)
            .expect("session settings");
        let (customer, agent) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        fill(&mut conn, &customer, &agent);

        let text = testkit::explain::explain(
            &mut conn,
            "ANALYZE, BUFFERS",
            queries::read_states_pg(&customer, ReadScope::Owner(&agent)),
        );
        eprintln!("{text}");
        let json = testkit::explain::explain(
            &mut conn,
            "ANALYZE, FORMAT JSON",
            queries::read_states_pg(&customer, ReadScope::Owner(&agent)),
        );
        let plan: Value = serde_json::from_str(&json).unwrap();
        let all = nodes(&plan[0]["Plan"]);
        let scan_of = |index: &str| {
            all.iter()
                .find(|n| n["Index Name"] == index)
                .unwrap_or_else(|| panic!("no scan of {index}:\n{text}"))
        };
        // The agent's own messages after the read point: found by sender, not filtered from
        // every message after it.
        let own = scan_of("chatmessages_sent_after");
        let cond = own["Index Cond"].as_str().unwrap_or_default();
        assert!(cond.contains("sender_id"), "{cond}\n{text}");
        assert_eq!(own["Rows Removed by Filter"].as_f64().unwrap_or(0.0), 0.0);
        assert_eq!(own["Actual Rows"].as_f64(), Some(5.0), "{text}");
        let deleted = scan_of("chatmessages_deleted_after");
        assert_eq!(deleted["Actual Rows"].as_f64(), Some(5.0), "{text}");
        // The copies deleted in the room: a range of their own index, never a message read.
        let in_room = scan_of("chatroommessage_deletions_after");
        let cond = in_room["Index Cond"].as_str().unwrap_or_default();
        assert!(cond.contains("chat_seq"), "{cond}\n{text}");
        assert!(
            !all.iter().any(|n| n["Index Name"] == "chatmessages_pkey"),
            "{text}"
        );
        // No scan of the messages, and each room's start looked up once.
        for n in &all {
            assert!(
                !(n["Node Type"] == "Seq Scan" && n["Relation Name"] == "chatmessages"),
                "{text}"
            );
        }
        let starts = all
            .iter()
            .filter(|n| n["Index Name"] == "chatmessages_list")
            .map(|n| n["Actual Loops"].as_f64().unwrap_or(0.0))
            .sum::<f64>();
        assert_eq!(starts, ROOMS as f64, "{text}");

        // And the counts: half unread, less 5 own, 5 deleted, 5 deleted in the room.
        let mut service = DbConnection::Pg(conn);
        let rows = queries::read_states(&mut service, &customer, ReadScope::Owner(&agent))
            .expect("read states");
        assert_eq!(rows.len(), ROOMS as usize);
        for row in rows {
            assert_eq!(row.unread_count, MESSAGES / 2 - 15, "{row:?}");
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    drop(pg);
}
