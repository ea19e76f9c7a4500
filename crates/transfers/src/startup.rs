//! Builds the service from config and runs it until shutdown.

use std::time::Duration;

use platform::{Listeners, Shutdown, config::Validate, http::Readiness, token::Keys};
use proto::transfers::v1::transfers_service_server::TransfersServiceServer;
use sqlx::PgPool;

use crate::{
    config::{Config, IdempotencyConfig},
    domain::{Currencies, Ledger, Reads},
    grpc::TransfersApi,
    store,
};

/// Rounds of the key cleanup per interval; with `cleanup_batch` this bounds one round's work.
const CLEANUP_ROUNDS_MAX: u32 = 10;

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    let currencies = Currencies::from_config(&cfg.currencies)?;
    let tokens = Keys::from_config(&cfg.token)?.maker(cfg.token.kind);
    let db = platform::db::pool(&cfg.database)?;
    tokio::spawn(ledger_model::keep_ensuring_system_accounts(
        db.clone(),
        currencies.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(clean_idempotency_keys(
        db.clone(),
        cfg.idempotency.clone(),
        shutdown.clone(),
    ));
    let api = TransfersApi {
        db: db.clone(),
        ledger: Ledger::new(db.clone(), cfg.max_transfer_amount, &cfg.batch),
        reads: Reads { db: db.clone() },
        tokens,
        currencies,
        max_transfer_amount: cfg.max_transfer_amount,
        require_verified_email: cfg.require_verified_email,
        request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
    };
    let routes = tonic::service::Routes::new(TransfersServiceServer::new(api));
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

/// Deletes idempotency keys past their retention, a bounded batch at a time, so the table stays
/// small without one long delete holding locks. Several replicas may run it; they only share work.
async fn clean_idempotency_keys(db: PgPool, cfg: IdempotencyConfig, shutdown: Shutdown) {
    let interval = Duration::from_secs(cfg.cleanup_interval_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        for _ in 0..CLEANUP_ROUNDS_MAX {
            match store::delete_expired_keys(&db, cfg.retention_hours, cfg.cleanup_batch).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "expired idempotency keys deleted");
                    }
                    if n < cfg.cleanup_batch as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency key cleanup failed; will retry");
                    break;
                }
            }
        }
    }
}
