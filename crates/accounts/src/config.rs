//! Settings of the accounts service (docs/configuration.md lists every key).

use platform::config::{DatabaseConfig, ServerConfig, TelemetryConfig, TokenConfig};
use serde::{Deserialize, Serialize};

pub use ledger_model::default_currencies;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
    pub token: TokenConfig,
    /// ISO 4217 codes accounts may be opened in (any case; stored uppercase). Each gets a system
    /// (bank cash) account at startup.
    pub currencies: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::with_ports(50052, 8082),
            database: DatabaseConfig::default(),
            telemetry: TelemetryConfig::default(),
            token: TokenConfig::default(),
            currencies: default_currencies(),
        }
    }
}

impl platform::config::Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        ledger_model::Currencies::from_config(&self.currencies)?;
        Ok(())
    }
}
