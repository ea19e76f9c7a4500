//! Builds the service from config and runs it until shutdown.

use std::time::Duration;

use platform::{Listeners, Shutdown, config::Validate, http::Readiness, token::Keys};
use proto::transfers::v1::transfers_service_server::TransfersServiceServer;
use sqlx::PgPool;

use crate::{
    config::{Config, HoldsConfig, IdempotencyConfig},
    domain::{Command, Currencies, Ledger, LedgerError, Operation, Reads, Refusal, TransferId},
    grpc::TransfersApi,
    store,
};

/// Rounds of the key cleanup per interval; with `cleanup_batch` this bounds one round's work.
const CLEANUP_ROUNDS_MAX: u32 = 10;

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    let currencies = Currencies::from_config(&cfg.currencies)?;
    let tokens = Keys::from_config(&cfg.token)?.maker(cfg.token.kind);
    let tokens = platform::revocations::follow(tokens, &cfg.token.revocations, shutdown.clone())?;
    let db = platform::db::pool(&cfg.database)?;
    platform::db::check_at_start(&db, &cfg.database).await?;
    // GetTransfer/GetTransaction/ListTransfers/ListEntries on a replica when database.read_url
    // is set (not in readiness: a replica down fails those reads, money still moves)
    let replica = platform::db::read_pool(&cfg.database, &db)?;
    relay_ledger_events(&cfg, &db, &shutdown)?;
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
    let ledger = Ledger::new(db.clone(), cfg.max_transfer_amount, &cfg.batch);
    let sweep = tokio::spawn(expire_holds(
        db.clone(),
        ledger.clone(),
        cfg.holds.clone(),
        shutdown.clone(),
    ));
    let api = TransfersApi {
        db: db.clone(),
        ledger,
        reads: Reads {
            db: db.clone(),
            replica: replica.clone(),
        },
        tokens,
        currencies,
        max_transfer_amount: cfg.max_transfer_amount,
        require_verified_email: cfg.require_verified_email,
        request_timeout: Duration::from_millis(cfg.server.request_timeout_ms),
        max_hold_timeout: Duration::from_secs(cfg.holds.max_timeout_secs),
        metadata_limits: cfg.metadata.clone(),
        max_legs: cfg.transactions.max_legs,
        max_bulk_items: cfg.bulk.max_items,
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
    // Drained: every call was answered, so every batch carrying one has finished. The hold sweep
    // may still wait for its expiries (batches of their own) to come back: let its round end
    // before the pool closes under it, within the same grace.
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    if tokio::time::timeout(grace, sweep).await.is_err() {
        tracing::warn!("the hold expiry sweep did not finish within the grace period");
    }
    replica.close().await;
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

/// Expires holds whose timeout passed: each is ended by an `expire` through the ledger like a
/// void (the same group commit, ordered locks and checks), so with several replicas sweeping the
/// same hold, one expiry wins and the others are refused `hold_not_pending`. Bounded per round.
async fn expire_holds(db: PgPool, ledger: Ledger, cfg: HoldsConfig, shutdown: Shutdown) {
    let interval = Duration::from_millis(cfg.sweep_interval_ms);
    loop {
        let found = match store::find_expired_holds(&db, cfg.sweep_batch).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "hold expiry sweep failed; will retry");
                Vec::new()
            }
        };
        let full_round = found.len() as i64 >= cfg.sweep_batch;
        let mut expiries = tokio::task::JoinSet::new();
        for id in found {
            let Ok(hold) = TransferId::parse(id, "id") else {
                continue;
            };
            let ledger = ledger.clone();
            expiries.spawn(async move {
                let cmd = Command {
                    // the nil id is the bank's (the system accounts' owner id)
                    user_id: uuid::Uuid::nil(),
                    username: ledger_model::SYSTEM_OWNER.to_owned(),
                    as_banker: true,
                    op: Operation::Expire { hold },
                    idempotency_key: None,
                    memo: Default::default(),
                };
                (id, ledger.apply(cmd, None).await)
            });
        }
        let mut expired = 0;
        while let Some(done) = expiries.join_next().await {
            match done {
                Ok((_, Ok(_))) => expired += 1,
                // another replica, a post or a void ended it first
                Ok((_, Err(LedgerError::Refused(Refusal::HoldNotPending)))) => {}
                Ok((id, Err(e))) => {
                    tracing::warn!(hold_id = id, error = %e, "cannot expire hold yet")
                }
                Err(e) => tracing::error!(error = %e, "hold expiry task failed"),
            }
        }
        // a full round that made progress may have left more behind: go again at once
        if full_round && expired > 0 && !shutdown.is_triggered() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// The ledger's outbox (written by triggers in each batch's transaction, see
/// `migrations/20261202000300_ledger_events.up.sql`) relayed to the stream the webhooks service
/// reads, by platform's relay (one at a time across replicas, in outbox order, at least once).
fn relay_ledger_events(cfg: &Config, db: &PgPool, shutdown: &Shutdown) -> anyhow::Result<()> {
    if !cfg.relay.enabled {
        return Ok(());
    }
    let redis_cfg = cfg.relay.redis.clone().unwrap_or_default();
    let redis = platform::redis::pool(&redis_cfg)?;
    let streams =
        platform::outbox::Streams::single(ledger_model::events::stream_key(&redis_cfg.key_prefix));
    tokio::spawn(platform::outbox::run(
        db.clone(),
        redis,
        redis_cfg,
        ledger_model::events::OUTBOX,
        streams,
        cfg.relay.clone(),
        shutdown.clone(),
    ));
    Ok(())
}
