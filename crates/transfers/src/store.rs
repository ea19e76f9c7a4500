//! The transfers service's reads and housekeeping SQL, one function per statement.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::{AccountId, PageSize, PageToken};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferRow {
    pub id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: String,
    pub kind: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A transfer with the owners and kinds of both accounts, to decide who may see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferWithOwners {
    #[sqlx(flatten)]
    pub transfer: TransferRow,
    pub from_owner: String,
    pub from_kind: String,
    pub to_owner: String,
    pub to_kind: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub id: i64,
    pub account_id: i64,
    pub transfer_id: i64,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.get_transfer", otel.kind = "client", db.system = "postgresql"))]
pub async fn get_transfer(
    pool: &PgPool,
    id: i64,
) -> Result<Option<TransferWithOwners>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, t.kind,
                t.created_by, t.created_at,
                fa.owner AS from_owner, fa.kind AS from_kind,
                ta.owner AS to_owner, ta.kind AS to_kind
         FROM ledger.transfers t
         JOIN ledger.accounts fa ON fa.id = t.from_account_id
         JOIN ledger.accounts ta ON ta.id = t.to_account_id
         WHERE t.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One page of an account's transfers (either direction), newest first. Two index range scans
/// (`transfers_from_idx`, `transfers_to_idx`) merged, each bounded by the page size.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.list_transfers", otel.kind = "client", db.system = "postgresql"))]
pub async fn list_transfers(
    pool: &PgPool,
    account: AccountId,
    size: PageSize,
    token: PageToken,
) -> Result<Vec<TransferRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM (
            (SELECT id, from_account_id, to_account_id, amount, currency, kind, created_by, created_at
             FROM ledger.transfers
             WHERE from_account_id = $1 AND ($2::bigint IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3)
            UNION ALL
            (SELECT id, from_account_id, to_account_id, amount, currency, kind, created_by, created_at
             FROM ledger.transfers
             WHERE to_account_id = $1 AND ($2::bigint IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3)
         ) t ORDER BY id DESC LIMIT $3",
    )
    .bind(account.get())
    .bind(token.before_id())
    .bind(size.fetch_limit())
    .fetch_all(pool)
    .await
}

/// One page of an account's statement, newest first.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.list_entries", otel.kind = "client", db.system = "postgresql"))]
pub async fn list_entries(
    pool: &PgPool,
    account: AccountId,
    size: PageSize,
    token: PageToken,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, account_id, transfer_id, amount, balance_after, created_at
         FROM ledger.entries
         WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(account.get())
    .bind(token.before_id())
    .bind(size.fetch_limit())
    .fetch_all(pool)
    .await
}

/// Deletes at most `batch` idempotency keys older than `retention_hours`; returns how many.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.delete_expired_keys", otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_expired_keys(
    pool: &PgPool,
    retention_hours: u32,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM ledger.idempotency_keys WHERE (username, key) IN (
            SELECT username, key FROM ledger.idempotency_keys
            WHERE created_at < now() - make_interval(hours => $1)
            ORDER BY created_at LIMIT $2)",
    )
    .bind(retention_hours as i32)
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
