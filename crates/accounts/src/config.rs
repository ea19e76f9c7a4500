//! Settings of the accounts service (see the README's table for every key).

use platform::config::{DatabaseConfig, ServerConfig, TelemetryConfig, TokenConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
    pub token: TokenConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::with_ports(50052, 8082),
            database: DatabaseConfig::default(),
            telemetry: TelemetryConfig::default(),
            token: TokenConfig::default(),
        }
    }
}
