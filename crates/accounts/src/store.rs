//! The accounts service's SQL, one function per statement. The read of one account is shared
//! with the transfers service: `ledger_model::store::get_account`.

use ledger_model::{Account, AccountId, AccountKind, AccountStatus, Currency, PageSize, PageToken};
use sqlx::PgPool;
use uuid::Uuid;

/// Opens a customer account of the user `owner_id` (username `owner`, kept for display); `None`
/// when that user already has one in this currency.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.create", otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_account(
    pool: &PgPool,
    owner_id: Uuid,
    owner: &str,
    currency: &Currency,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger.accounts (owner_id, owner, currency) VALUES ($1, $2, $3)
         ON CONFLICT (owner_id, currency) DO NOTHING RETURNING {}",
        Account::COLUMNS
    )))
    .bind(owner_id)
    .bind(owner)
    .bind(currency.as_str())
    .fetch_optional(pool)
    .await
}

/// Whose accounts [`list_accounts`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Owned<'a> {
    /// The accounts of one user id (the caller's own).
    ById(Uuid),
    /// The accounts opened under a username, by any user who had it (a banker's filter).
    ByUsername(&'a str),
}

/// One page of the accounts `owned`, newest first (`size + 1` rows to detect a next page).
/// `include_system`: system accounts only ever show to bankers.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.list", otel.kind = "client", db.system = "postgresql"))]
pub async fn list_accounts(
    pool: &PgPool,
    owned: Owned<'_>,
    include_system: bool,
    size: PageSize,
    token: PageToken,
) -> Result<Vec<Account>, sqlx::Error> {
    let (owner_id, owner) = match owned {
        Owned::ById(id) => (Some(id), None),
        Owned::ByUsername(name) => (None, Some(name)),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM ledger.accounts
         WHERE ($1::uuid IS NULL OR owner_id = $1) AND ($6::text IS NULL OR owner = $6)
           AND ($2 OR kind = $3) AND ($4::bigint IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
        Account::COLUMNS
    )))
    .bind(owner_id)
    .bind(include_system)
    .bind(AccountKind::Customer.as_str())
    .bind(token.before_id())
    .bind(size.fetch_limit())
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// Freezes (with a reason) or unfreezes (`None`) a customer account; `None` when there is no
/// such customer account.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "accounts.set_status", otel.kind = "client", db.system = "postgresql"))]
pub async fn update_account_status(
    pool: &PgPool,
    id: AccountId,
    frozen_reason: Option<&str>,
) -> Result<Option<Account>, sqlx::Error> {
    let status = if frozen_reason.is_some() {
        AccountStatus::Frozen
    } else {
        AccountStatus::Active
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE ledger.accounts SET status = $2, frozen_reason = $3, updated_at = now()
         WHERE id = $1 AND kind = $4 RETURNING {}",
        Account::COLUMNS
    )))
    .bind(id.get())
    .bind(status.as_str())
    .bind(frozen_reason)
    .bind(AccountKind::Customer.as_str())
    .fetch_optional(pool)
    .await
}
