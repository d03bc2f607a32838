//! Upgrading a database written with a row per copy (migrations 1 and 2) to derived copies
//! (the lean fan-out migration) keeps what clients saw: every room lists the same copies, a
//! copy deleted on its own stays deleted, and the old copy ids still find their copies; the
//! later read-state migration numbers the messages so unread counts hold. On PostgreSQL and
//! on SQLite.

use common::db::DbConnection;
use common::page::Page;
use diesel::migration::{MigrationConnection, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sqlite::Sqlite;
use diesel_migrations::MigrationHarness;
use message_manager::chatroommessages;
use message_manager::db::{MIGRATIONS, queries};

const LIVE: &str = "9999-01-01 00:00:00";
const CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";
const CHAT: &str = "9a1c1a30-0000-4000-8000-000000000001";

/// (room, owner, tm_update): a, b, c from the start; d added later.
const ROOMS: [(&str, &str, &str); 4] = [
    (
        "9a1c1a30-0000-4000-8000-0000000000a1",
        "a",
        "2026-01-01 00:00:00",
    ),
    (
        "9a1c1a30-0000-4000-8000-0000000000b1",
        "b",
        "2026-01-01 00:00:00",
    ),
    (
        "9a1c1a30-0000-4000-8000-0000000000c1",
        "c",
        "2026-01-01 00:00:00",
    ),
    (
        "9a1c1a30-0000-4000-8000-0000000000d1",
        "d",
        "2026-01-01 00:00:03",
    ),
];
/// (message, tm_create, tm_delete)
const MESSAGES: [(&str, &str, &str); 3] = [
    (
        "7f000001-0000-4000-8000-000000000000",
        "2026-01-01 00:00:01",
        LIVE,
    ),
    (
        "7f000002-0000-4000-8000-000000000000",
        "2026-01-01 00:00:04",
        "2026-01-01 00:00:05",
    ),
    (
        "7f000003-0000-4000-8000-000000000000",
        "2026-01-01 00:00:06",
        LIVE,
    ),
];

/// The old copy id of message `m` in room `r`.
fn legacy_id(m: usize, r: usize) -> String {
    format!("c0000000-0000-4000-8000-0000000000{m}{r}")
}

/// The legacy rows: m1 copied to a, b, c (b's copy deleted on its own); m2 (deleted) and m3
/// copied to all four rooms.
fn legacy_rows() -> Vec<String> {
    let mut sql = vec![format!(
        "INSERT INTO member_chats (id, customer_id, participant_ids, tm_update, tm_delete) \
         VALUES ('{CHAT}', '{CUSTOMER}', '[\"a\",\"b\",\"c\",\"d\"]', '2026-01-01 00:00:03', '{LIVE}')"
    )];
    for (id, owner, updated) in ROOMS {
        sql.push(format!(
            "INSERT INTO member_chatrooms (id, customer_id, chat_id, owner_id, tm_update, tm_delete) \
             VALUES ('{id}', '{CUSTOMER}', '{CHAT}', '{owner}', '{updated}', '{LIVE}')"
        ));
    }
    for (m, (id, created, deleted)) in MESSAGES.iter().enumerate() {
        sql.push(format!(
            "INSERT INTO chatmessages (id, customer_id, chat_id, source, message_type, text, medias, \
               tm_create, tm_update, tm_delete) \
             VALUES ('{id}', '{CUSTOMER}', '{CHAT}', '{{\"type\":\"agent\",\"target\":\"a\"}}', \
               'normal', 'text {m}', '[]', '{created}', '{created}', '{deleted}')"
        ));
        let rooms = if m == 0 { 3 } else { 4 };
        for (r, (room, owner, _)) in ROOMS.iter().enumerate().take(rooms) {
            let own_delete = if m == 0 && r == 1 {
                "2026-01-01 00:00:02"
            } else {
                deleted
            };
            sql.push(format!(
                "INSERT INTO chatroommessages (id, customer_id, chatroom_id, owner_id, \
                   messagechat_id, source, message_type, text, medias, tm_create, tm_update, \
                   tm_delete) \
                 VALUES ('{}', '{CUSTOMER}', '{room}', '{owner}', '{id}', \
                   '{{\"type\":\"agent\",\"target\":\"a\"}}', 'normal', 'text {m}', '[]', \
                   '{created}', '{own_delete}', '{own_delete}')",
                legacy_id(m, r)
            ));
        }
    }
    sql
}

/// What the upgraded database answers, through the service's own functions.
fn check_upgraded(conn: &mut DbConnection) {
    let page = Page::new(100, "").unwrap();
    let listed = |conn: &mut DbConnection, r: usize| -> Vec<String> {
        let room = queries::member_room(conn, ROOMS[r].0).unwrap().unwrap();
        let (copies, _) = chatroommessages::list(conn, &room, &page).unwrap();
        copies.into_iter().map(|c| c.messagechat_id).collect()
    };
    let (m1, m3) = (MESSAGES[0].0.to_owned(), MESSAGES[2].0.to_owned());
    assert_eq!(
        listed(conn, 0),
        [m3.clone(), m1.clone()],
        "a: both live messages"
    );
    assert_eq!(
        listed(conn, 1),
        [m3.as_str()],
        "b: its copy of m1 was deleted on its own"
    );
    assert_eq!(listed(conn, 2), [m3.clone(), m1.clone()], "c");
    assert_eq!(listed(conn, 3), [m3.as_str()], "d: joined after m1");

    // Old ids still name their copies (and say how each ended).
    let get = |conn: &mut DbConnection, m: usize, r: usize| {
        chatroommessages::get(conn, CUSTOMER, &legacy_id(m, r), None)
            .unwrap_or_else(|e| panic!("legacy copy {m}{r}: {e}"))
            .to_proto()
    };
    let a1 = get(conn, 0, 0);
    assert_eq!(
        (a1.messagechat_id.as_str(), a1.text.as_str()),
        (m1.as_str(), "text 0")
    );
    assert_eq!(a1.tm_delete, "9999-01-01 00:00:00.000000");
    assert_eq!(get(conn, 0, 1).tm_delete, "2026-01-01 00:00:02.000000");
    assert_eq!(get(conn, 1, 3).tm_delete, "2026-01-01 00:00:05.000000");
    // And the copy's own id (what lists show now) finds the same copy.
    let again = chatroommessages::get(conn, CUSTOMER, &a1.id, None)
        .unwrap()
        .to_proto();
    assert_eq!(again, a1);
    // Read state counts the same copies: nothing read yet, the sender's own not unread.
    let unread: Vec<(String, i64)> =
        queries::read_states(conn, CUSTOMER, queries::ReadScope::Chat(CHAT))
            .unwrap()
            .into_iter()
            .map(|r| (r.owner_id, r.unread_count))
            .collect();
    assert_eq!(
        unread,
        [
            ("a".to_owned(), 0),
            ("b".to_owned(), 1),
            ("c".to_owned(), 2),
            ("d".to_owned(), 1)
        ]
    );
    // Another tenant sees none of it.
    assert!(
        chatroommessages::get(
            conn,
            "00000000-0000-4000-8000-000000000000",
            &legacy_id(0, 0),
            None
        )
        .is_err()
    );
}

/// After reverting the upgrade: the copy rows written back that kept their old ids (all 11
/// of them: m1 in a, b and c; m2 and m3 in all four rooms).
fn copies_written_back(conn: &mut DbConnection) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let ids: Vec<String> = (0..3)
        .flat_map(|m| (0..4).map(move |r| format!("'{}'", legacy_id(m, r))))
        .collect();
    diesel::sql_query(format!(
        "SELECT count(*) AS n FROM chatroommessages WHERE id IN ({})",
        ids.join(", ")
    ))
    .get_result::<Count>(conn)
    .expect("count the copies written back")
    .n
}

/// The upgrade on one backend's connection `$conn` (wrapped as `DbConnection::$variant`):
/// migrations 1 and 2, the legacy rows, the rest of the migrations; the checks; then the
/// upgrade reverted. A macro, as diesel's migration harness is per connection type.
macro_rules! upgrade_and_revert {
    ($conn:expr, $backend:ty, $migrations:expr, $variant:ident) => {{
        let mut conn = $conn;
        conn.setup().unwrap();
        let migrations = MigrationSource::<$backend>::migrations($migrations).unwrap();
        let (before, upgrade) = migrations.split_at(2);
        for m in before {
            conn.run_migration(&**m).unwrap();
        }
        for sql in legacy_rows() {
            diesel::sql_query(&sql)
                .execute(&mut conn)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        for m in upgrade {
            conn.run_migration(&**m).unwrap();
        }
        let mut conn = DbConnection::$variant(conn);
        check_upgraded(&mut conn);
        let DbConnection::$variant(mut conn) = conn else {
            unreachable!()
        };
        conn.revert_migration(&*upgrade[0]).unwrap();
        assert_eq!(copies_written_back(&mut DbConnection::$variant(conn)), 11);
    }};
}

#[tokio::test]
async fn postgres_copies_carry_over() {
    let test = "lean_fanout_migration::postgres_copies_carry_over";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let (url, schema) = (pg.url.clone(), pg.schema.clone());
    tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        diesel::sql_query(format!("SET search_path TO \"{schema}\""))
            .execute(&mut conn)
            .unwrap();
        upgrade_and_revert!(conn, Pg, MIGRATIONS.postgres, Pg);
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    drop(pg);
}

#[test]
fn sqlite_copies_carry_over() {
    let dir = std::env::temp_dir().join(format!("lean-fanout-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("message-manager.sqlite");
    let conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    upgrade_and_revert!(conn, Sqlite, MIGRATIONS.sqlite, Sqlite);
    let _ = std::fs::remove_dir_all(&dir);
}
