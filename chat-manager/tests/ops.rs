//! chat-manager as operators run it: the binary serves gRPC health, reflection and metrics,
//! logs JSON when asked, stops cleanly on SIGTERM (flushing its outbox, and also while it still
//! waits for PostgreSQL); `healthcheck` and `migrate` subcommands;
//! migrations safe with several replicas starting at once.

use std::time::Duration;

use common::db::{Db, DbOptions, DbTarget};
use common::service_auth::{InternalKey, ServiceName};
use diesel::{Connection, PgConnection, RunQueryDsl};
use proto::chat::v1::chat_service_server::SERVICE_NAME;
use testkit::ops::{free_addr, http_get, reflected_services, sample, spawn, until_healthy};

const BIN: &str = env!("CARGO_BIN_EXE_chat-manager");

fn log_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "chat-manager-{}.log",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Tables in `schema` (the migrations' bookkeeping table included).
fn tables(url: &str, schema: &str) -> i64 {
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}')"
    )))
    .get_result(&mut conn)
    .unwrap()
}

#[tokio::test]
async fn binary_serves_health_reflection_and_metrics_and_stops_on_sigterm() {
    let test = "ops::binary_serves_health_reflection_and_metrics_and_stops_on_sigterm";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let (listen, metrics) = (free_addr(), free_addr());
    let log = log_path();
    let mut child = spawn(
        BIN,
        &[],
        &[
            ("DATABASE_URL", pg.url.clone()),
            ("DATABASE_SCHEMA", pg.schema.clone()),
            ("AMQP_URL", amqp.url.clone()),
            ("CHAT_EVENTS_EXCHANGE", amqp.name("chat.events")),
            // message-manager's queue, which chat-manager declares: a name of this test's.
            (
                "CHAT_EVENTS_QUEUE",
                amqp.name("message-manager.chat-events"),
            ),
            ("WEBHOOK_EVENTS_QUEUE", amqp.name("webhook-manager.events")),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
            ("LOG_FORMAT", "json".into()),
            ("GRPC_REFLECTION", "true".into()),
        ],
        &log,
    );

    let healthy = until_healthy(
        BIN,
        &[("LISTEN_ADDR", listen.to_string())],
        Duration::from_secs(60),
    )
    .await
    .expect("healthcheck exits 0 once the service is up");
    assert_eq!(healthy.trim(), "SERVING");
    common::grpc_server::check_health(listen, "")
        .await
        .expect("the server as a whole is SERVING");
    common::grpc_server::check_health(listen, SERVICE_NAME)
        .await
        .expect("chat.v1.ChatService is SERVING");

    // Reflection, enabled here, answers an internal token only.
    let token = format!("Bearer {}", internal_token(ServiceName::ApiGateway));
    for v1alpha in [false, true] {
        let refused = reflected_services(listen, v1alpha, None).await.unwrap_err();
        assert!(refused.contains("Unauthenticated"), "{refused}");
        let services = reflected_services(listen, v1alpha, Some(&token))
            .await
            .unwrap();
        for expected in [SERVICE_NAME, "grpc.health.v1.Health"] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} in {services:?}"
            );
        }
        assert!(
            !services.iter().any(|s| s.starts_with("message.")),
            "only this service's API: {services:?}"
        );
    }

    let (status, page) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{page}");
    let checks = sample(
        &page,
        r#"grpc_server_requests_total{method="/grpc.health.v1.Health/Check",code="Ok"}"#,
    )
    .unwrap_or(0.0);
    assert!(checks >= 3.0, "health checks counted: {page}");
    assert_eq!(
        sample(&page, r#"outbox_backlog_events{service="chat-manager"}"#),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            r#"outbox_oldest_unsent_age_seconds{service="chat-manager"}"#
        ),
        Some(0.0),
        "{page}"
    );

    assert_eq!(
        child.terminate(Duration::from_secs(20)),
        Some(0),
        "exits 0 on SIGTERM"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "chat-manager listening"),
        "{logs}"
    );
}

#[tokio::test]
async fn healthcheck_fails_on_one_line_when_nothing_serves() {
    let out = tokio::process::Command::new(BIN)
        .arg("healthcheck")
        .env("LISTEN_ADDR", free_addr().to_string())
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("unhealthy: "), "{stderr}");
}

#[tokio::test]
async fn migrate_subcommand_applies_migrations_and_exits() {
    let Some(pg) =
        testkit::require_postgres("ops::migrate_subcommand_applies_migrations_and_exits").await
    else {
        return;
    };
    assert_eq!(tables(&pg.url, &pg.schema), 0);
    let out = tokio::process::Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &pg.url)
        .env("DATABASE_SCHEMA", &pg.schema)
        .env_remove("AMQP_URL")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tables(&pg.url, &pg.schema) > 1, "tables created");

    let out = tokio::process::Command::new(BIN)
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "migrate without DATABASE_URL fails");
}

/// Several replicas starting at once against an empty schema: all come up, the migrations are
/// applied once (without the advisory lock, concurrent CREATE TABLEs fail).
#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    let Some(pg) = testkit::require_postgres("ops::replicas_starting_together_migrate_once").await
    else {
        return;
    };
    let starts = (0..4).map(|_| {
        let target = DbTarget::Postgres {
            url: pg.url.clone(),
            schema: pg.schema.clone(),
        };
        tokio::task::spawn_blocking(move || {
            Db::connect(target, chat_manager::db::MIGRATIONS, &DbOptions::default()).map(drop)
        })
    });
    for started in futures_util::future::join_all(starts).await {
        started.unwrap().expect("every replica starts");
    }
    let mut conn = PgConnection::establish(&pg.url).unwrap();
    let applied: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FROM \"{}\".__diesel_schema_migrations)",
        pg.schema
    )))
    .get_result(&mut conn)
    .unwrap();
    let embedded = diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(
        chat_manager::db::MIGRATIONS.postgres,
    )
    .unwrap()
    .len();
    assert_eq!(applied, embedded as i64);
}

#[tokio::test]
async fn run_migrations_off_leaves_the_schema_alone() {
    let Some(pg) =
        testkit::require_postgres("ops::run_migrations_off_leaves_the_schema_alone").await
    else {
        return;
    };
    let target = DbTarget::Postgres {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
    };
    let options = DbOptions {
        run_migrations: false,
        ..DbOptions::default()
    };
    tokio::task::spawn_blocking(move || {
        Db::connect(target, chat_manager::db::MIGRATIONS, &options).map(drop)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(tables(&pg.url, &pg.schema), 0);
}

/// A stand-in OpenTelemetry collector: records (trace id, span name, service name) of every
/// span exported to it.
mod collector {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use tokio::sync::mpsc;

    pub type Exported = (String, String, String);

    struct Collector(mpsc::UnboundedSender<Exported>);

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            for resource_spans in req.into_inner().resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .map(|v| match v {
                        Value::StringValue(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        let trace: String =
                            span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        let _ = self.0.send((trace, span.name, service.clone()));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    pub async fn start() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Exported>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx)))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (addr, rx)
    }
}

// Multi-threaded: `terminate` blocks its thread while the client's connection, on this
// runtime, must still answer the server's GOAWAY for the graceful shutdown to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    let test = "ops::spans_are_exported_over_otlp_in_the_callers_trace";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let (collector_addr, mut exported) = collector::start().await;
    let (listen, metrics) = (free_addr(), free_addr());
    let log = log_path();
    let mut child = spawn(
        BIN,
        &[],
        &[
            ("DATABASE_URL", pg.url.clone()),
            ("DATABASE_SCHEMA", pg.schema.clone()),
            ("AMQP_URL", amqp.url.clone()),
            ("CHAT_EVENTS_EXCHANGE", amqp.name("chat.events")),
            // message-manager's queue, which chat-manager declares: a name of this test's.
            (
                "CHAT_EVENTS_QUEUE",
                amqp.name("message-manager.chat-events"),
            ),
            ("WEBHOOK_EVENTS_QUEUE", amqp.name("webhook-manager.events")),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{collector_addr}"),
            ),
            // Export within 100 ms rather than the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        &log,
    );
    until_healthy(
        BIN,
        &[("LISTEN_ADDR", listen.to_string())],
        Duration::from_secs(60),
    )
    .await
    .expect("healthy");

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    // One call carrying the caller's trace context.
    let mut client = proto::chat::v1::chat_service_client::ChatServiceClient::connect(format!(
        "http://{listen}"
    ))
    .await
    .unwrap();
    let mut request = signed(
        proto::chat::v1::GetChatRequest {
            customer_id: uuid::Uuid::new_v4().to_string(),
            id: uuid::Uuid::new_v4().to_string(),
        },
        ServiceName::ApiGateway,
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let status = client.get_chat(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some((trace_id, name, service)) = exported.recv().await {
            if trace_id == trace {
                return Some((name, service));
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let (name, service) =
        found.unwrap_or_else(|| panic!("no span of trace {trace} exported; log:\n{log_text}"));
    println!("exported span {name:?} of service {service:?} in trace {trace}");
    assert_eq!(name, "grpc");
    assert_eq!(service, "chat-manager");
    drop(client);
    let started = std::time::Instant::now();
    let code = child.terminate(Duration::from_secs(20));
    println!("stopped in {:?}", started.elapsed());
    if code != Some(0) {
        println!(
            "log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_eq!(
        code,
        Some(0),
        "exits 0 on SIGTERM, having flushed its spans"
    );
    let _ = std::fs::remove_file(&log);
}

/// A group chat of two new participants of `customer`.
fn new_group(customer: &str, name: &str) -> proto::chat::v1::CreateChatRequest {
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    proto::chat::v1::CreateChatRequest {
        customer_id: customer.to_owned(),
        r#type: proto::chat::v1::ChatType::Group as i32,
        owner_id: a.clone(),
        participant_ids: vec![a, b],
        name: name.to_owned(),
        detail: String::new(),
    }
}

/// A token of the tests' internal key from `caller` for chat-manager.
fn internal_token(caller: ServiceName) -> String {
    InternalKey::from_config(Some(testkit::INTERNAL_AUTH_SECRET))
        .unwrap()
        .token(caller, ServiceName::ChatManager)
}

/// A request carrying `caller`'s internal token.
fn signed<T>(message: T, caller: ServiceName) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let bearer = format!("Bearer {}", internal_token(caller));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    request
}

/// Events recorded in `schema`'s outbox and not yet confirmed by the broker.
fn backlog(url: &str, schema: &str) -> i64 {
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT coalesce(sum(event_count), 0)::bigint FROM \"{schema}\".outbox \
         WHERE sent_at IS NULL)"
    )))
    .get_result(&mut conn)
    .unwrap()
}

/// SIGTERM while events wait in the outbox (the broker was unreachable) and the broker is
/// back: the relay publishes them before the process exits 0.
// Multi-threaded: the proxy to the broker runs on this runtime while the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_outbox_before_exiting() {
    let test = "ops::sigterm_flushes_the_outbox_before_exiting";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let exchange = amqp.name("chat.events");
    let mut events = testkit::EventReader::bind(&amqp.url, &exchange).await;
    let broker = testkit::TcpProxy::start(amqp.addr()).await;
    broker.set_up(false);
    let (listen, metrics) = (free_addr(), free_addr());
    let log = log_path();
    let mut child = spawn(
        BIN,
        &[],
        &[
            ("DATABASE_URL", pg.url.clone()),
            ("DATABASE_SCHEMA", pg.schema.clone()),
            ("AMQP_URL", amqp.url_via(&broker)),
            ("CHAT_EVENTS_EXCHANGE", exchange.clone()),
            (
                "CHAT_EVENTS_QUEUE",
                amqp.name("message-manager.chat-events"),
            ),
            ("WEBHOOK_EVENTS_QUEUE", amqp.name("webhook-manager.events")),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
        ],
        &log,
    );
    until_healthy(
        BIN,
        &[("LISTEN_ADDR", listen.to_string())],
        Duration::from_secs(60),
    )
    .await
    .expect("serves while the broker is unreachable");

    // Reflection is off unless GRPC_REFLECTION says otherwise.
    let token = format!("Bearer {}", internal_token(ServiceName::ApiGateway));
    let off = reflected_services(listen, false, Some(&token))
        .await
        .unwrap_err();
    assert!(off.contains("Unimplemented"), "{off}");

    let mut client = proto::chat::v1::chat_service_client::ChatServiceClient::connect(format!(
        "http://{listen}"
    ))
    .await
    .unwrap();
    let customer = uuid::Uuid::new_v4().to_string();
    // A call without an internal token is refused, and writes nothing (the events counted
    // below are the signed calls' only).
    let unsigned = client
        .create_chat(new_group(&customer, "unsigned"))
        .await
        .unwrap_err();
    assert_eq!(
        unsigned.code(),
        tonic::Code::Unauthenticated,
        "{unsigned:?}"
    );
    const CHATS: usize = 5;
    for i in 0..CHATS {
        client
            .create_chat(signed(
                new_group(&customer, &format!("c{i}")),
                ServiceName::MessageManager,
            ))
            .await
            .expect("writes succeed while the broker is away");
    }
    drop(client);
    // Each chat: its chat_created, naming its chatrooms.
    let waiting = backlog(&pg.url, &pg.schema);
    assert_eq!(waiting, CHATS as i64, "the events wait in the outbox");

    broker.set_up(true);
    let code = tokio::task::spawn_blocking(move || {
        let code = child.terminate(Duration::from_secs(30));
        (code, child)
    })
    .await
    .unwrap()
    .0;
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(0), "exits 0 on SIGTERM; log:\n{logs}");
    assert_eq!(backlog(&pg.url, &pg.schema), 0, "flushed; log:\n{logs}");
    let published = events.collect_for(Duration::from_secs(2)).await;
    let created = published
        .iter()
        .filter(|(key, _, _)| key.starts_with("chat_created."))
        .count();
    println!(
        "SIGTERM with {waiting} events in the outbox: exit {code:?}, {} events published \
         ({created} chat_created)",
        published.len()
    );
    assert_eq!(created, CHATS, "every chat's event reached the broker");
    let _ = std::fs::remove_file(&log);
    drop(broker);
    amqp.cleanup().await;
}

/// SIGTERM while the service still waits for PostgreSQL at start-up: it exits at once.
#[tokio::test]
async fn sigterm_while_waiting_for_postgres_exits_promptly() {
    let log = log_path();
    let mut child = spawn(
        BIN,
        &[],
        &[
            (
                "DATABASE_URL",
                format!("postgres://postgres@{}/test", free_addr()),
            ),
            (
                "AMQP_URL",
                format!("amqp://guest:guest@{}/%2f", free_addr()),
            ),
            ("LISTEN_ADDR", free_addr().to_string()),
            ("METRICS_ADDR", free_addr().to_string()),
        ],
        &log,
    );
    // Long enough to be in the retry loop (the first retry is after 0.5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = std::time::Instant::now();
    let code = child.terminate(Duration::from_secs(10));
    let took = started.elapsed();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    println!("SIGTERM while waiting for PostgreSQL: exit {code:?} after {took:?}");
    assert!(logs.contains("database not ready"), "was waiting: {logs}");
    assert_eq!(code, Some(0), "{logs}");
    assert!(took < Duration::from_secs(3), "promptly: {took:?}");
}

/// The binary as deployed with TLS on both sides: PostgreSQL with `sslmode=verify-full` and
/// RabbitMQ over `amqps://` with AMQP_CA_FILE (each behind a TLS proxy with a test CA's
/// certificate for `localhost`): it serves (its health follows the database) and publishes.
// Multi-threaded: the proxies run on this runtime while the test waits on the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_publishes_over_tls_to_postgres_and_rabbitmq() {
    let test = "ops::serves_and_publishes_over_tls_to_postgres_and_rabbitmq";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let ca = testkit::tls::TestCa::new();
    let pg_tls = testkit::tls::TlsProxy::postgres(&ca, pg.addr()).await;
    let amqp_tls = testkit::tls::TlsProxy::start(&ca, amqp.addr()).await;
    let database = pg.url.rsplit('/').next().unwrap().to_owned();
    let exchange = amqp.name("chat.events");
    let mut events = testkit::EventReader::bind(&amqp.url, &exchange).await;
    let (listen, metrics) = (free_addr(), free_addr());
    let log = log_path();
    let mut child = spawn(
        BIN,
        &[],
        &[
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
                    pg_tls.addr().port(),
                    ca.ca_file().display()
                ),
            ),
            ("DATABASE_SCHEMA", pg.schema.clone()),
            (
                "AMQP_URL",
                format!(
                    "amqps://guest:guest@localhost:{}/%2f",
                    amqp_tls.addr().port()
                ),
            ),
            ("AMQP_CA_FILE", ca.ca_file().display().to_string()),
            ("CHAT_EVENTS_EXCHANGE", exchange.clone()),
            (
                "CHAT_EVENTS_QUEUE",
                amqp.name("message-manager.chat-events"),
            ),
            ("WEBHOOK_EVENTS_QUEUE", amqp.name("webhook-manager.events")),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
        ],
        &log,
    );
    until_healthy(
        BIN,
        &[("LISTEN_ADDR", listen.to_string())],
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|out| {
        panic!(
            "not healthy over TLS: {out}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let mut client = proto::chat::v1::chat_service_client::ChatServiceClient::connect(format!(
        "http://{listen}"
    ))
    .await
    .unwrap();
    client
        .create_chat(signed(
            new_group(&uuid::Uuid::new_v4().to_string(), "over TLS"),
            ServiceName::ApiGateway,
        ))
        .await
        .expect("written over TLS");
    let first = events
        .next_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| {
            panic!(
                "nothing published over TLS\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert!(first.0.starts_with("chat_created."), "{}", first.0);
    assert_eq!(child.terminate(Duration::from_secs(20)), Some(0));
    let _ = std::fs::remove_file(&log);
    amqp.cleanup().await;
}
