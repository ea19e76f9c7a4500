//! The consumer-group loop on the ledger-events stream: each entry becomes one delivery per
//! endpoint that wants it (`store::insert_deliveries`, one statement), then is acknowledged. An
//! entry is acknowledged only after its deliveries are committed, so a crash in between reads it
//! again (from this consumer's pending entries, or another replica's XAUTOCLAIM after
//! `consumer.claim_idle_ms`) and the unique (endpoint, event) pair makes the second insert a
//! no-op: at least once into the deliveries, never twice. A malformed entry is logged, counted
//! and acknowledged (it would fail the same way forever).

use std::time::{Duration, Instant};

use platform::Shutdown;
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection, streams::StreamId};
use sqlx::PgPool;

use crate::{config::ConsumerConfig, domain::LedgerEvent, store};

pub struct Consumer {
    pub db: PgPool,
    pub client: redis::Client,
    pub stream: String,
    pub cfg: ConsumerConfig,
    /// This replica's name in the group.
    pub name: String,
    /// Bounds connecting and each short command.
    pub redis_timeout: Duration,
}

impl Consumer {
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(stream = %self.stream, group = %self.cfg.group, consumer = %self.name,
            "ledger-events consumer started");
        let initial = Duration::from_millis(self.cfg.backoff_initial_ms);
        let max = Duration::from_millis(self.cfg.backoff_max_ms);
        let mut backoff = initial;
        let mut conn: Option<MultiplexedConnection> = None;
        let mut last_claim: Option<Instant> = None;
        let mut cursor = "0-0".to_owned();
        while !shutdown.is_triggered() {
            let step = async {
                if conn.is_none() {
                    conn = Some(self.connect().await?);
                }
                let c = conn.as_mut().expect("connected just above");
                self.step(c, &mut last_claim, &mut cursor).await
            };
            let result = tokio::select! {
                _ = shutdown.wait() => break,
                r = step => r,
            };
            match result {
                Ok(()) => backoff = initial,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
                        "ledger-events consumer: read or store failed; entries kept for a retry");
                    if e.downcast_ref::<redis::RedisError>().is_some() {
                        conn = None;
                    }
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        tracing::info!("ledger-events consumer stopped");
    }

    async fn connect(&self) -> anyhow::Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.redis_timeout))
            .set_response_timeout(Some(
                Duration::from_millis(self.cfg.block_ms) + self.redis_timeout,
            ));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        store::create_group(&mut conn, &self.stream, &self.cfg.group).await?;
        Ok(conn)
    }

    /// One round: this consumer's own pending entries first (left by a failure or a restart),
    /// entries idle at another consumer now and then, else new ones (blocking up to block_ms).
    async fn step(
        &self,
        conn: &mut MultiplexedConnection,
        last_claim: &mut Option<Instant>,
        cursor: &mut String,
    ) -> anyhow::Result<()> {
        let (stream, group, name, count) = (
            &self.stream,
            &self.cfg.group,
            &self.name,
            self.cfg.read_count,
        );
        let mut entries = store::read_entries(conn, stream, group, name, count, "0", 0).await?;
        let claim_every = Duration::from_millis(self.cfg.claim_idle_ms / 2);
        if entries.is_empty() && last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
            let reply = store::claim_idle_entries(
                conn,
                stream,
                group,
                name,
                self.cfg.claim_idle_ms,
                cursor,
                count,
            )
            .await?;
            *cursor = reply.next_stream_id.clone();
            if cursor == "0-0" {
                *last_claim = Some(Instant::now());
            }
            entries = reply.claimed;
        }
        if entries.is_empty() {
            entries = store::read_entries(conn, stream, group, name, count, ">", self.cfg.block_ms)
                .await?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(entries.len());
        for entry in &entries {
            self.take(entry).await?;
            done.push(entry.id.clone());
        }
        store::ack_entries(conn, stream, group, &done).await?;
        Ok(())
    }

    /// Makes the entry's deliveries; an error leaves it unacknowledged.
    async fn take(&self, entry: &StreamId) -> anyhow::Result<()> {
        let field = |k: &str| entry.get::<String>(k).unwrap_or_default();
        let event =
            match LedgerEvent::parse(&field("event_id"), &field("event_type"), &field("payload")) {
                Ok(e) => e,
                Err(e) => {
                    metrics::counter!("webhook_malformed_events_total").increment(1);
                    tracing::error!(entry_id = %entry.id, error = %e, "ledger event dropped");
                    return Ok(());
                }
            };
        let made = store::insert_deliveries(
            &self.db,
            event.event_id,
            &event.event_type,
            &event.body,
            &event.owner_ids,
        )
        .await?;
        metrics::counter!("webhook_deliveries_created_total").increment(made);
        Ok(())
    }
}
