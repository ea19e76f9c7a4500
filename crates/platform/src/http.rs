//! The side HTTP port of every service: `/healthz` (alive), `/readyz` (dependencies answer) and
//! `/metrics` (Prometheus text).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

/// One readiness check: a name and an async probe.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependencies `/readyz` checks.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
    /// Shown by `/readyz` when they fail, but never making it (or health) fail: e.g. the
    /// gateway's upstreams one by one, as it stays ready while any of them answers.
    reports: Vec<(&'static str, Check)>,
    /// The pools checked here; `/metrics` reports their usage too.
    pools: Vec<crate::pools::Pool>,
    /// Once this fires (SIGTERM), `/readyz` answers 503 `shutting down` whatever the checks say,
    /// so a load balancer stops sending before the service stops taking calls.
    leaving: Option<Shutdown>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check<F, Fut>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(f()))));
        self
    }

    /// A check whose failure `/readyz` reports (as `degraded`) without failing.
    pub fn report<F, Fut>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.reports.push((name, Arc::new(move || Box::pin(f()))));
        self
    }

    pub fn postgres(mut self, pool: sqlx::PgPool) -> Self {
        self.pools.push(crate::pools::Pool::Postgres(pool.clone()));
        self.check("postgres", move || {
            let pool = pool.clone();
            async move { crate::db::ping(&pool).await.map_err(|e| e.to_string()) }
        })
    }

    pub fn redis(mut self, pool: deadpool_redis::Pool) -> Self {
        self.pools.push(crate::pools::Pool::Redis(pool.clone()));
        self.check("redis", move || {
            let pool = pool.clone();
            async move { crate::redis::ping(&pool).await.map_err(|e| e.to_string()) }
        })
    }

    /// `/readyz` answers 503 from the moment `shutdown` fires (see [`crate::serve_all`]).
    pub fn leaving_on(mut self, shutdown: Shutdown) -> Self {
        self.leaving = Some(shutdown);
        self
    }

    /// No checks: always ready.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Runs every check (each bounded to 2 s); the failures, by name.
    pub async fn run(&self) -> Vec<(&'static str, String)> {
        run_checks(&self.checks).await
    }
}

async fn run_checks(checks: &[(&'static str, Check)]) -> Vec<(&'static str, String)> {
    {
        let mut failed = Vec::new();
        for (name, check) in checks {
            match tokio::time::timeout(Duration::from_secs(2), check()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push((*name, e)),
                Err(_) => failed.push((*name, "timed out".to_owned())),
            }
        }
        failed
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets")
                // a count, not seconds: transfers per group-commit batch
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("transfer_batch_size".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                )
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // another recorder may already be installed (e.g. in a test binary); keep ours rendering
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The health/metrics router; `extra` routes are merged in (e.g. a service's own pages).
pub fn router(readiness: Readiness) -> Router {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move |State(readiness): State<Arc<Readiness>>| {
                let handle = handle.clone();
                async move {
                    crate::pools::record(&readiness.pools);
                    handle.render()
                }
            }),
        )
        .with_state(Arc::new(readiness))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    if readiness
        .leaving
        .as_ref()
        .is_some_and(Shutdown::is_triggered)
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    let failed = readiness.run().await;
    let degraded = run_checks(&readiness.reports).await;
    let lines = |list: &[(&str, String)], tag: &str| {
        list.iter()
            .map(|(n, e)| format!("{tag}{n}: {e}"))
            .collect::<Vec<_>>()
    };
    if failed.is_empty() {
        let mut text = vec!["ready".to_owned()];
        text.extend(lines(&degraded, "degraded: "));
        (StatusCode::OK, text.join("\n"))
    } else {
        let mut text = lines(&failed, "");
        text.extend(lines(&degraded, "degraded: "));
        (StatusCode::SERVICE_UNAVAILABLE, text.join("\n"))
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets the requests in hand finish.
/// A service whose side port must outlive its drain (so `/readyz` can say 503 meanwhile) passes a
/// [`Shutdown`] it fires once its calls are done, as [`crate::serve_all`] does.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP side port listening (/healthz, /readyz, /metrics)");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}
