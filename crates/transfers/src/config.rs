//! Settings of the transfers service (see the README's table for every key).

use platform::config::{DatabaseConfig, ServerConfig, TelemetryConfig, TokenConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
    pub token: TokenConfig,
    /// ISO 4217 codes money may move in (the same list as the accounts service's).
    pub currencies: Vec<String>,
    /// Largest amount of one transfer, deposit or withdrawal, in minor units of any currency.
    pub max_transfer_amount: i64,
    /// Moving money out of an account needs a verified email (the token's `email_verified`).
    pub require_verified_email: bool,
    pub idempotency: IdempotencyConfig,
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
            currencies: accounts::config::default_currencies(),
            max_transfer_amount: 100_000_000,
            require_verified_email: true,
            idempotency: IdempotencyConfig::default(),
        }
    }
}

impl Config {
    /// Rejects settings that would break a promise of the API.
    pub fn validate(&self) -> anyhow::Result<()> {
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
        Ok(())
    }
}
