//! Builds the service from config and runs it until shutdown.

use platform::{Listeners, Shutdown, http::Readiness};
use proto::auth::v1::auth_service_server::AuthServiceServer;

use crate::{config::Config, grpc::AuthApi};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = platform::db::pool(&cfg.database)?;
    let redis = platform::redis::pool(&cfg.redis)?;
    let routes = tonic::service::Routes::new(AuthServiceServer::new(AuthApi {}));
    let readiness = Readiness::new().postgres(db.clone()).redis(redis.clone());
    let result = platform::serve_all(
        &cfg.server,
        listeners,
        routes,
        &[proto::service_names::AUTH],
        readiness,
        shutdown,
    )
    .await;
    db.close().await;
    result
}
