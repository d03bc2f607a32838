//! The gateway binary stopping: on SIGTERM a request in flight still gets its answer, new
//! connections are refused from the signal on, and the process exits 0.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::db::{Db, DbOptions, DbTarget};
use pipeline::bus::EventBus;
use support::*;
use testkit::ops::{free_addr, http_get, spawn};

const BIN: &str = env!("CARGO_BIN_EXE_api-gateway");

/// A gRPC service that waits `delay` milliseconds before each call is handled.
#[derive(Clone)]
struct Slow<S> {
    inner: S,
    delay: Arc<AtomicU64>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Slow<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Slow<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let delay = Duration::from_millis(self.delay.load(Ordering::Relaxed));
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            tower::ServiceExt::oneshot(inner, req).await
        })
    }
}

// Multi-threaded: the slow upstream runs on this runtime while the test waits on the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    // chat-manager for real (over SQLite), behind a delay the test controls.
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let target = DbTarget::parse(&dir.join("chat.db").to_string_lossy(), "");
    let db = Db::open(target, chat_manager::db::MIGRATIONS, DbOptions::default())
        .await
        .unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let (chat, _relay) = chat_manager::service(db, EventBus::in_process(), "chat.events", stopped);
    let delay = Arc::new(AtomicU64::new(0));
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Slow {
                inner: chat,
                delay: delay.clone(),
            })
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(upstream)),
    );

    let listen = free_addr();
    let log = dir.join("gateway.log");
    let mut gateway = spawn(
        BIN,
        &[],
        &[
            ("CHAT_MANAGER_URL", format!("http://{upstream_addr}")),
            ("MESSAGE_MANAGER_URL", format!("http://{}", free_addr())),
            (
                "AMQP_URL",
                format!("amqp://guest:guest@{}/%2f", free_addr()),
            ),
            ("JWT_SECRET", String::from_utf8(SECRET.to_vec()).unwrap()),
            ("LISTEN_ADDR", listen.to_string()),
            ("METRICS_ADDR", free_addr().to_string()),
        ],
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(listen, "/healthz").await, Ok((200, _))) {
        assert!(Instant::now() < deadline, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = format!("http://{listen}/v1.0");
    let token = customer_token(&new_id());
    let http = reqwest::Client::new();
    let (a, b) = (new_id(), new_id());
    let created: serde_json::Value = http
        .post(format!("{base}/chats?token={token}"))
        .body(chat_body("normal", &a, &[&a, &b], "in flight"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // A read that the upstream holds for 5 s, and SIGTERM while it waits.
    delay.store(5000, Ordering::Relaxed);
    let in_flight = {
        let url = format!("{base}/chats/{id}?token={token}");
        tokio::spawn(async move {
            let res = reqwest::Client::new().get(url).send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let signalled = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // From the signal on, the listener is closed: new connections are refused...
    let mut refused = false;
    while signalled.elapsed() < Duration::from_secs(2) {
        if tokio::net::TcpStream::connect(listen).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = signalled.elapsed();
    assert!(!in_flight.is_finished(), "the request is still in flight");
    assert!(refused, "new connections are refused after SIGTERM");

    // ...while the request in flight gets its answer.
    let (status, body) = in_flight.await.unwrap();
    let answered_after = signalled.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, created, "the chat, as created");

    let exit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = gateway.0.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    println!(
        "SIGTERM with a request in flight: new connections refused after {refused_after:?}, \
         the request answered {status} after {answered_after:?}, exit {exit:?} after {:?}",
        signalled.elapsed()
    );
    assert_eq!(exit, Some(0), "exits 0; log:\n{logs}");
    let _ = std::fs::remove_dir_all(&dir);
}
