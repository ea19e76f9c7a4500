//! Each group's gauges and housekeeping, every `stats_interval_ms`: `mailer_stream_pending` and
//! `mailer_stream_lag` labelled `stream` and `group` (one series per consumer loop: verification
//! emails, the recipients table, "money received"), and the removal of consumers that are long
//! gone.

use std::{sync::Arc, time::Duration};

use redis::aio::MultiplexedConnection;

use crate::{domain::Mailer, store};

/// Refreshes the pending and lag gauges of `mailer`'s group every `stats_interval_ms`.
pub async fn run(mailer: Arc<Mailer>) {
    let every = Duration::from_millis(mailer.cfg.stats_interval_ms);
    loop {
        if let Err(e) = refresh_stats(&mailer).await {
            tracing::debug!(error = %e, "could not refresh stream gauges");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = mailer.shutdown.wait() => return,
        }
    }
}

async fn refresh_stats(mailer: &Mailer) -> anyhow::Result<()> {
    let mut conn = mailer.pool.get().await?;
    let groups = store::read_groups(&mut conn, &mailer.group.stream).await?;
    if let Some(g) = groups.groups.iter().find(|g| g.name == mailer.group.group) {
        let labels = [
            ("stream", mailer.group.stream.clone()),
            ("group", mailer.group.group.clone()),
        ];
        metrics::gauge!("mailer_stream_pending", &labels).set(g.pending as f64);
        if let Some(lag) = g.lag {
            metrics::gauge!("mailer_stream_lag", &labels).set(lag as f64);
        }
    }
    forget_idle_consumers(mailer, &mut conn).await
}

/// Removes consumers that hold nothing and have been idle for `forget_idle_consumer_secs`
/// (a replica that is gone, e.g. an old pod name), so the group does not grow forever.
async fn forget_idle_consumers(
    mailer: &Mailer,
    conn: &mut MultiplexedConnection,
) -> anyhow::Result<()> {
    let consumers = store::read_consumers(conn, &mailer.group).await?;
    let idle_ms = mailer.cfg.forget_idle_consumer_secs.saturating_mul(1_000);
    for c in consumers.consumers {
        if c.name == mailer.group.consumer || c.pending > 0 || (c.idle as u64) < idle_ms {
            continue;
        }
        if store::remove_idle_consumer(conn, &mailer.group, &c.name, idle_ms).await? {
            tracing::info!(consumer = %c.name, idle_ms = c.idle, "removed an idle consumer from the group");
        }
    }
    Ok(())
}
