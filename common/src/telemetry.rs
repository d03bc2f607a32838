//! Logging set-up shared by every binary, and the W3C trace context (`traceparent`) that
//! follows a request from the gateway into the services' log lines.

use std::str::FromStr;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// How log lines are written: `text` (human-readable, the default) or `json` (one object per
/// line, with the current span's fields such as `request_id` and `trace_id`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Span export over OTLP/gRPC, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; otherwise nothing leaves the process. Call
/// `shutdown` before exiting so the last spans are sent.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (on a blocking thread: it waits for the collector).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Logs to stderr in `format`; `RUST_LOG` filters (default `info`). With an OTLP endpoint in
/// the environment, spans are also exported, as `service` (or `OTEL_SERVICE_NAME`). Call from
/// within the runtime: the exporter's connection lives on it.
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let provider = if configured {
        match otlp_provider(service) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("OpenTelemetry export not started: {e}");
                None
            }
        }
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("chat"))
    });
    // Colours only for a person at a terminal: in a file or a log collector the escape codes
    // would be noise in every line (and cost a little on each).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing::subscriber::set_global_default(layered(format, std::io::stderr, ansi, otel));
    if provider.is_some() {
        tracing::info!("exporting spans over OTLP");
    }
    Telemetry { provider }
}

fn otlp_provider(service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder_empty().with_service_name(name).build())
        .build())
}

/// The subscriber `init` installs, writing to `writer` (tests capture with it), without
/// colours.
pub fn subscriber<W>(format: LogFormat, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    layered(format, writer, false, None)
}

type OtelLayer = tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>;

fn layered<W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
    otel: Option<OtelLayer>,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    Box::new(Registry::default().with(otel).with(filter).with(lines))
}

/// Makes `span` (exported over OTLP) a child of the caller's span named by `traceparent`, so
/// the gateway's and the services' spans join the caller's trace. Without export: nothing.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Carrier<'a>(&'a str);
    impl opentelemetry::propagation::Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let parent = TraceContextPropagator::new().extract(&Carrier(traceparent));
    let _ = span.set_parent(parent);
}

/// Whether `value` is a W3C `traceparent` of version 00: `00-<32 hex>-<16 hex>-<2 hex>`, in
/// lowercase, with neither the trace id nor the parent id all zeros.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let not_zero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00"
            && hex(trace, 32) && not_zero(trace)
            && hex(parent, 16) && not_zero(parent)
            && hex(flags, 2))
}

/// A new `traceparent` (random trace and parent ids, sampled flag set) for a request that came
/// without one.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", &parent[..16])
}

/// The trace id of a valid `traceparent` (what log lines carry as `trace_id`).
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.get(3..35).unwrap_or_default()
}

/// What a test's subscriber wrote (`subscriber(format, log.writer())`), to read back.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl CapturedLog {
    pub(crate) fn writer(&self) -> impl Fn() -> CapturedLog + Send + Sync + 'static {
        let log = self.clone();
        move || log.clone()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_format_is_checked() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_valid_traceparent(good));
        assert_eq!(trace_id(good), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn new_traceparents_are_valid_and_distinct() {
        let (a, b) = (new_traceparent(), new_traceparent());
        assert!(is_valid_traceparent(&a), "{a}");
        assert_ne!(trace_id(&a), trace_id(&b));
    }

    /// Text lines written anywhere but a terminal carry no colour escape codes.
    #[test]
    fn text_lines_have_no_escape_codes() {
        let lines = CapturedLog::default();
        tracing::subscriber::with_default(subscriber(LogFormat::Text, lines.writer()), || {
            tracing::info_span!("request", request_id = "r-1").in_scope(|| {
                tracing::warn!(status = 503, "handled");
            });
        });
        let text = lines.text();
        assert!(
            text.contains("WARN") && text.contains("request_id=\"r-1\""),
            "{text}"
        );
        assert!(
            text.contains("status=503") && text.contains("handled"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "escape codes in {text:?}");
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("TEXT".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
