//! Settings of the mailer (see the README's table for every key).

use platform::config::{RedisConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: String,
    pub redis: RedisConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "0.0.0.0:8084".into(),
            redis: RedisConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown_grace_secs: 10,
        }
    }
}
