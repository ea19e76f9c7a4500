//! Builds the mailer from config and runs it until shutdown: the consumer loop, the stream gauges
//! and the side HTTP port (`/healthz`, `/readyz` checks Redis, `/metrics`).

use std::sync::Arc;

use anyhow::Context;
use platform::{Shutdown, http::Readiness};
use tokio::net::TcpListener;

use crate::{config::Config, consumer, domain::Mailer, stats, transport::Transport};

pub async fn run(cfg: Config, http: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    describe_metrics();
    let redis = platform::redis::pool(&cfg.redis).context("redis pool")?;
    platform::redis::check_at_start(&redis, &cfg.redis).await?;
    let reader = platform::redis::client(&cfg.redis)?;
    let transport = Transport::from_config(&cfg.transport)?;
    tracing::info!(transport = ?cfg.transport, "mail transport ready");
    let mailer = Arc::new(Mailer::new(
        cfg,
        redis.clone(),
        transport,
        shutdown.clone(),
    )?);
    // the side port outlives the consumer's drain, answering /readyz 503 from SIGTERM on
    let drained = Shutdown::new();
    let readiness = Readiness::new().redis(redis).leaving_on(shutdown.clone());
    let http = platform::http::serve(http, platform::http::router(readiness), drained.clone());
    // aborted when `run` ends or is dropped (e.g. the task running it is aborted)
    let _stats = AbortOnDrop(tokio::spawn(stats::run(mailer.clone())));
    // The consumer is a future beside the HTTP server, not a spawned task: dropping `run` stops
    // it at once, like a killed process (its messages stay pending for another consumer).
    let consume = consumer::run(mailer, reader);
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
        "Entries acknowledged without sending: already sent (duplicate) or a type the mailer ignores"
    );
    metrics::describe_counter!(
        "mailer_stream_entries_lost_total",
        "Pending entries trimmed from the stream before they were handled"
    );
    metrics::describe_gauge!(
        "mailer_stream_pending",
        "Entries read by the group but not yet acknowledged"
    );
    metrics::describe_gauge!(
        "mailer_stream_lag",
        "Entries in the stream not yet delivered to the group"
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
