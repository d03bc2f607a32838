//! Nothing waits for ever: a gRPC upstream that accepts the connection and never answers, a
//! statement stuck behind another session's lock, a slow statement, a broker that stopped
//! answering mid-connection. Each fails within its timeout, cleanly (503 with the error JSON
//! at the gateway), and writes nothing; a service answers a call once its caller's deadline
//! (`grpc-timeout`) has passed.

mod support;

use std::time::{Duration, Instant};

use common::db::{Db, DbOptions, DbTarget, DbTimeouts};
use common::error::ServiceError;
use common::grpc_client::CALL_TIMEOUT;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use pipeline::bus::{BusError, EventBus};
use serde_json::json;
use support::*;

/// Accepts TCP connections (the kernel completes the handshake: the listener never calls
/// `accept`) and never says a word.
fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_503_within_the_call_timeout() {
    let (_silent, url) = silent_listener();
    let stack = Stack::gateway_to(&url, &url).await;
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let started = Instant::now();
    let body = chat_body("group", &a, &[&a, &b], "x");
    let (read, write) = tokio::join!(
        stack.get("/chats", &token),
        stack.post("/chats", &token, &body)
    );
    let elapsed = started.elapsed();
    read.assert_error(503, "unavailable", "unavailable");
    write.assert_error(503, "unavailable", "unavailable");
    println!("a silent upstream answered 503 after {elapsed:?}");
    assert!(
        elapsed < CALL_TIMEOUT + Duration::from_secs(3),
        "within the call timeout: {elapsed:?}"
    );
}

/// Another session holds `table` of `schema` in ACCESS EXCLUSIVE mode until dropped.
struct TableLock(PgConnection);

impl TableLock {
    fn take(url: &str, schema: &str, table: &str) -> TableLock {
        let mut conn = PgConnection::establish(url).unwrap();
        conn.batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".{table} IN ACCESS EXCLUSIVE MODE"
        ))
        .unwrap();
        TableLock(conn)
    }

    fn release(mut self) {
        self.0.batch_execute("ROLLBACK").unwrap();
    }
}

/// Rows in `schema.table`, counted outside the services.
fn rows(url: &str, schema: &str, table: &str) -> i64 {
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FROM \"{schema}\".{table})"
    )))
    .get_result(&mut conn)
    .unwrap()
}

#[tokio::test]
async fn a_statement_blocked_on_a_lock_is_a_503_within_the_lock_timeout_and_writes_nothing() {
    let test = "timeouts::a_statement_blocked_on_a_lock_is_a_503_within_the_lock_timeout";
    let Some((mut env, guards)) = split_env(test).await else {
        return;
    };
    env.db_timeouts = DbTimeouts {
        lock: Duration::from_secs(1),
        statement: Duration::from_secs(3),
        ..DbTimeouts::default()
    };
    let mut stack = Stack::split(&env).await;
    stack.keep(guards);
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let chat = stack
        .post("/chats", &token, &chat_body("normal", &a, &[&a, &b], "n"))
        .await
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = json!({"chat_id": chat, "source": {"type": "agent", "target": a},
                      "type": "normal", "text": "blocked"})
    .to_string();
    stack.post("/chatmessages", &token, &send).await.ok();
    let (chats_before, messages_before) = (
        rows(&env.pg_url, &env.chat_schema, "chats"),
        rows(&env.pg_url, &env.message_schema, "chatmessages"),
    );

    // chat-manager's table locked: a create and a read wait for the lock, then give up.
    let lock = TableLock::take(&env.pg_url, &env.chat_schema, "chats");
    let started = Instant::now();
    let (c, d) = (new_id(), new_id());
    let created = stack
        .post("/chats", &token, &chat_body("group", &c, &[&c, &d], "g"))
        .await;
    let create_took = started.elapsed();
    let read = stack.get(&format!("/chats/{chat}"), &token).await;
    created.assert_error(503, "unavailable", "unavailable");
    read.assert_error(503, "unavailable", "unavailable");
    lock.release();

    // message-manager's table locked: a send gives up too.
    let lock = TableLock::take(&env.pg_url, &env.message_schema, "chatmessages");
    let started = Instant::now();
    let sent = stack.post("/chatmessages", &token, &send).await;
    let send_took = started.elapsed();
    sent.assert_error(503, "unavailable", "unavailable");
    lock.release();

    println!("blocked on a lock: create answered in {create_took:?}, send in {send_took:?}");
    for took in [create_took, send_took] {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(8),
            "a database timeout (lock 1 s, statement 3 s), not the call timeout (10 s), \
             ended it: {took:?}"
        );
    }
    assert_eq!(rows(&env.pg_url, &env.chat_schema, "chats"), chats_before);
    assert_eq!(
        rows(&env.pg_url, &env.message_schema, "chatmessages"),
        messages_before,
        "nothing was written"
    );
    // And the services carry on.
    stack.post("/chatmessages", &token, &send).await.ok();
    stack.get(&format!("/chats/{chat}"), &token).await.ok();
}

/// A statement that runs too long is cancelled by `statement_timeout` and is "unavailable";
/// migrations are not bound by it (they take longer than 1 ms here).
#[tokio::test]
async fn a_slow_statement_is_cancelled_but_migrations_are_not() {
    let test = "timeouts::a_slow_statement_is_cancelled_but_migrations_are_not";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let target = DbTarget::parse(&pg.url, &pg.schema);
    let options = DbOptions {
        pool_size: 1,
        timeouts: DbTimeouts {
            statement: Duration::from_millis(1),
            ..DbTimeouts::default()
        },
        ..DbOptions::default()
    };
    let db = Db::open(target, chat_manager::db::MIGRATIONS, options)
        .await
        .expect("migrations ran under a 1 ms statement timeout");
    let started = Instant::now();
    let slept = db
        .run(|conn| {
            diesel::sql_query("SELECT pg_sleep(5)")
                .execute(conn)
                .map_err(ServiceError::from)
        })
        .await;
    assert!(
        matches!(&slept, Err(ServiceError::Unavailable(m)) if m.contains("statement timeout")),
        "{slept:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The service answers a call once the caller's deadline has passed (CANCELLED), well before
/// its own lock timeout (5 s) would have ended the statement it waits on.
#[tokio::test]
async fn a_service_answers_at_its_callers_deadline() {
    let test = "timeouts::a_service_answers_at_its_callers_deadline";
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let mut stack = Stack::split(&env).await;
    stack.keep(guards);
    let mut client = proto::chat::v1::chat_service_client::ChatServiceClient::connect(format!(
        "http://{}",
        stack.chat_addr.unwrap()
    ))
    .await
    .unwrap();
    let customer = new_id();
    let (a, b) = (new_id(), new_id());
    let lock = TableLock::take(&env.pg_url, &env.chat_schema, "chats");
    let mut request = tonic::Request::new(proto::chat::v1::GetChatRequest {
        customer_id: customer.clone(),
        id: new_id(),
    });
    request.set_timeout(Duration::from_millis(500));
    let bearer = format!(
        "Bearer {}",
        internal_key().token(
            common::service_auth::ServiceName::ApiGateway,
            common::service_auth::ServiceName::ChatManager
        )
    );
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let started = Instant::now();
    let status = client.get_chat(request).await.unwrap_err();
    let took = started.elapsed();
    let create = proto::chat::v1::CreateChatRequest {
        customer_id: customer.clone(),
        r#type: proto::chat::v1::ChatType::Group as i32,
        owner_id: a.clone(),
        participant_ids: vec![a.clone(), b.clone()],
        name: "late".into(),
        detail: String::new(),
    };
    let mut request = tonic::Request::new(create);
    request.set_timeout(Duration::from_millis(500));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let created = client.create_chat(request).await.unwrap_err();
    lock.release();
    println!(
        "a 500 ms deadline ended a blocked call in {took:?}: {:?}",
        status.code()
    );
    for s in [&status, &created] {
        assert_eq!(s.code(), tonic::Code::Cancelled, "{s:?}");
    }
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The statement the service had started is not cancelled with the call: once the lock is
    // gone it may still commit, as a call broken off by a lost connection may (hence "retry
    // with the same Idempotency-Key"). At most once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let token = customer_token(&customer);
    let listed = stack.get("/chats", &token).await;
    assert!(listed.ok()["result"].as_array().unwrap().len() <= 1);
}

/// Once connected, a broker that stops answering (a black hole) does not hang a subscribe, a
/// queue declare or a queue-depth probe: each fails within its timeouts.
#[tokio::test]
async fn a_broker_that_stops_answering_does_not_hang_declares_or_subscribes() {
    let test = "timeouts::a_broker_that_stops_answering_does_not_hang";
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let proxy = testkit::TcpProxy::start(amqp.addr()).await;
    let bus = EventBus::amqp(amqp.url_via(&proxy));
    let (exchange, queue) = (amqp.name("chat.events"), amqp.name("q"));
    let spec = message_manager::events::subscription_spec(&exchange, &queue);
    let first = bus.subscribe(spec.clone()).await.expect("subscribes");
    bus.declare_set_aside(&amqp.name("dead"))
        .await
        .expect("declares");

    proxy.black_hole();
    let started = Instant::now();
    let limit = pipeline::bus::CONNECT_TIMEOUT + pipeline::bus::OPERATION_TIMEOUT;
    let other = amqp.name("dead2");
    let (subscribed, declared, depth) = tokio::join!(
        bus.subscribe(spec.clone()),
        bus.declare_set_aside(&other),
        bus.queue_depth(&queue),
    );
    let took = started.elapsed();
    println!("black-holed broker: subscribe, declare and depth failed within {took:?}");
    assert!(
        matches!(subscribed, Err(BusError::Timeout { .. })),
        "{:?}",
        subscribed.err()
    );
    assert!(
        matches!(declared, Err(BusError::Timeout { .. })),
        "{declared:?}"
    );
    assert!(matches!(depth, Err(BusError::Timeout { .. })), "{depth:?}");
    assert!(took < limit + Duration::from_secs(2), "{took:?}");

    // Back up: a fresh connection, and everything works again.
    proxy.set_up(true);
    drop(first);
    let again = bus.subscribe(spec).await;
    assert!(again.is_ok(), "{:?}", again.err());
    drop(again);
    drop(bus);
    drop(proxy);
    amqp.cleanup().await;
}

/// Reads from `stream` until the server closes it (or `within` passes): what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    match read {
        // Closed (a reset counts: the server is gone either way).
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

/// A client trickling its headers, or holding a connection idle, is cut off after
/// `HTTP_HEADER_TIMEOUT_SECS` (here 1 s, in the real binary); a client that sends its request
/// in pieces within it is served.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let listen = testkit::ops::free_addr();
    let _gateway = testkit::ops::spawn(
        env!("CARGO_BIN_EXE_api-gateway"),
        &[],
        &[
            ("DATA_DIR", dir.display().to_string()),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", testkit::ops::free_addr().to_string()),
            ("HTTP_HEADER_TIMEOUT_SECS", "1".into()),
        ],
        &dir.join("gateway.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        testkit::ops::http_get(listen, "/healthz").await,
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Headers begun and never finished.
    let mut trickle = tokio::net::TcpStream::connect(listen).await.unwrap();
    let started = Instant::now();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        .await
        .unwrap();
    let sent = read_until_closed(&mut trickle, Duration::from_secs(10))
        .await
        .expect("a connection with unfinished headers is closed");
    let trickle_closed = started.elapsed();
    assert!(
        sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
        "nothing, or a 408: {sent:?}"
    );
    assert!(
        trickle_closed >= Duration::from_millis(900),
        "{trickle_closed:?}"
    );

    // A request answered, then the connection left idle (keep-alive).
    let mut idle = tokio::net::TcpStream::connect(listen).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered:?}");

    // Headers in two pieces, 300 ms apart, within the timeout: served.
    let mut patient = tokio::net::TcpStream::connect(listen).await.unwrap();
    patient
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gate")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    patient
        .write_all(b"way\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(&mut patient, Duration::from_secs(10))
        .await
        .expect("answered and closed (Connection: close)");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    println!(
        "unfinished headers closed after {trickle_closed:?}; an idle connection closed after its \
         answer; headers sent in two pieces within the timeout answered 200"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
