//! What the chat services and the gateway share: the storage connection, gRPC clients and
//! servers with their internal authentication, metrics and telemetry, the contract's
//! timestamps, pagination and JSON shapes. (The event pipeline is the `events` crate.)

pub mod db;
pub mod error;
pub mod grpc_client;
pub mod grpc_server;
pub mod housekeeping;
pub mod idempotency;
pub mod metrics;
pub mod page;
pub mod processed;
pub mod resources;
pub mod secrets;
pub mod service;
pub mod service_auth;
pub mod telemetry;
pub mod time;
pub mod validate;

/// gRPC metadata key (and AMQP header) carrying the request id from the gateway to the events.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// gRPC metadata key (and AMQP header) carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The request id a gRPC call carries, if any.
pub fn request_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The W3C `traceparent` a gRPC call carries, if any and well-formed.
pub fn traceparent(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| telemetry::is_valid_traceparent(v))
        .map(str::to_owned)
}

/// What a request passes on to the events its change implies (their AMQP headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
}

impl RequestMeta {
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Self {
        RequestMeta {
            request_id: request_id(metadata),
            traceparent: traceparent(metadata),
        }
    }
}

/// A binary's exit: 0, or 1 with the error on stderr as one readable line (`main` returning
/// the error itself would print its Debug form).
pub fn exit_code(
    program: &str,
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM: what every binary stops serving on. The handlers are
/// installed when this is called, not when the future is first polled, so a signal that
/// arrives while the server is starting is not lost (nor kills the process). Call it from
/// within the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}

/// SIGINT or SIGTERM as a watch that turns true when one arrives (the handlers are installed
/// now, as by `shutdown_signal`). Start-up waits race it (`unless_stopped`), so a service
/// still waiting for PostgreSQL or RabbitMQ stops at once; the server stops on it
/// (`stopped`). Call it from within the runtime.
pub fn shutdown_watch() -> tokio::sync::watch::Receiver<bool> {
    let signal = shutdown_signal();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = tx.send(true);
    });
    rx
}

/// `work`, unless `stop` turns true first (then `None`, and `work` is dropped).
pub async fn unless_stopped<T>(
    stop: &tokio::sync::watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut stop = stop.clone();
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => None,
        value = work => Some(value),
    }
}

/// Resolves once `stop` is true: a server's graceful-shutdown signal.
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The runtime a service runs on: tokio's multi-threaded one, with at most `pool_size` + a few
/// threads for blocking work. Every database call runs on a blocking thread and waits there
/// for a pooled connection, so beyond the pool's size more threads only wait, each holding a
/// stack and an allocator arena (tokio's default allows 512: under load message-manager grew
/// to 30 threads and twice the memory it needs).
pub fn service_runtime(pool_size: u32) -> std::io::Result<tokio::runtime::Runtime> {
    // The relay's and the health probe's own connections, the consumer, housekeeping, and
    // name lookups besides the pool.
    const BESIDES_THE_POOL: usize = 6;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(pool_size as usize + BESIDES_THE_POOL)
        .build()
}
