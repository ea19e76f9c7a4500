//! Builds the gateway from config and runs it until shutdown.

use platform::{Listeners, Shutdown, http::Readiness};

use crate::config::Config;

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    let routes = tonic::service::Routes::builder().routes();
    platform::serve_all(&cfg.server, listeners, routes, &[], readiness, shutdown).await
}
