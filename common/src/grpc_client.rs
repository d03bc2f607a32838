//! The transport under every gRPC client (the gateway's, and message-manager's client of
//! chat-manager). One type either way: over a socket to a separately running service (split
//! deployment) or straight into the generated server in this process (embedded default), so
//! the callers cannot tell the two apart.

use std::time::Duration;

use proto::chat::v1::chat_service_client::ChatServiceClient;
use proto::message::v1::message_service_client::MessageServiceClient;
use proto::webhook::v1::webhook_service_client::WebhookServiceClient;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

pub type GrpcTransport =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;
pub type ChatClient = ChatServiceClient<GrpcTransport>;
pub type MessageClient = MessageServiceClient<GrpcTransport>;
pub type WebhookClient = WebhookServiceClient<GrpcTransport>;

/// A failure to reach a service. A concrete type rather than `BoxError`: with a boxed trait
/// object here, rustc cannot prove the handlers' futures `Send` (a higher-ranked lifetime
/// limitation), and axum needs them `Send`.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// How long one upstream call may take before the gateway answers 503.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a connection to a service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The gRPC deadline header: the service gives up on a call (CANCELLED) once its caller has.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// A client for a service at `url` (`http://host:port`; connects lazily, so the gateway
/// starts even while the service is still coming up; calls fail with 503 until it is
/// reachable). Connecting may take `CONNECT_TIMEOUT` and each call `CALL_TIMEOUT`, a deadline
/// also sent to the service in `grpc-timeout` (unless the call set its own), which tonic's
/// server enforces. tonic's `Channel`: HTTP/2 on one connection, reconnecting after it is
/// lost, pinged so that a peer gone silent is found (BENCHMARKS.md, "The gRPC client", for
/// what it costs beside a transport of our own). Call it within a Tokio runtime.
pub fn remote(url: &str) -> Result<GrpcTransport, InvalidUrl> {
    channel(url, PING_INTERVAL, PING_TIMEOUT)
}

/// How often a connection is pinged (idle ones too), and how long the answer may take before
/// the connection is given up (its calls fail, the next call reconnects): a peer that went
/// silent is found within half a minute rather than by each call's timeout.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

fn channel(
    url: &str,
    ping_interval: Duration,
    ping_timeout: Duration,
) -> Result<GrpcTransport, InvalidUrl> {
    let invalid = |why| InvalidUrl {
        url: url.to_owned(),
        why,
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return Err(invalid("only http:// is supported (plaintext HTTP/2)"));
    }
    let authority = uri.authority().ok_or(invalid("no host"))?;
    if authority.port_u16().is_none() {
        return Err(invalid("no port"));
    }
    let channel = tonic::transport::Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        // Small request-response exchanges: no waiting to coalesce writes.
        .tcp_nodelay(true)
        .http2_keep_alive_interval(ping_interval)
        .keep_alive_timeout(ping_timeout)
        .keep_alive_while_idle(true)
        .connect_lazy()
        .map_err(|e| TransportError(Box::new(e)));
    Ok(BoxCloneSyncService::new(with_deadline(
        channel,
        CALL_TIMEOUT,
    )))
}

/// `transport` with the caller's internal token on every call (see `service_auth`): what the
/// services require of everything but health checks.
pub fn signed(
    transport: GrpcTransport,
    credentials: crate::service_auth::Credentials,
) -> GrpcTransport {
    BoxCloneSyncService::new(transport.map_request(move |mut req: http::Request<Body>| {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, credentials.header());
        req
    }))
}

/// A service URL that is not `http://host:port`.
#[derive(Debug, thiserror::Error)]
#[error("service url {url:?}: {why}")]
pub struct InvalidUrl {
    url: String,
    why: &'static str,
}

/// `service` with `grpc-timeout: timeout` on every request that has none.
fn with_deadline<S>(
    service: S,
    timeout: Duration,
) -> tower::util::MapRequest<S, impl FnMut(http::Request<Body>) -> http::Request<Body> + Clone>
where
    S: tower::Service<http::Request<Body>>,
{
    let deadline =
        http::HeaderValue::from_str(&grpc_timeout(timeout)).expect("a grpc-timeout value is ASCII");
    service.map_request(move |mut req: http::Request<Body>| {
        if !req.headers().contains_key(GRPC_TIMEOUT) {
            req.headers_mut().insert(GRPC_TIMEOUT, deadline.clone());
        }
        req
    })
}

/// A `grpc-timeout` value: milliseconds (at most 8 digits, as the protocol allows).
fn grpc_timeout(d: Duration) -> String {
    format!("{}m", d.as_millis().clamp(1, 99_999_999))
}

/// A client that calls a generated gRPC server in this process, with no socket. A call that
/// takes longer than `CALL_TIMEOUT` is answered DEADLINE_EXCEEDED (its work is dropped), as
/// over a socket.
pub fn in_process<S>(server: S) -> GrpcTransport
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let bounded = tower::service_fn(move |req: http::Request<Body>| {
        let call = server.clone().oneshot(req);
        async move {
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(answer) => answer.map_err(|never| match never {}),
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "no answer within {CALL_TIMEOUT:?}"
                ))
                .into_http()),
            }
        }
    });
    BoxCloneSyncService::new(bounded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::Service;

    #[test]
    fn deadlines_are_sent_in_milliseconds() {
        assert_eq!(grpc_timeout(CALL_TIMEOUT), "10000m");
        assert_eq!(grpc_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(1_000_000)), "99999999m");
    }

    /// Every call carries the client's deadline, unless it set its own.
    #[tokio::test]
    async fn calls_carry_a_deadline() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let recorder = tower::service_fn(move |req: http::Request<Body>| {
            log.lock()
                .unwrap()
                .push(req.headers().get(GRPC_TIMEOUT).cloned());
            async { Ok::<_, std::convert::Infallible>(()) }
        });
        let mut service = with_deadline(recorder, Duration::from_millis(1234));
        service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap();
        let mut own = tonic::Request::new(());
        own.set_timeout(Duration::from_millis(50));
        let mut req = http::Request::new(Body::empty());
        *req.headers_mut() = own.metadata().clone().into_headers();
        service.ready().await.unwrap().call(req).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].as_ref().unwrap(), "1234m");
        assert_eq!(
            seen[1].as_ref().unwrap(),
            "50000000n",
            "the call's own deadline is kept"
        );
    }

    /// Only `http://host:port` names a service. (In a runtime: the channel starts its task.)
    #[tokio::test]
    async fn service_urls_are_checked() {
        assert!(remote("http://127.0.0.1:9001").is_ok());
        assert!(remote("http://chat-manager:9001").is_ok());
        for (url, why) in [
            ("https://127.0.0.1:9001", "only http://"),
            ("http://127.0.0.1", "no port"),
            ("127.0.0.1:9001", "only http://"),
            ("not a url", "not a URL"),
        ] {
            let e = remote(url).err().unwrap().to_string();
            assert!(e.contains(why) && e.contains(url), "{url}: {e}");
        }
    }

    /// A gRPC health server on `addr` until `stop`.
    async fn health_server(
        addr: std::net::SocketAddr,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (_reporter, service) = tonic_health::server::health_reporter();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stop.await;
                    },
                )
                .await
                .unwrap();
        })
    }

    async fn check(client: &GrpcTransport) -> Result<(), tonic::Status> {
        let mut health = tonic_health::pb::health_client::HealthClient::new(client.clone());
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(drop)
    }

    /// Connects on the first call; a call while the service is down fails at once (with its
    /// cause, which the gateway answers 503); once it is back, the next call connects again.
    #[tokio::test]
    async fn connects_lazily_fails_while_the_service_is_down_and_reconnects() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = remote(&format!("http://{addr}")).unwrap();
        let down = check(&client).await.unwrap_err();
        assert!(
            std::error::Error::source(&down).is_some(),
            "a transport failure, not an answer: {down:?}"
        );

        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = health_server(addr, stopped).await;
        check(&client).await.unwrap();
        // Many calls at once share the one connection.
        let calls: Vec<_> = (0..50).map(|_| check(&client)).collect();
        for result in futures_util::future::join_all(calls).await {
            result.unwrap();
        }

        stop.send(()).unwrap();
        server.await.unwrap();
        let started = std::time::Instant::now();
        assert!(check(&client).await.is_err(), "the service is gone");
        assert!(started.elapsed() < CONNECT_TIMEOUT, "refused at once");

        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let _server = health_server(addr, stopped).await;
        check(&client).await.unwrap();
    }

    /// A connection whose peer went silent is given up once a ping goes unanswered: a call
    /// then fails within a ping's interval and timeout instead of waiting out its deadline
    /// (`CALL_TIMEOUT`) on a connection that will never answer; once the peer answers again,
    /// the next call connects afresh.
    #[tokio::test]
    async fn a_silent_connection_is_found_by_its_pings_and_replaced() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let _server = health_server(addr, stopped).await;
        let proxy = testkit::TcpProxy::start(addr).await;
        let client = channel(
            &format!("http://{}", proxy.addr()),
            Duration::from_millis(100),
            Duration::from_millis(200),
        )
        .unwrap();
        check(&client).await.unwrap();

        proxy.black_hole();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        assert!(check(&client).await.is_err(), "nothing answers");
        assert!(
            started.elapsed() < CALL_TIMEOUT / 4,
            "failed after {:?}: the call waited on the silent connection",
            started.elapsed()
        );
        proxy.set_up(true);
        check(&client).await.unwrap();
    }

    /// An in-process call past the deadline is DEADLINE_EXCEEDED, not a hang.
    #[tokio::test(start_paused = true)]
    async fn in_process_calls_have_a_deadline() {
        let stuck = tower::service_fn(|_req: http::Request<Body>| async {
            std::future::pending::<()>().await;
            Ok::<http::Response<Body>, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let mut client = ChatClient::new(in_process(stuck));
        let status = client
            .get_chat(proto::chat::v1::GetChatRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }
}
