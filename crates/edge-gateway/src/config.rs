//! Settings of the gateway (see the README's table for every key).

use platform::config::{ServerConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Public HTTP/JSON address (also `/healthz`, `/readyz`, `/metrics`).
    pub http_addr: String,
    /// Public gRPC address.
    pub grpc_addr: String,
    /// Upstream per service.
    pub upstreams: Upstreams,
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Upstreams {
    pub auth: String,
    pub accounts: String,
    pub transfers: String,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            auth: "http://127.0.0.1:50051".into(),
            accounts: "http://127.0.0.1:50052".into(),
            transfers: "http://127.0.0.1:50053".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "0.0.0.0:8080".into(),
            grpc_addr: "0.0.0.0:9090".into(),
            upstreams: Upstreams::default(),
            server: ServerConfig::with_ports(9090, 8080),
            telemetry: TelemetryConfig::default(),
        }
    }
}
