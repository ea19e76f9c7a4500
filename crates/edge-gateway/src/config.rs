//! Settings of the gateway (see the README's table for every key).

use std::collections::BTreeMap;

use platform::config::{ServerConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Public HTTP/JSON address: the API, `/openapi.json` and `/swagger/`, nothing else.
    pub http_addr: String,
    /// Private admin address: `/metrics`, `/readyz`, `/healthz` (pool and upstream figures, error
    /// text). Never exposed through the Service the ingress uses.
    pub admin_addr: String,
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
    /// Largest request body of the bulk transfer call (CreateTransfers, `POST
    /// /v1/transfers:batch`) in place of `body_limit_bytes`: its 1,000 items (the transfers
    /// service's `bulk.max_items`) take about 200 bytes each as JSON.
    pub bulk_body_limit_bytes: usize,
    /// Deadline of one call through the gateway (sent upstream as `grpc-timeout`); past it, 504.
    pub request_timeout_ms: u64,
    /// API requests in flight at once over HTTP, counted from when a request's body is complete;
    /// more are answered 503 at once.
    pub concurrency_limit: usize,
    /// Time a client has to send a request's headers on an HTTP/1 connection (idle keep-alive
    /// connections included); past it the connection is closed, so slow senders cannot hold
    /// connections open (slowloris). Keep it above the idle timeout of any load balancer in front
    /// (60 s for AWS ALB and ingress-nginx), or it may send a request on a connection the gateway
    /// is closing.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's whole body once its headers are in; past it, 408 and
    /// the connection is closed. No concurrency permit is held while the body arrives, so slow
    /// bodies cannot starve complete requests.
    pub body_read_timeout_ms: u64,
    /// Open HTTP connections one client IP (the TCP peer) may hold; more are closed at once.
    /// Peers in `trusted_proxies` are not capped: a load balancer's connections carry many clients.
    pub max_connections_per_ip: usize,
    /// Largest total size of a request's headers (names, values and their separators); larger is
    /// 431. Far beyond it (16 KiB more) the connection itself refuses the request head with 431.
    pub max_header_bytes: usize,
    /// Requests in flight at once on one HTTP/2 connection.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            bulk_body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            concurrency_limit: 1024,
            header_read_timeout_ms: 75_000,
            body_read_timeout_ms: 10_000,
            max_connections_per_ip: 128,
            max_header_bytes: 16 * 1024,
            max_streams_per_connection: 100,
        }
    }
}

/// The bulk transfer RPC, whose body is larger than any other's.
pub const BULK_TRANSFERS_RPC: &str = "transactions.transfers.v1.TransfersService.CreateTransfers";

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
            ("webhooks", "http://127.0.0.1:50054"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            http_addr: "0.0.0.0:8080".into(),
            admin_addr: "0.0.0.0:8085".into(),
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

/// Every bound is checked here, once, at start-up: the code that uses a value takes it as it is,
/// so a value outside its bound is refused naming its key instead of being quietly replaced.
impl platform::config::Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        use platform::config::ensure_in_range;
        // 0 would fail every connection at once; past a minute a caller has long given up
        ensure_in_range(
            "upstream_connect_timeout_ms",
            self.upstream_connect_timeout_ms,
            1..=60_000,
        )?;
        let limits = &self.limits;
        // a JSON API takes small bodies; 16 MiB is far beyond any request of the contract
        ensure_in_range(
            "limits.body_limit_bytes",
            limits.body_limit_bytes,
            1..=16 * 1024 * 1024,
        )?;
        ensure_in_range(
            "limits.bulk_body_limit_bytes",
            limits.bulk_body_limit_bytes,
            1..=16 * 1024 * 1024,
        )?;
        // 0 would answer every call 504; these are unary calls, five minutes is already generous
        ensure_in_range(
            "limits.request_timeout_ms",
            limits.request_timeout_ms,
            1..=300_000,
        )?;
        // 0 would answer every call 503
        ensure_in_range(
            "limits.concurrency_limit",
            limits.concurrency_limit,
            1..=100_000,
        )?;
        // 0 would close every HTTP/1 connection before its first request
        ensure_in_range(
            "limits.header_read_timeout_ms",
            limits.header_read_timeout_ms,
            1..=600_000,
        )?;
        // 0 would answer every request with a body 408; a JSON body of 64 KiB needs no minutes
        ensure_in_range(
            "limits.body_read_timeout_ms",
            limits.body_read_timeout_ms,
            1..=300_000,
        )?;
        // 0 would refuse every connection
        ensure_in_range(
            "limits.max_connections_per_ip",
            limits.max_connections_per_ip,
            1..=100_000,
        )?;
        // below 1 KiB a bearer token and the usual headers no longer fit; 1 MiB is far beyond
        // what any proxy in front forwards
        ensure_in_range(
            "limits.max_header_bytes",
            limits.max_header_bytes,
            1024..=1024 * 1024,
        )?;
        // 0 would refuse every HTTP/2 request
        ensure_in_range(
            "limits.max_streams_per_connection",
            limits.max_streams_per_connection,
            1..=10_000,
        )?;
        let rate = &self.rate_limit;
        // an empty bucket would refuse every limited call (per_ip_per_minute = 0 turns it off)
        ensure_in_range("rate_limit.burst", rate.burst, 1..=100_000)?;
        // the memory bound of the limiter: a tracked IP costs about 50 bytes
        ensure_in_range(
            "rate_limit.max_tracked_ips",
            rate.max_tracked_ips,
            1..=10_000_000,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use platform::config::Validate;

    use super::*;

    /// The validation error of the default config changed by `tweak`.
    fn refusal(tweak: impl FnOnce(&mut Config)) -> String {
        let mut cfg = Config::default();
        tweak(&mut cfg);
        match cfg.validate() {
            Ok(()) => panic!("accepted: {cfg:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn limits_of_zero_are_refused_naming_the_key() {
        type Tweak = fn(&mut Config);
        let cases: [(&str, Tweak); 11] = [
            ("upstream_connect_timeout_ms", |c| {
                c.upstream_connect_timeout_ms = 0
            }),
            ("limits.body_limit_bytes", |c| c.limits.body_limit_bytes = 0),
            ("limits.bulk_body_limit_bytes", |c| {
                c.limits.bulk_body_limit_bytes = 0
            }),
            ("limits.request_timeout_ms", |c| {
                c.limits.request_timeout_ms = 0
            }),
            ("limits.concurrency_limit", |c| {
                c.limits.concurrency_limit = 0
            }),
            ("limits.header_read_timeout_ms", |c| {
                c.limits.header_read_timeout_ms = 0
            }),
            ("limits.body_read_timeout_ms", |c| {
                c.limits.body_read_timeout_ms = 0
            }),
            ("limits.max_connections_per_ip", |c| {
                c.limits.max_connections_per_ip = 0
            }),
            ("limits.max_streams_per_connection", |c| {
                c.limits.max_streams_per_connection = 0
            }),
            ("rate_limit.burst", |c| c.rate_limit.burst = 0),
            ("rate_limit.max_tracked_ips", |c| {
                c.rate_limit.max_tracked_ips = 0
            }),
        ];
        for (key, tweak) in cases {
            let message = refusal(tweak);
            assert!(message.starts_with(key), "{key}: {message}");
            assert!(message.contains("got 0"), "{key}: {message}");
        }
    }

    #[test]
    fn limits_beyond_their_bound_are_refused_naming_the_key() {
        let message = refusal(|c| c.limits.request_timeout_ms = 300_001);
        assert!(
            message.starts_with("limits.request_timeout_ms must be between 1 and 300000"),
            "{message}"
        );
        let message = refusal(|c| c.limits.body_limit_bytes = 16 * 1024 * 1024 + 1);
        assert!(message.starts_with("limits.body_limit_bytes"), "{message}");
        let message = refusal(|c| c.limits.max_header_bytes = 1023);
        assert!(message.starts_with("limits.max_header_bytes"), "{message}");
        let message = refusal(|c| c.rate_limit.max_tracked_ips = 10_000_001);
        assert!(
            message.starts_with("rate_limit.max_tracked_ips"),
            "{message}"
        );
    }

    #[test]
    fn the_smallest_limits_and_a_rate_limit_turned_off_are_accepted() {
        let cfg = Config {
            upstream_connect_timeout_ms: 1,
            limits: Limits {
                body_limit_bytes: 1,
                bulk_body_limit_bytes: 1,
                request_timeout_ms: 1,
                concurrency_limit: 1,
                header_read_timeout_ms: 1,
                body_read_timeout_ms: 1,
                max_connections_per_ip: 1,
                max_header_bytes: 1024,
                max_streams_per_connection: 1,
            },
            rate_limit: RateLimit {
                per_ip_per_minute: 0,
                burst: 1,
                max_tracked_ips: 1,
                ..RateLimit::default()
            },
            ..Config::default()
        };
        cfg.validate().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_bad_value_from_the_environment_stops_loading_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EDGE_GATEWAY_LIMITS__CONCURRENCY_LIMIT", "0");
            let err = platform::config::load::<Config>("edge-gateway").unwrap_err();
            assert!(
                format!("{err:#}").contains("limits.concurrency_limit must be between"),
                "{err:#}"
            );
            Ok(())
        });
    }

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
