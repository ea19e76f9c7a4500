//! Settings of the auth service (see the README's table for every key).

use platform::config::{
    DatabaseConfig, RedisConfig, ServerConfig, TelemetryConfig, TokenConfig, Validate,
    ensure_in_range,
};
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
    /// A refresh token presented again this soon after it was renewed is a retry (a client that
    /// timed out, or concurrent renews) and gets the same answer; later it is reuse and revokes
    /// the session (RFC 9700). 0: every second presentation is reuse.
    pub refresh_retry_window_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            refresh_retry_window_secs: 5,
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

/// Failed-login throttling: delays, never a lock-out (see `domain::throttle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LoginThrottleConfig {
    /// Failed logins of one client (a username from one IP) within the window that cost no wait.
    pub free_failures_per_client: u64,
    /// Failed logins from one IP (any username) within the window that cost no wait.
    pub free_failures_per_ip: u64,
    /// The wait after the first failure past the free ones; it doubles with each further one.
    pub delay_initial_ms: u64,
    /// The longest wait.
    pub delay_max_ms: u64,
    /// How long failures are counted from the first.
    pub window_secs: u64,
    /// How long a username stays known at an IP after logging in from it (such a client is not
    /// slowed by other clients' failures at the same IP).
    pub known_client_ttl_secs: u64,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures_per_client: 3,
            free_failures_per_ip: 50,
            delay_initial_ms: 1_000,
            delay_max_ms: 60_000,
            window_secs: 15 * 60,
            known_client_ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// The outbox relay (auth.outbox → Redis Stream `{prefix}events:users`): platform's relay and
/// its settings, the same in every service that runs one.
pub use platform::outbox::RelayConfig;

/// Refuses a bad value at start-up, naming its key. Nothing is clamped later: the code that uses a
/// value takes it as it is here (a zero window, batch or timeout used to become 1 silently).
impl Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        validate_redis("redis", &self.redis)?;

        let s = &self.session;
        ensure_in_range(
            "session.access_token_ttl_secs",
            s.access_token_ttl_secs,
            1..=DAY_SECS,
        )?;
        ensure_in_range(
            "session.refresh_token_ttl_secs",
            s.refresh_token_ttl_secs,
            1..=YEAR_SECS,
        )?;
        ensure_in_range(
            "session.refresh_retry_window_secs",
            s.refresh_retry_window_secs,
            0..=60,
        )?;

        let p = &self.password;
        // argon2 itself refuses memory below 8 KiB per lane; these are the sane outer bounds
        ensure_in_range(
            "password.argon2_memory_kib",
            p.argon2_memory_kib,
            8..=GIB_IN_KIB,
        )?;
        ensure_in_range("password.argon2_iterations", p.argon2_iterations, 1..=100)?;
        ensure_in_range("password.argon2_parallelism", p.argon2_parallelism, 1..=64)?;
        ensure_in_range(
            "password.max_concurrent_hashes",
            p.max_concurrent_hashes,
            1..=1_024,
        )?;

        let v = &self.verification;
        ensure_in_range(
            "verification.code_ttl_secs",
            v.code_ttl_secs,
            1..=30 * DAY_SECS,
        )?;
        ensure_in_range(
            "verification.resend_max_per_window",
            v.resend_max_per_window,
            1..=1_000,
        )?;
        ensure_in_range(
            "verification.resend_window_secs",
            v.resend_window_secs,
            1..=7 * DAY_SECS,
        )?;

        let t = &self.login_throttle;
        ensure_in_range(
            "login_throttle.free_failures_per_client",
            t.free_failures_per_client,
            0..=10_000,
        )?;
        ensure_in_range(
            "login_throttle.free_failures_per_ip",
            t.free_failures_per_ip,
            0..=1_000_000,
        )?;
        ensure_in_range(
            "login_throttle.delay_initial_ms",
            t.delay_initial_ms,
            1..=HOUR_MS,
        )?;
        ensure_in_range("login_throttle.delay_max_ms", t.delay_max_ms, 1..=HOUR_MS)?;
        anyhow::ensure!(
            t.delay_initial_ms <= t.delay_max_ms,
            "login_throttle.delay_initial_ms must be at most login_throttle.delay_max_ms ({} > {})",
            t.delay_initial_ms,
            t.delay_max_ms
        );
        ensure_in_range("login_throttle.window_secs", t.window_secs, 1..=DAY_SECS)?;
        ensure_in_range(
            "login_throttle.known_client_ttl_secs",
            t.known_client_ttl_secs,
            1..=YEAR_SECS,
        )?;

        self.relay.validate()
    }
}

const HOUR_MS: u64 = 3_600_000;
const DAY_SECS: u64 = 86_400;
const YEAR_SECS: u64 = 365 * DAY_SECS;
const GIB_IN_KIB: u32 = 1_048_576;

/// The Redis settings auth relies on: `timeout_ms` bounds every throttle check and every publish
/// of the relay (0 would make each of them fail at once).
fn validate_redis(key: &str, redis: &RedisConfig) -> anyhow::Result<()> {
    ensure_in_range(&format!("{key}.timeout_ms"), redis.timeout_ms, 1..=60_000)?;
    ensure_in_range(&format!("{key}.pool_size"), redis.pool_size, 1..=1_024)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tweak = fn(&mut Config);

    /// The error of validating the default config after `tweak`.
    fn refusal(tweak: impl FnOnce(&mut Config)) -> String {
        let mut cfg = Config::default();
        tweak(&mut cfg);
        format!("{:#}", cfg.validate().expect_err("refused"))
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zeros_that_used_to_be_clamped_to_one_are_refused_naming_the_key() {
        let cases: [(&str, Tweak); 9] = [
            ("redis.timeout_ms", |c| c.redis.timeout_ms = 0),
            ("login_throttle.window_secs", |c| {
                c.login_throttle.window_secs = 0
            }),
            ("verification.resend_window_secs", |c| {
                c.verification.resend_window_secs = 0
            }),
            ("relay.batch_size", |c| c.relay.batch_size = 0),
            ("relay.poll_interval_ms", |c| c.relay.poll_interval_ms = 0),
            ("relay.backoff_initial_ms", |c| {
                c.relay.backoff_initial_ms = 0
            }),
            ("relay.backoff_max_ms", |c| c.relay.backoff_max_ms = 0),
            ("relay.cleanup_interval_secs", |c| {
                c.relay.cleanup_interval_secs = 0
            }),
            ("relay.cleanup_batch_size", |c| {
                c.relay.cleanup_batch_size = 0
            }),
        ];
        for (key, tweak) in cases {
            let err = refusal(tweak);
            assert!(
                err.starts_with(&format!("{key} must be between 1 and ")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn the_relays_own_redis_is_held_to_the_same_rules() {
        let err = refusal(|c| {
            c.relay.redis = Some(RedisConfig {
                timeout_ms: 0,
                ..RedisConfig::default()
            })
        });
        assert!(
            err.starts_with("relay.redis.timeout_ms must be between"),
            "{err}"
        );
    }

    #[test]
    fn limits_that_would_refuse_everyone_are_refused() {
        let cases: [(&str, Tweak); 5] = [
            ("login_throttle.delay_initial_ms", |c| {
                c.login_throttle.delay_initial_ms = 0
            }),
            ("login_throttle.delay_max_ms", |c| {
                c.login_throttle.delay_max_ms = 0
            }),
            ("verification.resend_max_per_window", |c| {
                c.verification.resend_max_per_window = 0
            }),
            ("password.max_concurrent_hashes", |c| {
                c.password.max_concurrent_hashes = 0
            }),
            ("session.access_token_ttl_secs", |c| {
                c.session.access_token_ttl_secs = 0
            }),
        ];
        for (key, tweak) in cases {
            let err = refusal(tweak);
            assert!(
                err.starts_with(&format!("{key} must be between 1 and ")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn values_beyond_their_upper_bound_are_refused() {
        let err = refusal(|c| c.relay.batch_size = 10_001);
        assert_eq!(
            err,
            "relay.batch_size must be between 1 and 10000 (got 10001)"
        );
        let err = refusal(|c| c.password.argon2_memory_kib = 2 * GIB_IN_KIB);
        assert!(
            err.starts_with("password.argon2_memory_kib must be between"),
            "{err}"
        );
    }

    #[test]
    fn a_backoff_that_starts_above_its_cap_is_refused() {
        let err = refusal(|c| {
            c.relay.backoff_initial_ms = 5_000;
            c.relay.backoff_max_ms = 1_000;
        });
        assert!(
            err.starts_with("relay.backoff_initial_ms must be at most relay.backoff_max_ms"),
            "{err}"
        );
    }

    #[test]
    fn a_retention_of_zero_is_allowed() {
        let mut cfg = Config::default();
        cfg.relay.retention_secs = 0;
        cfg.validate().unwrap();
    }
}
