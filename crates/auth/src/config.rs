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
    /// Where the development key pair is kept when no key is configured.
    pub dev_key_dir: String,
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
        }
    }
}
