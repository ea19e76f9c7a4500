//! Graceful shutdown: one token every task watches; SIGTERM/SIGINT cancel it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    token: CancellationToken,
    /// Set when the shutdown came from an orchestrator (SIGTERM, or [`Shutdown::signal`]): the
    /// servers then keep accepting for `server.shutdown_delay_ms` while health says NOT_SERVING,
    /// so load balancers move away first (see [`Shutdown::stop_accepting`]).
    signalled: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A `Shutdown` that fires on SIGTERM (an orchestrator's: [`Shutdown::signal`], with the
    /// delay for load balancers) or SIGINT (Ctrl-C at a terminal, where no load balancer waits:
    /// [`Shutdown::trigger`]).
    pub fn on_signals() -> Self {
        let s = Self::new();
        let trigger = s.clone();
        tokio::spawn(async move {
            let from_orchestrator = wait_for_signal().await;
            tracing::info!(
                sigterm = from_orchestrator,
                "shutdown signal received; draining"
            );
            if from_orchestrator {
                trigger.signal();
            } else {
                trigger.trigger();
            }
        });
        s
    }

    /// Starts the shutdown at once: the servers stop accepting without a delay (a test, or one
    /// server of the process failing, which no load balancer needs time to notice).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Starts the shutdown as SIGTERM does: health NOT_SERVING and `/readyz` 503 at once, new
    /// calls still taken for `server.shutdown_delay_ms`, then the drain.
    pub fn signal(&self) {
        self.signalled.store(true, Ordering::SeqCst);
        self.token.cancel();
    }

    /// Whether the shutdown came from [`Shutdown::signal`] (SIGTERM).
    pub fn is_signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }

    /// Resolves when a server should stop accepting: `delay` after a signal (the listener keeps
    /// serving meanwhile, so calls still routed here are served while load balancers see health
    /// NOT_SERVING and move away), at once after [`Shutdown::trigger`].
    pub async fn stop_accepting(&self, delay: Duration) {
        self.wait().await;
        if self.is_signalled() && !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "still accepting while load balancers move away"
            );
            tokio::time::sleep(delay).await;
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// The underlying token, for `select!` in background loops.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// Waits for SIGTERM (`true`) or SIGINT (`false`).
async fn wait_for_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return false;
            }
        };
        tokio::select! {
            _ = term.recv() => true,
            _ = tokio::signal::ctrl_c() => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        false
    }
}

/// Runs `fut` to completion, but gives up `grace` after shutdown started.
/// Returns `false` when the grace period ran out first.
pub async fn drain_within<F: std::future::Future>(
    shutdown: &Shutdown,
    grace: Duration,
    fut: F,
) -> bool {
    tokio::pin!(fut);
    tokio::select! {
        _ = &mut fut => return true,
        _ = shutdown.wait() => {}
    }
    match tokio::time::timeout(grace, fut).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight work did not finish within the grace period"
            );
            false
        }
    }
}

/// Waits for a background task (an outbox relay, a consumer loop) once the servers are down, and
/// logs how it ended: every service stops its jobs the same way.
pub async fn join_background(name: &str, handle: tokio::task::JoinHandle<anyhow::Result<()>>) {
    match handle.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(task = name, error = %format!("{e:#}"), "background task failed")
        }
        Err(e) => tracing::error!(task = name, error = %e, "background task panicked"),
    }
}
