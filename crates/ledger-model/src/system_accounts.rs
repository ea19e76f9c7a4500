//! The start-up job both ledger services run: every configured currency has its system account.

use std::time::Duration;

use platform::Shutdown;
use sqlx::PgPool;

use crate::{currency::Currencies, store};

/// Creates the system account of every configured currency. The database may still be starting
/// (the pool connects lazily and the service reports not-ready meanwhile), so this retries in the
/// background until it succeeds or the service stops. Both the accounts and the transfers
/// service run it, and the batch function creates a missing one on first use, so no deposit
/// depends on the timing.
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
