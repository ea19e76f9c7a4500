//! The gRPC server every service runs: its own services plus `grpc.health.v1`, gRPC reflection
//! (v1 and v1alpha, so grpcurl 1.8 works), request ids, a per-request timeout, RED metrics and
//! tracing, with graceful draining on shutdown.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{service::Routes, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::{config::ServerConfig, http::Readiness, shutdown::Shutdown};

/// The header a gRPC caller sends its deadline in.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How long a call may take: the caller's `grpc-timeout` (the header's value, if any), capped by
/// the server's own `server.request_timeout_ms` (which the server enforces on the whole call
/// either way).
pub fn call_timeout(grpc_timeout: Option<&[u8]>, server_timeout: Duration) -> Duration {
    grpc_timeout
        .and_then(parse_grpc_timeout)
        .map_or(server_timeout, |t| t.min(server_timeout))
}

/// `grpc-timeout` as the gRPC over HTTP/2 spec writes it: at most 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`); anything else is no timeout (as tonic reads it).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Binds `addr` (`host:port`; port 0 picks a free one).
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves `routes` on `listener` until `shutdown` fires, then stops accepting and lets in-flight
/// calls finish within `cfg.shutdown_grace_secs`. `service_names` are reported SERVING by health
/// and listed by reflection. After a signal (SIGTERM) health says NOT_SERVING at once while the
/// listener keeps serving for `cfg.shutdown_delay_ms`, so load balancers move away before it
/// closes; the delay counts in the grace.
pub async fn serve(
    cfg: &ServerConfig,
    listener: TcpListener,
    routes: Routes,
    service_names: &[&str],
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_with_readiness(
        cfg,
        listener,
        routes,
        service_names,
        Readiness::new(),
        shutdown,
    )
    .await
}

/// [`serve`], with the health status of every name (and of the server, `""`) following
/// `readiness`, the checks behind `/readyz`: they run every `cfg.health_check_interval_ms`;
/// NOT_SERVING from the start until they first pass, whenever one fails, and from SIGTERM on;
/// SERVING again when they pass, without a restart. So a Kubernetes gRPC readiness probe sees the
/// database and Redis, not only the process.
pub async fn serve_with_readiness(
    cfg: &ServerConfig,
    listener: TcpListener,
    routes: Routes,
    service_names: &[&str],
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    crate::config::ensure_in_range(
        "server.health_check_interval_ms",
        cfg.health_check_interval_ms,
        100..=60_000,
    )?;
    let delay = shutdown_delay(cfg)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    // "" is the whole server (what `grpc_health_probe` and Kubernetes ask without a service)
    let names: Vec<String> = std::iter::once(String::new())
        .chain(service_names.iter().map(|n| (*n).to_owned()))
        .collect();
    let initial = if readiness.is_empty() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    set_all(&reporter, &names, initial).await;
    let follower = tokio::spawn(follow_readiness(
        reporter.clone(),
        names.clone(),
        readiness,
        Duration::from_millis(cfg.health_check_interval_ms),
        shutdown.clone(),
    ));
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.{ErrorInfo,BadRequest,...}: lets grpcurl print error details
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in service_names {
        reflection = reflection.with_service_name(*name);
    }
    let reflection_v1alpha = {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.{ErrorInfo,BadRequest,...}: lets grpcurl print error details
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in service_names {
            b = b.with_service_name(*name);
        }
        b.build_v1alpha()?
    };
    let routes = routes
        .add_service(health)
        .add_service(reflection.build_v1()?)
        .add_service(reflection_v1alpha);

    let layers = tower::ServiceBuilder::new()
        // first: what the client IP is, before anything (a span, a handler) reads it
        .layer(crate::caller::GatewayFactsLayer::new(
            cfg.gateway_secret.as_ref(),
        ))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc()
                .make_span_with(make_span)
                .on_failure(log_failure),
        )
        .layer(MetricsLayer)
        .layer(DecodeErrorsLayer)
        .into_inner();

    let addr = listener.local_addr()?;
    tracing::info!(%addr, services = ?service_names, "gRPC listening");
    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    let stop = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .concurrency_limit_per_connection(cfg.concurrency_limit_per_connection)
        .layer(layers)
        .add_routes(routes)
        // TCP_NODELAY on every accepted connection: without it a response written in more than
        // one piece (the gateway's proxy forwards data and trailers as they arrive) waits for
        // the client's delayed ACK, ~40 ms, which was the p99 of gRPC through the gateway
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                stop.wait().await;
                // every name, so a probe of any of them sees the pod leaving before it is gone
                set_all(&reporter, &names, ServingStatus::NotServing).await;
                reporter
                    .set_service_status("grpc.health.v1.Health", ServingStatus::NotServing)
                    .await;
                // after SIGTERM: still serving (new connections, new calls) while the load
                // balancers see NOT_SERVING and take this process out; then GOAWAY and the drain
                stop.stop_accepting(delay).await;
                tracing::info!("gRPC server stops accepting; draining the calls in flight");
            },
        );
    let mut result = Ok(());
    let finished = crate::shutdown::drain_within(&shutdown, grace, async {
        result = server.await;
    })
    .await;
    follower.abort();
    result.context("gRPC server failed")?;
    if !finished {
        tracing::warn!("gRPC server stopped before in-flight calls finished");
    }
    tracing::info!(%addr, "gRPC server stopped");
    Ok(())
}

/// `server.shutdown_delay_ms`, checked: at most 60 s and shorter than the grace it counts in.
pub fn shutdown_delay(cfg: &ServerConfig) -> anyhow::Result<Duration> {
    crate::config::ensure_in_range(
        "server.shutdown_delay_ms",
        cfg.shutdown_delay_ms,
        0..=60_000,
    )?;
    let delay = Duration::from_millis(cfg.shutdown_delay_ms);
    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    anyhow::ensure!(
        delay.is_zero() || delay < grace,
        "server.shutdown_delay_ms ({} ms) must be shorter than server.shutdown_grace_secs ({} s), \
         which it counts in",
        cfg.shutdown_delay_ms,
        cfg.shutdown_grace_secs
    );
    Ok(delay)
}

async fn set_all(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// Runs the readiness checks every `interval` until shutdown and sets every name's health status
/// from them, logging each change (with what failed) once rather than every round.
async fn follow_readiness(
    reporter: HealthReporter,
    names: Vec<String>,
    readiness: Readiness,
    interval: Duration,
    shutdown: Shutdown,
) {
    if readiness.is_empty() {
        return;
    }
    let mut serving = false;
    while !shutdown.is_triggered() {
        let failed = readiness.run().await;
        if shutdown.is_triggered() {
            break; // the shutdown path has set NOT_SERVING; do not undo it
        }
        let ok = failed.is_empty();
        if ok != serving {
            serving = ok;
            if ok {
                tracing::info!("dependencies answer: health SERVING");
            } else {
                let failed: Vec<String> = failed.iter().map(|(n, e)| format!("{n}: {e}")).collect();
                tracing::warn!(?failed, "a dependency fails: health NOT_SERVING");
            }
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, &names, status).await;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => {}
        }
    }
}

/// The server span of one call: a child of the caller's `traceparent` (or the root of a new trace),
/// named after the RPC, carrying the request id and trace id every log line inside prints.
fn make_span(req: &http::Request<tonic::body::Body>) -> tracing::Span {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request_id = header("x-request-id").unwrap_or("");
    let rpc = req.uri().path();
    // "/transactions.auth.v1.AuthService/Login" → ("transactions.auth.v1.AuthService", "Login")
    let (service, method) = rpc
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((rpc, ""));
    let span = tracing::info_span!(
        parent: None,
        "grpc",
        otel.name = %rpc.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc = %rpc,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        request_id,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, header("traceparent"), Some(request_id));
    span
}

/// RED metrics per RPC: `grpc_server_requests_total{rpc,code}` and
/// `grpc_server_duration_seconds{rpc}`. A handler's error travels in the response headers
/// (trailers-only response); no `grpc-status` header means the call succeeded.
#[derive(Clone, Copy)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = req.uri().path().to_owned();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(tonic::Code::from)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
            record_rpc(&rpc, code, started);
            // the server span (TraceLayer, outside this layer) is current here
            let span = tracing::Span::current();
            span.record("rpc.grpc.status_code", code as i32);
            if is_server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
            res
        })
    }
}

/// One line per failed call, at a level that says whose failure it was: a refusal of the
/// client's request (a bad argument, no token, not found, …) is INFO, as any client can cause as
/// many as it likes and none needs an operator; a failure of the server is ERROR.
fn log_failure(
    class: tower_http::classify::GrpcFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::GrpcFailureClass;
    let latency_ms = latency.as_millis() as u64;
    match class {
        GrpcFailureClass::Status(status) => {
            let code = tonic::Code::from(status.code_raw());
            let message = status.message().unwrap_or("");
            if is_server_error(code) {
                tracing::error!(?code, message, latency_ms, "call failed");
            } else {
                tracing::info!(?code, message, latency_ms, "call refused");
            }
        }
        other => {
            tracing::error!(error = %other, latency_ms, "call failed");
        }
    }
}

/// Turns tonic's INTERNAL for a request it could not decode (bytes that are not the message, a
/// frame cut short, a bad compression flag) into INVALID_ARGUMENT: the client sent them, the
/// server did not fail. Such a call never reaches a handler, so its status is in the response
/// headers (a trailers-only response).
#[derive(Clone, Copy)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

#[derive(Clone)]
pub struct DecodeErrors<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for DecodeErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await;
            if let Ok(resp) = &mut res {
                reclassify_decode_error(resp.headers_mut());
            }
            res
        })
    }
}

/// The beginnings of the messages tonic gives a request it cannot decode.
const DECODE_ERRORS: [&str; 4] = [
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with invalid compression flag",
    "protocol error: received message with compressed-flag but no grpc-encoding",
];

/// INTERNAL with a decode error's message becomes INVALID_ARGUMENT (in `grpc-status`).
pub fn reclassify_decode_error(headers: &mut http::HeaderMap) {
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) != Some("13") {
        return;
    }
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return;
    };
    // grpc-message is percent-encoded; these prefixes hold no character it encodes but space
    let is_decode_error = DECODE_ERRORS.iter().any(|prefix| {
        message.starts_with(&prefix.replace(' ', "%20")) || message.starts_with(prefix)
    });
    if is_decode_error {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

/// Codes that mean the server failed (OpenTelemetry marks only these as errors on server spans).
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// Records one finished RPC.
pub fn record_rpc(rpc: &str, code: tonic::Code, started: Instant) {
    let code = format!("{code:?}");
    metrics::counter!("grpc_server_requests_total", "rpc" => rpc.to_owned(), "code" => code)
        .increment(1);
    metrics::histogram!("grpc_server_duration_seconds", "rpc" => rpc.to_owned())
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_headers(status: tonic::Status) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn a_request_that_does_not_decode_is_invalid_argument() {
        for status in [
            tonic::Status::internal(
                "failed to decode Protobuf message: LoginUserRequest.username: invalid wire type",
            ),
            tonic::Status::internal("Unexpected EOF decoding stream."),
        ] {
            let mut headers = status_headers(status);
            reclassify_decode_error(&mut headers);
            assert_eq!(headers["grpc-status"], "3");
        }
    }

    #[test]
    fn other_internal_errors_and_other_codes_are_left_alone() {
        let mut headers = status_headers(tonic::Status::internal("internal error"));
        reclassify_decode_error(&mut headers);
        assert_eq!(headers["grpc-status"], "13");
        let mut headers = status_headers(tonic::Status::not_found(
            "failed to decode Protobuf message",
        ));
        reclassify_decode_error(&mut headers);
        assert_eq!(headers["grpc-status"], "5");
    }

    #[test]
    fn only_server_failures_are_errors() {
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::NotFound,
            tonic::Code::AlreadyExists,
            tonic::Code::FailedPrecondition,
            tonic::Code::ResourceExhausted,
        ] {
            assert!(!is_server_error(code), "{code:?}");
        }
        for code in [
            tonic::Code::Internal,
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
        ] {
            assert!(is_server_error(code), "{code:?}");
        }
    }
}
