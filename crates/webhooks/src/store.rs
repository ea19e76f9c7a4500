//! Every SQL statement and Redis command of the webhooks service, one function each.

use chrono::{DateTime, Utc};
use redis::{
    RedisResult,
    aio::MultiplexedConnection,
    streams::{StreamAutoClaimReply, StreamId},
};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

// --- endpoints --------------------------------------------------------------------------------

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub url: String,
    pub all_accounts: bool,
    pub created_at: DateTime<Utc>,
}

/// Inserts an endpoint unless its owner already has `max_per_user`; `None` when at the limit.
/// One statement, so two concurrent registrations cannot both pass the count.
pub async fn insert_endpoint<'e>(
    db: impl PgExecutor<'e>,
    owner_id: Uuid,
    url: &str,
    secret: &str,
    all_accounts: bool,
    max_per_user: i64,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO webhooks.endpoints (owner_id, url, secret, all_accounts)
         SELECT $1, $2, $3, $4
         WHERE (SELECT count(*) FROM webhooks.endpoints WHERE owner_id = $1) < $5
         RETURNING id, owner_id, url, all_accounts, created_at",
    )
    .bind(owner_id)
    .bind(url)
    .bind(secret)
    .bind(all_accounts)
    .bind(max_per_user)
    .fetch_optional(db)
    .await
}

pub async fn list_endpoints<'e>(
    db: impl PgExecutor<'e>,
    owner_id: Uuid,
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, owner_id, url, all_accounts, created_at FROM webhooks.endpoints
         WHERE owner_id = $1 ORDER BY created_at DESC, id",
    )
    .bind(owner_id)
    .fetch_all(db)
    .await
}

/// Deletes the owner's endpoint; false when there is none of theirs with that id.
pub async fn delete_endpoint<'e>(
    db: impl PgExecutor<'e>,
    owner_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM webhooks.endpoints WHERE id = $1 AND owner_id = $2")
        .bind(id)
        .bind(owner_id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Whether the endpoint exists and is the owner's.
pub async fn endpoint_is_owned<'e>(
    db: impl PgExecutor<'e>,
    owner_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhooks.endpoints WHERE id = $1 AND owner_id = $2)",
    )
    .bind(id)
    .bind(owner_id)
    .fetch_one(db)
    .await
}

// --- deliveries -------------------------------------------------------------------------------

/// One delivery per endpoint that wants the event: the banker's (`all_accounts`) and those of the
/// owners of its accounts. A duplicate stream entry (the relay published again) inserts nothing.
/// Returns how many deliveries were made.
pub async fn insert_deliveries<'e>(
    db: impl PgExecutor<'e>,
    event_id: Uuid,
    event_type: &str,
    body: &str,
    owner_ids: &[Uuid],
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhooks.deliveries (endpoint_id, event_id, event_type, body)
         SELECT id, $1, $2, $3 FROM webhooks.endpoints
         WHERE all_accounts OR owner_id = ANY($4)
         ON CONFLICT ON CONSTRAINT one_delivery_per_endpoint_and_event DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(body)
    .bind(owner_ids)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.event_id, d.event_type, d.status, \
                                d.attempts, d.last_error, d.next_attempt_at, d.created_at, \
                                d.delivered_at";

/// A page of an endpoint's deliveries, newest first, below `before_id`.
pub async fn list_deliveries<'e>(
    db: impl PgExecutor<'e>,
    endpoint_id: Uuid,
    dead_only: bool,
    before_id: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhooks.deliveries d
         WHERE d.endpoint_id = $1 AND d.id < $2 AND (NOT $3 OR d.status = 'dead')
         ORDER BY d.id DESC LIMIT $4"
    )))
    .bind(endpoint_id)
    .bind(before_id)
    .bind(dead_only)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The owner of the endpoint a delivery goes to; `None` when there is no such delivery.
pub async fn delivery_owner<'e>(
    db: impl PgExecutor<'e>,
    delivery_id: i64,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT e.owner_id FROM webhooks.deliveries d
         JOIN webhooks.endpoints e ON e.id = d.endpoint_id WHERE d.id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(db)
    .await
}

/// Makes the owner's delivery pending again, due now, its attempts reset; `None` when it is not
/// theirs.
pub async fn replay_delivery<'e>(
    db: impl PgExecutor<'e>,
    owner_id: Uuid,
    delivery_id: i64,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhooks.deliveries d
         SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL
         FROM webhooks.endpoints e
         WHERE d.id = $1 AND e.id = d.endpoint_id AND e.owner_id = $2
         RETURNING {DELIVERY_COLUMNS}"
    )))
    .bind(delivery_id)
    .bind(owner_id)
    .fetch_optional(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The latest `limit` attempts of a delivery, oldest first.
pub async fn list_attempts<'e>(
    db: impl PgExecutor<'e>,
    delivery_id: i64,
    limit: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempted_at, status_code, error, duration_ms FROM (
             SELECT id, attempted_at, status_code, error, duration_ms FROM webhooks.attempts
             WHERE delivery_id = $1 ORDER BY id DESC LIMIT $2) latest
         ORDER BY id",
    )
    .bind(delivery_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A delivery taken to be sent, with what sending needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub url: String,
    pub secret: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub body: String,
    pub attempts: i32,
}

/// Takes up to `limit` due deliveries and leases them for `lease_ms` (their next_attempt_at moves
/// past the attempt), so another replica's deliverer skips them (SKIP LOCKED while this runs, the
/// lease after). A replica that dies mid-attempt leaves the delivery to be taken again when the
/// lease ends: at least once.
pub async fn take_due_deliveries(
    db: &PgPool,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT id FROM webhooks.deliveries
             WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
         UPDATE webhooks.deliveries d
         SET next_attempt_at = now() + make_interval(secs => $2::double precision / 1000)
         FROM due, webhooks.endpoints e
         WHERE d.id = due.id AND e.id = d.endpoint_id
         RETURNING d.id, e.url, e.secret, d.event_id, d.event_type, d.body, d.attempts",
    )
    .bind(limit)
    .bind(lease_ms)
    .fetch_all(db)
    .await
}

/// Records one attempt and its outcome in one transaction: delivered, retried at `next_at`, or
/// dead (`next_at` `None` and `dead`).
#[allow(clippy::too_many_arguments)]
pub async fn record_attempt(
    db: &PgPool,
    delivery_id: i64,
    status_code: Option<i32>,
    error: Option<&str>,
    duration_ms: i64,
    delivered: bool,
    dead: bool,
    next_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO webhooks.attempts (delivery_id, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(delivery_id)
    .bind(status_code)
    .bind(error)
    .bind(duration_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhooks.deliveries
         SET attempts = attempts + 1,
             status = CASE WHEN $2 THEN 'delivered' WHEN $3 THEN 'dead' ELSE 'pending' END,
             delivered_at = CASE WHEN $2 THEN now() END,
             last_error = coalesce($4, last_error),
             next_attempt_at = $5
         WHERE id = $1",
    )
    .bind(delivery_id)
    .bind(delivered)
    .bind(dead)
    .bind(error)
    .bind(next_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

// --- the ledger-events stream (Redis) ---------------------------------------------------------

/// Creates the consumer group (and the stream) if missing, from the stream's beginning, so events
/// relayed before the first webhooks replica started are not skipped.
pub async fn create_group(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// XREADGROUP from `id`: `0` re-reads this consumer's own unacknowledged entries (after a
/// failure or a restart), `>` waits up to `block_ms` for new ones.
pub async fn read_entries(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    id: &str,
    block_ms: u64,
) -> RedisResult<Vec<StreamId>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if id == ">" {
        cmd.arg("BLOCK").arg(block_ms);
    }
    let reply: Option<redis::streams::StreamReadReply> = cmd
        .arg("STREAMS")
        .arg(stream)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

/// One XAUTOCLAIM step from `cursor`: entries another consumer left pending for `min_idle_ms`
/// become ours.
pub async fn claim_idle_entries(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle_ms: u64,
    cursor: &str,
    count: usize,
) -> RedisResult<StreamAutoClaimReply> {
    redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

pub async fn ack_entries(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    ids: &[String],
) -> RedisResult<()> {
    redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query_async(conn)
        .await
}
