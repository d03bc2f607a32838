//! `GET /healthz` (the process serves HTTP), `GET /readyz` (it can serve requests: both
//! upstreams answer SERVING and, in the split deployment, the event bus is connected), and the
//! `healthcheck` subcommand's client.
//!
//! `/readyz` needs no token, so anyone can ask it: it answers from a state at most
//! `READY_CACHE` old (one probe of the upstreams at a time, whatever the request rate), and
//! names what is down without the error's text (addresses, causes), which goes to the log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use common::grpc_client::GrpcTransport;
use http::StatusCode;
use pipeline::bus::EventBus;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::app::AppState;
use crate::error::ApiError;

/// How long one readiness probe of an upstream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How old a readiness state `/readyz` answers from may be.
pub const READY_CACHE: Duration = Duration::from_secs(1);

/// What `/readyz` checks.
#[derive(Clone, Default)]
pub enum Readiness {
    /// The embedded default: the services are in this process, ready once it started.
    #[default]
    InProcess,
    /// The split deployment.
    /// Shared: the state is cloned for every request.
    Upstreams(std::sync::Arc<Upstreams>),
}

/// The services' gRPC health, and the bus feeding the WebSocket.
pub struct Upstreams {
    chat: HealthClient<GrpcTransport>,
    message: HealthClient<GrpcTransport>,
    bus: Option<EventBus>,
    /// The last state found, and when.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn upstreams(chat: GrpcTransport, message: GrpcTransport, bus: Option<EventBus>) -> Self {
        Readiness::Upstreams(std::sync::Arc::new(Upstreams {
            chat: HealthClient::new(chat),
            message: HealthClient::new(message),
            bus,
            last: tokio::sync::Mutex::new(None),
        }))
    }

    /// Ok, or what is not ready (every failing part, for the 503's message), from a state at
    /// most `READY_CACHE` old. Callers arriving while a probe runs wait for its outcome.
    pub async fn check(&self) -> Result<(), String> {
        let Readiness::Upstreams(upstreams) = self else {
            return Ok(());
        };
        let mut last = upstreams.last.lock().await;
        if let Some((at, state)) = &*last
            && at.elapsed() < READY_CACHE
        {
            return state.clone();
        }
        let state = upstreams.probe().await;
        let changed = last.as_ref().is_none_or(|(_, before)| *before != state);
        if changed && let Err(why) = &state {
            tracing::warn!(reason = %why, "not ready");
        }
        *last = Some((tokio::time::Instant::now(), state.clone()));
        state
    }
}

impl Upstreams {
    async fn probe(&self) -> Result<(), String> {
        let upstreams = self;
        let bus_connected = async {
            match &upstreams.bus {
                Some(bus) => tokio::time::timeout(PROBE_TIMEOUT, bus.consumer_reachable())
                    .await
                    .unwrap_or(false),
                None => true,
            }
        };
        let (chat, message, bus_connected) = tokio::join!(
            serving(
                upstreams.chat.clone(),
                "chat-manager",
                proto::chat::v1::chat_service_server::SERVICE_NAME
            ),
            serving(
                upstreams.message.clone(),
                "message-manager",
                proto::message::v1::message_service_server::SERVICE_NAME
            ),
            bus_connected,
        );
        let mut problems: Vec<String> = [chat, message]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if !bus_connected {
            problems.push("event bus: not connected".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Ok, or what `/readyz` may say of the upstream: its name and state, never the error's text
/// (logged instead).
async fn serving(
    mut client: HealthClient<GrpcTransport>,
    name: &str,
    service: &str,
) -> Result<(), String> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, client.check(request)).await {
        Err(_) => Err(format!("{name}: no answer within {PROBE_TIMEOUT:?}")),
        Ok(Err(status)) => {
            tracing::debug!(upstream = name, code = ?status.code(), error = %status.message(), "readiness probe failed");
            Err(format!("{name}: unreachable"))
        }
        Ok(Ok(reply)) => match ServingStatus::try_from(reply.into_inner().status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(format!("{name}: {}", other.as_str_name())),
            Err(_) => Err(format!("{name}: unknown status")),
        },
    }
}

pub async fn healthz() -> Response {
    crate::json::response(StatusCode::OK, &json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> Result<Response, ApiError> {
    app.readiness
        .check()
        .await
        .map_err(|why| ApiError::Unavailable(format!("not ready: {why}")))?;
    Ok(crate::json::response(
        StatusCode::OK,
        &json!({"status": "ready"}),
    ))
}

/// The `healthcheck` subcommand: `GET /readyz` on the gateway at `addr` (on loopback when it
/// listens on all addresses); Ok on 200, else the reason. Plain HTTP/1.0 over a socket: no
/// HTTP client in the binary for one request.
pub fn check_ready(addr: SocketAddr) -> Result<(), String> {
    let addr = common::grpc_server::loopback_if_unspecified(addr);
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{addr}: unreachable: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| write!(stream, "GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n"))
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut reply = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .map_err(|e| format!("{addr}: {e}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let status_line = reply.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    Err(format!("{addr}: {status_line}: {message}").replace(['\r', '\n'], " "))
}
