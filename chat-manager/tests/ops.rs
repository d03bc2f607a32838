//! chat-manager as operators run it: the binary serves gRPC health, reflection and metrics,
//! logs JSON when asked, stops cleanly on SIGTERM; `healthcheck` and `migrate` subcommands;
//! migrations safe with several replicas starting at once.

use std::time::Duration;

use common::db::{Db, DbOptions, DbTarget};
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
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
            ("LOG_FORMAT", "json".into()),
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

    for v1alpha in [false, true] {
        let services = reflected_services(listen, v1alpha).await.unwrap();
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
