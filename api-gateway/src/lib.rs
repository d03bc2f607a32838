//! api-gateway: the REST API of the chat service. Authenticates (JWT), validates, and forwards
//! to the services over gRPC; in the embedded default it also hosts them.

pub mod app;
pub mod auth;
pub mod config;
pub mod embedded;
pub mod error;
pub mod health;
pub mod json;
pub mod openapi;
pub mod rate_limit;
mod routes;
pub mod ws;

use std::future::Future;

use tokio::net::TcpListener;

/// Serves the API on `listener` until `shutdown` resolves, finishing in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: app::AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app::router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
