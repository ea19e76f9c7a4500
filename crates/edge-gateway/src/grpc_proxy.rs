//! The public gRPC port: whole calls forwarded by service path (`/<package>.<Service>/<Method>`) to
//! the upstream serving that package. Frames, metadata and trailers pass through untouched (any call
//! shape, unary or streaming); only the caller facts are set here, as on the HTTP door.

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
};
use http::HeaderValue;
use tonic::transport::server::TcpConnectInfo;
use tower::{Service, ServiceExt};

use crate::{client, ratelimit::RateLimiter, upstream::Upstreams};

pub struct Proxy {
    pub upstreams: Upstreams,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The same per-IP limit as on the HTTP door, so the gRPC door is no way around it.
    pub limiter: Arc<RateLimiter>,
    /// Rate-limited RPCs by gRPC path (`/transactions.auth.v1.AuthService/LoginUser`).
    pub rate_limited_paths: HashSet<String>,
}

/// An axum router whose fallback is the proxy; health and reflection are added by the caller.
pub fn router(proxy: Arc<Proxy>) -> axum::Router {
    axum::Router::new().fallback(forward).with_state(proxy)
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let service = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let Some(mut channel) = proxy.upstreams.for_service(&service) else {
        return status_response(tonic::Status::unimplemented(format!(
            "unknown service {service}"
        )));
    };
    let (mut parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .map(|a: SocketAddr| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let ip = client::client_ip(peer, &parts.headers, &proxy.trusted_proxies);
    if proxy.rate_limited_paths.contains(parts.uri.path())
        && let Err(wait) = proxy.limiter.check(ip)
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let status = platform::ApiError::new(
            tonic::Code::ResourceExhausted,
            "rate_limited",
            "too many requests from this address; retry later",
        )
        .with_retry_after(secs)
        .into_status();
        return status_response(status);
    }
    // the caller facts are the gateway's to state, never the client's
    parts.headers.remove(platform::caller::CLIENT_IP);
    parts.headers.remove(platform::caller::CLIENT_USER_AGENT);
    if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
        parts.headers.insert(platform::caller::CLIENT_IP, v);
    }
    proxy.upstreams.vouch(&mut parts.headers);
    // the upstream's parent is this call's server span (the client's traceparent is its parent)
    platform::telemetry::inject_traceparent(&mut parts.headers);
    if let Some(ua) = parts.headers.get(http::header::USER_AGENT).cloned() {
        parts
            .headers
            .insert(platform::caller::CLIENT_USER_AGENT, ua);
    }
    let req = http::Request::from_parts(parts, tonic::body::Body::new(body));
    let ready = match channel.ready().await {
        Ok(ch) => ch,
        Err(e) => {
            tracing::warn!(%service, error = %e, "upstream not ready");
            return status_response(tonic::Status::unavailable("the service is unavailable"));
        }
    };
    match ready.call(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            // the same answer as the HTTP door: outcome_unknown once the request may have
            // reached the service, upstream_unavailable when it provably did not
            let status = tonic::Status::from_error(e.into());
            let (failed, reason) = if crate::error::never_sent(&status) {
                let e = crate::error::GatewayError::upstream_unavailable();
                (e, crate::error::UPSTREAM_UNAVAILABLE)
            } else {
                let e = crate::error::GatewayError::outcome_unknown();
                (e, crate::error::OUTCOME_UNKNOWN)
            };
            tracing::warn!(%service, reason, error = %status.message(), "upstream call failed");
            let answer = platform::ApiError::new(failed.code, reason, failed.message)
                .with_retry_after(1)
                .into_status();
            status_response(answer)
        }
    }
}

fn status_response(status: tonic::Status) -> Response {
    status.into_http::<Body>()
}
