//! Builds the mailer from config and runs it until shutdown.

use platform::{Shutdown, http::Readiness};
use tokio::net::TcpListener;

use crate::config::Config;

pub async fn run(cfg: Config, http: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let redis = platform::redis::pool(&cfg.redis)?;
    let readiness = Readiness::new().redis(redis.clone());
    platform::http::serve(http, platform::http::router(readiness), shutdown).await
}
