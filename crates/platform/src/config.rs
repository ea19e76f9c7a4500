//! Typed configuration: defaults in code → optional TOML file → environment variables.
//!
//! Environment variables are read with two prefixes, the shared `TXN_` first and the service's own
//! (e.g. `AUTH_`) second, so `TXN_DATABASE__URL` sets every service and `AUTH_DATABASE__URL`
//! overrides it for one. `__` separates nested keys. The TOML file is `CONFIG_FILE` or
//! `<SERVICE>_CONFIG_FILE` when set.

use std::path::PathBuf;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Loads the configuration of `service` (`auth`, `edge-gateway`, ...).
/// Refuses to start on a bad value: [`Validate::validate`] runs on what was read, and its error
/// names the key (`batch.max_size must be between 1 and 1000`). Nothing is clamped silently.
pub fn load<T>(service: &str) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let cfg: T = figment::<T>(service).extract().map_err(Box::new)?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{service}: invalid configuration: {e:#}"))?;
    Ok(cfg)
}

/// The one way a service's settings are checked at start-up: [`load`] calls it, and each
/// service's `startup::run` calls it again, so a config built in code (tests) is held to the
/// same rules. An error names the offending key.
pub trait Validate {
    fn validate(&self) -> anyhow::Result<()>;
}

/// Refuses `value` unless it lies in `range`, naming `key`. For config validation.
pub fn ensure_in_range<T>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<()>
where
    T: PartialOrd + std::fmt::Display,
{
    anyhow::ensure!(
        range.contains(&value),
        "{key} must be between {} and {} (got {value})",
        range.start(),
        range.end()
    );
    Ok(())
}

/// The figment behind [`load`], exposed so tests and tools can merge more sources.
pub fn figment<T: Serialize + Default>(service: &str) -> Figment
where
{
    let prefix = env_prefix(service);
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = config_file(&prefix) {
        fig = fig.merge(Toml::file(path));
    }
    fig.merge(Env::prefixed("TXN_").split("__"))
        .merge(Env::prefixed(&prefix).split("__"))
}

/// `edge-gateway` → `EDGE_GATEWAY_`.
pub fn env_prefix(service: &str) -> String {
    format!("{}_", service.to_uppercase().replace('-', "_"))
}

fn config_file(prefix: &str) -> Option<PathBuf> {
    std::env::var_os(format!("{prefix}CONFIG_FILE"))
        .or_else(|| std::env::var_os("CONFIG_FILE"))
        .map(PathBuf::from)
}

/// Listening addresses and per-request limits of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub grpc_addr: String,
    /// Side HTTP port: `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: String,
    /// Per-request deadline enforced by the server.
    pub request_timeout_ms: u64,
    /// In-flight requests per connection.
    pub concurrency_limit_per_connection: usize,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// After SIGTERM, how long the servers keep accepting new calls while health says NOT_SERVING
    /// (and `/readyz` 503), so load balancers move away before the listener closes (0..=60_000,
    /// below the grace, which it counts in). SIGINT and a shutdown begun in process skip it.
    pub shutdown_delay_ms: u64,
    /// How often the readiness checks (database, Redis) run to set the gRPC health status.
    pub health_check_interval_ms: u64,
    /// The secret the edge gateway sends in `x-gateway-secret` to vouch for the client facts it
    /// forwards (`x-client-ip`, `x-client-user-agent`); set the same value in the gateway and
    /// every service. A call without it (or unset here) has those facts removed, so the client IP
    /// is the connection's peer address.
    pub gateway_secret: Option<GatewaySecret>,
}

/// [`ServerConfig::gateway_secret`]: shown as `***` by `Debug`, so a logged config never holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GatewaySecret(pub String);

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySecret(***)")
    }
}

impl ServerConfig {
    pub fn with_ports(grpc: u16, http: u16) -> Self {
        Self {
            grpc_addr: format!("0.0.0.0:{grpc}"),
            http_addr: format!("0.0.0.0:{http}"),
            ..Self::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8081".into(),
            request_timeout_ms: 10_000,
            concurrency_limit_per_connection: 256,
            shutdown_grace_secs: 10,
            shutdown_delay_ms: 1_500,
            health_check_interval_ms: 1_000,
            gateway_secret: None,
        }
    }
}

/// PostgreSQL pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    /// The longest a query waits for a pooled connection (100..=60_000). While the database is
    /// down, the breaker (`breaker_probe_interval_ms`) answers sooner.
    pub acquire_timeout_ms: u64,
    /// The circuit breaker's probe: every this many milliseconds one connection of its own runs
    /// `SELECT 1`; when that fails and a new connection cannot be made within
    /// `connect_timeout_ms`, the breaker opens and every query fails at once
    /// (`database_unavailable`, 503) instead of waiting out `acquire_timeout_ms`, until a probe
    /// connects again (then it closes: no restart). 0 turns it off; else 50..=10_000.
    pub breaker_probe_interval_ms: u64,
    /// The longest the breaker's probe waits to connect (50..=30_000).
    pub connect_timeout_ms: u64,
    /// TLS to the server: `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (libpq's
    /// names). Unset: the URL's `sslmode`, else `prefer`. Managed databases (RDS) want
    /// `verify-full` with their CA bundle in `ssl_root_cert`.
    pub ssl_mode: Option<String>,
    /// PEM file of the CA(s) that sign the server's certificate (e.g. the RDS bundle). Unset: the
    /// URL's `sslrootcert`, else the public web roots.
    pub ssl_root_cert: Option<PathBuf>,
    /// A read-only database (a streaming replica of `url`) for the services' get/list reads
    /// (docs/scaling.md says which and how stale they may be). Same pool settings and TLS as
    /// `url`. Unset: everything reads the primary.
    pub read_url: Option<String>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/transactions".into(),
            max_connections: 16,
            min_connections: 0,
            acquire_timeout_ms: 3_000,
            breaker_probe_interval_ms: 250,
            connect_timeout_ms: 1_000,
            ssl_mode: None,
            ssl_root_cert: None,
            read_url: None,
        }
    }
}

impl DatabaseConfig {
    /// The bounds of the waits (`platform::db::pool` refuses a config outside them).
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure_in_range(
            "database.acquire_timeout_ms",
            self.acquire_timeout_ms,
            100..=60_000,
        )?;
        if self.breaker_probe_interval_ms != 0 {
            ensure_in_range(
                "database.breaker_probe_interval_ms",
                self.breaker_probe_interval_ms,
                50..=10_000,
            )?;
        }
        ensure_in_range(
            "database.connect_timeout_ms",
            self.connect_timeout_ms,
            50..=30_000,
        )?;
        Ok(())
    }
}

/// Redis pool; every key a service writes starts with `key_prefix`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://host:port` or, with TLS (ElastiCache/Valkey in-transit encryption),
    /// `rediss://host:port`; the server's certificate is verified against `tls_ca_file` and the
    /// URL's host name. A password (auth token) goes in the URL: `rediss://:TOKEN@host:6379`.
    pub url: String,
    pub pool_size: usize,
    pub key_prefix: String,
    pub timeout_ms: u64,
    /// PEM file of the CA(s) that sign the server's certificate, for a `rediss://` URL. Unset: the
    /// system's roots (enough for ElastiCache, whose certificates chain to a public root).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 16,
            key_prefix: "txn:".into(),
            timeout_ms: 2_000,
            tls_ca_file: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for development.
    Pretty,
    /// One JSON object a line, for production.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,sqlx=warn`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`. Unset (and no
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): no export, no cost.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info,sqlx=warn,tower_http=info".into(),
            otlp_endpoint: None,
        }
    }
}

/// Which access-token format is issued and accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// PASETO v4.public (Ed25519). The default.
    #[default]
    Paseto,
    /// JWT signed with EdDSA (Ed25519).
    Jwt,
}

/// Access-token keys. Verifying services need only the public key; `auth` needs the private one.
/// Keys are base64 (standard) of the raw 32 bytes; a `*_file` holds the same text.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TokenConfig {
    pub kind: TokenKind,
    pub public_key: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub private_key: Option<String>,
    pub private_key_file: Option<PathBuf>,
    /// Where revoked sessions are learnt from (see `platform::revocations`).
    pub revocations: RevocationsConfig,
}

/// The revoked-session feed every service follows: the Redis Stream
/// `{redis.key_prefix}auth:revoked_sessions` that auth's relay writes. Its `redis` must be the
/// Redis (and key prefix) of auth's relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RevocationsConfig {
    pub redis: RedisConfig,
    /// Revoked sessions kept in memory at most; an entry is dropped when the tokens it refuses
    /// would have expired anyway, so this bounds the sessions revoked within one access-token
    /// lifetime.
    pub max_sessions: usize,
    /// How long one read of the stream waits for new entries (the follower's heartbeat).
    pub block_ms: u64,
}

impl Default for RevocationsConfig {
    fn default() -> Self {
        Self {
            redis: RedisConfig::default(),
            max_sessions: 100_000,
            block_ms: 1_000,
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Sample {
        server: ServerConfig,
        database: DatabaseConfig,
        name: String,
    }

    #[test]
    fn defaults_then_toml_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "name = \"from-file\"\n[server]\ngrpc_addr = \"127.0.0.1:1\"\nrequest_timeout_ms = 5\n",
            )?;
            jail.set_env("SAMPLE_SVC_CONFIG_FILE", "svc.toml");
            jail.set_env("TXN_DATABASE__URL", "postgres://shared/db");
            jail.set_env("SAMPLE_SVC_SERVER__REQUEST_TIMEOUT_MS", "77");
            let cfg: Sample = figment::<Sample>("sample-svc").extract()?;
            assert_eq!(cfg.name, "from-file");
            assert_eq!(cfg.server.grpc_addr, "127.0.0.1:1");
            assert_eq!(cfg.server.request_timeout_ms, 77, "env overrides the file");
            assert_eq!(cfg.database.url, "postgres://shared/db");
            assert_eq!(cfg.database.max_connections, 16, "default kept");
            Ok(())
        });
    }

    #[test]
    fn service_prefix_overrides_shared_prefix() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TXN_DATABASE__URL", "postgres://shared/db");
            jail.set_env("AUTH_DATABASE__URL", "postgres://auth/db");
            let cfg: Sample = figment::<Sample>("auth").extract()?;
            assert_eq!(cfg.database.url, "postgres://auth/db");
            Ok(())
        });
    }

    #[test]
    fn a_wrong_type_is_a_clear_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AUTH_SERVER__REQUEST_TIMEOUT_MS", "soon");
            let err = figment::<Sample>("auth").extract::<Sample>().unwrap_err();
            assert!(
                err.to_string()
                    .to_lowercase()
                    .contains("request_timeout_ms"),
                "{err}"
            );
            Ok(())
        });
    }
}
