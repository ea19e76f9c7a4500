//! Tracing setup: pretty logs in development, JSON lines otherwise.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), so tests
/// that start several services in one process do not fail.
pub fn init(service: &'static str, cfg: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format {
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_target(false))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}
