//! Builds the service from config and runs it until shutdown.

use platform::{Listeners, Shutdown, http::Readiness};
use proto::accounts::v1::accounts_service_server::AccountsServiceServer;

use crate::{config::Config, grpc::AccountsApi};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = platform::db::pool(&cfg.database)?;
    let routes = tonic::service::Routes::new(AccountsServiceServer::new(AccountsApi {}));
    let readiness = Readiness::new().postgres(db.clone());
    let result = platform::serve_all(
        &cfg.server,
        listeners,
        routes,
        &[proto::service_names::ACCOUNTS],
        readiness,
        shutdown,
    )
    .await;
    db.close().await;
    result
}
