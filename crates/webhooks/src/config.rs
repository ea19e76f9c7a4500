//! Settings of the webhooks service (docs/configuration.md lists every key).

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
    /// The Redis of the ledger-events stream (`{key_prefix}events:ledger`, written by the
    /// transfers service's relay: use its `relay.redis`).
    pub redis: RedisConfig,
    pub telemetry: TelemetryConfig,
    pub token: TokenConfig,
    pub consumer: ConsumerConfig,
    pub delivery: DeliveryConfig,
    pub endpoints: EndpointsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::with_ports(50054, 8086),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            telemetry: TelemetryConfig::default(),
            token: TokenConfig::default(),
            consumer: ConsumerConfig::default(),
            delivery: DeliveryConfig::default(),
            endpoints: EndpointsConfig::default(),
        }
    }
}

/// The consumer group on the ledger-events stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    /// Consumer group name; every replica joins the same one, so each event is taken once.
    pub group: String,
    /// This replica's name in the group; empty: the host name and process id.
    pub consumer: String,
    /// Entries read per call (1..=1000).
    pub read_count: usize,
    /// How long one read blocks waiting for entries, in milliseconds (1..=60_000).
    pub block_ms: u64,
    /// Entries another consumer left unacknowledged this long are claimed (1_000..=3_600_000).
    pub claim_idle_ms: u64,
    /// First wait after a Redis or database error, doubling up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group: "webhooks".into(),
            consumer: String::new(),
            read_count: 100,
            block_ms: 2_000,
            claim_idle_ms: 60_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 30_000,
        }
    }
}

/// Sending: retries, timeouts, limits and which destinations are allowed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Attempts before a delivery is dead (1..=50).
    pub max_attempts: i32,
    /// The wait after the first failure, doubling after each further one up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// TCP (and TLS) connect timeout of one attempt, in milliseconds (1..=60_000).
    pub connect_timeout_ms: u64,
    /// Whole-attempt timeout (connect, send, answer), in milliseconds (1..=120_000).
    pub timeout_ms: u64,
    /// Most bytes of a receiver's answer read (the rest is dropped) (0..=1_048_576).
    pub max_response_bytes: usize,
    /// Attempts in flight at once (1..=1000).
    pub concurrency: usize,
    /// How often due deliveries are looked for, in milliseconds (10..=60_000).
    pub poll_interval_ms: u64,
    /// Allow loopback, private, link-local (169.254.0.0/16, the cloud metadata address) and
    /// other non-public destinations. Off in production; development and tests turn it on.
    pub allow_private_destinations: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_initial_ms: 5_000,
            backoff_max_ms: 3_600_000,
            connect_timeout_ms: 3_000,
            timeout_ms: 10_000,
            max_response_bytes: 16_384,
            concurrency: 32,
            poll_interval_ms: 500,
            allow_private_destinations: false,
        }
    }
}

/// Limits of the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointsConfig {
    /// Endpoints one user may have (1..=1000).
    pub max_per_user: i64,
    /// Largest page of ListDeliveries (1..=1000); also the most attempts ListDeliveryAttempts shows.
    pub max_page_size: i32,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self {
            max_per_user: 10,
            max_page_size: 100,
        }
    }
}

const HOUR_MS: u64 = 3_600_000;

impl Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        platform::outbox::validate_redis("redis", &self.redis)?;
        let c = &self.consumer;
        anyhow::ensure!(
            !c.group.trim().is_empty(),
            "consumer.group must not be empty"
        );
        ensure_in_range("consumer.read_count", c.read_count, 1..=1_000)?;
        ensure_in_range("consumer.block_ms", c.block_ms, 1..=60_000)?;
        ensure_in_range("consumer.claim_idle_ms", c.claim_idle_ms, 1_000..=HOUR_MS)?;
        ensure_in_range(
            "consumer.backoff_initial_ms",
            c.backoff_initial_ms,
            1..=HOUR_MS,
        )?;
        ensure_in_range(
            "consumer.backoff_max_ms",
            c.backoff_max_ms,
            c.backoff_initial_ms..=HOUR_MS,
        )?;
        let d = &self.delivery;
        ensure_in_range("delivery.max_attempts", d.max_attempts, 1..=50)?;
        ensure_in_range(
            "delivery.backoff_initial_ms",
            d.backoff_initial_ms,
            1..=HOUR_MS,
        )?;
        ensure_in_range(
            "delivery.backoff_max_ms",
            d.backoff_max_ms,
            d.backoff_initial_ms..=24 * HOUR_MS,
        )?;
        ensure_in_range(
            "delivery.connect_timeout_ms",
            d.connect_timeout_ms,
            1..=60_000,
        )?;
        ensure_in_range("delivery.timeout_ms", d.timeout_ms, 1..=120_000)?;
        ensure_in_range(
            "delivery.max_response_bytes",
            d.max_response_bytes,
            0..=1_048_576,
        )?;
        ensure_in_range("delivery.concurrency", d.concurrency, 1..=1_000)?;
        ensure_in_range("delivery.poll_interval_ms", d.poll_interval_ms, 10..=60_000)?;
        ensure_in_range(
            "endpoints.max_per_user",
            self.endpoints.max_per_user,
            1..=1_000,
        )?;
        ensure_in_range(
            "endpoints.max_page_size",
            self.endpoints.max_page_size,
            1..=1_000,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_refuse_private_destinations() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        assert!(!cfg.delivery.allow_private_destinations);
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_key() {
        let mut cfg = Config::default();
        cfg.delivery.max_attempts = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with("delivery.max_attempts"), "{err}");
    }
}
