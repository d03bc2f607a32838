//! The gateway as operators see it: `/healthz` and `/readyz` (and the `healthcheck`
//! subcommand that asks it), Prometheus metrics that move with the traffic, and the W3C
//! `traceparent` echoed, forwarded to the services and carried by the log lines.

#[macro_use]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_gateway::health::Readiness;
use common::grpc_client;
use common::grpc_server::Health;
use common::telemetry::LogFormat;
use pipeline::bus::EventBus;
use support::*;
use testkit::ops::{free_addr, sample};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_api-gateway");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn addr_of(stack: &Stack) -> SocketAddr {
    stack
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/v1.0")
        .parse()
        .unwrap()
}

/// `api-gateway healthcheck` against `addr`: the exit code and what it printed.
async fn healthcheck(addr: SocketAddr) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("healthcheck")
        .env("LISTEN_ADDR", addr.to_string())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn embedded_default_is_live_and_ready() {
    let stack = Stack::embedded().await;
    let live = stack.get_root("/healthz").await;
    assert_eq!(live.ok()["status"], "ok");
    let ready = stack.get_root("/readyz").await;
    assert_eq!(ready.ok()["status"], "ready");
    let (code, out) = healthcheck(addr_of(&stack)).await;
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn split_deployment_is_ready_once_upstreams_serve_and_the_bus_is_up() {
    let test = "ops::split_deployment_is_ready_once_upstreams_serve_and_the_bus_is_up";
    let Some((env, guards)) = split_env(test).await else {
        return;
    };
    let mut stack = Stack::split(&env).await;
    stack.keep(guards);
    // The hub connects to the broker in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = stack.get_root("/readyz").await;
        if ready.status == 200 {
            assert_eq!(ready.json["status"], "ready");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            ready.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for addr in [stack.chat_addr.unwrap(), stack.message_addr.unwrap()] {
        common::grpc_server::check_health(addr, "")
            .await
            .expect("each service is SERVING");
    }
}

/// The services' health follows their database, and `/readyz` with it: the database behind a
/// proxy that is cut (503 naming both services) and restored (200 again), with nothing
/// restarted.
#[tokio::test]
async fn readyz_follows_the_database() {
    let test = "ops::readyz_follows_the_database";
    let Some((mut env, guards)) = split_env(test).await else {
        return;
    };
    let Some(pg) = testkit::require_postgres(test).await else {
        return;
    };
    let database = testkit::TcpProxy::start(pg.addr()).await;
    env.pg_url = pg.url_via(&database);
    let mut stack = Stack::split(&env).await;
    stack.keep(guards);
    let token = customer_token(&new_id());
    let within = |status: u16, what: &'static str| {
        let stack = &stack;
        async move {
            let started = tokio::time::Instant::now();
            loop {
                let ready = stack.get_root("/readyz").await;
                if ready.status == status {
                    return (ready, started.elapsed());
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "{what}: /readyz stayed {}: {}",
                    ready.status,
                    ready.text
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    within(200, "ready at first").await;
    stack.get("/chats", &token).await.ok();

    database.set_up(false);
    let (down, took_down) = within(503, "the database cut").await;
    // Both services have noticed by now or within a probe more.
    let (down, _) = if down.text.contains("chat-manager") && down.text.contains("message-manager") {
        (down, Duration::ZERO)
    } else {
        tokio::time::sleep(Duration::from_secs(3)).await;
        within(503, "still cut").await
    };
    down.assert_error(503, "unavailable", "chat-manager: NOT_SERVING");
    down.assert_error(503, "unavailable", "message-manager: NOT_SERVING");
    stack
        .get("/chats", &token)
        .await
        .assert_error(503, "unavailable", "unavailable");
    for addr in [stack.chat_addr.unwrap(), stack.message_addr.unwrap()] {
        common::grpc_server::check_health(addr, "")
            .await
            .expect("the server as a whole stays SERVING (liveness)");
    }

    database.set_up(true);
    let (_, took_up) = within(200, "the database back").await;
    println!("/readyz: 503 {took_down:?} after the cut, 200 {took_up:?} after the restore");
    stack.get("/chats", &token).await.ok();
}

/// A gateway whose chat-manager is `chat` (a bare health service here) and whose
/// message-manager is at `message_url`.
async fn gateway_over(
    chat: grpc_client::GrpcTransport,
    message_url: &str,
    bus: Option<EventBus>,
) -> Stack {
    let message = grpc_client::remote(message_url).unwrap();
    let readiness = Readiness::upstreams(chat.clone(), message.clone(), bus);
    let (tx, rx) = watch::channel(false);
    Stack::with_gateway_ready(chat, message, None, readiness, tx, rx).await
}

#[tokio::test]
async fn not_ready_names_what_is_down() {
    let (health, health_service) =
        Health::new(proto::chat::v1::chat_service_server::SERVICE_NAME).await;
    health.serving().await;
    let chat = grpc_client::in_process(health_service);
    let closed = format!("http://{}", free_addr());

    let stack = gateway_over(chat.clone(), &closed, None).await;
    assert_eq!(
        stack.get_root("/healthz").await.status,
        200,
        "live all the same"
    );
    let ready = stack.get_root("/readyz").await;
    ready.assert_error(503, "unavailable", "message-manager");
    let message = ready.json["error"]["message"].as_str().unwrap();
    assert!(!message.contains("chat-manager"), "{message}");
    let (code, out) = healthcheck(addr_of(&stack)).await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("503") && out.contains("message-manager"),
        "{out}"
    );

    // The readiness state is at most a second old: within a few, it says so.
    health.not_serving().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let ready = stack.get_root("/readyz").await;
        if ready.text.contains("chat-manager") || tokio::time::Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ready.assert_error(503, "unavailable", "chat-manager: NOT_SERVING");
    // What is down is named, the error behind it (addresses, causes) is not.
    let message = ready.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("message-manager: unreachable"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1") && !message.contains("connect"),
        "{message}"
    );

    // A broker that never answered: the WebSocket would get nothing.
    let bus = EventBus::amqp(format!("amqp://guest:guest@{}/%2f", free_addr()));
    let stack = gateway_over(chat, &closed, Some(bus)).await;
    stack
        .get_root("/readyz")
        .await
        .assert_error(503, "unavailable", "event bus: not connected");
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_listens() {
    let (code, out) = healthcheck(free_addr()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("not ready: "), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

against_both!("ops"; metrics_move_with_the_traffic);

async fn scrape(metrics: SocketAddr) -> String {
    let (status, page) = testkit::ops::http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    page
}

/// The change of each series between two scrapes (absent counts as 0).
fn moved(before: &str, after: &str, series: &str) -> f64 {
    sample(after, series).unwrap_or(0.0) - sample(before, series).unwrap_or(0.0)
}

async fn metrics_move_with_the_traffic(stack: &Stack) {
    let (_stop, until) = watch::channel(false);
    let (metrics, _server) = common::metrics::spawn_server("127.0.0.1:0".parse().unwrap(), until)
        .await
        .unwrap();
    let token = customer_token(&new_id());
    let (a, b) = (new_id(), new_id());
    let before = scrape(metrics).await;

    let chat = stack
        .post("/chats", &token, &chat_body("normal", &a, &[&a, &b], "m"))
        .await
        .ok()
        .clone();
    let id = chat["id"].as_str().unwrap();
    stack.get(&format!("/chats/{id}"), &token).await.ok();
    stack.get(&format!("/chats/{}", new_id()), &token).await;
    assert_eq!(stack.get_root("/no/such/path").await.status, 404);
    let after = scrape(metrics).await;

    for (series, at_least) in [
        (
            r#"http_requests_total{route="/v1.0/chats",method="POST",status="200"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="/v1.0/chats/{id}",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="/v1.0/chats/{id}",method="GET",status="404"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="unmatched",method="GET",status="404"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_count{route="/v1.0/chats/{id}",method="GET"}"#,
            2.0,
        ),
        (
            r#"grpc_server_requests_total{method="/chat.v1.ChatService/CreateChat",code="Ok"}"#,
            1.0,
        ),
        (
            r#"grpc_server_requests_total{method="/chat.v1.ChatService/GetChat",code="NotFound"}"#,
            1.0,
        ),
        (
            r#"grpc_server_request_duration_seconds_count{method="/chat.v1.ChatService/GetChat"}"#,
            2.0,
        ),
    ] {
        let delta = moved(&before, &after, series);
        assert!(delta >= at_least, "{series} moved by {delta}:\n{after}");
    }
    assert!(!after.contains(id), "no raw ids in labels:\n{after}");
    for service in ["chat-manager", "message-manager"] {
        let series = format!(r#"outbox_backlog_events{{service="{service}"}}"#);
        assert!(sample(&after, &series).is_some(), "{series}:\n{after}");
        let series = format!(r#"outbox_oldest_unsent_age_seconds{{service="{service}"}}"#);
        assert!(sample(&after, &series).is_some(), "{series}:\n{after}");
    }

    // The WebSocket gauge follows the sockets.
    let open = |page: &str| sample(page, "websocket_connections").unwrap();
    let baseline = open(&after);
    let ws = stack.ws(&token).await;
    wait_for_gauge(metrics, baseline + 1.0).await;
    drop(ws);
    wait_for_gauge(metrics, baseline).await;
}

async fn wait_for_gauge(metrics: SocketAddr, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = scrape(metrics).await;
        let value = sample(&page, "websocket_connections").unwrap();
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "websocket_connections stayed {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A chat-manager stand-in that remembers the metadata of every call and answers NOT_FOUND.
fn recording_upstream() -> (grpc_client::GrpcTransport, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let service = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        log.lock().unwrap().push(req.headers().clone());
        async {
            Ok::<_, std::convert::Infallible>(
                tonic::Status::not_found("chat not found").into_http::<tonic::body::Body>(),
            )
        }
    });
    (grpc_client::in_process(service), seen)
}

// One thread: the gateway's tasks log through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn traceparent_is_echoed_forwarded_and_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(common::telemetry::subscriber(
        LogFormat::Json,
        move || writer.clone(),
    ));
    let (upstream, seen) = recording_upstream();
    let (tx, rx) = watch::channel(false);
    let stack = Stack::with_gateway_ready(
        upstream.clone(),
        upstream,
        None,
        Readiness::InProcess,
        tx,
        rx,
    )
    .await;
    let token = customer_token(&new_id());
    let url = format!("{}/chats/{}?token={token}", stack.base, new_id());
    let header = |reply: &Reply, name: &str| reply.headers[name].to_str().unwrap().to_owned();
    let forwarded = |name: &str| {
        seen.lock().unwrap().last().unwrap()[name]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Given: echoed and forwarded unchanged, with the request id.
    let reply = stack
        .send(
            stack
                .http
                .get(&url)
                .header("traceparent", TRACEPARENT)
                .header("x-request-id", "trace-test-1"),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(header(&reply, "traceparent"), TRACEPARENT);
    assert_eq!(forwarded("traceparent"), TRACEPARENT);
    assert_eq!(forwarded("x-request-id"), "trace-test-1");

    // Malformed (an all-zero trace id) or missing: a new one, the same to both sides.
    for given in [
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        None,
    ] {
        let mut req = stack.http.get(&url);
        if let Some(tp) = given {
            req = req.header("traceparent", tp);
        }
        let reply = stack.send(req).await;
        let made = header(&reply, "traceparent");
        assert!(common::telemetry::is_valid_traceparent(&made), "{made}");
        assert_ne!(made, TRACEPARENT);
        assert_eq!(forwarded("traceparent"), made);
    }
    assert_eq!(seen.lock().unwrap().len(), 3);

    // The request's log lines carry its trace id and request id.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let handled = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "handled" && l["span"]["request_id"] == "trace-test-1")
        .unwrap_or_else(|| panic!("no log line of the request in:\n{text}"));
    assert_eq!(
        handled["span"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}
