//! Tracing setup: pretty logs in development, JSON lines otherwise; OpenTelemetry traces over
//! OTLP/gRPC when a collector is configured; W3C trace context in and out.
//!
//! - Export is on when `telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` /
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`). The other
//!   standard variables apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, ...). Off, no
//!   OpenTelemetry layer is installed at all.
//! - Every request span ([`continue_trace`]) carries a trace id either way: from the incoming
//!   `traceparent`, else a new one. JSON log lines print `trace_id`, `span_id` and `request_id` at
//!   the top level, so one grep finds every line of a request and its trace.

use std::{fmt, sync::OnceLock, time::Duration};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter,
        format::{JsonFields, Writer},
    },
    prelude::*,
    registry::LookupSpan,
};

use crate::config::{LogFormat, TelemetryConfig};

/// The exporter's provider, once export is on.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// The service name given to [`init`], printed on every JSON line.
static SERVICE: OnceLock<&'static str> = OnceLock::new();

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), so tests
/// that start several services in one process do not fail.
pub fn init(service: &'static str, cfg: &TelemetryConfig) {
    init_with_writer(service, cfg, std::io::stdout);
}

/// [`init`] with logs written to `writer` instead of stdout (tests capture them this way).
pub fn init_with_writer<W>(service: &'static str, cfg: &TelemetryConfig, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match otlp_provider(service, cfg) {
        Ok(p) => p,
        Err(e) => {
            // Traces are not worth refusing to start over; say so loudly once.
            eprintln!("OTLP trace export disabled: {e:#}");
            None
        }
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("transactions-api"))
            .with_threads(false)
            .with_location(false)
    });
    let fmt_layer = match cfg.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_target(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .fmt_fields(JsonFields::new())
            .with_writer(writer)
            .boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt_layer)
        .try_init();
    if result.is_ok() {
        let _ = SERVICE.set(service);
        let exporting = provider.is_some();
        if let Some(p) = provider {
            let _ = PROVIDER.set(p);
        }
        tracing::info!(service, otlp_export = exporting, "telemetry initialised");
    } else if let Some(p) = provider {
        let _ = p.shutdown();
    }
}

/// The OTLP endpoint from config or the standard variables; `None`: export is off.
fn otlp_endpoint(cfg: &TelemetryConfig) -> Option<Option<String>> {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(ep) = cfg.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()) {
        return Some(Some(ep));
    }
    // the exporter reads these itself (the signal-specific one first)
    (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
    .then_some(None)
}

fn otlp_provider(
    service: &'static str,
    cfg: &TelemetryConfig,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = otlp_endpoint(cfg) else {
        return Ok(None);
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(ep) = endpoint {
        exporter = exporter.with_endpoint(ep);
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME wins over the binary's name
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Some(provider))
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans still buffered (bounded to 5 s). The exporter stays usable: several services may
/// share one process (tests), and each calls this when it stops.
pub async fn flush() {
    if let Some(p) = PROVIDER.get().cloned() {
        let done = tokio::task::spawn_blocking(move || p.force_flush());
        if tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .is_err()
        {
            tracing::warn!("flushing spans took longer than 5 s; some may be lost");
        }
    }
}

/// Flushes and stops the exporter, at the very end of a process.
pub async fn shutdown() {
    if let Some(p) = PROVIDER.get().cloned() {
        let done = tokio::task::spawn_blocking(move || p.shutdown());
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
    }
}

/// W3C trace context of one hop: `00-<trace id>-<parent span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header; `None` when malformed (a new trace is started then).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // version 00 has exactly four parts; later versions may append more
        if version.len() != 2
            || version.eq_ignore_ascii_case("ff")
            || (version == "00" && parts.next().is_some())
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(trace) || !hex(span) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The 32 hex digits of the trace id.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// The trace position of a request span, kept in the span's extensions: what log lines print and
/// what [`current_traceparent`] hands on when export is off.
#[derive(Debug, Clone)]
struct TraceCtx {
    trace: TraceParent,
    request_id: Option<String>,
}

/// Makes `span` (a root span, e.g. the server span of one request) continue the caller's trace:
/// its parent is the incoming `traceparent` when there is a valid one, else it starts a new trace.
/// Records the trace id in the span's `trace_id` field when it has one, and remembers
/// `request_id` for log lines. Call it right after creating the span, before entering it.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, request_id: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    let incoming = traceparent.and_then(TraceParent::parse);
    let trace = if exporting() {
        if let Some(tp) = incoming {
            let flags = if tp.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(
                TraceId::from(tp.trace_id),
                SpanId::from(tp.span_id),
                flags,
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        })
    } else {
        None
    };
    let trace = trace.unwrap_or_else(|| TraceParent {
        trace_id: incoming.map_or_else(new_trace_id, |tp| tp.trace_id),
        span_id: new_span_id(),
        sampled: incoming.is_none_or(|tp| tp.sampled),
    });
    span.record("trace_id", trace.trace_id_hex().as_str());
    let ctx = TraceCtx {
        trace,
        request_id: request_id.filter(|r| !r.is_empty()).map(str::to_owned),
    };
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch.downcast_ref::<Registry>().and_then(|r| r.span(id)) {
            span.extensions_mut().replace(ctx);
        }
    });
}

/// Renames `span` in the exported trace, e.g. a server span named by its path before routing and
/// by its route template after (`otel.name` recorded later is not applied once the span has
/// started). Nothing to do when no trace is exported.
pub fn rename_span(span: &tracing::Span, name: String) {
    if exporting() && !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

fn new_trace_id() -> u128 {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// The `traceparent` to send on an outgoing call (or to store with an outbox event) from inside the
/// current span: the current span as the parent. `None` outside any traced request.
pub fn current_traceparent() -> Option<String> {
    if exporting() {
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some(
                TraceParent {
                    trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                    span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                    sampled: sc.is_sampled(),
                }
                .to_string(),
            );
        }
    }
    current_ctx().map(|c| c.trace.to_string())
}

/// The trace context of the innermost request span around the current one.
fn current_ctx() -> Option<TraceCtx> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<TraceCtx>().cloned())
        })
        .flatten()
}

/// Adds `traceparent` for the current span to outgoing HTTP headers (no-op outside a trace).
pub fn inject_traceparent(headers: &mut http::HeaderMap) {
    if let Some(v) = current_traceparent().and_then(|tp| http::HeaderValue::try_from(tp).ok()) {
        headers.insert("traceparent", v);
    }
}

/// Adds `traceparent` for the current span to outgoing gRPC metadata (no-op outside a trace).
pub fn inject_traceparent_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    if let Some(v) = current_traceparent().and_then(|tp| tp.parse().ok()) {
        metadata.insert("traceparent", v);
    }
}

/// One JSON object a line: `timestamp`, `level`, `target`, `service`, the event's fields
/// (`message` among them), `trace_id`, `span_id` and `request_id` of the request it belongs to, and
/// the innermost span (`span`: its name and fields).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(service) = SERVICE.get() {
            line.insert("service".into(), (*service).into());
        }
        let mut fields = JsonVisitor(Map::new());
        event.record(&mut fields);
        for (k, v) in fields.0 {
            line.insert(k, v);
        }
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = true;
            for span in scope {
                let ext = span.extensions();
                if innermost {
                    innermost = false;
                    let mut s = ext
                        .get::<FormattedFields<N>>()
                        .and_then(|f| serde_json::from_str::<Map<String, Value>>(&f.fields).ok())
                        .unwrap_or_default();
                    s.insert("name".into(), span.name().into());
                    line.insert("span".into(), Value::Object(s));
                }
                if let Some(tc) = ext.get::<TraceCtx>() {
                    line.insert("trace_id".into(), tc.trace.trace_id_hex().into());
                    line.insert(
                        "span_id".into(),
                        format!("{:016x}", tc.trace.span_id).into(),
                    );
                    if let Some(r) = &tc.request_id {
                        line.insert("request_id".into(), r.clone().into());
                    }
                    break;
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values.
struct JsonVisitor(Map<String, Value>);

impl tracing::field::Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(text).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(tp.sampled);
        assert_eq!(tp.to_string(), text);
    }

    #[test]
    fn malformed_or_zero_traceparents_are_ignored() {
        for bad in [
            "",
            "00-abc-def-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn no_endpoint_means_no_export() {
        // the standard variables are not set in CI
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            assert_eq!(otlp_endpoint(&TelemetryConfig::default()), None);
        }
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            ..Default::default()
        };
        if std::env::var("OTEL_SDK_DISABLED").as_deref() != Ok("true") {
            assert_eq!(
                otlp_endpoint(&cfg),
                Some(Some("http://127.0.0.1:4317".into()))
            );
        }
    }
}
