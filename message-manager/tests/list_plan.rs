//! Listing the newest page stays fast however many messages a chat holds: PostgreSQL answers
//! both list queries (a chat's messages, and a chatroom's copies, which are its chat's
//! messages less those deleted on their own) with an index scan of `chatmessages_list` in the
//! index's order (no sequential scan, no sort), on the first page and on the pages after it,
//! with the values bound (a custom plan) and without them (the generic plan a cached prepared
//! statement may switch to).
//!
//! The statement explained is the one the service runs: built by the same builder as
//! `queries::list_messages` / `list_copies` (`list_messages_pg` / `list_copies_pg`), and
//! checked against the SQL the real functions send. Run with `--nocapture` (or nextest's
//! `--no-capture`) to see the plans.

use common::db::{Db, DbConnection, DbError, DbOptions, DbTarget};
use common::page::Page;
use diesel::connection::InstrumentationEvent;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::sql_types::Text;
use message_manager::chatroommessages::CopyKey;
use message_manager::db::queries;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// Messages in the chat (and copies in the chatroom) whose lists are explained.
const MINE: i64 = 100_000;
/// Messages (and copies) spread over other chats (chatrooms).
const OTHERS: i64 = 100_000;
const OTHER_CHATS: i64 = 1_000;
const PAGE_SIZE: u32 = 10;

use testkit::explain::explain;

/// A plan's nodes, depth first.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut out = vec![plan];
    if let Some(children) = plan.get("Plans").and_then(Value::as_array) {
        for child in children {
            out.extend(nodes(child));
        }
    }
    out
}

fn str_of<'a>(node: &'a Value, key: &str) -> &'a str {
    node.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num_of(node: &Value, key: &str) -> f64 {
    node.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The root plan node of `EXPLAIN (FORMAT JSON)` output.
fn root(json: &str) -> Value {
    let v: Value = serde_json::from_str(json).expect("EXPLAIN JSON");
    v[0]["Plan"].clone()
}

/// Asserts the plan reads `index` in its order: an (index only) scan of it, no sequential scan
/// and no sort anywhere.
fn assert_index_plan(what: &str, plan: &Value, index: &str) {
    let all = nodes(plan);
    let kinds: Vec<&str> = all.iter().map(|n| str_of(n, "Node Type")).collect();
    assert!(
        all.iter().any(|n| {
            matches!(str_of(n, "Node Type"), "Index Scan" | "Index Only Scan")
                && str_of(n, "Index Name") == index
        }),
        "{what}: no index scan of {index}: {kinds:?}\n{plan:#}"
    );
    for bad in ["Seq Scan", "Sort", "Incremental Sort", "Bitmap Heap Scan"] {
        assert!(
            !kinds.contains(&bad),
            "{what}: the plan has a {bad}: {kinds:?}\n{plan:#}"
        );
    }
}

/// The scan node of `index` in an analysed plan: (rows returned, rows removed by its filter,
/// shared buffers touched).
fn scan_figures(plan: &Value, index: &str) -> (f64, f64, f64) {
    let scan = nodes(plan)
        .into_iter()
        .find(|n| str_of(n, "Index Name") == index)
        .expect("the index scan");
    (
        num_of(scan, "Actual Rows"),
        num_of(scan, "Rows Removed by Filter"),
        num_of(scan, "Shared Hit Blocks") + num_of(scan, "Shared Read Blocks"),
    )
}

/// Explains one page: the custom plan (values bound) analysed, shown and checked; returns the
/// JSON plan.
fn check_page<Q: QueryFragment<Pg>>(
    conn: &mut PgConnection,
    what: &str,
    index: &str,
    build: impl Fn() -> Q,
) -> Value {
    let sql = diesel::debug_query::<Pg, _>(&build()).to_string();
    let text = explain(conn, "ANALYZE, BUFFERS, COSTS", build());
    eprintln!("--- {what}\n{sql}\n{text}\n");
    let json = explain(conn, "ANALYZE, BUFFERS, FORMAT JSON", build());
    let plan = root(&json);
    assert_index_plan(what, &plan, index);
    plan
}

/// The generic plan of the statement (what a prepared statement cached by diesel may switch to
/// after five executions): prepared from its SQL, planned without its values.
fn check_generic_plan<Q: QueryFragment<Pg>>(
    conn: &mut PgConnection,
    what: &str,
    index: &str,
    query: Q,
) {
    let debug = diesel::debug_query::<Pg, _>(&query).to_string();
    let sql = debug
        .split(" -- binds:")
        .next()
        .expect("the SQL of a debug_query");
    let params = (1..).take_while(|n| sql.contains(&format!("${n}"))).count();
    diesel::sql_query(format!("PREPARE list_plan_generic AS {sql}"))
        .execute(conn)
        .expect("PREPARE");
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(conn)
        .expect("SET plan_cache_mode");
    let nulls = vec!["NULL"; params].join(", ");
    let explained: Vec<String> = [
        format!("EXPLAIN (COSTS) EXECUTE list_plan_generic({nulls})"),
        format!("EXPLAIN (FORMAT JSON) EXECUTE list_plan_generic({nulls})"),
    ]
    .iter()
    .map(|q| plan_of(conn, q))
    .collect();
    diesel::sql_query("RESET plan_cache_mode")
        .execute(conn)
        .expect("RESET");
    diesel::sql_query("DEALLOCATE list_plan_generic")
        .execute(conn)
        .expect("DEALLOCATE");
    eprintln!(
        "--- {what}, generic plan ({params} parameters)\n{}\n",
        explained[0]
    );
    assert_index_plan(
        &format!("{what} (generic plan)"),
        &root(&explained[1]),
        index,
    );
}

/// The output of an `EXPLAIN ...` statement, as one text.
fn plan_of(conn: &mut PgConnection, explain: &str) -> String {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    diesel::sql_query(explain)
        .load::<Line>(conn)
        .unwrap_or_else(|e| panic!("{explain}: {e}"))
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records the SQL (with its binds) of every statement a connection starts.
fn record_statements(conn: &mut DbConnection) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let instrumentation = move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            sink.lock().unwrap().push(query.to_string());
        }
    };
    conn.set_instrumentation(instrumentation);
    seen
}

fn only_sql(debug: &str) -> &str {
    debug.split(" -- binds:").next().unwrap_or(debug)
}

/// Fills the schema: `MINE` messages in `chat` (three at a time sharing a `tm_create`, so page
/// tokens carry the id tie-breaker; one in a hundred deleted) interleaved in time with
/// `OTHERS` in other chats; `room`, a chatroom of `chat` from before them all, with one copy
/// in a hundred deleted on its own.
fn fill(conn: &mut PgConnection, customer: &str, chat: &str, room: &str) {
    let started = std::time::Instant::now();
    let total = MINE + OTHERS;
    // Row i: the chat's when even, another chat's when odd; three rows of the chat per
    // millisecond. `no` as the service derives it (the id's leading 60 bits).
    diesel::sql_query(format!(
        "INSERT INTO chatmessages (no, id, customer_id, chat_id, source, message_type, text, \
           medias, tm_create, tm_update, tm_delete) \
         SELECT ('x' || lpad(substr(r.id, 1, 8) || substr(r.id, 10, 4) || substr(r.id, 16, 3), \
                 16, '0'))::bit(64)::bigint, \
           r.id, '{customer}', r.chat, \
           '{{\"type\":\"agent\",\"target\":\"{customer}\",\"target_name\":\"\",\"name\":\"\",\"detail\":\"\"}}', \
           'normal', 'message number ' || i, '[]', r.tm, r.tm, r.tm_delete \
         FROM generate_series(1, {total}) AS i, \
         LATERAL (SELECT md5('message ' || i)::uuid::text AS id, \
                  CASE WHEN i % 2 = 0 THEN '{chat}' \
                       ELSE md5('chat ' || (i % {OTHER_CHATS}))::uuid::text END AS chat, \
                  timestamp '2026-01-01 00:00:00' + (i / 6) * interval '1 millisecond' AS tm, \
                  CASE WHEN i % 200 = 100 THEN timestamp '2026-06-01 00:00:00' \
                       ELSE timestamp '9999-01-01 00:00:00' END AS tm_delete) AS r"
    ))
    .execute(conn)
    .expect("insert chatmessages");
    diesel::sql_query(format!(
        "INSERT INTO member_chatrooms (id, customer_id, chat_id, owner_id, tm_create, tm_update, \
           tm_delete) \
         VALUES ('{room}', '{customer}', '{chat}', '{customer}', '2025-01-01', '2025-01-01', \
           '9999-01-01')"
    ))
    .execute(conn)
    .expect("insert the chatroom");
    diesel::sql_query(format!(
        "INSERT INTO chatroommessage_deletions (room_no, message_no, tm_delete) \
         SELECT r.no, m.no, timestamp '2026-07-01 00:00:00' \
         FROM chatmessages m, member_chatrooms r \
         WHERE r.id = '{room}' AND m.chat_id = '{chat}' AND m.no % 100 = 7"
    ))
    .execute(conn)
    .expect("delete some copies");
    diesel::sql_query("ANALYZE chatmessages, member_chatrooms, chatroommessage_deletions")
        .execute(conn)
        .expect("ANALYZE");
    eprintln!(
        "filled: {total} chatmessages ({MINE} in the listed chat, whose chatroom has as many \
         copies) in {:.1?}",
        started.elapsed()
    );
}

/// The position `offset` rows into the chat's live list, as a page token with the id
/// tie-breaker: a page deep into the list.
fn deep_token(conn: &mut PgConnection, chat: &str, offset: i64) -> String {
    #[derive(QueryableByName)]
    struct Position {
        #[diesel(sql_type = Text)]
        token: String,
    }
    diesel::sql_query(format!(
        "SELECT to_char(tm_create, 'YYYY-MM-DD HH24:MI:SS.US') || ',' || id AS token \
         FROM chatmessages WHERE chat_id = '{chat}' AND tm_delete = '9999-01-01' \
         ORDER BY tm_create DESC, id DESC OFFSET {offset} LIMIT 1"
    ))
    .get_result::<Position>(conn)
    .expect("a deep position")
    .token
}

#[tokio::test]
async fn newest_pages_are_read_through_the_list_indexes_without_a_scan_or_sort() {
    let test = "list_plan::newest_pages_are_read_through_the_list_indexes_without_a_scan_or_sort";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let (url, schema) = (pg.url.clone(), pg.schema.clone());
    tokio::task::spawn_blocking(move || {
        // The service's migrations, in the test's schema.
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
        let mut pg = testkit::connect_in_schema(&url, &schema);
        let customer = uuid::Uuid::new_v4().to_string();
        let (chat, room) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        fill(&mut pg, &customer, &chat, &room);

        // What the service sends, through the real functions on its connection type.
        let mut service = DbConnection::Pg(testkit::connect_in_schema(&url, &schema));
        let sent = record_statements(&mut service);
        let first = Page::new(PAGE_SIZE, "").unwrap();
        let rows = queries::list_messages(&mut service, &customer, &chat, &first).expect("list");
        assert_eq!(rows.len(), PAGE_SIZE as usize + 1, "a page and one more");
        let (rows, token) = first.finish(rows, |r| (r.tm_create, r.id.clone()));
        assert!(
            rows.windows(2)
                .all(|w| (w[0].tm_create, &w[0].id) > (w[1].tm_create, &w[1].id)),
            "newest first"
        );
        assert!(
            token.contains(','),
            "the data makes the first page end in a tie: {token}"
        );
        let second = Page::new(PAGE_SIZE, &token).unwrap();
        let next = queries::list_messages(&mut service, &customer, &chat, &second).expect("list");
        assert!(next[0].tm_create <= rows[PAGE_SIZE as usize - 1].tm_create);
        let room = queries::member_room(&mut service, &room)
            .expect("read the chatroom")
            .expect("the chatroom");
        let copies = queries::list_copies(&mut service, &room, &first).expect("list copies");
        let (_, copies_token) = first.finish(copies, |m| {
            (m.tm_create, CopyKey::of(&room, m).id().to_string())
        });
        assert!(copies_token.contains(','), "{copies_token}");
        let copies_second = Page::new(PAGE_SIZE, &copies_token).unwrap();
        let next_copies =
            queries::list_copies(&mut service, &room, &copies_second).expect("list copies");
        assert!(!next_copies.is_empty());
        let sent = sent.lock().unwrap().clone();
        let sent: Vec<&str> = sent
            .iter()
            .map(|s| only_sql(s))
            .filter(|s| s.starts_with("SELECT") && !s.contains("\"member_chatrooms\""))
            .collect();
        let built = [
            diesel::debug_query::<Pg, _>(&queries::list_messages_pg(&customer, &chat, &first))
                .to_string(),
            diesel::debug_query::<Pg, _>(&queries::list_messages_pg(&customer, &chat, &second))
                .to_string(),
            diesel::debug_query::<Pg, _>(&queries::list_copies_pg(&room, &first)).to_string(),
            diesel::debug_query::<Pg, _>(&queries::list_copies_pg(&room, &copies_second))
                .to_string(),
        ];
        let built: Vec<&str> = built.iter().map(|s| only_sql(s)).collect();
        assert_eq!(
            sent, built,
            "the statements explained are the ones the service sends"
        );

        // A plain timestamp token (what seed-era clients send): strictly older.
        let plain = Page::new(PAGE_SIZE, token.split(',').next().unwrap()).unwrap();
        let deep = Page::new(PAGE_SIZE, &deep_token(&mut pg, &chat, MINE * 9 / 10)).unwrap();
        let pages = [
            ("the newest page", &first),
            ("the second page (token with id tie-breaker)", &second),
            ("the second page (plain timestamp token)", &plain),
        ];
        for (what, page) in pages {
            let what_m = format!("chatmessages, {what}");
            let plan = check_page(&mut pg, &what_m, "chatmessages_list", || {
                queries::list_messages_pg(&customer, &chat, page)
            });
            let (returned, removed, buffers) = scan_figures(&plan, "chatmessages_list");
            assert_eq!(returned, f64::from(PAGE_SIZE + 1), "{what_m}: rows read");
            assert!(
                removed <= f64::from(PAGE_SIZE) && buffers < 100.0,
                "{what_m}: a page reads about a page ({removed} rows filtered out, \
                 {buffers} buffers)"
            );
            check_generic_plan(
                &mut pg,
                &what_m,
                "chatmessages_list",
                queries::list_messages_pg(&customer, &chat, page),
            );
        }
        for (what, page) in [
            ("the newest page", &first),
            ("the second page", &copies_second),
        ] {
            let what_c = format!("chatroommessages, {what}");
            let plan = check_page(&mut pg, &what_c, "chatmessages_list", || {
                queries::list_copies_pg(&room, page)
            });
            // The scan reads a page, and past the few copies deleted on their own among it.
            let (returned, _, buffers) = scan_figures(&plan, "chatmessages_list");
            assert!(
                returned >= f64::from(PAGE_SIZE + 1) && returned <= f64::from(2 * PAGE_SIZE),
                "{what_c}: {returned} rows read"
            );
            assert!(buffers < 100.0, "{what_c}: {buffers} buffers");
            check_generic_plan(
                &mut pg,
                &what_c,
                "chatmessages_list",
                queries::list_copies_pg(&room, page),
            );
        }

        // Deep into the list: the index seeks to the cursor (the redundant `tm_create <=` of
        // `paginate!`) instead of stepping over every newer entry, so depth costs nothing.
        let what = format!("chatmessages, a page {} rows deep", MINE * 9 / 10);
        let plan = check_page(&mut pg, &what, "chatmessages_list", || {
            queries::list_messages_pg(&customer, &chat, &deep)
        });
        let (returned, removed, buffers) = scan_figures(&plan, "chatmessages_list");
        eprintln!(
            "{what}: {returned} rows returned, {removed} filtered out on the way, {buffers} \
             buffers, {:.3} ms",
            num_of(&plan, "Actual Total Time")
        );
        assert_eq!(returned, f64::from(PAGE_SIZE + 1), "{what}: rows read");
        assert!(
            removed <= f64::from(PAGE_SIZE) && buffers < 100.0,
            "{what}: a deep page reads about a page ({removed} rows filtered out, {buffers} \
             buffers)"
        );
        drop(service);
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    drop(pg);
}

/// The statements a send and the event consumer run by key (the chat's membership; the chat
/// an event updates) use their indexes on the service's own sessions even when their plans
/// were made while the tables held two rows, analysed then and not since (autovacuum off, as
/// on this machine): as sequential scans, each call read the whole table (and so did the
/// consumer's "applied already?" read, now gone: the insert finds the duplicate by its key).
#[tokio::test]
async fn service_sessions_read_by_key_through_an_index_whatever_the_tables_held_when_planned() {
    let test = "list_plan::service_sessions_read_by_key_through_an_index_whatever_the_tables_held_when_planned";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let target = DbTarget::Postgres {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
    };
    let options = DbOptions {
        pool_size: 1,
        ..DbOptions::default()
    };
    let db = tokio::task::spawn_blocking(move || {
        Db::connect(target, message_manager::db::MIGRATIONS, &options).expect("migrate")
    })
    .await
    .unwrap();
    // The pool's one connection: the session as the service has it.
    db.run(|conn| -> Result<(), DbError> {
        // The statements as the service sends them.
        let sent = record_statements(conn);
        assert!(queries::mark_processed(conn, "an event")?, "a new event");
        assert!(!queries::mark_processed(conn, "an event")?, "a duplicate");
        queries::member_chat_with_rooms(conn, "customer", "chat 1")?;
        queries::member_chat(conn, "chat 1")?;
        let sent = sent.lock().unwrap().clone();
        let sql_of = |what: &str| {
            sent.iter()
                .map(|s| only_sql(s).to_owned())
                .find(|s| s.starts_with("SELECT") && s.contains(what))
                .unwrap_or_else(|| panic!("no statement with {what}: {sent:?}"))
        };
        // "Applied already?" is the insert itself (its conflict found by the primary key).
        assert!(
            !sent
                .iter()
                .any(|s| s.starts_with("SELECT") && s.contains("processed_events")),
            "no read of processed_events: {sent:?}"
        );
        let statements = [
            (
                "membership",
                sql_of("UNION ALL"),
                "'chat 1', 'customer', 'chat 1', 'customer', '9999-01-01'",
                ["member_chats_pkey", "member_chatrooms_chat"].as_slice(),
            ),
            (
                "member_chat",
                sql_of("\"member_chats\".\"id\" = $1"),
                "'chat 1', 1",
                ["member_chats_pkey"].as_slice(),
            ),
        ];

        let DbConnection::Pg(conn) = conn else {
            unreachable!("a PostgreSQL pool")
        };
        let mut run = |sql: &str| {
            diesel::sql_query(sql)
                .execute(conn)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        };
        let grow = |from: u32, to: u32| {
            [
                format!(
                    "INSERT INTO member_chats (id, customer_id, participant_ids, tm_update, \
                       tm_delete) \
                     SELECT 'chat ' || g, 'customer', '[]', now(), '9999-01-01' \
                     FROM generate_series({from}, {to}) g"
                ),
                format!(
                    "INSERT INTO member_chatrooms (id, customer_id, chat_id, owner_id, tm_create, \
                       tm_update, tm_delete) \
                     SELECT 'room ' || g, 'customer', 'chat ' || g, 'agent', now(), now(), \
                       '9999-01-01' FROM generate_series({from}, {to}) g"
                ),
            ]
        };
        for sql in grow(1, 2) {
            run(&sql);
        }
        // Statistics of the tables as they were then: an analyse while they were small (an
        // operator's, autovacuum's first, or the benchmark's) and none since.
        run("ANALYZE member_chats, member_chatrooms");
        // The worst case: one plan for the session's life, made on two rows.
        run("SET plan_cache_mode = force_generic_plan");
        for (name, sql, args, _) in &statements {
            run(&format!("PREPARE {name} AS {sql}"));
            run(&format!("EXECUTE {name}({args})"));
        }
        for sql in grow(3, 20_002) {
            run(&sql);
        }
        for (name, sql, args, indexes) in &statements {
            let text = plan_of(conn, &format!("EXPLAIN EXECUTE {name}({args})"));
            eprintln!("--- {name}: {sql}\n{text}\n");
            let json = plan_of(
                conn,
                &format!("EXPLAIN (FORMAT JSON) EXECUTE {name}({args})"),
            );
            let plan = root(&json);
            let all = nodes(&plan);
            for index in *indexes {
                assert!(
                    all.iter().any(|n| str_of(n, "Index Name") == *index),
                    "{name} on 20,002 rows, planned on 2: no scan of {index}\n{text}"
                );
            }
            assert!(
                !all.iter().any(|n| str_of(n, "Node Type") == "Seq Scan"),
                "{name} on 20,002 rows, planned on 2, reads a whole table:\n{text}"
            );
        }
        Ok(())
    })
    .await
    .unwrap();
    drop(pg);
}
