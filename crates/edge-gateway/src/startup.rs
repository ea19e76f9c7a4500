//! Builds the gateway from config and runs it until shutdown: the HTTP/JSON door (with OpenAPI,
//! Swagger UI, health and metrics) and the gRPC door (proxy, reflection, health).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, response::IntoResponse};
use platform::{Listeners, Shutdown, http::Readiness};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::Config,
    error::GatewayError,
    grpc_proxy::{self, Proxy},
    http_api::{self, Gateway},
    openapi,
    ratelimit::RateLimiter,
    routes::RouteTable,
    upstream::Upstreams,
};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let table = RouteTable::from_descriptor_set(proto::DESCRIPTOR_SET)
        .context("cannot build routes from the descriptor set")?;
    let mut packages: Vec<String> = table.routes.iter().map(|r| r.package.clone()).collect();
    packages.sort();
    packages.dedup();
    let upstreams = Upstreams::new(&cfg, &packages)?;
    let services = table.services();
    tracing::info!(
        routes = table.routes.len(),
        ?services,
        "routes built from the descriptor set"
    );

    // one limiter for both doors: an IP's budget is the same over HTTP and gRPC
    let limiter = Arc::new(RateLimiter::new(
        cfg.rate_limit.per_ip_per_minute,
        cfg.rate_limit.burst,
        cfg.rate_limit.max_tracked_ips,
    ));
    let rate_limited_paths = table
        .routes
        .iter()
        .filter(|r| cfg.rate_limit.methods.iter().any(|m| m == r.full_name()))
        .map(|r| r.grpc_path.clone())
        .collect();
    let router = http_router(&cfg, table, upstreams.clone(), limiter.clone());
    let proxy = Arc::new(Proxy {
        upstreams,
        trusted_proxies: cfg.trusted_proxies.clone(),
        limiter,
        rate_limited_paths,
    });
    let routes = tonic::service::Routes::from(grpc_proxy::router(proxy));
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);

    let stop_on_error = |r: anyhow::Result<()>| {
        if r.is_err() {
            shutdown.trigger();
        }
        r
    };
    let (g, h) = tokio::join!(
        async {
            stop_on_error(
                platform::grpc::serve(
                    &cfg.server,
                    listeners.grpc,
                    routes,
                    &names,
                    shutdown.clone(),
                )
                .await,
            )
        },
        async { stop_on_error(serve_http(listeners.http, router, shutdown.clone(), grace).await) }
    );
    // the last spans of the drained requests would otherwise die with the process
    platform::telemetry::flush().await;
    g.and(h)
}

/// The public HTTP router: health, metrics, OpenAPI, Swagger UI, and every API route as fallback.
pub fn http_router(
    cfg: &Config,
    table: RouteTable,
    upstreams: Upstreams,
    limiter: Arc<RateLimiter>,
) -> Router {
    // install the Prometheus recorder before the first request counts anything
    let _ = platform::http::metrics_handle();
    let document = openapi::document(&table, &cfg.public_base_url);
    let readiness = readiness(&upstreams);
    let gateway = Arc::new(Gateway::new(cfg, table, upstreams, limiter));
    let api = Router::new().fallback(http_api::handle).with_state(gateway);
    platform::http::router(readiness)
        .merge(Router::from(
            SwaggerUi::new("/swagger").external_url_unchecked("/openapi.json", document),
        ))
        .merge(api)
        // the fixed pages answer a wrong method in the same JSON shape as the API
        .method_not_allowed_fallback(|| async {
            GatewayError::method_not_allowed(vec![http::Method::GET])
        })
        // a bug must not become a dropped connection or an HTML page
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                GatewayError::new(tonic::Code::Internal, "internal", "internal error")
                    .into_response()
            },
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        // outermost: a request without an id gets one before it is logged and forwarded
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
}

/// One span per HTTP request: method, path and the client's request id (never headers, which
/// carry credentials). It continues the client's W3C `traceparent` or starts the trace; the calls
/// to the services are its children (their metadata carries this span as the parent).
fn make_span(req: &http::Request<axum::body::Body>) -> tracing::Span {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let request_id = header("x-request-id").unwrap_or("");
    let span = tracing::info_span!(
        parent: None,
        "http",
        otel.name = %format_args!("{} {}", req.method(), req.uri().path()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        method = %req.method(),
        path = %req.uri().path(),
        request_id,
        trace_id = tracing::field::Empty,
    );
    platform::telemetry::continue_trace(&span, header("traceparent"), Some(request_id));
    span
}

/// Ready when every upstream answers its gRPC health check.
fn readiness(upstreams: &Upstreams) -> Readiness {
    let mut readiness = Readiness::new();
    for (key, channel) in upstreams.distinct() {
        // Readiness names are `&'static str`; a handful of upstreams, leaked once at start-up.
        let name: &'static str = Box::leak(format!("upstream {key}").into_boxed_str());
        readiness = readiness.check(name, move || {
            let channel = channel.clone();
            async move {
                let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                let resp = client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                let status = resp.into_inner().status;
                if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    Ok(())
                } else {
                    Err(format!("health status {status}"))
                }
            }
        });
    }
    readiness
}

async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    grace: Duration,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP/JSON listening (/openapi.json, /swagger/, /healthz, /readyz, /metrics)");
    let stop = shutdown.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.wait().await });
    let mut result = Ok(());
    let finished = platform::shutdown::drain_within(&shutdown, grace, async {
        result = server.await;
    })
    .await;
    result.context("HTTP server failed")?;
    if !finished {
        tracing::warn!("HTTP server stopped before in-flight requests finished");
    }
    tracing::info!(%addr, "HTTP server stopped");
    Ok(())
}
