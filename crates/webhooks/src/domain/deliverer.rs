//! The deliverer: takes due deliveries, POSTs each signed body to its endpoint, and records the
//! attempt. A 2xx answer delivers it; anything else (another status, a redirect, which is never
//! followed, a timeout, a refused destination) is a failure, retried after
//! `delivery.backoff_initial_ms` doubling up to `backoff_max_ms`, until `delivery.max_attempts`
//! attempts have failed: then the delivery is dead (a dead letter) until someone replays it.
//! Every replica runs one; a delivery is leased while an attempt is in flight
//! (`store::take_due_deliveries`), and a replica that dies mid-attempt leaves it to be sent
//! again: at least once, each attempt with the same event id and body.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use platform::Shutdown;
use reqwest::{Client, Url, header::CONTENT_TYPE, redirect};
use sqlx::PgPool;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{
    destination::{GuardedResolver, Policy},
    signature,
};
use crate::{
    config::DeliveryConfig,
    store::{self, DueDelivery},
};

/// Header carrying the event id (the same on every attempt: receivers de-duplicate by it).
pub const ID_HEADER: &str = "Webhook-Id";
/// Header carrying the event type.
pub const EVENT_HEADER: &str = "Webhook-Event";

pub struct Deliverer {
    pub db: PgPool,
    pub cfg: DeliveryConfig,
    pub policy: Policy,
    client: Client,
}

/// What one attempt met.
#[derive(Debug)]
struct Outcome {
    status_code: Option<i32>,
    error: Option<String>,
}

impl Deliverer {
    /// The HTTP client is built here once: no redirects, no proxy (a proxy would connect where
    /// the resolver cannot see), connect and total timeouts, the guarded resolver.
    pub fn new(db: PgPool, cfg: DeliveryConfig) -> anyhow::Result<Self> {
        let policy = Policy {
            allow_private: cfg.allow_private_destinations,
        };
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .dns_resolver(GuardedResolver::shared(policy))
            .user_agent(concat!("transactions-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            db,
            cfg,
            policy,
            client,
        })
    }

    /// Runs until shutdown; attempts in flight then finish (each is bounded by `timeout_ms`).
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        tracing::info!("webhook deliverer started");
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        // an attempt's lease: longer than the attempt itself can take
        let lease_ms = i64::try_from(self.cfg.timeout_ms * 2 + 5_000).unwrap_or(i64::MAX);
        let mut tasks = JoinSet::new();
        while !shutdown.is_triggered() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            let mut taken = 0;
            if free > 0 {
                match store::take_due_deliveries(&self.db, free as i64, lease_ms).await {
                    Ok(due) => {
                        taken = due.len();
                        for d in due {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                break;
                            };
                            let me = self.clone();
                            tasks.spawn(async move {
                                me.attempt(d).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook deliverer: cannot take deliveries")
                    }
                }
            }
            // a full round may have left more due: go again at once
            if taken > 0 && taken == free {
                continue;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("webhook deliverer stopped");
    }

    async fn attempt(&self, d: DueDelivery) {
        let started = std::time::Instant::now();
        let outcome = self.send(&d).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let delivered = outcome.error.is_none();
        let failures = d.attempts + 1;
        let dead = !delivered && failures >= self.cfg.max_attempts;
        let next_at = Utc::now()
            + chrono::Duration::milliseconds(
                i64::try_from(self.backoff(failures)).unwrap_or(i64::MAX / 2),
            );
        let label = if delivered {
            "delivered"
        } else if dead {
            "dead"
        } else {
            "retry"
        };
        metrics::counter!("webhook_attempts_total", "outcome" => label).increment(1);
        if !delivered {
            tracing::info!(delivery_id = d.id, event_id = %d.event_id, attempts = failures,
                error = outcome.error.as_deref().unwrap_or(""), dead, "webhook attempt failed");
        }
        if let Err(e) = store::record_attempt(
            &self.db,
            d.id,
            outcome.status_code,
            outcome.error.as_deref(),
            duration_ms,
            delivered,
            dead,
            next_at,
        )
        .await
        {
            // the lease runs out and the delivery is attempted again: at least once
            tracing::warn!(delivery_id = d.id, error = %e, "webhook attempt not recorded");
        }
    }

    /// The wait after the `failures`-th failure: initial × 2^(failures-1), at most the max.
    pub fn backoff(&self, failures: i32) -> u64 {
        let exponent = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(0)
            .min(40);
        self.cfg
            .backoff_initial_ms
            .saturating_mul(1u64 << exponent)
            .min(self.cfg.backoff_max_ms)
    }

    async fn send(&self, d: &DueDelivery) -> Outcome {
        let failed = |error: String| Outcome {
            status_code: None,
            error: Some(error),
        };
        let url = match Url::parse(&d.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("bad url: {e}")),
        };
        if let Err(refused) = self.policy.check_literal(&url) {
            return failed(format!("refused: {refused}"));
        }
        let signed = signature::sign(&d.secret, Utc::now().timestamp(), d.body.as_bytes());
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ID_HEADER, d.event_id.to_string())
            .header(EVENT_HEADER, &d.event_type)
            .header(signature::HEADER, signed)
            .body(d.body.clone())
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => return failed(describe(&e)),
        };
        let status = response.status();
        // read at most max_response_bytes of the answer, then let the rest go
        let mut read = 0usize;
        while read < self.cfg.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                Err(e) => return failed(describe(&e)),
            }
        }
        let code = Some(i32::from(status.as_u16()));
        if status.is_success() {
            Outcome {
                status_code: code,
                error: None,
            }
        } else {
            Outcome {
                status_code: code,
                error: Some(format!("HTTP {}", status.as_u16())),
            }
        }
    }
}

/// A short cause: timeouts and connection failures named as such, with the innermost reason
/// (a refused destination comes from the resolver).
fn describe(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    format!("{kind}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backoff_doubles_from_the_initial_wait_up_to_the_max() {
        let cfg = DeliveryConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..DeliveryConfig::default()
        };
        let db = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://x@127.0.0.1:1/x")
            .unwrap();
        let d = Deliverer::new(db, cfg).unwrap();
        let waits: Vec<u64> = (1..=6).map(|n| d.backoff(n)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
    }
}
