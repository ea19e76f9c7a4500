//! Settings of the transfers service (docs/configuration.md lists every key).

use platform::config::{DatabaseConfig, ServerConfig, TelemetryConfig, TokenConfig, Validate};
use platform::outbox::RelayConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
    pub token: TokenConfig,
    /// The relay of ledger events (ledger.outbox → Redis Stream `{key_prefix}events:ledger`). Off
    /// by default (tests and tools start no relay); the mesh turns it on. While it is off the
    /// events wait in ledger.outbox, none is lost. `relay.redis` unset: Redis at its defaults.
    pub relay: RelayConfig,
    /// ISO 4217 codes money may move in (the same list as the accounts service's).
    pub currencies: Vec<String>,
    /// Largest amount of one transfer, deposit or withdrawal, in minor units of any currency.
    pub max_transfer_amount: i64,
    /// Moving money out of an account needs a verified email (the token's `email_verified`).
    pub require_verified_email: bool,
    pub idempotency: IdempotencyConfig,
    pub batch: BatchConfig,
    pub holds: HoldsConfig,
    pub metadata: MetadataConfig,
    pub transactions: TransactionsConfig,
    pub bulk: BulkConfig,
}

/// What a client may attach to a money movement (like Stripe's metadata limits).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataConfig {
    /// Most metadata keys on one money movement (0..=100).
    pub max_keys: usize,
    /// Longest metadata key, in characters (1..=100).
    pub max_key_chars: usize,
    /// Longest metadata value, in characters (1..=1_000).
    pub max_value_chars: usize,
    /// Longest description, in characters (1..=1_000; the column's CHECK allows 1000).
    pub max_description_chars: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            max_keys: 50,
            max_key_chars: 40,
            max_value_chars: 500,
            max_description_chars: 500,
        }
    }
}

/// Multi-leg transactions (CreateTransaction).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TransactionsConfig {
    /// Most legs in one transaction (2..=100); each leg is a transfer of the same group commit.
    pub max_legs: usize,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        Self { max_legs: 10 }
    }
}

/// Bulk transfers (CreateTransfers): many independent transfers in one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkConfig {
    /// Most items in one CreateTransfers request (1..=10_000); more, or none, is INVALID_ARGUMENT
    /// `bulk_items_out_of_range`. Every item waits in the batcher's queue at once: keep it well
    /// below `batch.queue_capacity` (items that find the queue full are answered
    /// `transfer_queue_full` alone).
    pub max_items: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self { max_items: 1_000 }
    }
}

/// Holds (pending transfers): how long one may last, and the sweep that expires them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HoldsConfig {
    /// The longest timeout a hold may ask for, in seconds (1..=31_536_000, one year).
    pub max_timeout_secs: u64,
    /// How often the sweep looks for holds whose timeout passed, in milliseconds
    /// (10..=3_600_000). Every replica sweeps; an expiry goes through the batch function like
    /// any other end of a hold, so a hold expires once however many replicas see it.
    pub sweep_interval_ms: u64,
    /// Most holds one sweep round expires (1..=10_000); a round that finds more runs again at once.
    pub sweep_batch: i64,
}

impl Default for HoldsConfig {
    fn default() -> Self {
        Self {
            max_timeout_secs: 30 * 24 * 3600,
            sweep_interval_ms: 1_000,
            sweep_batch: 100,
        }
    }
}

/// Group commit: concurrent money movements are collected and applied by one SQL call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Queue requests and apply them in batches. Off: each request is applied at once as a batch
    /// of one (the same SQL path).
    pub enabled: bool,
    /// Most requests in one batch (1..=1000).
    pub max_size: usize,
    /// How long a batch waits for more requests after its first one, in microseconds
    /// (0..=1_000_000; 0 takes only what is already queued).
    pub window_us: u64,
    /// Requests waiting for a batch at most; when full, new ones are refused at once with
    /// UNAVAILABLE `transfer_queue_full` (1..=100_000).
    pub queue_capacity: usize,
    /// Batches running against the database at once (1..=64; keep below
    /// `database.max_connections`).
    pub max_in_flight: usize,
    /// Hold a batch back while a batch in flight locks one of its accounts (a hot account),
    /// taking new requests into it meanwhile, instead of sending it to wait on the row lock.
    /// Off by default: measured side by side (docs/benchmarks.md) it gave fewer transfers/s on
    /// a hot account, because a batch waiting on the lock inside PostgreSQL starts the moment
    /// the previous one commits, while a held one starts a round trip later.
    pub hold_conflicting: bool,
    /// How long one batch may wait for a row lock (an account, a hold, an idempotency key) before
    /// it gives up, in milliseconds (1..=60_000), and never longer than its earliest request's
    /// deadline. A batch that runs out applied nothing: its requests are retried alone, at once
    /// and side by side, so those on other accounts go through, and one that runs out again is
    /// answered UNAVAILABLE `account_busy` (nothing moved). Without it one row held by someone
    /// else would stall every batch that meets it, and the batches queued behind them.
    pub lock_timeout_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_size: 256,
            window_us: 1_000,
            queue_capacity: 4_096,
            max_in_flight: 4,
            hold_conflicting: false,
            lock_timeout_ms: 500,
        }
    }
}

/// How long idempotency keys are kept, and the bounded cleanup of older ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IdempotencyConfig {
    /// Keys younger than this are always honoured; at least 24.
    pub retention_hours: u32,
    /// How often older keys are deleted.
    pub cleanup_interval_secs: u64,
    /// Most keys deleted by one statement (the cleanup repeats up to 10 times a round).
    pub cleanup_batch: i64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention_hours: 24,
            cleanup_interval_secs: 600,
            cleanup_batch: 1_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::with_ports(50053, 8083),
            database: DatabaseConfig::default(),
            telemetry: TelemetryConfig::default(),
            token: TokenConfig::default(),
            relay: RelayConfig {
                enabled: false,
                ..RelayConfig::default()
            },
            currencies: ledger_model::default_currencies(),
            max_transfer_amount: 100_000_000,
            require_verified_email: true,
            idempotency: IdempotencyConfig::default(),
            batch: BatchConfig::default(),
            holds: HoldsConfig::default(),
            metadata: MetadataConfig::default(),
            transactions: TransactionsConfig::default(),
            bulk: BulkConfig::default(),
        }
    }
}

impl Validate for Config {
    /// Rejects settings that would break a promise of the API, naming the key.
    fn validate(&self) -> anyhow::Result<()> {
        self.relay.validate()?;
        ledger_model::Currencies::from_config(&self.currencies)?;
        anyhow::ensure!(
            self.max_transfer_amount > 0,
            "max_transfer_amount must be positive"
        );
        anyhow::ensure!(
            self.idempotency.retention_hours >= 24,
            "idempotency.retention_hours must be at least 24 (keys are promised for 24 h)"
        );
        anyhow::ensure!(
            self.idempotency.cleanup_batch > 0 && self.idempotency.cleanup_interval_secs > 0,
            "idempotency.cleanup_batch and cleanup_interval_secs must be positive"
        );
        platform::config::ensure_in_range(
            "batch.lock_timeout_ms",
            self.batch.lock_timeout_ms,
            1..=60_000,
        )?;
        let h = &self.holds;
        platform::config::ensure_in_range(
            "holds.max_timeout_secs",
            h.max_timeout_secs,
            1..=31_536_000,
        )?;
        platform::config::ensure_in_range(
            "holds.sweep_interval_ms",
            h.sweep_interval_ms,
            10..=3_600_000,
        )?;
        platform::config::ensure_in_range("holds.sweep_batch", h.sweep_batch, 1..=10_000)?;
        let m = &self.metadata;
        platform::config::ensure_in_range("metadata.max_keys", m.max_keys, 0..=100)?;
        platform::config::ensure_in_range("metadata.max_key_chars", m.max_key_chars, 1..=100)?;
        platform::config::ensure_in_range(
            "metadata.max_value_chars",
            m.max_value_chars,
            1..=1_000,
        )?;
        platform::config::ensure_in_range(
            "metadata.max_description_chars",
            m.max_description_chars,
            1..=1_000,
        )?;
        platform::config::ensure_in_range(
            "transactions.max_legs",
            self.transactions.max_legs,
            2..=100,
        )?;
        platform::config::ensure_in_range("bulk.max_items", self.bulk.max_items, 1..=10_000)?;
        let b = &self.batch;
        anyhow::ensure!(
            (1..=1_000).contains(&b.max_size),
            "batch.max_size must be between 1 and 1000"
        );
        anyhow::ensure!(
            b.window_us <= 1_000_000,
            "batch.window_us must be at most 1000000 (1 s)"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&b.queue_capacity),
            "batch.queue_capacity must be between 1 and 100000"
        );
        anyhow::ensure!(
            (1..=64).contains(&b.max_in_flight),
            "batch.max_in_flight must be between 1 and 64"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_settings_out_of_bounds_are_refused() {
        assert!(Config::default().validate().is_ok());
        let with = |tweak: fn(&mut BatchConfig)| {
            let mut cfg = Config::default();
            tweak(&mut cfg.batch);
            cfg.validate()
        };
        assert!(with(|b| b.max_size = 0).is_err());
        assert!(with(|b| b.max_size = 1_001).is_err());
        assert!(with(|b| b.window_us = 1_000_001).is_err());
        assert!(with(|b| b.queue_capacity = 0).is_err());
        assert!(with(|b| b.max_in_flight = 0).is_err());
        assert!(with(|b| b.window_us = 0).is_ok());
        assert!(with(|b| b.enabled = false).is_ok());
    }

    #[test]
    fn bulk_max_items_out_of_bounds_is_refused() {
        let with = |max_items| {
            let mut cfg = Config::default();
            cfg.bulk.max_items = max_items;
            cfg.validate()
        };
        assert!(with(0).is_err());
        assert!(with(10_001).is_err());
        assert!(with(1).is_ok());
        assert!(with(10_000).is_ok());
    }
}
