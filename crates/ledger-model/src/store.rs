//! The SQL both ledger services run against `ledger.accounts`, one function per statement.

use sqlx::PgPool;

use crate::{account::Account, account_id::AccountId, currency::Currency};

/// Reads one account.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.get", otel.kind = "client", db.system = "postgresql"))]
pub async fn get_account(pool: &PgPool, id: AccountId) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM ledger.accounts WHERE id = $1",
        Account::COLUMNS
    )))
    .bind(id.get())
    .fetch_optional(pool)
    .await
}

/// Creates the system (bank cash) account of every currency; idempotent, safe to race.
pub async fn ensure_system_accounts(
    pool: &PgPool,
    currencies: impl IntoIterator<Item = Currency>,
) -> Result<(), sqlx::Error> {
    for currency in currencies {
        sqlx::query("SELECT ledger.ensure_system_account($1)")
            .bind(currency.as_str())
            .execute(pool)
            .await?;
    }
    Ok(())
}
