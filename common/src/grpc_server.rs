//! What every service's gRPC server has around its own service: health checking
//! (`grpc.health.v1`), the check of its callers' internal tokens (`service_auth`), server
//! reflection when enabled (so `grpcurl` needs no .proto files), and a layer that gives each
//! call a tracing span (method, request id, trace id) and records its metrics.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use crate::db::{Db, DbError, DedicatedConnection};
use crate::metrics::metrics;

/// The health a service reports, for its own name and for the whole server (`""`, what
/// Kubernetes' gRPC probes ask).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    /// A reporter for `service` and the health service it feeds; NOT_SERVING until `serving`.
    pub async fn new(
        service: &'static str,
    ) -> (
        Health,
        HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let health = Health { reporter, service };
        health.set(ServingStatus::NotServing).await;
        (health, server)
    }

    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    pub async fn not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// Sets only the service's own name: the whole server (`""`) stays SERVING while the
    /// process serves, so a liveness probe does not restart it for a database outage.
    pub async fn set_own(&self, status: ServingStatus) {
        self.reporter.set_service_status(self.service, status).await;
    }

    async fn set(&self, status: ServingStatus) {
        for name in ["", self.service] {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// Server reflection (v1 and v1alpha) advertising `service`, health and reflection itself.
pub fn reflection(
    service: &'static str,
) -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both versions are listed by either, so each needs the other's descriptors.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name(service)
            .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    // The descriptor sets are compiled in: one that does not decode is a build bug.
    let v1 = builder().build_v1().expect("descriptor sets decode");
    let v1alpha = builder().build_v1alpha().expect("descriptor sets decode");
    (v1, v1alpha)
}

/// How often a service's health asks its database.
pub const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the database may take to answer a probe before the service counts as down.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What guards a service's server, besides its own rules.
#[derive(Clone, Debug)]
pub struct ServerSecurity {
    /// Who may call (every call but a health check needs an internal token).
    pub guard: crate::service_auth::CallGuard,
    /// Serve gRPC server reflection (`GRPC_REFLECTION`; off by default: it describes every
    /// call to whoever asks).
    pub reflection: bool,
}

/// The gRPC server settings both services take (flattened into each one's clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// The key internal calls are signed with: at least 32 random bytes, the same in the
    /// gateway, chat-manager and message-manager (`openssl rand -hex 32`).
    #[arg(long, env = "INTERNAL_AUTH_SECRET", hide_env_values = true)]
    pub internal_auth_secret: Option<String>,
    /// Serve gRPC server reflection (for grpcurl); calls to it need an internal token too.
    #[arg(long, env = "GRPC_REFLECTION", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_reflection: bool,
}

impl GrpcArgs {
    /// The shared key (refused when missing or weak).
    pub fn key(&self) -> Result<crate::service_auth::InternalKey, crate::service_auth::KeyError> {
        crate::service_auth::InternalKey::from_config(self.internal_auth_secret.as_deref())
    }

    /// How `me` guards its server: calls from `callers`, signed with the shared key.
    pub fn security(
        &self,
        me: crate::service_auth::ServiceName,
        callers: &'static [crate::service_auth::ServiceName],
    ) -> Result<ServerSecurity, crate::service_auth::KeyError> {
        Ok(ServerSecurity {
            guard: self.key()?.guard(me, callers),
            reflection: self.grpc_reflection,
        })
    }
}

/// Serves `service` with health, the callers' check, reflection (when enabled) and the
/// observing layer on `listener` until `shutdown` resolves. Health says SERVING from the start (call this once the service's
/// storage is up) and NOT_SERVING from the shutdown signal on. With `db`, the service's own
/// name follows the database in between: NOT_SERVING while `SELECT 1` fails or takes more
/// than `HEALTH_PROBE_TIMEOUT`, asked every `HEALTH_PROBE_INTERVAL` (`""` stays SERVING).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    db: Option<Db>,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health, health_service) = Health::new(S::NAME).await;
    health.serving().await;
    let probe = db.map(|db| tokio::spawn(follow_database(health.clone(), db)));
    let (reflection_v1, reflection_v1alpha) = match security.reflection {
        true => {
            let (v1, v1alpha) = reflection(S::NAME);
            (Some(v1), Some(v1alpha))
        }
        false => (None, None),
    };
    let shutdown = async move {
        shutdown.await;
        if let Some(probe) = probe {
            probe.abort();
        }
        health.not_serving().await;
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Observed outside the guard: refused calls are counted (as Unauthenticated) too.
    tonic::transport::Server::builder()
        .layer(ObserveLayer)
        .layer(security.guard)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Keeps the service's own health in step with its database, on a connection of its own (a
/// busy pool is not an outage). A probe still running when the next is due is waited for
/// rather than joined by another, so an unanswering database does not pile up connections.
async fn follow_database(health: Health, db: Db) {
    type Probe = tokio::task::JoinHandle<Result<DedicatedConnection, DbError>>;
    let probe = |db: Db, conn: Option<DedicatedConnection>| -> Probe {
        tokio::spawn(async move {
            let mut conn = match conn {
                Some(conn) => conn,
                None => db.dedicated().await?,
            };
            conn.ping().await?;
            Ok(conn)
        })
    };
    let (mut conn, mut pending, mut serving) = (None, None::<Probe>, true);
    loop {
        tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
        let running = pending.get_or_insert_with(|| probe(db.clone(), conn.take()));
        let outcome = match tokio::time::timeout(HEALTH_PROBE_TIMEOUT, &mut *running).await {
            Err(_) => Err(format!("no answer within {HEALTH_PROBE_TIMEOUT:?}")),
            Ok(finished) => {
                pending = None;
                match finished {
                    Ok(Ok(c)) => {
                        conn = Some(c);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("probe failed: {e}")),
                }
            }
        };
        match (&outcome, serving) {
            (Err(why), true) => {
                tracing::warn!(service = health.service, error = %why, "database unreachable: NOT_SERVING");
                health.set_own(ServingStatus::NotServing).await;
            }
            (Ok(()), false) => {
                tracing::info!(
                    service = health.service,
                    "database reachable again: SERVING"
                );
                health.set_own(ServingStatus::Serving).await;
            }
            _ => {}
        }
        serving = outcome.is_ok();
    }
}

/// Why a health check did not find the service SERVING.
#[derive(Debug, thiserror::Error)]
pub enum HealthCheckError {
    #[error("{addr}: unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{addr}: no answer within {0:?}", TIMEOUT)]
    Timeout { addr: String },
    #[error("{addr}: health check failed: {status}")]
    Failed { addr: String, status: String },
    #[error("{addr}: {service:?} is {status}")]
    NotServing {
        addr: String,
        service: String,
        status: String,
    },
}

const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the gRPC health service at `addr` about `service` (`""`: the whole server); Ok when it
/// is SERVING. An unspecified address (`0.0.0.0`, `::`) is asked on loopback.
pub async fn check_health(addr: SocketAddr, service: &str) -> Result<(), HealthCheckError> {
    let addr = loopback_if_unspecified(addr);
    let addr_text = addr.to_string();
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| HealthCheckError::Unreachable {
                addr: addr_text.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(TIMEOUT)
            .connect()
            .await
            .map_err(|e| HealthCheckError::Unreachable {
                addr: addr_text.clone(),
                reason: std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), ToString::to_string),
            })?;
        let reply = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|s| HealthCheckError::Failed {
                addr: addr_text.clone(),
                status: format!("{:?}: {}", s.code(), s.message()),
            })?
            .into_inner();
        match tonic_health::pb::health_check_response::ServingStatus::try_from(reply.status) {
            Ok(tonic_health::pb::health_check_response::ServingStatus::Serving) => Ok(()),
            other => Err(HealthCheckError::NotServing {
                addr: addr_text.clone(),
                service: service.to_owned(),
                status: other.map_or_else(
                    |_| format!("status {}", reply.status),
                    |s| s.as_str_name().to_owned(),
                ),
            }),
        }
    };
    tokio::time::timeout(TIMEOUT, check)
        .await
        .unwrap_or(Err(HealthCheckError::Timeout {
            addr: addr.to_string(),
        }))
}

/// The `healthcheck` subcommand: asks the server at `addr` about `service`; prints SERVING,
/// or the reason on one line and exits 1.
pub async fn healthcheck_command(addr: SocketAddr, service: &str) {
    match check_health(addr, service).await {
        Ok(()) => println!("SERVING"),
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::exit(1);
        }
    }
}

/// Where to reach a server listening on `addr` from the same host.
pub fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// Wraps a gRPC server (or an in-process one) so each call runs in a `grpc` span carrying its
/// method, request id and trace id, and is counted and timed in the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let span = tracing::info_span!(
            "grpc",
            method = %method,
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        if let Some(id) = header(crate::REQUEST_ID_HEADER) {
            span.record("request_id", id);
        }
        if let Some(tp) =
            header(crate::TRACEPARENT_HEADER).filter(|v| crate::telemetry::is_valid_traceparent(v))
        {
            span.record("trace_id", crate::telemetry::trace_id(tp));
            crate::telemetry::set_remote_parent(&span, tp);
        }
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(res) => status_code(res),
                    Err(_) => tonic::Code::Unknown,
                };
                let elapsed = started.elapsed();
                // Unknown paths would let any client add label values.
                let label = if code == tonic::Code::Unimplemented {
                    "unknown"
                } else {
                    method.as_str()
                };
                metrics().observe_grpc(label, code, elapsed);
                tracing::debug!(code = ?code, elapsed_ms = elapsed.as_millis() as u64, "grpc call");
                result
            }
            .instrument(span),
        )
    }
}

/// The gRPC status of a unary response: in the headers for an error (a trailers-only
/// response); a success (HTTP 200 without it) carries `0` in the trailers.
fn status_code<R>(res: &http::Response<R>) -> tonic::Code {
    match res.headers().get("grpc-status") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(tonic::Code::Unknown, tonic::Code::from_i32),
        None if res.status() == http::StatusCode::OK => tonic::Code::Ok,
        None => tonic::Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::telemetry::{CapturedLog, LogFormat};

    /// A JSON log line written inside a call carries the call's request id and trace id, and
    /// the call is counted under its method and status.
    #[test]
    fn calls_are_traced_and_counted() {
        let logs = CapturedLog::default();
        let subscriber = crate::telemetry::subscriber(LogFormat::Json, logs.writer());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let before = crate::metrics::metrics().encode();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let mut service =
                    ObserveLayer.layer(tower::service_fn(|_req: http::Request<Body>| async {
                        tracing::warn!("inside the handler");
                        Ok::<_, Infallible>(tonic::Status::not_found("nope").into_http::<Body>())
                    }));
                let req = http::Request::builder()
                    .uri("/test.v1.Traced/Get")
                    .header(crate::REQUEST_ID_HEADER, "req-42")
                    .header(
                        crate::TRACEPARENT_HEADER,
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    )
                    .body(Body::empty())
                    .unwrap();
                service.ready().await.unwrap().call(req).await.unwrap();
            })
        });
        let text = logs.text();
        let line: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["message"] == "inside the handler")
            .unwrap_or_else(|| panic!("no handler line in {text}"));
        assert_eq!(line["span"]["request_id"], "req-42", "{line}");
        assert_eq!(
            line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
        assert_eq!(line["span"]["method"], "/test.v1.Traced/Get", "{line}");

        let series =
            r#"grpc_server_requests_total{method="/test.v1.Traced/Get",code="NotFound"} 1"#;
        assert!(!before.contains(series));
        let after = crate::metrics::metrics().encode();
        assert!(after.contains(series), "{after}");
    }

    #[tokio::test]
    async fn health_follows_the_reporter() {
        let (health, server) = Health::new("test.v1.Thing").await;
        let mut client = HealthClient::new(crate::grpc_client::in_process(server));
        let status = |name: &str| {
            let mut client = client.clone();
            let name = name.to_owned();
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest { service: name })
                    .await
                    .unwrap()
                    .into_inner()
                    .status
            }
        };
        let serving = ServingStatus::Serving as i32;
        let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
        assert_eq!(status("").await, not_serving);
        health.serving().await;
        assert_eq!(status("").await, serving);
        assert_eq!(status("test.v1.Thing").await, serving);
        health.not_serving().await;
        assert_eq!(status("test.v1.Thing").await, not_serving);
        let unknown = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "other".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn check_health_reports_an_unreachable_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = check_health(addr, "").await.unwrap_err();
        assert!(matches!(err, HealthCheckError::Unreachable { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9001".parse().unwrap();
        assert_eq!(loopback_if_unspecified(v4).to_string(), "127.0.0.1:9001");
        let v6: SocketAddr = "[::]:9001".parse().unwrap();
        assert_eq!(loopback_if_unspecified(v6).to_string(), "[::1]:9001");
        let given: SocketAddr = "10.0.0.1:9001".parse().unwrap();
        assert_eq!(loopback_if_unspecified(given), given);
    }
}
