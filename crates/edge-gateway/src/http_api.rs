//! The HTTP/JSON door: look the route up, apply the limits, transcode, call the upstream, transcode
//! back. One handler serves every RPC; it knows them only through the route table.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use prost_reflect::DynamicMessage;
use tokio::sync::Semaphore;

use crate::{
    client,
    config::{BULK_TRANSFERS_RPC, Config},
    error::GatewayError,
    ratelimit::RateLimiter,
    routes::{Lookup, Route, RouteTable},
    transcode,
    upstream::Upstreams,
    verify_page,
};

/// Everything the handler needs, built once at start-up.
pub struct Gateway {
    pub table: RouteTable,
    pub upstreams: Upstreams,
    pub limiter: Arc<RateLimiter>,
    pub rate_limited: HashSet<String>,
    pub in_flight: Semaphore,
    pub body_limit_bytes: usize,
    /// The body limit of the bulk transfer call (`limits.bulk_body_limit_bytes`).
    pub bulk_body_limit_bytes: usize,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Gateway {
    /// Takes the limits of `cfg` as they are: its validation at start-up refused any out of bounds.
    pub fn new(
        cfg: &Config,
        table: RouteTable,
        upstreams: Upstreams,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self {
            table,
            upstreams,
            limiter,
            rate_limited: cfg.rate_limit.methods.iter().cloned().collect(),
            in_flight: Semaphore::new(cfg.limits.concurrency_limit),
            body_limit_bytes: cfg.limits.body_limit_bytes,
            bulk_body_limit_bytes: cfg.limits.bulk_body_limit_bytes,
            body_read_timeout: Duration::from_millis(cfg.limits.body_read_timeout_ms),
            request_timeout: Duration::from_millis(cfg.limits.request_timeout_ms),
            trusted_proxies: cfg.trusted_proxies.clone(),
        }
    }
}

/// The fallback handler of the public HTTP router: every API route.
pub async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = client::request_id(req.headers());
    let method = req.method().clone();
    let (route_label, mut resp) = match gw.table.lookup(&method, req.uri().path()) {
        Lookup::NotFound => (
            "unmatched".to_owned(),
            GatewayError::route_not_found(&method, req.uri().path()).into_response(),
        ),
        Lookup::WrongMethod(allow) => (
            "unmatched".to_owned(),
            GatewayError::method_not_allowed(allow).into_response(),
        ),
        Lookup::Found(route, vars) => {
            let label = route.template.source.clone();
            let route = route.clone();
            (label, call(&gw, &route, vars, req, &request_id).await)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // answers carry tokens and balances: no cache along the way may keep them
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // the request span (make_span) is current: the route template and outcome for the trace
    let span = tracing::Span::current();
    span.record("http.route", route_label.as_str());
    // named by the template, not the path: ids in span names would make every name unique
    platform::telemetry::rename_span(&span, format!("{method} {route_label}"));
    span.record("http.response.status_code", resp.status().as_u16());
    if resp.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let status = resp.status().as_u16().to_string();
    // every label from a fixed set: a client must not be able to mint new series (made-up
    // methods, paths); the route is a template of the contract or `unmatched`
    metrics::counter!("http_requests_total", "route" => route_label.clone(), "method" => method_label(&method), "status" => status).increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route_label)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The method as a metric label: the standard ones by name, anything else `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn call(
    gw: &Gateway,
    route: &Route,
    vars: Vec<(Vec<String>, String)>,
    req: Request,
    request_id: &str,
) -> Response {
    let html = route.full_name() == verify_page::VERIFY_EMAIL_RPC
        && verify_page::wants_html(req.headers());
    let result = transcode_and_call(gw, route, vars, req, request_id).await;
    if html {
        return verify_page::page(&result);
    }
    match result {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn transcode_and_call(
    gw: &Gateway,
    route: &Route,
    vars: Vec<(Vec<String>, String)>,
    req: Request,
    request_id: &str,
) -> Result<Vec<u8>, GatewayError> {
    // no token, no further look: a stranger learns nothing about the input rules of a route it
    // may not call (401, not the 400 of a body check), and no body is read for it
    if route.needs_token() && !req.headers().contains_key(header::AUTHORIZATION) {
        return Err(GatewayError::missing_token());
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let ip = client::client_ip(peer, req.headers(), &gw.trusted_proxies);
    if gw.rate_limited.contains(route.full_name())
        && let Err(wait) = gw.limiter.check(ip)
    {
        return Err(GatewayError::rate_limited(wait.as_secs_f64().ceil() as u64));
    }
    let mut metadata = client::metadata(req.headers(), ip, request_id);
    gw.upstreams.vouch_metadata(&mut metadata);
    let query = req.uri().query().map(str::to_owned);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    // the body has a deadline of its own, and no permit is held while it arrives: a flood of
    // half-sent bodies costs each sender its connection, never the complete requests a slot
    let body_limit = if route.full_name() == BULK_TRANSFERS_RPC {
        gw.bulk_body_limit_bytes
    } else {
        gw.body_limit_bytes
    };
    let body = tokio::time::timeout(gw.body_read_timeout, read_body(req.into_body(), body_limit))
        .await
        .map_err(|_| GatewayError::body_read_timeout())??;
    let _permit = gw
        .in_flight
        .try_acquire()
        .map_err(|_| GatewayError::overloaded())?;

    transcode::check_content_type(content_type.as_deref(), &route.body, &body)?;
    let input = route.rpc.input();
    let message = transcode::request_message(&input, &route.body, &vars, query.as_deref(), &body)?;
    let channel = gw
        .upstreams
        .channel(&route.package)
        .ok_or_else(|| GatewayError::route_not_found(&route.method, &route.template.source))?;
    let call = crate::upstream::unary(
        channel,
        &route.grpc_path,
        Bytes::from(message.encode_to_vec()),
        metadata,
        gw.request_timeout,
    );
    // a little beyond the deadline sent upstream, so the upstream's own DEADLINE_EXCEEDED wins;
    // an upstream silent past its own deadline had the request: what it did is unknown
    let (_md, bytes) = tokio::time::timeout(gw.request_timeout + Duration::from_millis(250), call)
        .await
        .map_err(|_| GatewayError::outcome_unknown())?
        .map_err(|s| GatewayError::from_call(&s))?;
    let reply = DynamicMessage::decode(route.rpc.output(), bytes).map_err(|e| {
        tracing::error!(error = %e, rpc = route.full_name(), "undecodable upstream answer");
        GatewayError::new(tonic::Code::Internal, "internal", "internal error")
    })?;
    Ok(transcode::response_json(
        &reply,
        route.response_body.as_deref(),
    ))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::body_too_large(limit))
        }
        Err(e) => Err(GatewayError::new(
            tonic::Code::InvalidArgument,
            "unreadable_body",
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// Refuses a request whose headers (names, values and their separators) add up to more than
/// `max_header_bytes` with 431, before anything else reads them; the upstreams' own HTTP/2 limit
/// (16 KiB by default) would otherwise answer for them.
pub async fn limit_header_bytes(
    State(max_header_bytes): State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > max_header_bytes {
        return GatewayError::headers_too_large(max_header_bytes).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_are_one_metric_label() {
        assert_eq!(method_label(&http::Method::POST), "POST");
        for made_up in ["FOO", "BREW", "get", "TRACE", "CONNECT"] {
            let method = http::Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }
}
