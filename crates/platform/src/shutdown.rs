//! Graceful shutdown: one token every task watches; SIGTERM/SIGINT cancel it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A `Shutdown` that fires on SIGTERM or SIGINT (Ctrl-C).
    pub fn on_signals() -> Self {
        let s = Self::new();
        let trigger = s.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            trigger.trigger();
        });
        s
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
