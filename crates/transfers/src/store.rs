//! Every SQL statement of the transfers service, one function each: the group-commit call that
//! moves money, the reads, the key cleanup and the reconciliation's checks. (The read of one
//! account is shared with the accounts service: `ledger_model::store::get_account`.)

use chrono::{DateTime, Utc};
use ledger_model::{AccountId, AccountKind, PageSize, PageToken};
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::movement::{Command, Kind, Status};

/// One row of `ledger.transfer_batch`: item `idx` (1-based) failed with `error`, or the outcome.
#[derive(Debug, sqlx::FromRow)]
pub struct BatchRow {
    pub idx: i32,
    pub error: Option<String>,
    pub transfer_id: Option<i64>,
    pub from_account_id: Option<i64>,
    pub to_account_id: Option<i64>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub hold: Option<bool>,
    pub hold_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub from_entry_id: Option<i64>,
    pub from_entry_amount: Option<i64>,
    pub from_balance_after: Option<i64>,
    pub to_entry_id: Option<i64>,
    pub to_entry_amount: Option<i64>,
    pub to_balance_after: Option<i64>,
    pub replayed: Option<bool>,
}

/// Applies a batch of money movements by ONE call of `ledger.transfer_batch`
/// (migrations/20261201000200_ledger_holds.up.sql): element i of every array is command i. One client span per batch round trip, named after the statement, never with
/// parameters.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "ledger.transfer_batch", otel.kind = "client", db.system = "postgresql", batch_size = cmds.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    cmds: &[&Command],
    max_transfer_amount: i64,
    lock_timeout_ms: Option<i32>,
) -> Result<Vec<BatchRow>, sqlx::Error> {
    let id = |a: Option<AccountId>| a.map(AccountId::get);
    sqlx::query_as::<_, BatchRow>(
        "SELECT * FROM ledger.transfer_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(cmds.iter().map(|c| c.username.as_str()).collect::<Vec<_>>())
    .bind(cmds.iter().map(|c| c.op.name()).collect::<Vec<_>>())
    .bind(cmds.iter().map(|c| id(c.op.from())).collect::<Vec<_>>())
    .bind(cmds.iter().map(|c| id(c.op.to())).collect::<Vec<_>>())
    .bind(
        cmds.iter()
            .map(|c| c.op.amount().map(|a| a.get()))
            .collect::<Vec<_>>(),
    )
    .bind(
        cmds.iter()
            .map(|c| c.op.currency().map(|c| c.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(max_transfer_amount)
    .bind(
        cmds.iter()
            .map(|c| c.idempotency_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        cmds.iter()
            .map(|c| c.idempotency_key.as_ref().map(|_| c.request_hash()))
            .collect::<Vec<_>>(),
    )
    .bind(cmds.iter().map(|c| c.as_banker).collect::<Vec<_>>())
    .bind(
        cmds.iter()
            .map(|c| c.op.hold().map(|h| h.get()))
            .collect::<Vec<_>>(),
    )
    .bind(cmds.iter().map(|c| c.op.expires_at()).collect::<Vec<_>>())
    .bind(lock_timeout_ms)
    .fetch_all(pool)
    .await
}

/// Of the accounts named by `ids` and the system accounts of `currencies`, those locked by some
/// other transaction right now: (locked ids, currencies whose system account is locked). One
/// statement that never waits (`SKIP LOCKED` returns the free ones; their locks end with it).
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.find_locked_accounts", otel.kind = "client", db.system = "postgresql"))]
pub async fn find_locked_accounts(
    pool: &PgPool,
    ids: &[i64],
    currencies: &[&str],
) -> Result<(Vec<i64>, Vec<String>), sqlx::Error> {
    let free: Vec<(i64, bool, String)> = sqlx::query_as(
        "SELECT a.id, a.kind = 'system', a.currency FROM ledger.accounts a
         WHERE a.id = ANY($1) OR (a.kind = 'system' AND a.currency = ANY($2))
         FOR UPDATE SKIP LOCKED",
    )
    .bind(ids)
    .bind(currencies)
    .fetch_all(pool)
    .await?;
    let locked_ids = ids
        .iter()
        .copied()
        .filter(|id| !free.iter().any(|(free_id, _, _)| free_id == id))
        .collect();
    let locked_currencies = currencies
        .iter()
        .filter(|c| {
            !free
                .iter()
                .any(|(_, system, currency)| *system && currency == *c)
        })
        .map(|c| (*c).to_owned())
        .collect();
    Ok((locked_ids, locked_currencies))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferRow {
    pub id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: String,
    #[sqlx(try_from = "String")]
    pub kind: Kind,
    #[sqlx(try_from = "String")]
    pub status: Status,
    pub hold: bool,
    pub hold_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`TransferRow`], for `SELECT`s of `ledger.transfers` aliased `t`.
const TRANSFER_COLUMNS: &str = "t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, \
    t.kind, t.status, t.hold, t.hold_id, t.expires_at, t.created_by, t.created_at";

/// A transfer with the owners and kinds of both accounts, to decide who may see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferWithOwners {
    #[sqlx(flatten)]
    pub transfer: TransferRow,
    pub from_owner: String,
    #[sqlx(try_from = "String")]
    pub from_kind: AccountKind,
    pub to_owner: String,
    #[sqlx(try_from = "String")]
    pub to_kind: AccountKind,
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRANSFER_COLUMNS},
                fa.owner AS from_owner, fa.kind AS from_kind,
                ta.owner AS to_owner, ta.kind AS to_kind
         FROM ledger.transfers t
         JOIN ledger.accounts fa ON fa.id = t.from_account_id
         JOIN ledger.accounts ta ON ta.id = t.to_account_id
         WHERE t.id = $1"
    )))
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (
            (SELECT {TRANSFER_COLUMNS} FROM ledger.transfers t
             WHERE t.from_account_id = $1 AND ($2::bigint IS NULL OR t.id < $2)
             ORDER BY t.id DESC LIMIT $3)
            UNION ALL
            (SELECT {TRANSFER_COLUMNS} FROM ledger.transfers t
             WHERE t.to_account_id = $1 AND ($2::bigint IS NULL OR t.id < $2)
             ORDER BY t.id DESC LIMIT $3)
         ) t ORDER BY id DESC LIMIT $3"
    )))
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
    (start, end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    size: PageSize,
    token: PageToken,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, account_id, transfer_id, amount, balance_after, created_at
         FROM ledger.entries
         WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)
           AND ($4::timestamptz IS NULL OR created_at >= $4)
           AND ($5::timestamptz IS NULL OR created_at < $5)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(account.get())
    .bind(token.before_id())
    .bind(size.fetch_limit())
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await
}

/// The account's last entry at or before `as_of` (its id and the balance after it), by the
/// index `entries_account_time_idx`: entry times rise with entry ids per account, as the batch
/// function takes them after the account's lock.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.get_balance_at", otel.kind = "client", db.system = "postgresql"))]
pub async fn get_balance_at(
    pool: &PgPool,
    account: AccountId,
    as_of: DateTime<Utc>,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, balance_after FROM ledger.entries
         WHERE account_id = $1 AND created_at <= $2
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(account.get())
    .bind(as_of)
    .fetch_optional(pool)
    .await
}

/// At most `limit` open holds whose timeout has passed, oldest deadline first (the sweep's
/// scan, by the index `transfers_open_holds_by_expiry`).
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.find_expired_holds", otel.kind = "client", db.system = "postgresql"))]
pub async fn find_expired_holds(pool: &PgPool, limit: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM ledger.transfers
         WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= clock_timestamp()
         ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
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

/// The reconciliation reads one snapshot: REPEATABLE READ, read only, so transfers committing
/// meanwhile cannot make a sound ledger look unsound.
pub async fn begin_snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Per currency: Σ balances and the number of accounts.
pub async fn sum_balances_by_currency(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT currency, COALESCE(SUM(balance), 0)::bigint, COUNT(*)
         FROM ledger.accounts GROUP BY currency ORDER BY currency",
    )
    .fetch_all(&mut **tx)
    .await
}

pub async fn count_accounts(tx: &mut Transaction<'_, Postgres>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.accounts")
        .fetch_one(&mut **tx)
        .await
}

/// At most `limit` accounts whose balance differs from the sum of their entries, or customer
/// accounts below zero: (id, balance, Σ entries, customer below zero).
pub async fn find_unbalanced_accounts(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<(i64, i64, i64, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id, a.balance, COALESCE(e.total, 0)::bigint,
                a.kind = 'customer' AND a.balance < 0
         FROM ledger.accounts a
         LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger.entries GROUP BY account_id) e
                ON e.account_id = a.id
         WHERE a.balance <> COALESCE(e.total, 0) OR (a.kind = 'customer' AND a.balance < 0)
         ORDER BY a.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub async fn count_transfers(tx: &mut Transaction<'_, Postgres>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers")
        .fetch_one(&mut **tx)
        .await
}

/// At most `limit` transfers whose entries are wrong: one that moves money (posted, not a hold)
/// needs exactly −amount on its source and +amount on its destination, any other none:
/// (id, number of entries, Σ entries).
pub async fn find_unbalanced_transfers(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, COUNT(e.id), COALESCE(SUM(e.amount), 0)::bigint
         FROM ledger.transfers t
         LEFT JOIN ledger.entries e ON e.transfer_id = t.id
         GROUP BY t.id
         HAVING (t.status = 'posted' AND NOT t.hold) AND (
                COUNT(e.id) <> 2
             OR COALESCE(SUM(e.amount), 0) <> 0
             OR COUNT(*) FILTER (WHERE e.account_id = t.from_account_id AND e.amount = -t.amount) <> 1
             OR COUNT(*) FILTER (WHERE e.account_id = t.to_account_id AND e.amount = t.amount) <> 1)
             OR NOT (t.status = 'posted' AND NOT t.hold) AND COUNT(e.id) <> 0
         ORDER BY t.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub async fn count_holds(tx: &mut Transaction<'_, Postgres>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers WHERE hold")
        .fetch_one(&mut **tx)
        .await
}

/// At most `limit` accounts whose pending debits or credits differ from the open holds on them,
/// or whose available balance is below zero (customers): (id, pending debits, Σ open holds
/// from it, pending credits, Σ open holds to it, customer available below zero).
pub async fn find_accounts_off_their_holds(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<(i64, i64, i64, i64, i64, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id, a.pending_debits, COALESCE(d.total, 0)::bigint,
                a.pending_credits, COALESCE(c.total, 0)::bigint,
                a.kind = 'customer' AND a.balance - a.pending_debits < 0
         FROM ledger.accounts a
         LEFT JOIN (SELECT from_account_id AS id, SUM(amount) AS total FROM ledger.transfers
                    WHERE hold AND status = 'pending' GROUP BY 1) d ON d.id = a.id
         LEFT JOIN (SELECT to_account_id AS id, SUM(amount) AS total FROM ledger.transfers
                    WHERE hold AND status = 'pending' GROUP BY 1) c ON c.id = a.id
         WHERE a.pending_debits <> COALESCE(d.total, 0) OR a.pending_credits <> COALESCE(c.total, 0)
            OR (a.kind = 'customer' AND a.balance - a.pending_debits < 0)
         ORDER BY a.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// At most `limit` holds whose end is wrong: ended more than once, a status that disagrees with
/// what ended it (pending with an end, or ended without one), an end that is not a hold's
/// (`hold_id` naming a transfer that is not a hold), or a post larger than its hold:
/// (hold id, ends, the hold's status, what ended it, its amount, the hold's amount).
pub async fn find_holds_ended_wrongly(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<(i64, i64, String, Option<String>, Option<i64>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT h.id, COUNT(e.id), h.status, MIN(e.status), MAX(e.amount), h.amount
         FROM ledger.transfers h
         LEFT JOIN ledger.transfers e ON e.hold_id = h.id
         WHERE h.hold OR h.id IN (SELECT hold_id FROM ledger.transfers WHERE hold_id IS NOT NULL)
         GROUP BY h.id
         HAVING COUNT(e.id) > 1
             OR NOT h.hold
             OR (h.status = 'pending') <> (COUNT(e.id) = 0)
             OR (COUNT(e.id) = 1 AND MIN(e.status) <> h.status)
             OR MAX(e.amount) > h.amount
         ORDER BY h.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}
