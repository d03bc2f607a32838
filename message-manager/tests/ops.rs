//! message-manager as operators run it: the binary serves gRPC health, reflection and metrics
//! (its queue's depth and dead-letter counter included), serves while RabbitMQ is down, and
//! stops cleanly on SIGTERM, also while it still waits for PostgreSQL.

use std::time::Duration;

use proto::message::v1::message_service_server::SERVICE_NAME;
use testkit::ops::{free_addr, http_get, reflected_services, sample, spawn, until_healthy};

const BIN: &str = env!("CARGO_BIN_EXE_message-manager");

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
    let queue = amqp.name("message-manager.chat-events");
    // Registered for clean-up: the dead-letter queue the consumer declares.
    assert_eq!(
        amqp.name("message-manager.chat-events.dead-letter"),
        message_manager::events::dead_letter_queue(&queue)
    );
    let log = std::env::temp_dir().join(format!(
        "message-manager-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let mut child = spawn(
        BIN,
        &[],
        &[
            ("DATABASE_URL", pg.url.clone()),
            ("DATABASE_SCHEMA", pg.schema.clone()),
            ("AMQP_URL", amqp.url.clone()),
            ("CHAT_EVENTS_EXCHANGE", amqp.name("chat.events")),
            ("MESSAGE_EVENTS_EXCHANGE", amqp.name("message.events")),
            ("CHAT_EVENTS_QUEUE", queue.clone()),
            ("WEBHOOK_EVENTS_QUEUE", amqp.name("webhook-manager.events")),
            // Not running: asked lazily, only when the membership view misses.
            ("CHAT_MANAGER_URL", format!("http://{}", free_addr())),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
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
    .unwrap_or_else(|out| {
        panic!(
            "healthcheck never passed: {out}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(healthy.trim(), "SERVING");
    common::grpc_server::check_health(listen, SERVICE_NAME)
        .await
        .expect("message.v1.MessageService is SERVING");

    // Reflection, enabled here, answers the gateway's internal token only.
    let key = common::service_auth::InternalKey::from_config(Some(testkit::INTERNAL_AUTH_SECRET))
        .unwrap();
    let bearer = |me, audience| format!("Bearer {}", key.token(me, audience));
    use common::service_auth::ServiceName::{ApiGateway, ChatManager, MessageManager};
    for v1alpha in [false, true] {
        let token = bearer(ApiGateway, MessageManager);
        let services = reflected_services(listen, v1alpha, Some(&token))
            .await
            .unwrap();
        assert!(services.iter().any(|s| s == SERVICE_NAME), "{services:?}");
        assert!(
            !services.iter().any(|s| s.starts_with("chat.")),
            "only this service's API: {services:?}"
        );
        let refused = reflected_services(listen, v1alpha, None).await.unwrap_err();
        assert!(refused.contains("Unauthenticated"), "{refused}");
    }
    // The API answers only the gateway: no token, another service's token, a token for
    // another service, one signed with another key.
    let other_key = common::service_auth::InternalKey::generate();
    for (what, authorization) in [
        ("no token", None),
        ("chat-manager's", Some(bearer(ChatManager, MessageManager))),
        ("for chat-manager", Some(bearer(ApiGateway, ChatManager))),
        (
            "another key",
            Some(format!(
                "Bearer {}",
                other_key.token(ApiGateway, MessageManager)
            )),
        ),
    ] {
        let mut client = proto::message::v1::message_service_client::MessageServiceClient::connect(
            format!("http://{listen}"),
        )
        .await
        .unwrap();
        let mut request = tonic::Request::new(proto::message::v1::GetChatmessageRequest {
            customer_id: uuid::Uuid::new_v4().to_string(),
            id: uuid::Uuid::new_v4().to_string(),
        });
        if let Some(a) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", a.parse().unwrap());
        }
        let status = client.get_chatmessage(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
    }

    let (status, page) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        sample(
            &page,
            &format!(r#"consumer_queue_depth{{queue="{queue}"}}"#)
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            &format!(r#"consumer_dead_lettered_total{{queue="{queue}"}}"#)
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"outbox_backlog_events{service="message-manager"}"#),
        Some(0.0),
        "{page}"
    );

    // A malformed chat event is dead-lettered at once, and counted.
    let bus = pipeline::bus::EventBus::amqp(amqp.url.clone());
    let poison = pipeline::bus::EventMessage {
        exchange: amqp.name("chat.events"),
        routing_key: "chat_created.00000000-0000-4000-8000-000000000000".into(),
        message_id: "poison-1".into(),
        payload: std::sync::Arc::from(&b"not json"[..]),
        request_id: None,
        traceparent: None,
    };
    bus.publish(&[poison]).await.unwrap();
    let series = format!(r#"consumer_dead_lettered_total{{queue="{queue}"}}"#);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, page) = http_get(metrics, "/metrics").await.unwrap();
        if sample(&page, &series) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        child.terminate(Duration::from_secs(20)),
        Some(0),
        "exits 0 on SIGTERM"
    );
    let _ = std::fs::remove_file(&log);
}

/// The queue-depth gauge follows what waits in the durable queue, sampled at scrape time.
#[tokio::test]
async fn queue_depth_is_sampled_at_scrape_time() {
    let Some(amqp) = testkit::require_rabbitmq("ops::queue_depth_is_sampled_at_scrape_time").await
    else {
        return;
    };
    let (exchange, queue) = (amqp.name("chat.events"), amqp.name("depth"));
    let bus = pipeline::bus::EventBus::amqp(amqp.url.clone());
    let spec = message_manager::events::subscription_spec(&exchange, &queue);
    // Declared and bound, then nobody consumes.
    drop(bus.subscribe(spec).await.unwrap());
    let batch: Vec<_> = (0..3)
        .map(|i| pipeline::bus::EventMessage {
            exchange: exchange.clone(),
            routing_key: "chat_created.00000000-0000-4000-8000-000000000000".into(),
            message_id: format!("m{i}"),
            payload: std::sync::Arc::from(&b"{}"[..]),
            request_id: None,
            traceparent: None,
        })
        .collect();
    bus.publish(&batch).await.unwrap();

    let (_stop, until) = tokio::sync::watch::channel(false);
    pipeline::bus::watch_queue_depth(bus.clone(), &queue, until);
    let series = format!(r#"consumer_queue_depth{{queue="{queue}"}}"#);
    let page = common::metrics::metrics().scrape().await;
    assert_eq!(sample(&page, &series), Some(3.0), "{page}");
    assert_eq!(bus.queue_depth("no-such-queue-here").await.ok(), None);
}

/// RabbitMQ unreachable at start-up: the service serves all the same (its consumer subscribes
/// in the background), and once the broker is reachable the consumer is up: a malformed chat
/// event is consumed and dead-lettered (so the dead-letter queue was declared too).
// Multi-threaded: the proxy to the broker runs on this runtime while `terminate` blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_while_rabbitmq_is_down_and_consumes_once_it_is_up() {
    let test = "ops::serves_while_rabbitmq_is_down_and_consumes_once_it_is_up";
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let Some(amqp) = testkit::require_rabbitmq(test).await else {
        return;
    };
    let broker = testkit::TcpProxy::start(amqp.addr()).await;
    broker.set_up(false);
    let (listen, metrics) = (free_addr(), free_addr());
    let queue = amqp.name("message-manager.chat-events");
    let exchange = amqp.name("chat.events");
    let log = std::env::temp_dir().join(format!(
        "message-manager-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let mut child = spawn(
        BIN,
        &[],
        &[
            ("DATABASE_URL", pg.url.clone()),
            ("DATABASE_SCHEMA", pg.schema.clone()),
            ("AMQP_URL", amqp.url_via(&broker)),
            ("CHAT_EVENTS_EXCHANGE", exchange.clone()),
            ("MESSAGE_EVENTS_EXCHANGE", amqp.name("message.events")),
            ("CHAT_EVENTS_QUEUE", queue.clone()),
            ("WEBHOOK_EVENTS_QUEUE", amqp.name("webhook-manager.events")),
            ("CHAT_MANAGER_URL", format!("http://{}", free_addr())),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", metrics.to_string()),
        ],
        &log,
    );
    let started = std::time::Instant::now();
    until_healthy(
        BIN,
        &[("LISTEN_ADDR", listen.to_string())],
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|out| {
        panic!(
            "not serving while RabbitMQ is down: {out}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    println!(
        "SERVING {:?} after start with RabbitMQ unreachable",
        started.elapsed()
    );

    broker.set_up(true);
    // The queue exists only once the consumer subscribed: publish after that, or the event
    // would be unroutable.
    let bus = pipeline::bus::EventBus::amqp(amqp.url.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !matches!(bus.queue_depth(&queue).await, Ok(Some(_))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never subscribed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let poison = pipeline::bus::EventMessage {
        exchange: exchange.clone(),
        routing_key: "chat_created.00000000-0000-4000-8000-000000000000".into(),
        message_id: "poison-late".into(),
        payload: std::sync::Arc::from(&b"not json"[..]),
        request_id: None,
        traceparent: None,
    };
    bus.publish(&[poison]).await.unwrap();
    let series = format!(r#"consumer_dead_lettered_total{{queue="{queue}"}}"#);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, page) = http_get(metrics, "/metrics").await.unwrap();
        if sample(&page, &series) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = testkit::drain_queue(
        &amqp.url,
        &message_manager::events::dead_letter_queue(&queue),
    )
    .await;
    assert_eq!(
        dead.len(),
        1,
        "set aside in the dead-letter queue: {dead:?}"
    );

    let code = tokio::task::spawn_blocking(move || child.terminate(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "exits 0 on SIGTERM");
    let _ = std::fs::remove_file(&log);
    drop(broker);
    amqp.cleanup().await;
}

/// SIGTERM while the service still waits for PostgreSQL at start-up: it exits at once.
#[tokio::test]
async fn sigterm_while_waiting_for_postgres_exits_promptly() {
    let log = std::env::temp_dir().join(format!(
        "message-manager-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
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
            ("CHAT_MANAGER_URL", format!("http://{}", free_addr())),
            ("LISTEN_ADDR", free_addr().to_string()),
            ("METRICS_ADDR", free_addr().to_string()),
        ],
        &log,
    );
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
