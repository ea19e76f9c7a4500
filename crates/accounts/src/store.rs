//! The accounts service's SQL, one function per statement.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::{AccountId, Currency, PageSize, PageToken};

/// A row of `ledger.accounts`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: i64,
    pub owner: String,
    pub currency: String,
    pub kind: String,
    pub status: String,
    pub frozen_reason: Option<String>,
    pub balance: i64,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, owner, currency, kind, status, frozen_reason, balance, created_at";

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

/// Opens a customer account; `None` when the owner already has one in this currency.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.create", otel.kind = "client", db.system = "postgresql"))]
pub async fn create(
    pool: &PgPool,
    owner: &str,
    currency: &Currency,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger.accounts (owner, currency) VALUES ($1, $2)
         ON CONFLICT (owner, currency) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(owner)
    .bind(currency.as_str())
    .fetch_optional(pool)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.get", otel.kind = "client", db.system = "postgresql"))]
pub async fn get(pool: &PgPool, id: AccountId) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger.accounts WHERE id = $1"
    )))
    .bind(id.get())
    .fetch_optional(pool)
    .await
}

/// One page of `owner`'s accounts, newest first (`size + 1` rows to detect a next page).
/// `include_system`: system accounts only ever show to bankers.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.list", otel.kind = "client", db.system = "postgresql"))]
pub async fn list(
    pool: &PgPool,
    owner: &str,
    include_system: bool,
    size: PageSize,
    token: PageToken,
) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger.accounts
         WHERE owner = $1 AND ($2 OR kind = 'customer') AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"
    )))
    .bind(owner)
    .bind(include_system)
    .bind(token.before_id())
    .bind(size.fetch_limit())
    .fetch_all(pool)
    .await
}

/// Sets a customer account's status; `None` when there is no such customer account.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.set_status", otel.kind = "client", db.system = "postgresql"))]
pub async fn set_status(
    pool: &PgPool,
    id: AccountId,
    frozen_reason: Option<&str>,
) -> Result<Option<AccountRow>, sqlx::Error> {
    let status = if frozen_reason.is_some() {
        "frozen"
    } else {
        "active"
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE ledger.accounts SET status = $2, frozen_reason = $3, updated_at = now()
         WHERE id = $1 AND kind = 'customer' RETURNING {COLUMNS}"
    )))
    .bind(id.get())
    .bind(status)
    .bind(frozen_reason)
    .fetch_optional(pool)
    .await
}
