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

/// A client for a service at `url` (connects lazily, so the gateway starts even while the
/// service is still coming up; calls fail with 503 until it is reachable).
pub fn remote(url: &str) -> Result<GrpcTransport, tonic::transport::Error> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(BoxCloneSyncService::new(
        channel.map_err(|e| TransportError(e.into())),
    ))
}

/// A client that calls a generated gRPC server in this process, with no socket.
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
    BoxCloneSyncService::new(server.map_err(|never| match never {}))
}
