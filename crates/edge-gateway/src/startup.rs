//! Builds the gateway from config and runs it until shutdown: the HTTP/JSON door (with OpenAPI,
//! Swagger UI, health and metrics) and the gRPC door (proxy, reflection, health).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, response::IntoResponse};
use platform::{Listeners, Shutdown, config::Validate, http::Readiness};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::{Config, Limits},
    connections::ConnectionsPerIp,
    error::GatewayError,
    grpc_proxy::{self, Proxy},
    http_api::{self, Gateway},
    openapi,
    ratelimit::RateLimiter,
    routes::RouteTable,
    upstream::Upstreams,
};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    // again, for a config built in code rather than loaded: the same values are refused
    cfg.validate()?;
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
    let readiness = readiness(&upstreams);
    let router = http_router(&cfg, table, upstreams.clone(), limiter.clone())?;
    let admin = match listeners.admin {
        Some(listener) => listener,
        None => platform::grpc::bind(&cfg.admin_addr)
            .await
            .context("admin_addr")?,
    };
    let proxy = Arc::new(Proxy {
        upstreams,
        trusted_proxies: cfg.trusted_proxies.clone(),
        limiter,
        rate_limited_paths,
        request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
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
    // The admin port outlives the drain of both doors, answering /readyz 503 from SIGTERM on, so
    // a load balancer sees the gateway leaving while its calls finish.
    let drained = Shutdown::new();
    let doors = async {
        let doors = tokio::join!(
            async {
                stop_on_error(
                    platform::grpc::serve_with_readiness(
                        &cfg.server,
                        listeners.grpc,
                        routes,
                        &names,
                        readiness.clone(),
                        shutdown.clone(),
                    )
                    .await,
                )
            },
            async {
                stop_on_error(
                    serve_http(
                        listeners.http,
                        router,
                        &cfg.limits,
                        &cfg.trusted_proxies,
                        shutdown.clone(),
                        grace,
                        Duration::from_millis(cfg.server.shutdown_delay_ms),
                    )
                    .await,
                )
            }
        );
        drained.trigger();
        doors
    };
    let ((g, h), a) = tokio::join!(doors, async {
        // private: never behind the ingress (metrics carry business figures, readiness
        // carries upstream error text)
        stop_on_error(
            platform::http::serve(
                admin,
                platform::http::router(readiness.clone().leaving_on(shutdown.clone())),
                drained.clone(),
            )
            .await,
        )
    });
    // the last spans of the drained requests would otherwise die with the process
    platform::telemetry::flush().await;
    g.and(a).and(h)
}

/// The public HTTP router: OpenAPI, Swagger UI, and every API route as fallback. Health, readiness
/// and metrics are on the admin port only, so a path like `/metrics` is an unknown API route here.
pub fn http_router(
    cfg: &Config,
    table: RouteTable,
    upstreams: Upstreams,
    limiter: Arc<RateLimiter>,
) -> anyhow::Result<Router> {
    // install the Prometheus recorder before the first request counts anything
    let _ = platform::http::metrics_handle();
    let document = openapi::document(&table, &cfg.public_base_url);
    let gateway = Arc::new(Gateway::new(cfg, table, upstreams, limiter));
    let api = Router::new().fallback(http_api::handle).with_state(gateway);
    let router = Router::new()
        .merge(Router::from(
            SwaggerUi::new("/swagger").external_url_unchecked("/openapi.json", document),
        ))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            cfg.limits.max_header_bytes,
            http_api::limit_header_bytes,
        ))
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
        ));
    Ok(match cors(&cfg.cors_allowed_origins)? {
        // outside everything: a preflight is answered before routing, limits and logging
        Some(layer) => router.layer(layer),
        None => router,
    })
}

/// CORS for the configured browser origins (none configured: no layer, no CORS headers). The
/// API is called with a bearer token, never cookies, so credentials are not allowed.
fn cors(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use http::{HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| {
            let o = o.trim().trim_end_matches('/');
            anyhow::ensure!(
                o.starts_with("https://") || o.starts_with("http://"),
                "cors_allowed_origins: {o:?} is not an origin like https://app.example.com"
            );
            HeaderValue::from_str(o).with_context(|| format!("cors_allowed_origins: {o:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                http::header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
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

/// Ready while any upstream answers its gRPC health check: a gateway whose one upstream is down
/// keeps serving the others' routes (answering 503 for the missing one's) rather than leaving the
/// load balancer, which would take every route down with it. Each upstream that does not answer
/// is listed by `/readyz` as `degraded`; with none answering the gateway is not ready.
fn readiness(upstreams: &Upstreams) -> Readiness {
    let all: Vec<(String, tonic::transport::Channel)> = upstreams.distinct().into_iter().collect();
    let mut readiness = Readiness::new();
    for (key, channel) in &all {
        // Readiness names are `&'static str`; a handful of upstreams, leaked once at start-up.
        let name: &'static str = Box::leak(format!("upstream {key}").into_boxed_str());
        let channel = channel.clone();
        readiness = readiness.report(name, move || upstream_health(channel.clone()));
    }
    let all = Arc::new(all);
    readiness.check("upstreams", move || {
        let all = all.clone();
        async move {
            // all at once: one black-holed upstream must not use up the check's time budget
            let answers =
                futures::future::join_all(all.iter().map(|(_, ch)| upstream_health(ch.clone())))
                    .await;
            if answers.iter().any(Result::is_ok) {
                return Ok(());
            }
            let failures: Vec<String> = all
                .iter()
                .zip(answers)
                .filter_map(|((key, _), answer)| answer.err().map(|e| format!("{key}: {e}")))
                .collect();
            Err(format!("no upstream answers ({})", failures.join("; ")))
        }
    })
}

/// One upstream's gRPC health (`""`, the whole server).
async fn upstream_health(channel: tonic::transport::Channel) -> Result<(), String> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    let status = resp.into_inner().status;
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("health status {status}"))
    }
}

/// Serves HTTP/1 and HTTP/2 (cleartext) on `listener` until shutdown, then lets the requests in
/// flight finish within `grace`. Written out rather than `axum::serve` to bound what a connection
/// may hold: HTTP/1 connections get a header read timeout, so a client that sends its headers
/// slowly (or holds an idle keep-alive connection) is cut off instead of holding the connection
/// for ever; a request head far beyond `max_header_bytes` is refused with 431 before it is
/// buffered; an HTTP/2 connection carries a bounded number of requests at once; and one client IP
/// holds at most `max_connections_per_ip` connections (the body deadline and the concurrency
/// permit are the handler's: see `http_api`).
async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    trusted_proxies: &[ipnet::IpNet],
    shutdown: Shutdown,
    grace: Duration,
    delay: Duration,
) -> anyhow::Result<()> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    use tower::ServiceExt;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP/JSON listening (the API, /openapi.json, /swagger/)");
    // the handler answers headers over `max_header_bytes` with a JSON 431; this hard cap, above it,
    // keeps a huge head from being buffered at all (hyper and h2 answer it with a bare 431)
    let head_cap = limits.max_header_bytes + 16 * 1024;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_buf_size(head_cap.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_cap).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams_per_connection);
    let per_ip = ConnectionsPerIp::new(limits.max_connections_per_ip);
    let connections = GracefulShutdown::new();
    // after SIGTERM, new connections are still served for `delay` (server.shutdown_delay_ms)
    let stop_accepting = shutdown.stop_accepting(delay);
    tokio::pin!(stop_accepting);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop_accepting => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // out of file descriptors and the like: back off instead of spinning
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // a load balancer's connections carry many clients: only direct clients are capped
        let guard = if trusted_proxies.iter().any(|net| net.contains(&peer.ip())) {
            None
        } else {
            match per_ip.try_acquire(peer.ip()) {
                Some(guard) => Some(guard),
                None => {
                    metrics::counter!("http_connections_refused_total").increment(1);
                    tracing::debug!(%peer, "connection refused: too many from this IP");
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // what `into_make_service_with_connect_info` gives handlers: the peer address
        let service =
            router
                .clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            let _guard = guard; // the IP's place is held until the connection ends
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener); // refuse new connections while the open ones drain
    let finished = platform::shutdown::drain_within(&shutdown, grace, connections.shutdown()).await;
    if !finished {
        tracing::warn!("HTTP server stopped before in-flight requests finished");
    }
    tracing::info!(%addr, "HTTP server stopped");
    Ok(())
}
