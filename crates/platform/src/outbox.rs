//! The transactional-outbox relay, once for every service that has an outbox: it moves the rows of
//! an outbox table, oldest first, to Redis Streams and marks them published. Auth runs it for
//! `auth.outbox` (user events), transfers for `ledger.outbox` (ledger events).
//!
//! - Woken by `NOTIFY <channel>` (sent by the writing transaction on commit), with a polling
//!   fallback when notifications are missed or the listener connection is down. A writer may
//!   leave the NOTIFY out while the relay is busy (the ledger's outbox does: each NOTIFY makes
//!   commits queue on PostgreSQL's notification lock), so for [`BUSY_FOR`] after a drain that
//!   moved rows the relay also polls every [`BUSY_POLL`]: a writer that looked while rows were
//!   still unpublished and committed after the relay's last read is picked up by that.
//! - Safe with several replicas: a transaction-scoped advisory lock (one key per outbox) lets one
//!   relay publish at a time, so a stream keeps the outbox's id order, and rows are taken with
//!   `FOR UPDATE SKIP LOCKED`.
//! - At least once: rows are marked published only after `XADD` succeeded (the batch is one
//!   `MULTI`/`EXEC`). If the commit then fails (or the process dies in between), the batch is
//!   published again with the same `event_id`s; consumers deduplicate by `event_id`. If Redis is
//!   down, rows stay and are retried with capped exponential backoff.
//! - Published rows are deleted after `relay.retention_secs`.
//!
//! An outbox table has the columns `id bigserial` (the publishing order), `event_id uuid`,
//! `event_type text`, `payload jsonb`, `created_at` and `published_at timestamptz` (NULL until
//! published). Its name comes from code ([`Outbox::table`]), never from input: it is the one part
//! of these statements that cannot be a bind parameter.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use serde::{Deserialize, Serialize};
// the table name is a constant of code (see the module's doc), hence `AssertSqlSafe`
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor, PgPool, postgres::PgListener};
use uuid::Uuid;

use crate::{
    Shutdown,
    config::{RedisConfig, ensure_in_range},
};

/// Reserved payload key holding the trace context inside an outbox row (never published in the
/// payload: the relay moves it to the stream entry's own `traceparent` field).
pub const TRACEPARENT_KEY: &str = "_traceparent";

/// Which outbox a relay drains: its table, the channel its writers NOTIFY, and the advisory lock
/// key that makes one relay at a time publish it.
#[derive(Debug, Clone, Copy)]
pub struct Outbox {
    /// Schema-qualified table, e.g. `auth.outbox`.
    pub table: &'static str,
    /// The LISTEN/NOTIFY channel, e.g. `auth_outbox`.
    pub channel: &'static str,
    /// Arbitrary constant naming this outbox's relay among advisory locks.
    pub lock_key: i64,
}

/// Where the entries go: every event to `default`, except the event types listed in `routes`,
/// which go to their own stream (auth sends `session.revoked` to the revocations stream).
#[derive(Debug, Clone)]
pub struct Streams {
    pub default: String,
    pub routes: Vec<(String, String)>,
}

impl Streams {
    /// Every event to one stream.
    pub fn single(stream: impl Into<String>) -> Self {
        Self {
            default: stream.into(),
            routes: Vec::new(),
        }
    }

    /// Sends `event_type` to `stream` instead of the default.
    pub fn route(mut self, event_type: impl Into<String>, stream: impl Into<String>) -> Self {
        self.routes.push((event_type.into(), stream.into()));
        self
    }

    fn for_event(&self, event_type: &str) -> &str {
        self.routes
            .iter()
            .find(|(t, _)| t == event_type)
            .map_or(self.default.as_str(), |(_, s)| s.as_str())
    }
}

/// The relay's settings (the `relay.*` keys of the services that run one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Run the relay inside this process.
    pub enabled: bool,
    /// Redis for the stream; `None` means the service's `redis` settings.
    pub redis: Option<RedisConfig>,
    /// Rows moved per transaction.
    pub batch_size: i64,
    /// Polling fallback when no NOTIFY arrives (for 5 s after a drain that moved rows the relay
    /// polls every 100 ms: writers may leave NOTIFY out while it is busy).
    pub poll_interval_ms: u64,
    /// Approximate bound of the stream (`XADD MAXLEN ~`).
    pub stream_maxlen: u64,
    /// First retry delay after a failure; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    /// The cap of that delay, and so how long events wait after Redis answers again: small (one
    /// cheap attempt a second against a Redis that is down), so mail is not held back by a
    /// backoff grown during a long outage.
    pub backoff_max_ms: u64,
    /// Published rows older than this are deleted.
    pub retention_secs: u64,
    /// How often published rows are cleaned up.
    pub cleanup_interval_secs: u64,
    /// Rows deleted per cleanup statement.
    pub cleanup_batch_size: i64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis: None,
            batch_size: 100,
            poll_interval_ms: 2_000,
            stream_maxlen: 100_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 1_000,
            retention_secs: 7 * 24 * 3600,
            cleanup_interval_secs: 3600,
            cleanup_batch_size: 1_000,
        }
    }
}

/// How soon the relay reads again while it is busy: for [`BUSY_FOR`] after a drain that moved
/// rows (see the module docs).
pub const BUSY_POLL: Duration = Duration::from_millis(100);

/// How long after a drain that moved rows the relay keeps polling every [`BUSY_POLL`]: longer
/// than a writing transaction takes from its outbox insert to its commit.
pub const BUSY_FOR: Duration = Duration::from_secs(5);

const HOUR_MS: u64 = 3_600_000;
const DAY_SECS: u64 = 86_400;
const YEAR_SECS: u64 = 365 * DAY_SECS;

impl RelayConfig {
    /// The relay's part of a service's `Config::validate`, its keys under `relay.`; [`run`]
    /// checks it again, as tests and tools start a relay with settings built in code.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(redis) = &self.redis {
            validate_redis("relay.redis", redis)?;
        }
        ensure_in_range("relay.batch_size", self.batch_size, 1..=10_000)?;
        ensure_in_range("relay.poll_interval_ms", self.poll_interval_ms, 1..=HOUR_MS)?;
        ensure_in_range("relay.stream_maxlen", self.stream_maxlen, 1..=100_000_000)?;
        ensure_in_range(
            "relay.backoff_initial_ms",
            self.backoff_initial_ms,
            1..=HOUR_MS,
        )?;
        ensure_in_range("relay.backoff_max_ms", self.backoff_max_ms, 1..=HOUR_MS)?;
        anyhow::ensure!(
            self.backoff_initial_ms <= self.backoff_max_ms,
            "relay.backoff_initial_ms must be at most relay.backoff_max_ms ({} > {})",
            self.backoff_initial_ms,
            self.backoff_max_ms
        );
        // 0 is allowed: published rows are deleted at the next cleanup
        ensure_in_range("relay.retention_secs", self.retention_secs, 0..=YEAR_SECS)?;
        ensure_in_range(
            "relay.cleanup_interval_secs",
            self.cleanup_interval_secs,
            1..=7 * DAY_SECS,
        )?;
        ensure_in_range(
            "relay.cleanup_batch_size",
            self.cleanup_batch_size,
            1..=100_000,
        )?;
        Ok(())
    }
}

/// The Redis settings a relay relies on: `timeout_ms` bounds every publish (0 would make each
/// fail at once).
pub fn validate_redis(key: &str, redis: &RedisConfig) -> anyhow::Result<()> {
    ensure_in_range(&format!("{key}.timeout_ms"), redis.timeout_ms, 1..=60_000)?;
    ensure_in_range(&format!("{key}.pool_size"), redis.pool_size, 1..=1_024)
}

/// Runs the relay of `outbox` until `shutdown`. `redis` is the pool of the Redis the streams live
/// in, built from `redis_cfg` (whose timeout bounds each publish). Bad settings are refused here as
/// at start-up (a zero poll interval would spin), never clamped.
pub async fn run(
    db: PgPool,
    redis: Pool,
    redis_cfg: RedisConfig,
    outbox: Outbox,
    streams: Streams,
    cfg: RelayConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    cfg.validate()?;
    anyhow::ensure!(
        redis_cfg.timeout_ms >= 1,
        "the relay's redis timeout_ms must be at least 1"
    );
    let relay = Relay {
        outbox,
        streams,
        redis_timeout: Duration::from_millis(redis_cfg.timeout_ms),
        redis,
        db,
        cfg,
    };
    relay.run(shutdown).await;
    Ok(())
}

struct Relay {
    db: PgPool,
    redis: Pool,
    redis_timeout: Duration,
    outbox: Outbox,
    streams: Streams,
    cfg: RelayConfig,
}

impl Relay {
    async fn run(&self, shutdown: Shutdown) {
        tracing::info!(outbox = self.outbox.table, stream = %self.streams.default, "outbox relay started");
        let initial = Duration::from_millis(self.cfg.backoff_initial_ms);
        let max = Duration::from_millis(self.cfg.backoff_max_ms);
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let cleanup_every = Duration::from_secs(self.cfg.cleanup_interval_secs);
        let mut backoff = initial;
        let mut listener: Option<PgListener> = None;
        let mut last_cleanup: Option<Instant> = None;
        let mut last_moved: Option<Instant> = None;

        while !shutdown.is_triggered() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let (wait, failing) = match self.drain(&shutdown).await {
                Ok(moved) => {
                    backoff = initial;
                    if moved > 0 {
                        last_moved = Some(Instant::now());
                    }
                    let busy = last_moved.is_some_and(|t| t.elapsed() < BUSY_FOR);
                    (if busy { BUSY_POLL.min(poll) } else { poll }, false)
                }
                Err(e) => {
                    tracing::warn!(outbox = self.outbox.table, error = %format!("{e:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay: publishing failed; rows kept for a retry");
                    let w = backoff;
                    backoff = (backoff * 2).min(max);
                    (w, true)
                }
            };
            self.report_backlog().await;
            if last_cleanup.is_none_or(|t| t.elapsed() >= cleanup_every) {
                self.cleanup().await;
                last_cleanup = Some(Instant::now());
            }
            // After a failure only the backoff timer may wake us: a burst of NOTIFYs must not
            // turn into a retry storm against a Redis that is down.
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
                r = recv(&mut listener), if !failing => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "outbox relay: LISTEN connection lost; polling");
                        listener = None;
                    }
                }
            }
        }
        tracing::info!(outbox = self.outbox.table, "outbox relay stopped");
    }

    async fn listen(&self) -> Option<PgListener> {
        listen_outbox(&self.db, self.outbox.channel)
            .await
            .map_err(|e| tracing::warn!(error = %e, "outbox relay: cannot LISTEN; polling"))
            .ok()
    }

    /// Publishes batches until nothing is left (or shutdown). Returns how many rows it moved.
    async fn drain(&self, shutdown: &Shutdown) -> anyhow::Result<u64> {
        let mut total = 0;
        while !shutdown.is_triggered() {
            let n = self.publish_batch().await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        Ok(total)
    }

    async fn publish_batch(&self) -> anyhow::Result<u64> {
        let mut tx = self.db.begin().await?;
        if !try_lock_relay(&mut tx, self.outbox.lock_key).await? {
            // another replica is publishing; it drains everything, including what woke us
            return Ok(0);
        }
        let rows = lock_unpublished(&mut tx, self.outbox.table, self.cfg.batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        tokio::time::timeout(
            self.redis_timeout,
            add_stream_entries(&self.redis, &self.streams, self.cfg.stream_maxlen, &rows),
        )
        .await
        .context("redis timed out")?
        .context("XADD")?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        mark_published(&mut tx, self.outbox.table, &ids).await?;
        tx.commit().await?;
        let n = rows.len() as u64;
        metrics::counter!("outbox_published_total", "outbox" => self.outbox.table).increment(n);
        tracing::debug!(
            outbox = self.outbox.table,
            count = n,
            "outbox relay: published"
        );
        Ok(n)
    }

    async fn report_backlog(&self) {
        match outbox_backlog(&self.db, self.outbox.table).await {
            Ok(n) => metrics::gauge!("outbox_backlog", "outbox" => self.outbox.table).set(n as f64),
            Err(e) => tracing::debug!(error = %e, "outbox relay: cannot count the backlog"),
        }
    }

    async fn cleanup(&self) {
        let retention = chrono::Duration::seconds(
            i64::try_from(self.cfg.retention_secs).unwrap_or(i64::MAX / 1000),
        );
        let cutoff = Utc::now() - retention;
        let limit = self.cfg.cleanup_batch_size;
        loop {
            match delete_published_before(&self.db, self.outbox.table, cutoff, limit).await {
                Ok(n) if n >= limit as u64 => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(
                            outbox = self.outbox.table,
                            deleted = n,
                            "outbox relay: old published rows deleted"
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: cleanup failed");
                    break;
                }
            }
        }
    }
}

async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => l.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

// --- the relay's statements -----------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    event_type: String,
    /// The payload without [`TRACEPARENT_KEY`].
    payload: String,
    traceparent: Option<String>,
}

/// Listens for `channel` on a connection of its own.
async fn listen_outbox(db: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Takes the relay's turn for the rest of the transaction; false when another relay has it.
async fn try_lock_relay(conn: &mut PgConnection, lock_key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock_key)
        .fetch_one(conn)
        .await
}

/// Locks the oldest unpublished rows; rows another relay holds are skipped.
async fn lock_unpublished(
    conn: &mut PgConnection,
    table: &str,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, event_id, event_type, (payload - $2)::text AS payload,
                payload->>$2 AS traceparent
         FROM {table}
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(limit)
    .bind(TRACEPARENT_KEY)
    .fetch_all(conn)
    .await
}

async fn mark_published(
    conn: &mut PgConnection,
    table: &str,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET published_at = now() WHERE id = ANY($1)"
    )))
    .bind(ids)
    .execute(conn)
    .await
    .map(|_| ())
}

async fn outbox_backlog<'e>(db: impl PgExecutor<'e>, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE published_at IS NULL"
    )))
    .fetch_one(db)
    .await
}

/// Deletes up to `limit` rows published before `cutoff`; returns how many.
async fn delete_published_before<'e>(
    db: impl PgExecutor<'e>,
    table: &str,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE id IN (
             SELECT id FROM {table} WHERE published_at < $1 ORDER BY published_at LIMIT $2)"
    )))
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// Appends one entry per row, all or none (one MULTI/EXEC), keeping each stream at about `maxlen`
/// entries (`XADD MAXLEN ~`). Fields: `event_id`, `event_type`, `payload`, and `traceparent` when
/// the row has one.
async fn add_stream_entries(
    redis: &Pool,
    streams: &Streams,
    maxlen: u64,
    rows: &[OutboxRow],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for r in rows {
        pipe.cmd("XADD")
            .arg(streams.for_event(&r.event_type))
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*")
            .arg("event_id")
            .arg(r.event_id.to_string())
            .arg("event_type")
            .arg(&r.event_type)
            .arg("payload")
            .arg(&r.payload);
        if let Some(tp) = &r.traceparent {
            pipe.arg("traceparent").arg(tp);
        }
        pipe.ignore();
    }
    let mut conn = redis
        .get()
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
    pipe.query_async(&mut *conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_type_with_a_route_goes_to_its_stream_and_the_rest_to_the_default() {
        let streams = Streams::single("p:events:users").route("session.revoked", "p:revoked");
        assert_eq!(streams.for_event("session.revoked"), "p:revoked");
        assert_eq!(streams.for_event("user.created"), "p:events:users");
    }

    #[test]
    fn a_bad_relay_setting_is_refused_naming_its_key() {
        let err = RelayConfig {
            batch_size: 0,
            ..RelayConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("relay.batch_size"), "{err}");
        assert!(RelayConfig::default().validate().is_ok());
    }
}
