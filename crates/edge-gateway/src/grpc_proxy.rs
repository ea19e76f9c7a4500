//! The public gRPC port: whole calls forwarded by service path (`/<package>.<Service>/<Method>`) to
//! the upstream serving that package. Frames, metadata and trailers pass through untouched; only
//! the caller facts are set here, as on the HTTP door. The request body is read to its end first
//! (up to [`REPLAY_LIMIT_BYTES`]), so that a call the upstream never received can be sent again,
//! once, as the HTTP door does: the race of an upstream restarting (its GOAWAY, a refused stream,
//! a connection closed before the request left) costs the client nothing.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::HeaderValue;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tonic::transport::{Channel, server::TcpConnectInfo};
use tower::{Service, ServiceExt};

use crate::{
    client,
    ratelimit::RateLimiter,
    upstream::{RETRY_PAUSE, Upstreams},
};

pub struct Proxy {
    pub upstreams: Upstreams,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The same per-IP limit as on the HTTP door, so the gRPC door is no way around it.
    pub limiter: Arc<RateLimiter>,
    /// Rate-limited RPCs by gRPC path (`/transactions.auth.v1.AuthService/LoginUser`).
    pub rate_limited_paths: HashSet<String>,
    /// The gRPC server's deadline of a call (`server.request_timeout_ms`), which a caller's
    /// `grpc-timeout` may shorten: a retry must fit in what is left of it.
    pub request_timeout: Duration,
}

/// An axum router whose fallback is the proxy; health and reflection are added by the caller.
pub fn router(proxy: Arc<Proxy>) -> axum::Router {
    axum::Router::new().fallback(forward).with_state(proxy)
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let started = Instant::now();
    let deadline = deadline(req.headers(), proxy.request_timeout);
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
    let body = match hold(body, REPLAY_LIMIT_BYTES).await {
        Ok(body) => body,
        Err(status) => return status_response(status),
    };
    match send(&mut channel, &service, parts, body, started, deadline).await {
        Ok(resp) => resp.map(Body::new),
        Err(status) => {
            // the same answer as the HTTP door: outcome_unknown once the request may have
            // reached the service, upstream_unavailable when it provably did not
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

/// Sends the call; one the upstream certainly never received ([`crate::error::never_sent`]: no
/// connection, the channel not ready, the stream refused or beyond a graceful GOAWAY) is sent once
/// more after [`RETRY_PAUSE`] when the caller's deadline leaves room, as the HTTP door does
/// ([`crate::upstream::unary`]). A call that may have reached the upstream is never sent again:
/// only the client, with its idempotency key, may repeat what may have been applied.
async fn send(
    channel: &mut Channel,
    service: &str,
    parts: http::request::Parts,
    body: Held,
    started: Instant,
    deadline: Duration,
) -> Result<http::Response<tonic::body::Body>, tonic::Status> {
    let (data, trailers) = match body {
        Held::Whole { data, trailers } => (data, trailers),
        // too large to hold: sent as it streams in, once
        Held::Streaming(body) => {
            return send_once(channel, http::Request::from_parts(parts, body)).await;
        }
    };
    let again = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.version,
        parts.headers.clone(),
    );
    let first = http::Request::from_parts(parts, replay(&data, trailers.clone()));
    match send_once(channel, first).await {
        Err(status)
            if crate::error::never_sent(&status)
                && crate::upstream::retry_fits(started.elapsed(), deadline) =>
        {
            tracing::info!(
                %service,
                error = %status.message(),
                "upstream call not sent; retrying once"
            );
            metrics::counter!("gateway_upstream_retries_total", "door" => "grpc").increment(1);
            tokio::time::sleep(RETRY_PAUSE).await;
            let (method, uri, version, mut headers) = again;
            // the upstream's deadline is what is left of the caller's
            if headers.contains_key(GRPC_TIMEOUT) {
                let left = deadline.saturating_sub(started.elapsed());
                headers.insert(GRPC_TIMEOUT, grpc_timeout_value(left));
            }
            let mut retry = http::Request::new(replay(&data, trailers));
            *retry.method_mut() = method;
            *retry.uri_mut() = uri;
            *retry.version_mut() = version;
            *retry.headers_mut() = headers;
            send_once(channel, retry).await
        }
        other => other,
    }
}

async fn send_once(
    channel: &mut Channel,
    req: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, tonic::Status> {
    // not ready: the request was never handed to a connection
    let ready = channel
        .ready()
        .await
        .map_err(|e| tonic::Status::from_error(Box::new(crate::error::NotSent(e.into()))))?;
    ready
        .call(req)
        .await
        .map_err(|e| tonic::Status::from_error(e.into()))
}

/// The largest request body the door holds so that it can send it again: one message at the
/// services' decode limit (tonic's 4 MiB, the gRPC door's limit) with its 5-byte frame header.
/// A larger body, which the service refuses anyway, streams through as it did before, unretried.
pub const REPLAY_LIMIT_BYTES: usize = 4 * 1024 * 1024 + 5;

/// A request body read to its end (to be sent, and maybe sent again), or one beyond the limit:
/// what was read, followed by the rest as it arrives.
enum Held {
    Whole {
        data: Bytes,
        trailers: Option<http::HeaderMap>,
    },
    Streaming(tonic::body::Body),
}

/// Reads the body up to `limit` bytes. The server's deadline (`server.request_timeout_ms`, or the
/// caller's `grpc-timeout` if sooner) bounds how long a slow sender may take.
async fn hold(mut body: Body, limit: usize) -> Result<Held, tonic::Status> {
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            platform::ApiError::new(
                tonic::Code::InvalidArgument,
                "unreadable_body",
                format!("cannot read the request body: {e}"),
            )
            .into_status()
        })?;
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > limit {
                    let head = futures::stream::once(futures::future::ready(Ok::<_, axum::Error>(
                        Frame::data(data.freeze()),
                    )));
                    let rest = http_body_util::BodyStream::new(body);
                    let body = StreamBody::new(head.chain(rest));
                    return Ok(Held::Streaming(tonic::body::Body::new(body)));
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok(Held::Whole {
        data: data.freeze(),
        trailers,
    })
}

/// A body of the held bytes (and trailers, which gRPC clients do not usually send).
fn replay(data: &Bytes, trailers: Option<http::HeaderMap>) -> tonic::body::Body {
    let mut frames = vec![Ok::<_, std::convert::Infallible>(Frame::data(data.clone()))];
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)))
}

use platform::grpc::GRPC_TIMEOUT;
#[cfg(test)]
use platform::grpc::parse_grpc_timeout;

/// How long the call may take: the caller's `grpc-timeout`, capped by the server's own deadline
/// (`server.request_timeout_ms`, which tonic enforces on the whole call either way).
fn deadline(headers: &http::HeaderMap, server_timeout: Duration) -> Duration {
    platform::grpc::call_timeout(
        headers.get(GRPC_TIMEOUT).map(HeaderValue::as_bytes),
        server_timeout,
    )
}

/// `left` as a `grpc-timeout` value in milliseconds (at most 8 digits, as the spec allows).
fn grpc_timeout_value(left: Duration) -> HeaderValue {
    let ms = left.as_millis().min(99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).unwrap_or(HeaderValue::from_static("0m"))
}

fn status_response(status: tonic::Status) -> Response {
    status.into_http::<Body>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_grpc_timeout_shortens_the_deadline_never_lengthens_it() {
        let server = Duration::from_secs(10);
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
            deadline(&headers, server)
        };
        assert_eq!(with("250m"), Duration::from_millis(250));
        assert_eq!(with("3S"), Duration::from_secs(3));
        assert_eq!(with("1H"), server, "capped by the server's own deadline");
        assert_eq!(with("123456789m"), server, "more than 8 digits: no timeout");
        assert_eq!(with("10x"), server, "an unknown unit: no timeout");
        assert_eq!(deadline(&http::HeaderMap::new(), server), server);
        assert_eq!(
            parse_grpc_timeout(grpc_timeout_value(Duration::from_millis(1_234)).as_bytes()),
            Some(Duration::from_millis(1_234)),
            "what a retry sends upstream reads back"
        );
    }

    #[test]
    fn the_retry_fits_only_with_room_for_the_pause_and_the_call() {
        use crate::upstream::retry_fits;
        assert!(retry_fits(
            Duration::from_millis(5),
            Duration::from_secs(10)
        ));
        assert!(!retry_fits(
            Duration::from_millis(1),
            Duration::from_millis(60)
        ));
        assert!(!retry_fits(
            Duration::from_millis(9_950),
            Duration::from_secs(10)
        ));
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_held_whole_and_a_larger_one_streams_on() {
        let Held::Whole { data, trailers } = hold(Body::from("abc"), 8).await.unwrap() else {
            panic!("a small body is held whole");
        };
        assert_eq!((&data[..], trailers), (&b"abc"[..], None));
        let Held::Streaming(body) = hold(Body::from("0123456789"), 8).await.unwrap() else {
            panic!("a body over the limit streams");
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"0123456789", "nothing lost of what was read");
    }
}
