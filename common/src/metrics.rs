//! Prometheus metrics: one registry per process (so the embedded default's gateway shows the
//! in-process services' metrics too), gauges sampled at scrape time (`Metrics::add_probe`: the
//! outbox backlog and queue depth, see the `events` crate), and the tiny HTTP server that
//! serves `GET /metrics` on `METRICS_ADDR`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Latency buckets in seconds; 0.3 and 0.5 are the alerting thresholds of the runbook.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How long a scrape waits for the sampled gauges (a database or broker that does not answer
/// leaves their last values).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

/// What became of a webhook attempt: `succeeded`, `retrying` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// A webhook delivery's state: `pending` or `retrying`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub type ProbeFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A gauge sampler run at every scrape, until its service shuts down.
struct Probe {
    sample: Box<dyn Fn() -> ProbeFuture + Send + Sync>,
    until: watch::Receiver<bool>,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: LatencyFamily<RouteLabels>,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_request_duration: LatencyFamily<GrpcMethodLabels>,
    pub outbox_backlog: Family<ServiceLabels, Gauge>,
    pub outbox_oldest_unsent_age: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
    pub outbox_held_rows: Family<ServiceLabels, Gauge>,
    pub outbox_writes_held: Family<ServiceLabels, Gauge>,
    pub events_published: Family<ServiceLabels, Counter>,
    pub event_bytes_published: Family<ServiceLabels, Counter>,
    pub consumer_queue_depth: Family<QueueLabels, Gauge>,
    pub consumer_dead_lettered: Family<QueueLabels, Counter>,
    pub websocket_connections: Gauge,
    pub hub_events_received: Counter,
    pub hub_events_unwanted: Counter,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub webhook_attempt_duration: Histogram,
    pub webhook_backlog: Family<StatusLabels, Gauge>,
    pub webhook_oldest_pending_age: Gauge<f64, AtomicU64>,
    probes: Mutex<Vec<Arc<Probe>>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "http_requests",
            "HTTP requests by matched route, method and status",
            http_requests.clone(),
        );
        let http_request_duration = LatencyFamily::new_with_constructor(latency_histogram as _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by matched route and method",
            http_request_duration.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_server_requests",
            "gRPC calls served, by method (the gRPC path) and status code",
            grpc_requests.clone(),
        );
        let grpc_request_duration = LatencyFamily::new_with_constructor(latency_histogram as _);
        registry.register(
            "grpc_server_request_duration_seconds",
            "gRPC call latency by method",
            grpc_request_duration.clone(),
        );
        let outbox_backlog = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "outbox_backlog_events",
            "Events committed but not yet confirmed by the broker",
            outbox_backlog.clone(),
        );
        let outbox_oldest_unsent_age = Family::<ServiceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "outbox_oldest_unsent_age_seconds",
            "Age of the oldest event not yet confirmed by the broker (0 when none)",
            outbox_oldest_unsent_age.clone(),
        );
        let outbox_held_rows = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "outbox_held_rows",
            "Outbox rows the relay cannot publish (held unsent until a release that can)",
            outbox_held_rows.clone(),
        );
        let outbox_writes_held = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "outbox_writes_held",
            "1 while writes wait for the relay: the outbox is over its limit of unsent events",
            outbox_writes_held.clone(),
        );
        let consumer_queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "consumer_queue_depth",
            "Messages ready in a durable queue this process consumes",
            consumer_queue_depth.clone(),
        );
        let events_published = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "events_published",
            "Events the relay published and the broker confirmed (AMQP messages)",
            events_published.clone(),
        );
        let event_bytes_published = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "event_bytes_published",
            "Bytes of the bodies of the events the relay published and the broker confirmed",
            event_bytes_published.clone(),
        );
        let consumer_dead_lettered = Family::<QueueLabels, Counter>::default();
        registry.register(
            "consumer_dead_lettered",
            "Events given up on (dead-lettered) by a consumer",
            consumer_dead_lettered.clone(),
        );
        let websocket_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            websocket_connections.clone(),
        );
        let hub_events_received = Counter::default();
        registry.register(
            "websocket_hub_events_received",
            "Events the gateway's hub received from the broker",
            hub_events_received.clone(),
        );
        let hub_events_unwanted = Counter::default();
        registry.register(
            "websocket_hub_events_unwanted",
            "Events the hub received for a tenant with no socket here (its binding was going)",
            hub_events_unwanted.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook attempts by outcome: succeeded, retrying (to be tried again) or failed (given up)",
            webhook_deliveries.clone(),
        );
        let webhook_attempt_duration = latency_histogram();
        registry.register(
            "webhook_attempt_duration_seconds",
            "How long a webhook attempt took, from sending the request to the answer or the error",
            webhook_attempt_duration.clone(),
        );
        let webhook_backlog = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "webhook_deliveries_backlog",
            "Webhook deliveries not yet done, by status (pending, retrying)",
            webhook_backlog.clone(),
        );
        let webhook_oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "webhook_oldest_pending_age_seconds",
            "Age of the oldest webhook delivery not yet done (0 when none)",
            webhook_oldest_pending_age.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_request_duration,
            grpc_requests,
            grpc_request_duration,
            outbox_backlog,
            outbox_oldest_unsent_age,
            outbox_held_rows,
            outbox_writes_held,
            events_published,
            event_bytes_published,
            consumer_queue_depth,
            consumer_dead_lettered,
            websocket_connections,
            hub_events_received,
            hub_events_unwanted,
            webhook_deliveries,
            webhook_attempt_duration,
            webhook_backlog,
            webhook_oldest_pending_age,
            probes: Mutex::new(Vec::new()),
        }
    }

    /// Records one HTTP request.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one gRPC call; `code` as tonic names it (`Ok`, `NotFound`, `Unavailable`, ...).
    pub fn observe_grpc(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.grpc_request_duration
            .get_or_create(&GrpcMethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Runs `sample` at every scrape (to set gauges from a database or broker), until `until`
    /// turns true.
    pub fn add_probe(
        &self,
        until: watch::Receiver<bool>,
        sample: impl Fn() -> ProbeFuture + Send + Sync + 'static,
    ) {
        self.probes
            .lock()
            .expect("probes lock")
            .push(Arc::new(Probe {
                sample: Box::new(sample),
                until,
            }));
    }

    /// Samples the gauges, then encodes everything in the text exposition format.
    pub async fn scrape(&self) -> String {
        let live: Vec<Arc<Probe>> = {
            let mut probes = self.probes.lock().expect("probes lock");
            probes.retain(|p| !*p.until.borrow());
            probes.clone()
        };
        let samples = futures_util::future::join_all(live.iter().map(|p| (p.sample)()));
        let _ = tokio::time::timeout(PROBE_TIMEOUT, samples).await;
        self.encode()
    }

    /// The current values, without sampling.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// How many of `service`'s outbox rows its relay holds unsent because it cannot publish them.
pub fn set_held_rows(service: &str, rows: usize) {
    metrics()
        .outbox_held_rows
        .get_or_create(&ServiceLabels {
            service: service.to_owned(),
        })
        .set(i64::try_from(rows).unwrap_or(i64::MAX));
}

/// Counts events of `service` the broker confirmed, and their bodies' bytes.
pub fn count_published(service: &str, events: u64, bytes: u64) {
    let labels = ServiceLabels {
        service: service.to_owned(),
    };
    let m = metrics();
    m.events_published.get_or_create(&labels).inc_by(events);
    m.event_bytes_published.get_or_create(&labels).inc_by(bytes);
}

/// Counts one event of `queue` given up on (set aside in its dead-letter queue).
pub fn count_dead_lettered(queue: &str) {
    metrics()
        .consumer_dead_lettered
        .get_or_create(&QueueLabels {
            queue: queue.to_owned(),
        })
        .inc();
}

/// Events of `queue` given up on so far (what `consumer_dead_lettered_total` shows).
pub fn dead_lettered(queue: &str) -> u64 {
    metrics()
        .consumer_dead_lettered
        .get_or_create(&QueueLabels {
            queue: queue.to_owned(),
        })
        .get()
}

/// Binds `addr` and serves `GET /metrics` there until `shutdown` turns true.
pub async fn spawn_server(
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics at /metrics");
    Ok((bound, tokio::spawn(serve(listener, shutdown))))
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true. HTTP/1.x, one request per
/// connection: all a Prometheus scrape needs, with no HTTP stack of its own.
pub async fn serve(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    if let Err(e) = answer(stream).await {
                        tracing::debug!(error = %e, "metrics: request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    // The request head only; a scrape has no body.
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, metrics().scrape().await),
        (_, "/metrics") => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "see /metrics\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_registry_over_http() {
        let (_tx, rx) = watch::channel(false);
        let (addr, _task) = spawn_server("127.0.0.1:0".parse().unwrap(), rx)
            .await
            .unwrap();
        metrics().observe_http("/test/{id}", "GET", 200, Duration::from_millis(3));
        metrics().observe_grpc("/test.v1.T/Get", tonic::Code::NotFound, Duration::ZERO);

        let reply = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains(CONTENT_TYPE), "{reply}");
        assert!(
            reply.contains(r#"http_requests_total{route="/test/{id}",method="GET",status="200"} "#),
            "{reply}"
        );
        assert!(
            reply.contains(r#"http_request_duration_seconds_bucket{le="0.005",route="/test/{id}",method="GET"} 1"#),
            "{reply}"
        );
        assert!(
            reply.contains(
                r#"grpc_server_requests_total{method="/test.v1.T/Get",code="NotFound"} "#
            ),
            "{reply}"
        );
        assert!(reply.contains("websocket_connections "), "{reply}");
        assert!(reply.trim_end().ends_with("# EOF"), "{reply}");

        let other = get(addr, "GET / HTTP/1.0\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(addr, "POST /metrics HTTP/1.0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }
}
