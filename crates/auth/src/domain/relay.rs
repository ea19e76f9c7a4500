//! The outbox relay: moves `auth.outbox` rows, oldest first, to the Redis Stream
//! `{redis.key_prefix}events:users` (revoked sessions to `{redis.key_prefix}auth:revoked_sessions`,
//! see `platform::revocations`) and marks them published.
//!
//! - Woken by `NOTIFY auth_outbox` (sent by the writing transaction on commit), with a polling
//!   fallback when notifications are missed or the listener connection is down.
//! - Safe with several auth replicas: a transaction-scoped advisory lock lets one relay publish at a
//!   time (so the stream keeps the outbox order), and rows are taken with `FOR UPDATE SKIP LOCKED`.
//! - At least once: rows are marked published only after `XADD` succeeded (the batch is one
//!   `MULTI`/`EXEC`). If the commit then fails, the batch is published again; the mailer
//!   deduplicates by `event_id`. If Redis is down, rows stay and are retried with capped
//!   exponential backoff.
//! - Published rows are deleted after `relay.retention_secs`.

use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_redis::Pool;
use platform::{Shutdown, config::RedisConfig};
use sqlx::{PgPool, postgres::PgListener};

use crate::{config::RelayConfig, store};

/// The user-events stream key for a Redis key prefix.
pub use crate::store::stream_key;

/// Runs the relay until `shutdown`. `redis` is the pool of the Redis the stream lives in, built
/// from `redis_cfg` (whose key prefix names the stream and whose timeout bounds each publish).
/// Bad settings are refused here as at start-up (a zero poll interval would spin), never clamped.
pub async fn run(
    db: PgPool,
    redis: Pool,
    redis_cfg: RedisConfig,
    cfg: RelayConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    cfg.validate()?;
    anyhow::ensure!(
        redis_cfg.timeout_ms >= 1,
        "the relay's redis timeout_ms must be at least 1"
    );
    let relay = Relay {
        stream: stream_key(&redis_cfg.key_prefix),
        revocations_stream: platform::revocations::stream_key(&redis_cfg.key_prefix),
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
    stream: String,
    revocations_stream: String,
    cfg: RelayConfig,
}

impl Relay {
    async fn run(&self, shutdown: Shutdown) {
        tracing::info!(stream = %self.stream, "outbox relay started");
        let initial = Duration::from_millis(self.cfg.backoff_initial_ms);
        let max = Duration::from_millis(self.cfg.backoff_max_ms);
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let cleanup_every = Duration::from_secs(self.cfg.cleanup_interval_secs);
        let mut backoff = initial;
        let mut listener: Option<PgListener> = None;
        let mut last_cleanup: Option<Instant> = None;

        while !shutdown.is_triggered() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let wait = match self.drain(&shutdown).await {
                Ok(_) => {
                    backoff = initial;
                    poll
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay: publishing failed; rows kept for a retry");
                    let w = backoff;
                    backoff = (backoff * 2).min(max);
                    w
                }
            };
            self.report_backlog().await;
            if last_cleanup.is_none_or(|t| t.elapsed() >= cleanup_every) {
                self.cleanup().await;
                last_cleanup = Some(Instant::now());
            }
            // After a failure only the backoff timer may wake us: a burst of NOTIFYs must not
            // turn into a retry storm against a Redis that is down.
            let failing = wait != poll;
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
        tracing::info!("outbox relay stopped");
    }

    async fn listen(&self) -> Option<PgListener> {
        store::listen_outbox(&self.db)
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
        if !store::try_lock_relay(&mut tx).await? {
            // another replica is publishing; it drains everything, including what woke us
            return Ok(0);
        }
        let rows = store::lock_unpublished(&mut tx, self.cfg.batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        tokio::time::timeout(
            self.redis_timeout,
            store::add_stream_entries(
                &self.redis,
                &self.stream,
                &self.revocations_stream,
                self.cfg.stream_maxlen,
                &rows,
            ),
        )
        .await
        .context("redis timed out")?
        .context("XADD")?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        store::mark_published(&mut tx, &ids).await?;
        tx.commit().await?;
        let n = rows.len() as u64;
        metrics::counter!("outbox_published_total").increment(n);
        tracing::debug!(count = n, "outbox relay: published");
        Ok(n)
    }

    async fn report_backlog(&self) {
        match store::outbox_backlog(&self.db).await {
            Ok(n) => metrics::gauge!("outbox_backlog").set(n as f64),
            Err(e) => tracing::debug!(error = %e, "outbox relay: cannot count the backlog"),
        }
    }

    async fn cleanup(&self) {
        let retention = chrono::Duration::seconds(
            i64::try_from(self.cfg.retention_secs).unwrap_or(i64::MAX / 1000),
        );
        let cutoff = chrono::Utc::now() - retention;
        let limit = self.cfg.cleanup_batch_size;
        loop {
            match store::delete_published_before(&self.db, cutoff, limit).await {
                Ok(n) if n >= limit as u64 => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "outbox relay: old published rows deleted");
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
