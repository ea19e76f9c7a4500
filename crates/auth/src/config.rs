//! Settings of the auth service (see the README's table for every key).

use platform::config::{DatabaseConfig, RedisConfig, ServerConfig, TelemetryConfig, TokenConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub telemetry: TelemetryConfig,
    pub token: TokenConfig,
    /// Where the development key pair is kept when no private key is configured.
    pub dev_key_dir: String,
    pub session: SessionConfig,
    pub password: PasswordConfig,
    pub verification: VerificationConfig,
    pub login_throttle: LoginThrottleConfig,
    pub relay: RelayConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::with_ports(50051, 8081),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            telemetry: TelemetryConfig::default(),
            token: TokenConfig::default(),
            dev_key_dir: "var/keys".into(),
            session: SessionConfig::default(),
            password: PasswordConfig::default(),
            verification: VerificationConfig::default(),
            login_throttle: LoginThrottleConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

/// Token and session lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// Lifetime of an access token.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session (and so of every refresh token it hands out); rotation does not
    /// extend it, so a stolen-and-rotated chain still ends.
    pub refresh_token_ttl_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// argon2id cost. The defaults are OWASP's recommendation (m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PasswordConfig {
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Hashes computed at once; more wait their turn. Each needs `argon2_memory_kib` of memory,
    /// so this bounds what a burst of sign-ups or logins can take (4 × 19 MiB by default).
    pub max_concurrent_hashes: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 4,
        }
    }
}

/// Email verification codes and resend limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct VerificationConfig {
    /// How long a verification code is valid.
    pub code_ttl_secs: u64,
    /// Resend requests allowed per user within `resend_window_secs`.
    pub resend_max_per_window: u64,
    pub resend_window_secs: u64,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            code_ttl_secs: 24 * 3600,
            resend_max_per_window: 3,
            resend_window_secs: 3600,
        }
    }
}

/// Failed-login throttling (fixed windows, counters in Redis).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LoginThrottleConfig {
    /// Failed logins for one username within the window before further attempts are refused.
    pub max_failures_per_username: u64,
    /// Failed logins from one client IP within the window before further attempts are refused.
    pub max_failures_per_ip: u64,
    /// Length of the counting window; the block lifts when it ends.
    pub window_secs: u64,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures_per_username: 5,
            max_failures_per_ip: 50,
            window_secs: 15 * 60,
        }
    }
}

/// The outbox relay (auth.outbox → Redis Stream `{prefix}events:users`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Run the relay inside this process.
    pub enabled: bool,
    /// Redis for the stream; `None` means the service's `redis` settings.
    pub redis: Option<RedisConfig>,
    /// Rows moved per transaction.
    pub batch_size: i64,
    /// Polling fallback when no NOTIFY arrives.
    pub poll_interval_ms: u64,
    /// Approximate bound of the stream (`XADD MAXLEN ~`).
    pub stream_maxlen: u64,
    /// First retry delay after a failure; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Published rows older than this are deleted.
    pub retention_secs: u64,
    /// How often published rows are cleaned up.
    pub cleanup_interval_secs: u64,
    /// Rows deleted per cleanup statement.
    pub cleanup_batch_size: i64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis: None,
            batch_size: 100,
            poll_interval_ms: 2_000,
            stream_maxlen: 100_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 30_000,
            retention_secs: 7 * 24 * 3600,
            cleanup_interval_secs: 3600,
            cleanup_batch_size: 1_000,
        }
    }
}

impl platform::config::Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
