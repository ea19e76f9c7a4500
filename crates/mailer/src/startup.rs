//! Builds the mailer from config and runs it until shutdown: the consumer loops (verification
//! emails; the recipients table and "money received" emails when enabled), the stream gauges and
//! the side HTTP port (`/healthz`, `/readyz` checks Redis and, when used, PostgreSQL, `/metrics`).

use std::sync::Arc;

use anyhow::Context;
use platform::{Shutdown, http::Readiness};
use tokio::net::TcpListener;

use crate::{
    config::Config,
    consumer,
    domain::{Mailer, Source},
    stats,
    transport::Transport,
};

pub async fn run(cfg: Config, http: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    describe_metrics();
    let redis = platform::redis::pool(&cfg.redis).context("redis pool")?;
    platform::redis::check_at_start(&redis, &cfg.redis).await?;
    let reader = platform::redis::client(&cfg.redis)?;
    let db = if cfg.uses_database() {
        let db = platform::db::pool(&cfg.database).context("database pool")?;
        platform::db::check_at_start(&db, &cfg.database).await?;
        Some(db)
    } else {
        None
    };
    let transport = Transport::from_config(&cfg.transport)?;
    tracing::info!(transport = ?cfg.transport, "mail transport ready");
    let mut sources = vec![Source::Verification];
    if cfg.recipients.enabled {
        sources.push(Source::Recipients);
    }
    if cfg.ledger.enabled {
        sources.push(Source::Ledger);
    }
    let mailers = sources
        .into_iter()
        .map(|source| {
            let parts = (cfg.clone(), redis.clone(), db.clone(), transport.clone());
            Mailer::for_source(parts.0, parts.1, parts.2, parts.3, shutdown.clone(), source)
                .map(Arc::new)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // the side port outlives the consumer's drain, answering /readyz 503 from SIGTERM on
    let drained = Shutdown::new();
    let mut readiness = Readiness::new().redis(redis).leaving_on(shutdown.clone());
    if let Some(db) = &db {
        readiness = readiness.postgres(db.clone());
    }
    let http = platform::http::serve(http, platform::http::router(readiness), drained.clone());
    // aborted when `run` ends or is dropped (e.g. the task running it is aborted)
    let _stats: Vec<AbortOnDrop> = mailers
        .iter()
        .map(|m| AbortOnDrop(tokio::spawn(stats::run(m.clone()))))
        .collect(); // one per group
    // The consumer is a future beside the HTTP server, not a spawned task: dropping `run` stops
    // it at once, like a killed process (its messages stay pending for another consumer).
    // one loop per source, side by side; one that fails stops the others (through shutdown)
    let consume = async {
        let runs = mailers.into_iter().map(|m| async {
            let r = consumer::run(m, reader.clone()).await;
            if r.is_err() {
                shutdown.trigger();
            }
            r
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()
            .map(|_| ())
    };
    // If either half fails, stop the other too.
    let stop_on_error = |r: anyhow::Result<()>| {
        if r.is_err() {
            shutdown.trigger();
        }
        r
    };
    let (h, c) = tokio::join!(async { stop_on_error(http.await) }, async {
        let consumed = stop_on_error(consume.await);
        drained.trigger();
        consumed
    });
    platform::telemetry::flush().await; // spans still buffered for export
    if let Some(db) = db {
        db.close().await;
    }
    h.and(c)
}

/// Describes the metrics once, so `/metrics` carries HELP lines.
pub fn describe_metrics() {
    metrics::describe_counter!("emails_sent_total", "Emails handed to the transport");
    metrics::describe_counter!(
        "emails_failed_total",
        "Failed send attempts (each is retried until max_attempts)"
    );
    metrics::describe_counter!(
        "emails_dead_lettered_total",
        "Events moved to the dead-letter stream, by reason"
    );
    metrics::describe_counter!(
        "mailer_events_skipped_total",
        "Entries acknowledged without sending, by reason: already sent (duplicate), a type the \
         mailer ignores, or a credit that gets no money-received email (system_account, \
         own_accounts, unknown_recipient, deleted_user, unverified, opted_out)"
    );
    metrics::describe_counter!(
        "mailer_recipient_updates_total",
        "User events applied to the recipients table, by outcome (written, stale, forgotten)"
    );
    metrics::describe_counter!(
        "mailer_stream_entries_lost_total",
        "Pending entries trimmed from the stream before they were handled"
    );
    metrics::describe_counter!(
        "mailer_leases_lost_total",
        "Sends whose lease could not be renewed, by reason (taken_over, unconfirmed): abandoned \
         mid-send, or sent but possibly not recorded before another consumer could take over"
    );
    metrics::describe_gauge!(
        "mailer_stream_pending",
        "Entries read by the group but not yet acknowledged, by stream and group"
    );
    metrics::describe_gauge!(
        "mailer_stream_lag",
        "Entries in the stream not yet delivered to the group, by stream and group"
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
