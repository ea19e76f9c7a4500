//! Builds the service from config and runs it until shutdown.

use std::time::Duration;

use platform::{Listeners, Shutdown, http::Readiness, token::Keys};
use proto::accounts::v1::accounts_service_server::AccountsServiceServer;
use sqlx::PgPool;

use crate::{config::Config, domain::Currencies, grpc::AccountsApi, store};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let currencies = Currencies::from_config(&cfg.currencies)?;
    let tokens = Keys::from_config(&cfg.token)?.maker(cfg.token.kind);
    let db = platform::db::pool(&cfg.database)?;
    tokio::spawn(keep_ensuring_system_accounts(
        db.clone(),
        currencies.clone(),
        shutdown.clone(),
    ));
    let api = AccountsApi {
        db: db.clone(),
        tokens,
        currencies,
    };
    let routes = tonic::service::Routes::new(AccountsServiceServer::new(api));
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

/// Creates the system account of every configured currency. The database may still be starting
/// (the pool connects lazily and the service reports not-ready meanwhile), so this retries in the
/// background until it succeeds or the service stops. The transfers service does the same, and
/// its transfer function creates a missing one on first use, so no deposit depends on the timing.
pub async fn keep_ensuring_system_accounts(db: PgPool, currencies: Currencies, shutdown: Shutdown) {
    let mut delay = Duration::from_millis(200);
    loop {
        match store::ensure_system_accounts(&db, currencies.iter()).await {
            Ok(()) => {
                tracing::info!("system accounts present for every configured currency");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot ensure system accounts yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
