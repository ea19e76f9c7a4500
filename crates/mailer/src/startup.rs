//! Builds the mailer from config and runs it until shutdown: the consumer loop and the side HTTP
//! port (`/healthz`, `/readyz` checks Redis, `/metrics`).

use anyhow::Context;
use platform::{Shutdown, http::Readiness};
use tokio::net::TcpListener;

use crate::{config::Config, consumer, transport::Transport};

pub async fn run(cfg: Config, http: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    let redis = platform::redis::pool(&cfg.redis).context("redis pool")?;
    let transport = Transport::from_config(&cfg.transport)?;
    tracing::info!(transport = ?cfg.transport, "mail transport ready");
    let readiness = Readiness::new().redis(redis.clone());
    let http = platform::http::serve(http, platform::http::router(readiness), shutdown.clone());
    let consume = consumer::run(cfg, redis, transport, shutdown.clone());
    // If either half fails, stop the other too.
    let stop_on_error = |r: anyhow::Result<()>| {
        if r.is_err() {
            shutdown.trigger();
        }
        r
    };
    let (h, c) = tokio::join!(async { stop_on_error(http.await) }, async {
        stop_on_error(consume.await)
    });
    platform::telemetry::flush().await; // spans still buffered for export
    h.and(c)
}
