//! Every SQL statement of the transfers service, one function each: the group-commit call that
//! moves money, the reads, the key cleanup and the reconciliation's checks. (The read of one
//! account is shared with the accounts service: `ledger_model::store::get_account`.)

use chrono::{DateTime, Utc};
use ledger_model::{AccountId, AccountKind, PageSize, PageToken};
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::movement::{Command, Kind, Operation, Status};

/// One row of `ledger.transfer_batch`: element `idx` (1-based) failed with `error` (for a
/// transaction with the leg that failed, `failed_leg`), or the outcome.
#[derive(Debug, sqlx::FromRow)]
pub struct BatchRow {
    pub idx: i32,
    pub error: Option<String>,
    pub failed_leg: Option<i32>,
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
    pub reverses_id: Option<i64>,
    pub transaction_id: Option<i64>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub from_entry_id: Option<i64>,
    pub from_entry_amount: Option<i64>,
    pub from_balance_after: Option<i64>,
    pub to_entry_id: Option<i64>,
    pub to_entry_amount: Option<i64>,
    pub to_balance_after: Option<i64>,
    pub reversed_amount: Option<i64>,
    pub original_amount: Option<i64>,
    pub original_reversed_amount: Option<i64>,
    pub replayed: Option<bool>,
}

/// The arrays of one `ledger.transfer_batch` call: element i of every array is one transfer to
/// make (a leg); a request of several legs spans consecutive elements (`leg_counts`).
#[derive(Default)]
struct BatchArrays<'a> {
    user_ids: Vec<uuid::Uuid>,
    usernames: Vec<&'a str>,
    operations: Vec<&'static str>,
    from_ids: Vec<Option<i64>>,
    to_ids: Vec<Option<i64>>,
    amounts: Vec<Option<i64>>,
    currencies: Vec<Option<&'a str>>,
    keys: Vec<Option<&'a str>>,
    hashes: Vec<Option<Vec<u8>>>,
    as_banker: Vec<bool>,
    hold_ids: Vec<Option<i64>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    reversed_ids: Vec<Option<i64>>,
    descriptions: Vec<Option<&'a str>>,
    metadata: Vec<Option<serde_json::Value>>,
    leg_counts: Vec<i32>,
}

impl<'a> BatchArrays<'a> {
    fn of(cmds: &[&'a Command]) -> Self {
        let elements: usize = cmds.iter().map(|c| c.op.leg_count()).sum();
        let mut a = Self::with_capacity(elements);
        let id = |a: Option<AccountId>| a.map(AccountId::get);
        for c in cmds {
            let metadata = c.memo.metadata_json();
            let description = c.memo.description.as_deref();
            let hash = c.idempotency_key.as_ref().map(|_| c.request_hash());
            match &c.op {
                Operation::Transaction { legs } => {
                    for (i, leg) in legs.iter().enumerate() {
                        a.push_common(c, metadata.clone());
                        a.operations.push("transfer");
                        a.from_ids.push(Some(leg.from.get()));
                        a.to_ids.push(Some(leg.to.get()));
                        a.amounts.push(Some(leg.amount.get()));
                        a.currencies.push(Some(leg.currency.as_str()));
                        a.hold_ids.push(None);
                        a.expires_at.push(None);
                        a.reversed_ids.push(None);
                        a.descriptions
                            .push(leg.description.as_deref().or(description));
                        // the request's key and digest on its first element only
                        let first = i == 0;
                        a.keys.push(c.idempotency_key.as_deref().filter(|_| first));
                        a.hashes.push(hash.clone().filter(|_| first));
                        a.leg_counts.push(if first { legs.len() as i32 } else { 0 });
                    }
                }
                op => {
                    a.push_common(c, metadata);
                    a.operations.push(op.name());
                    a.from_ids.push(id(op.from()));
                    a.to_ids.push(id(op.to()));
                    a.amounts.push(op.amount().map(|a| a.get()));
                    a.currencies.push(op.currency().map(|c| c.as_str()));
                    a.hold_ids.push(op.hold().map(|h| h.get()));
                    a.expires_at.push(op.expires_at());
                    a.reversed_ids.push(op.reversed().map(|t| t.get()));
                    a.descriptions.push(description);
                    a.keys.push(c.idempotency_key.as_deref());
                    a.hashes.push(hash);
                    a.leg_counts.push(1);
                }
            }
        }
        a
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            user_ids: Vec::with_capacity(n),
            usernames: Vec::with_capacity(n),
            operations: Vec::with_capacity(n),
            from_ids: Vec::with_capacity(n),
            to_ids: Vec::with_capacity(n),
            amounts: Vec::with_capacity(n),
            currencies: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
            as_banker: Vec::with_capacity(n),
            hold_ids: Vec::with_capacity(n),
            expires_at: Vec::with_capacity(n),
            reversed_ids: Vec::with_capacity(n),
            descriptions: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            leg_counts: Vec::with_capacity(n),
        }
    }

    /// What every element of a request carries.
    fn push_common(&mut self, c: &'a Command, metadata: Option<serde_json::Value>) {
        self.user_ids.push(c.user_id);
        self.usernames.push(c.username.as_str());
        self.as_banker.push(c.as_banker);
        self.metadata.push(metadata);
    }
}

/// Applies a batch of money movements by ONE call of `ledger.transfer_batch`
/// (migrations/20261202000200_ledger_depth.up.sql): one element per transfer to make, a
/// multi-leg transaction spanning one element per leg. One client span per batch round trip,
/// named after the statement, never with parameters.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "ledger.transfer_batch", otel.kind = "client", db.system = "postgresql", batch_size = cmds.len()))]
pub async fn apply_batch(
    conn: &mut sqlx::PgConnection,
    cmds: &[&Command],
    max_transfer_amount: i64,
    lock_timeout_ms: Option<i32>,
) -> Result<Vec<BatchRow>, sqlx::Error> {
    let a = BatchArrays::of(cmds);
    sqlx::query_as::<_, BatchRow>(
        "SELECT * FROM ledger.transfer_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         $13, $14, $15, $16, $17, $18)",
    )
    .bind(a.user_ids)
    .bind(a.usernames)
    .bind(a.operations)
    .bind(a.from_ids)
    .bind(a.to_ids)
    .bind(a.amounts)
    .bind(a.currencies)
    .bind(max_transfer_amount)
    .bind(a.keys)
    .bind(a.hashes)
    .bind(a.as_banker)
    .bind(a.hold_ids)
    .bind(a.expires_at)
    .bind(a.reversed_ids)
    .bind(a.descriptions)
    .bind(a.metadata)
    .bind(a.leg_counts)
    .bind(lock_timeout_ms)
    .fetch_all(conn)
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

/// The row lock a statement gave up on, as PostgreSQL names it in the error's context
/// (`while locking tuple (3,12) in relation "accounts"`): the tuple id, when it was a row of
/// `ledger.accounts`. The batch's one locking statement waits on one row at a time, so this is
/// the row it timed out on, not any row it merely touches.
pub fn account_tuple_waited_on(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    accounts_tuple_in_context(pg.r#where()?)
}

/// The tuple id in an error context's `while locking tuple (b,o) in relation "accounts"` line.
fn accounts_tuple_in_context(context: &str) -> Option<String> {
    let rest = context.split("while locking tuple ").nth(1)?;
    let (tuple, rest) = rest.split_once(' ')?;
    let named_accounts = rest
        .lines()
        .next()
        .is_some_and(|l| l.trim_end() == "in relation \"accounts\"");
    let well_formed = tuple.starts_with('(')
        && tuple.ends_with(')')
        && tuple[1..tuple.len() - 1]
            .split(',')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (named_accounts && well_formed).then(|| tuple.to_owned())
}

/// The account stored at tuple `tid` of `ledger.accounts` (see [`account_tuple_waited_on`]),
/// if that version of the row is still there and still locked by another transaction right
/// now: (id, whether it is a system account, its currency). `None` when the row was updated
/// since (a new version, so the lock that stopped the batch was a short one of another batch)
/// or is free again. Never waits.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.account_at_tuple", otel.kind = "client", db.system = "postgresql"))]
pub async fn locked_account_at_tuple(
    pool: &PgPool,
    tid: &str,
) -> Result<Option<(i64, bool, String)>, sqlx::Error> {
    let row: Option<(i64, bool, String)> = sqlx::query_as(
        "SELECT a.id, a.kind = 'system', a.currency FROM ledger.accounts a
         WHERE a.ctid = $1::text::tid",
    )
    .bind(tid)
    .fetch_optional(pool)
    .await?;
    let Some((id, system, currency)) = row else {
        return Ok(None);
    };
    let (locked, _) = find_locked_accounts(pool, &[id], &[]).await?;
    Ok(locked.contains(&id).then_some((id, system, currency)))
}

/// Locks the accounts named by `ids` and the system accounts of `currencies` for the caller's
/// transaction, ascending id, waiting at most `lock_timeout_ms` for them (SQLSTATE 55P03 when
/// that runs out). The batcher takes a row found held elsewhere this way first, alone, so that
/// while it waits it holds no other account's row (see `domain::batch`).
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.lock_accounts", otel.kind = "client", db.system = "postgresql"))]
pub async fn lock_accounts(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
    currencies: &[&str],
    lock_timeout_ms: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", lock_timeout_ms.max(1)))
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "SELECT a.id FROM ledger.accounts a
         WHERE a.id = ANY($1) OR (a.kind = 'system' AND a.currency = ANY($2))
         ORDER BY a.id
         FOR UPDATE",
    )
    .bind(ids)
    .bind(currencies)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    pub reverses_id: Option<i64>,
    pub reversed_amount: i64,
    pub transaction_id: Option<i64>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`TransferRow`], for `SELECT`s of `ledger.transfers` aliased `t`.
const TRANSFER_COLUMNS: &str = "t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, \
    t.kind, t.status, t.hold, t.hold_id, t.expires_at, t.reverses_id, t.reversed_amount, \
    t.transaction_id, t.description, t.metadata, t.created_by, t.created_at";

/// A transfer with the owners and kinds of both accounts, to decide who may see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferWithOwners {
    #[sqlx(flatten)]
    pub transfer: TransferRow,
    pub from_owner: uuid::Uuid,
    #[sqlx(try_from = "String")]
    pub from_kind: AccountKind,
    pub to_owner: uuid::Uuid,
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
                fa.owner_id AS from_owner, fa.kind AS from_kind,
                ta.owner_id AS to_owner, ta.kind AS to_kind
         FROM ledger.transfers t
         JOIN ledger.accounts fa ON fa.id = t.from_account_id
         JOIN ledger.accounts ta ON ta.id = t.to_account_id
         WHERE t.id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The legs of a multi-leg transaction, in order, with the owners and kinds of their accounts
/// (by the index `transfers_transaction_idx`); empty when there is no such transaction.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.get_transaction", otel.kind = "client", db.system = "postgresql"))]
pub async fn get_transaction(
    pool: &PgPool,
    id: i64,
) -> Result<Vec<TransferWithOwners>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TRANSFER_COLUMNS},
                fa.owner_id AS from_owner, fa.kind AS from_kind,
                ta.owner_id AS to_owner, ta.kind AS to_kind
         FROM ledger.transfers t
         JOIN ledger.accounts fa ON fa.id = t.from_account_id
         JOIN ledger.accounts ta ON ta.id = t.to_account_id
         WHERE t.transaction_id = $1
         ORDER BY t.id"
    )))
    .bind(id)
    .fetch_all(pool)
    .await
}

/// One page of an account's transfers (either direction), newest first. Two index range scans
/// (`transfers_from_idx`, `transfers_to_idx`) merged, each bounded by the page size. With
/// `metadata` (a JSON object of one key and value) only the transfers carrying that pair: the
/// planner may then take them from the GIN index `transfers_metadata_idx` (`@>`, which implies
/// the index's `metadata IS NOT NULL`) instead.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "transfers.list_transfers", otel.kind = "client", db.system = "postgresql"))]
pub async fn list_transfers(
    pool: &PgPool,
    account: AccountId,
    metadata: Option<serde_json::Value>,
    size: PageSize,
    token: PageToken,
) -> Result<Vec<TransferRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (
            (SELECT {TRANSFER_COLUMNS} FROM ledger.transfers t
             WHERE t.from_account_id = $1 AND ($2::bigint IS NULL OR t.id < $2)
               AND ($4::jsonb IS NULL OR t.metadata @> $4)
             ORDER BY t.id DESC LIMIT $3)
            UNION ALL
            (SELECT {TRANSFER_COLUMNS} FROM ledger.transfers t
             WHERE t.to_account_id = $1 AND ($2::bigint IS NULL OR t.id < $2)
               AND ($4::jsonb IS NULL OR t.metadata @> $4)
             ORDER BY t.id DESC LIMIT $3)
         ) t ORDER BY id DESC LIMIT $3"
    )))
    .bind(account.get())
    .bind(token.before_id())
    .bind(size.fetch_limit())
    .bind(metadata)
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
        "DELETE FROM ledger.idempotency_keys WHERE (user_id, key) IN (
            SELECT user_id, key FROM ledger.idempotency_keys
            WHERE created_at < now() - make_interval(hours => $1)
            ORDER BY created_at LIMIT $2)",
    )
    .bind(retention_hours as i32)
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The reconciliation reads one snapshot: REPEATABLE READ, so transfers committing meanwhile
/// cannot make a sound ledger look unsound. Read write: a clean run advances the checkpoint in
/// the same transaction (ledger.reconcile_checkpoint and ledger.reconcile_account_totals only).
pub async fn begin_snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The highest id each ledger sequence has handed out (entries, transfers, transactions), and
/// whether all three hand out one value at a time (CACHE 1: a session caching values could
/// still use one below what the sequence shows).
pub async fn sequence_heads(pool: &PgPool) -> Result<(i64, i64, i64, bool), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE((SELECT last_value FROM pg_sequences WHERE schemaname = 'ledger' AND sequencename = 'entries_id_seq'), 0),
                COALESCE((SELECT last_value FROM pg_sequences WHERE schemaname = 'ledger' AND sequencename = 'transfers_id_seq'), 0),
                COALESCE((SELECT last_value FROM pg_sequences WHERE schemaname = 'ledger' AND sequencename = 'transactions_id_seq'), 0),
                (SELECT bool_and(cache_size = 1) FROM pg_sequences WHERE schemaname = 'ledger'
                    AND sequencename IN ('entries_id_seq', 'transfers_id_seq', 'transactions_id_seq'))",
    )
    .fetch_one(pool)
    .await
}

/// The virtual transaction ids of every transaction now open in this database but the caller's
/// (pg_locks: every transaction holds the lock on its own virtual id from its first statement to
/// its end, whether or not it has written yet).
pub async fn open_transactions(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'virtualxid' AND l.granted AND l.virtualxid IS NOT NULL
           AND a.datname = current_database() AND l.pid <> pg_backend_pid()",
    )
    .fetch_all(pool)
    .await
}

/// How many of `vxids` are still open.
pub async fn still_open(pool: &PgPool, vxids: &[String]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY($1)",
    )
    .bind(vxids)
    .fetch_one(pool)
    .await
}

/// Takes the checkpoint's lock for the transaction (advisory, without waiting): false when
/// another reconciliation holds it.
pub async fn try_lock_checkpoint(tx: &mut Transaction<'_, Postgres>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('ledger.reconcile_checkpoint'))")
        .fetch_one(&mut **tx)
        .await
}

/// The checkpoint: (entry, transfer, transaction watermarks, verified at, full verified at).
pub type Checkpoint = (i64, i64, i64, DateTime<Utc>, DateTime<Utc>);

pub async fn read_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT entry_watermark, transfer_watermark, transaction_watermark, verified_at, full_verified_at
         FROM ledger.reconcile_checkpoint",
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Full run: the account totals again from every entry up to `entry_watermark` (visible in the
/// snapshot); returns how many entries were summed.
pub async fn rebuild_account_totals(
    tx: &mut Transaction<'_, Postgres>,
    entry_watermark: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query("DELETE FROM ledger.reconcile_account_totals")
        .execute(&mut **tx)
        .await?;
    sqlx::query_scalar(
        "WITH s AS (
            INSERT INTO ledger.reconcile_account_totals (account_id, entries_total, entries)
            SELECT account_id, SUM(amount), COUNT(*) FROM ledger.entries WHERE id <= $1
            GROUP BY account_id
            RETURNING entries)
         SELECT COALESCE(SUM(entries), 0)::bigint FROM s",
    )
    .bind(entry_watermark)
    .fetch_one(&mut **tx)
    .await
}

/// Incremental run: adds the entries `from < id <= to` to the account totals (the checkpoint
/// moves from `from` to `to`).
pub async fn advance_account_totals(
    tx: &mut Transaction<'_, Postgres>,
    from: i64,
    to: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger.reconcile_account_totals AS c (account_id, entries_total, entries)
         SELECT account_id, SUM(amount), COUNT(*) FROM ledger.entries WHERE id > $1 AND id <= $2
         GROUP BY account_id
         ON CONFLICT (account_id) DO UPDATE
            SET entries_total = c.entries_total + EXCLUDED.entries_total,
                entries = c.entries + EXCLUDED.entries",
    )
    .bind(from)
    .bind(to)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the watermarks (one row); `full` also stamps `full_verified_at`.
pub async fn write_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    watermarks: (i64, i64, i64),
    full: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger.reconcile_checkpoint AS c
             (id, entry_watermark, transfer_watermark, transaction_watermark, verified_at, full_verified_at)
         VALUES (true, $1, $2, $3, now(), now())
         ON CONFLICT (id) DO UPDATE
            SET entry_watermark = EXCLUDED.entry_watermark,
                transfer_watermark = EXCLUDED.transfer_watermark,
                transaction_watermark = EXCLUDED.transaction_watermark,
                verified_at = EXCLUDED.verified_at,
                full_verified_at = CASE WHEN $4 THEN EXCLUDED.full_verified_at ELSE c.full_verified_at END",
    )
    .bind(watermarks.0)
    .bind(watermarks.1)
    .bind(watermarks.2)
    .bind(full)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many entries have an id above `since` (those the balance check sums beside the totals).
pub async fn count_entries_since(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.entries WHERE id > $1")
        .bind(since)
        .fetch_one(&mut **tx)
        .await
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

/// At most `limit` accounts whose balance differs from the sum of their entries, taken as the
/// checkpoint's total (ledger.reconcile_account_totals, entries up to `since`) plus the entries
/// with an id above `since`; or customer accounts below zero: (id, balance, Σ entries, customer
/// below zero). The entries' sums are MATERIALIZED, planned apart from the `LIMIT`: inlined,
/// the planner took them in account order from `entries_account_idx` to merge with the
/// accounts, reading every entry above `since` from the heap in index order (406 s for the 20
/// million entries of a 10-million-transfer catch-up; see docs/scaling.md).
pub async fn find_unbalanced_accounts(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
    limit: i64,
) -> Result<Vec<(i64, i64, i64, bool)>, sqlx::Error> {
    sqlx::query_as(
        "WITH e AS MATERIALIZED (
            SELECT account_id, SUM(amount) AS total FROM ledger.entries WHERE id > $1
            GROUP BY account_id)
         SELECT a.id, a.balance, (COALESCE(c.entries_total, 0) + COALESCE(e.total, 0))::bigint,
                a.kind = 'customer' AND a.balance < 0
         FROM ledger.accounts a
         LEFT JOIN ledger.reconcile_account_totals c ON c.account_id = a.id
         LEFT JOIN e ON e.account_id = a.id
         WHERE a.balance <> COALESCE(c.entries_total, 0) + COALESCE(e.total, 0)
            OR (a.kind = 'customer' AND a.balance < 0)
         ORDER BY a.id LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Transfers with an id above `since`.
pub async fn count_transfers(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers WHERE id > $1")
        .bind(since)
        .fetch_one(&mut **tx)
        .await
}

/// At most `limit` transfers with an id above `since` whose entries are wrong: one that moves
/// money (posted, not a hold) needs exactly −amount on its source and +amount on its
/// destination, any other none: (id, number of entries, Σ entries).
pub async fn find_unbalanced_transfers(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
    limit: i64,
) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, COUNT(e.id), COALESCE(SUM(e.amount), 0)::bigint
         FROM ledger.transfers t
         LEFT JOIN ledger.entries e ON e.transfer_id = t.id
         WHERE t.id > $1
         GROUP BY t.id
         HAVING (t.status = 'posted' AND NOT t.hold) AND (
                COUNT(e.id) <> 2
             OR COALESCE(SUM(e.amount), 0) <> 0
             OR COUNT(*) FILTER (WHERE e.account_id = t.from_account_id AND e.amount = -t.amount) <> 1
             OR COUNT(*) FILTER (WHERE e.account_id = t.to_account_id AND e.amount = t.amount) <> 1)
             OR NOT (t.status = 'posted' AND NOT t.hold) AND COUNT(e.id) <> 0
         ORDER BY t.id LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Holds with an id above `since`.
pub async fn count_holds(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers WHERE hold AND id > $1")
        .bind(since)
        .fetch_one(&mut **tx)
        .await
}

/// At most `limit` accounts whose pending debits or credits differ from the open holds on them,
/// or whose available balance is below zero (customers): (id, pending debits, Σ open holds
/// from it, pending credits, Σ open holds to it, customer available below zero). Reads the open
/// holds only (transfers_pending_holds_idx), never the history.
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

/// At most `limit` holds whose end is wrong, among the holds with an id above `since` and those
/// ended by a transfer with an id above `since`: ended more than once, a status that disagrees
/// with what ended it (pending with an end, or ended without one), an end that is not a hold's
/// (`hold_id` naming a transfer that is not a hold), or a post larger than its hold:
/// (hold id, ends, the hold's status, what ended it, its amount, the hold's amount).
/// The holds to look at are a UNION of two scans of the ids above `since`: written as one OR
/// (`h.hold AND h.id > $1 OR h.id IN (…)`) the planner can answer it only by reading every
/// transfer of the history (seconds at ten million; see docs/scaling.md).
pub async fn find_holds_ended_wrongly(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
    limit: i64,
) -> Result<Vec<(i64, i64, String, Option<String>, Option<i64>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT h.id, COUNT(e.id), h.status, MIN(e.status), MAX(e.amount), h.amount
         FROM (SELECT id FROM ledger.transfers WHERE hold AND id > $1
               UNION
               SELECT hold_id FROM ledger.transfers WHERE hold_id IS NOT NULL AND id > $1) s
         JOIN ledger.transfers h ON h.id = s.id
         LEFT JOIN ledger.transfers e ON e.hold_id = h.id
         GROUP BY h.id
         HAVING COUNT(e.id) > 1
             OR NOT h.hold
             OR (h.status = 'pending') <> (COUNT(e.id) = 0)
             OR (COUNT(e.id) = 1 AND MIN(e.status) <> h.status)
             OR MAX(e.amount) > h.amount
         ORDER BY h.id LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Multi-leg transactions with an id above `since`.
pub async fn count_transactions(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transactions WHERE id > $1")
        .bind(since)
        .fetch_one(&mut **tx)
        .await
}

/// At most `limit` multi-leg transactions with an id above `since` whose legs are not all
/// there, all posted and all in one direction of money (each a transfer that moved money):
/// (id, leg count, legs found, posted legs).
pub async fn find_incomplete_transactions(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
    limit: i64,
) -> Result<Vec<(i64, i32, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT x.id, x.leg_count, COUNT(t.id),
                COUNT(t.id) FILTER (WHERE t.status = 'posted' AND NOT t.hold AND t.hold_id IS NULL
                                      AND t.reverses_id IS NULL)
         FROM ledger.transactions x
         LEFT JOIN ledger.transfers t ON t.transaction_id = x.id
         WHERE x.id > $1
         GROUP BY x.id, x.leg_count
         HAVING COUNT(t.id) <> x.leg_count
             OR COUNT(t.id) FILTER (WHERE t.status = 'posted' AND NOT t.hold AND t.hold_id IS NULL
                                      AND t.reverses_id IS NULL) <> x.leg_count
         ORDER BY x.id LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Reversed transfers and reversals with an id above `since`.
pub async fn count_reversed_transfers(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM ledger.transfers
         WHERE id > $1 AND (reversed_amount > 0 OR reverses_id IS NOT NULL)",
    )
    .bind(since)
    .fetch_one(&mut **tx)
    .await
}

/// At most `limit` transfers reversed wrongly, among the reversed transfers with an id above
/// `since` and those a reversal with an id above `since` reverses: their reversals sum past
/// their amount or differ from their `reversed_amount`, or a reversal that does not mirror what
/// it reverses (the opposite direction, the same currency, a transfer that moved money and is
/// no reversal itself): (id, amount, reversed_amount, Σ reversals, reversals that do not
/// mirror it). The transfers to look at are a UNION of two scans of the ids above `since`, not
/// an OR, for the reason given at [`find_holds_ended_wrongly`].
pub async fn find_transfers_reversed_wrongly(
    tx: &mut Transaction<'_, Postgres>,
    since: i64,
    limit: i64,
) -> Result<Vec<(i64, i64, i64, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.amount, o.reversed_amount, COALESCE(SUM(r.amount), 0)::bigint,
                COUNT(r.id) FILTER (WHERE r.from_account_id <> o.to_account_id
                                       OR r.to_account_id <> o.from_account_id
                                       OR r.currency <> o.currency
                                       OR o.reverses_id IS NOT NULL OR o.hold
                                       OR o.status <> 'posted')
         FROM (SELECT id FROM ledger.transfers WHERE reversed_amount > 0 AND id > $1
               UNION
               SELECT reverses_id FROM ledger.transfers WHERE reverses_id IS NOT NULL AND id > $1) s
         JOIN ledger.transfers o ON o.id = s.id
         LEFT JOIN ledger.transfers r ON r.reverses_id = o.id
         GROUP BY o.id
         HAVING COALESCE(SUM(r.amount), 0) <> o.reversed_amount
             OR o.reversed_amount > o.amount
             OR COUNT(r.id) FILTER (WHERE r.from_account_id <> o.to_account_id
                                       OR r.to_account_id <> o.from_account_id
                                       OR r.currency <> o.currency
                                       OR o.reverses_id IS NOT NULL OR o.hold
                                       OR o.status <> 'posted') > 0
         ORDER BY o.id LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

#[cfg(test)]
mod tests {
    use super::accounts_tuple_in_context;

    #[test]
    fn the_tuple_a_lock_wait_gave_up_on_is_read_from_the_error_context() {
        let context = "while locking tuple (3,12) in relation \"accounts\"\n\
                       SQL statement \"SELECT * FROM ledger.accounts a ... FOR UPDATE\"\n\
                       PL/pgSQL function ledger.transfer_batch(...) line 96 at FOR over SELECT rows";
        assert_eq!(
            accounts_tuple_in_context(context).as_deref(),
            Some("(3,12)")
        );
        // another relation's row (a hold's transfer), or no lock wait at all: nothing
        assert_eq!(
            accounts_tuple_in_context("while locking tuple (0,7) in relation \"transfers\""),
            None
        );
        assert_eq!(
            accounts_tuple_in_context("PL/pgSQL function f() line 1 at RAISE"),
            None
        );
        // only a well-formed tuple id is handed on to SQL
        assert_eq!(
            accounts_tuple_in_context("while locking tuple (1,2);x in relation \"accounts\""),
            None
        );
    }
}
