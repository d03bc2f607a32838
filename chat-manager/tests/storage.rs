//! chat-manager's rules and transactions against real storage: PostgreSQL (this machine's) and
//! SQLite (a temporary file), the same assertions on both.

use chat_manager::ChatManager;
use chat_manager::chats::{self, ChatType, NewChat};
use chat_manager::db::models::{ChatRow, encode_ids};
use chat_manager::db::queries;
use chat_manager::error::ChatError;
use common::RequestMeta;
use common::db::{Db, DbError, DbOptions, DbTarget};
use common::page::Page;
use common::time;
use pipeline::outbox::{self, RelaySignal};

/// Runs `$body` with a `Db` over each backend.
macro_rules! on_both_backends {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let path = std::env::temp_dir().join(format!("cm-{}.db", uuid::Uuid::new_v4().simple()));
                let $db = connect(DbTarget::Sqlite { path: path.to_string_lossy().into_owned() }).await;
                $body
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }

            #[tokio::test]
            async fn postgres() {
                let Some(pg) = testkit::require_postgres(concat!("storage::", stringify!($name), "::postgres")).await else {
                    return;
                };
                let $db = connect(DbTarget::Postgres { url: pg.url.clone(), schema: pg.schema.clone() }).await;
                $body
                drop($db);
                drop(pg);
            }
        }
    };
}

async fn connect(target: DbTarget) -> Db {
    tokio::task::spawn_blocking(move || {
        Db::connect(target, chat_manager::db::MIGRATIONS, &DbOptions::default())
    })
    .await
    .unwrap()
    .expect("connect")
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

on_both_backends!(pages_are_exact_when_timestamps_tie, |db| {
    let customer = id();
    let tm = time::now();
    let mut ids = Vec::new();
    // 25 chats created in the same microsecond: only the id orders them.
    for _ in 0..25 {
        let row = ChatRow {
            id: id(),
            customer_id: customer.clone(),
            chat_type: "group".into(),
            owner_id: customer.clone(),
            participant_ids: encode_ids(std::slice::from_ref(&customer)),
            name: String::new(),
            detail: String::new(),
            normal_pair: None,
            tm_create: tm,
            tm_update: tm,
            tm_delete: time::live(),
        };
        ids.push(row.id.clone());
        let r = row.clone();
        db.run(move |c| queries::insert_chat(c, &r).map_err(DbError::from))
            .await
            .unwrap();
    }
    ids.sort();
    ids.reverse();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = Page::new(4, &token).unwrap();
        let (customer, p) = (customer.clone(), page.clone());
        let (rows, next) = db
            .run(move |c| chats::list(c, &customer, &p))
            .await
            .map_err(|e: ChatError| e)
            .unwrap();
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.id.clone()));
        if seen.len() < 25 {
            assert!(next.contains(','), "a tie carries the id: {next}");
        } else {
            assert!(!next.contains(','), "nothing follows the last item: {next}");
        }
        token = next;
        // A seed-era client passing just the timestamp skips the tie: strictly older.
        let plain = Page::new(4, &time::format(tm)).unwrap();
        let customer = rows[0].customer_id.clone();
        let (older, _) = db
            .run(move |c| chats::list(c, &customer, &plain))
            .await
            .map_err(|e: ChatError| e)
            .unwrap();
        assert!(older.is_empty());
    }
    assert_eq!(seen, ids);
});

on_both_backends!(concurrent_creates_of_one_pair_make_one_chat, |db| {
    let manager = ChatManager::new(db.clone(), RelaySignal::default());
    let customer = id();
    let (a, b) = (id(), id());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let m = manager.clone();
        let new = NewChat {
            customer_id: customer.clone(),
            chat_type: ChatType::Normal,
            owner_id: a.clone(),
            participant_ids: if i % 2 == 0 {
                vec![a.clone(), b.clone()]
            } else {
                vec![b.clone(), a.clone()]
            },
            name: format!("try {i}"),
            detail: String::new(),
        };
        tasks.push(tokio::spawn(async move {
            m.write(RequestMeta::default(), move |c| chats::create(c, new))
                .await
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(ChatError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((created, conflicts), (1, 7));
    // One chat, two rooms, and the event of exactly one creation.
    let backlog = db
        .run(|c| outbox::backlog(c).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(backlog, 1);
});

on_both_backends!(a_refused_change_writes_nothing, |db| {
    let manager = ChatManager::new(db.clone(), RelaySignal::default());
    let customer = id();
    let (a, b, c) = (id(), id(), id());
    let new = NewChat {
        customer_id: customer.clone(),
        chat_type: ChatType::Group,
        owner_id: a.clone(),
        participant_ids: vec![a.clone(), b.clone()],
        name: "g".into(),
        detail: String::new(),
    };
    let chat = manager
        .write(RequestMeta::default(), move |conn| chats::create(conn, new))
        .await
        .unwrap();
    let before = db
        .run(|c| outbox::backlog(c).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(before, 1);

    let (cust, chat_id) = (customer.clone(), chat.id.clone());
    let err = manager
        .write(RequestMeta::default(), move |conn| {
            chats::change_owner(conn, &cust, &chat_id, c)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::InvalidArgument(_)));
    let (cust, chat_id) = (customer.clone(), chat.id.clone());
    let err = manager
        .write(RequestMeta::default(), move |conn| {
            chats::remove_participant(conn, &cust, &chat_id, &a)
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owner"), "{err}");

    let after = db
        .run(|c| outbox::backlog(c).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(after, before, "no events for refused changes");
    let (cust, chat_id) = (customer.clone(), chat.id.clone());
    let reread = db
        .run(move |c| chats::get(c, &cust, &chat_id))
        .await
        .map_err(|e: ChatError| e)
        .unwrap();
    assert_eq!(reread, chat);
});

on_both_backends!(housekeeping_removes_only_old_sent_events, |db| {
    use diesel::prelude::*;
    let manager = ChatManager::new(db.clone(), RelaySignal::default());
    let customer = id();
    for _ in 0..2 {
        let (a, b) = (id(), id());
        let new = NewChat {
            customer_id: customer.clone(),
            chat_type: ChatType::Group,
            owner_id: a.clone(),
            participant_ids: vec![a, b],
            name: String::new(),
            detail: String::new(),
        };
        manager
            .write(RequestMeta::default(), move |c| chats::create(c, new))
            .await
            .unwrap();
    }
    // The first chat's row (its event) was sent two days ago, the second's is unsent.
    let old = time::now() - chrono::Duration::days(2);
    db.run(move |c| {
        let seqs: Vec<i64> = outbox::outbox::table
            .order(outbox::outbox::seq.asc())
            .select(outbox::outbox::seq)
            .limit(1)
            .load(c)?;
        diesel::update(outbox::outbox::table.filter(outbox::outbox::seq.eq_any(seqs)))
            .set(outbox::outbox::sent_at.eq(Some(old)))
            .execute(c)
            .map_err(DbError::from)
    })
    .await
    .unwrap();
    let removed = db
        .run(|c| outbox::purge_sent(c).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(removed, 1, "one row per transaction");
    let backlog = db
        .run(|c| outbox::backlog(c).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(backlog, 1, "unsent events are never removed");
    let again = db
        .run(|c| outbox::purge_sent(c).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(again, 0);
});
