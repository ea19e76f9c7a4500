//! Builds the service from config and runs it until shutdown.

use platform::{Listeners, Shutdown, http::Readiness};
use proto::transfers::v1::transfers_service_server::TransfersServiceServer;

use crate::{config::Config, grpc::TransfersApi};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = platform::db::pool(&cfg.database)?;
    let routes = tonic::service::Routes::new(TransfersServiceServer::new(TransfersApi {}));
    let readiness = Readiness::new().postgres(db.clone());
    let result = platform::serve_all(
        &cfg.server,
        listeners,
        routes,
        &[proto::service_names::TRANSFERS],
        readiness,
        shutdown,
    )
    .await;
    db.close().await;
    result
}
