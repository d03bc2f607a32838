//! api-gateway: the REST API of the chat service. Authenticates (JWT), validates, and forwards
//! to the services over gRPC; in the embedded default it also hosts them.

pub mod app;
pub mod auth;
pub mod config;
mod console;
pub mod embedded;
pub mod error;
pub mod health;
pub mod json;
pub mod openapi;
pub mod rate_limit;
mod routes;
pub mod ws;
pub mod ws_client;

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// How client connections are served.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// How long a connection may take to send a request's headers, and stay idle between
    /// requests; then it is closed (a client trickling its headers would otherwise hold a
    /// connection and its buffers for ever).
    pub header_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, closes idle
/// connections and finishes in-flight requests. (Upgraded WebSockets are the hub's: they get
/// 1001 when the gateway's tasks stop.)
pub async fn serve(
    listener: TcpListener,
    state: app::AppState,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app::router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let (stop, stopping) = watch::channel(false);
    // Each connection's task holds a sender; once all are gone, every connection is done.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small request-response exchanges: no waiting to coalesce writes.
        let _ = stream.set_nodelay(true);
        // Every request learns the address it came from (failed authentications are
        // counted per address).
        let peer = app::PeerAddr(peer.ip());
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer);
                req
            },
        );
        let conn = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let (mut stopping, open) = (stopping.clone(), open.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let stopped = tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    false
                }
                _ = stopping.wait_for(|s| *s) => true,
            };
            if stopped {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    let _ = all_closed.recv().await;
    Ok(())
}
