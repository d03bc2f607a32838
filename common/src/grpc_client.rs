//! The transport under every gRPC client (the gateway's, and message-manager's client of
//! chat-manager). One type either way: over a socket to a separately running service (split
//! deployment) or straight into the generated server in this process (embedded default), so
//! the callers cannot tell the two apart.

use std::time::Duration;

use proto::chat::v1::chat_service_client::ChatServiceClient;
use proto::message::v1::message_service_client::MessageServiceClient;
use tonic::body::Body;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

pub type GrpcTransport =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;
pub type ChatClient = ChatServiceClient<GrpcTransport>;
pub type MessageClient = MessageServiceClient<GrpcTransport>;

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

/// A client for a service at `url` (connects lazily, so the gateway starts even while the
/// service is still coming up; calls fail with 503 until it is reachable). Connecting may take
/// `CONNECT_TIMEOUT` and each call `CALL_TIMEOUT`, a deadline also sent to the service in
/// `grpc-timeout` (unless the call set its own), which tonic's server enforces.
pub fn remote(url: &str) -> Result<GrpcTransport, tonic::transport::Error> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(BoxCloneSyncService::new(
        with_deadline(channel, CALL_TIMEOUT).map_err(|e| TransportError(e.into())),
    ))
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
