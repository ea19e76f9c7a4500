//! Settings of the gateway (see the README's table for every key).

use std::collections::BTreeMap;

use platform::config::{ServerConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Public HTTP/JSON address (also `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/swagger/`).
    pub http_addr: String,
    /// Public gRPC address (whole-call proxy, reflection, health).
    pub grpc_addr: String,
    /// Upstream URL per service, keyed by the proto package's service segment
    /// (`transactions.auth.v1` → `auth`). A package with routes but no upstream stops start-up.
    pub upstreams: BTreeMap<String, String>,
    /// How long connecting to an upstream may take before the call fails with 503.
    pub upstream_connect_timeout_ms: u64,
    pub limits: Limits,
    pub rate_limit: RateLimit,
    /// Peers (CIDRs) whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The public URL of the gateway, shown as the server in the OpenAPI document (empty: relative).
    pub public_base_url: String,
    /// Browser origins (e.g. `https://app.example.com`) allowed to call the HTTP API from their
    /// pages (CORS). Empty, the default: no CORS headers, so browsers refuse cross-origin calls.
    pub cors_allowed_origins: Vec<String>,
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
}

/// Bounds on every HTTP request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest request body accepted; larger is 413.
    pub body_limit_bytes: usize,
    /// Deadline of one call through the gateway (sent upstream as `grpc-timeout`); past it, 504.
    pub request_timeout_ms: u64,
    /// API requests in flight at once over HTTP; more are answered 503 at once.
    pub concurrency_limit: usize,
    /// Time a client has to send a request's headers on an HTTP/1 connection (idle keep-alive
    /// connections included); past it the connection is closed, so slow senders cannot hold
    /// connections open (slowloris). Keep it above the idle timeout of any load balancer in front
    /// (60 s for AWS ALB and ingress-nginx), or it may send a request on a connection the gateway
    /// is closing.
    pub header_read_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            concurrency_limit: 1024,
            header_read_timeout_ms: 75_000,
        }
    }
}

/// Per-client-IP token bucket on the RPCs that guess or create credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimit {
    /// Sustained requests per minute per IP (0 turns the limit off).
    pub per_ip_per_minute: u32,
    /// Requests an IP may make in a burst before the rate applies.
    pub burst: u32,
    /// Fully qualified RPC names the limit applies to.
    pub methods: Vec<String>,
    /// Bound on IPs tracked at once; the idlest are forgotten beyond it.
    pub max_tracked_ips: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 30,
            burst: 10,
            methods: vec![
                "transactions.auth.v1.AuthService.CreateUser".into(),
                "transactions.auth.v1.AuthService.LoginUser".into(),
                "transactions.auth.v1.AuthService.RenewAccessToken".into(),
            ],
            max_tracked_ips: 100_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let upstreams = [
            ("auth", "http://127.0.0.1:50051"),
            ("accounts", "http://127.0.0.1:50052"),
            ("transfers", "http://127.0.0.1:50053"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            http_addr: "0.0.0.0:8080".into(),
            grpc_addr: "0.0.0.0:9090".into(),
            upstreams,
            upstream_connect_timeout_ms: 2_000,
            limits: Limits::default(),
            rate_limit: RateLimit::default(),
            trusted_proxies: Vec::new(),
            public_base_url: String::new(),
            cors_allowed_origins: Vec::new(),
            server: ServerConfig::with_ports(9090, 8080),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// `transactions.auth.v1` → `auth`: the package without its version, last segment.
pub fn upstream_key(package: &str) -> &str {
    let mut parts: Vec<&str> = package.split('.').collect();
    if parts.len() > 1
        && parts.last().is_some_and(|v| {
            v.starts_with('v') && v[1..].chars().next().is_some_and(|c| c.is_ascii_digit())
        })
    {
        parts.pop();
    }
    parts.last().copied().unwrap_or(package)
}

impl platform::config::Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_key_is_the_service_segment_of_the_package() {
        assert_eq!(upstream_key("transactions.auth.v1"), "auth");
        assert_eq!(upstream_key("transactions.transfers.v2beta"), "transfers");
        assert_eq!(upstream_key("billing"), "billing");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn upstreams_and_limits_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EDGE_GATEWAY_UPSTREAMS__AUTH", "http://auth:1");
            jail.set_env("EDGE_GATEWAY_LIMITS__BODY_LIMIT_BYTES", "10");
            jail.set_env("EDGE_GATEWAY_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]");
            let cfg: Config = platform::config::figment::<Config>("edge-gateway").extract()?;
            assert_eq!(cfg.upstreams["auth"], "http://auth:1");
            assert_eq!(cfg.upstreams["accounts"], "http://127.0.0.1:50052");
            assert_eq!(cfg.limits.body_limit_bytes, 10);
            assert_eq!(cfg.trusted_proxies.len(), 1);
            Ok(())
        });
    }
}
