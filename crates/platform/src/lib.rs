//! What every service does the same way, written once.
//!
//! A service's `main` reads: [`config::load`] → [`telemetry::init`] → build pools → [`grpc::serve`]
//! and [`http::serve`] until [`shutdown::Shutdown`] fires.

pub mod caller;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod http;
pub mod outbox;
pub mod pools;
pub mod redis;
pub mod revocations;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod token;

pub use caller::Caller;
pub use error::ApiError;
pub use shutdown::Shutdown;

/// The listeners of a service: gRPC and the side HTTP port; the gateway, whose HTTP port is
/// public, also has a private admin port (`/metrics`, `/readyz`, `/healthz`).
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub http: tokio::net::TcpListener,
    /// `None`: a service with an admin port binds its configured address.
    pub admin: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds the addresses from config.
    pub async fn bind(cfg: &config::ServerConfig) -> anyhow::Result<Self> {
        Ok(Self {
            grpc: grpc::bind(&cfg.grpc_addr).await?,
            http: grpc::bind(&cfg.http_addr).await?,
            admin: None,
        })
    }

    /// Two free ports on 127.0.0.1 (tests).
    pub async fn ephemeral() -> anyhow::Result<Self> {
        Ok(Self {
            grpc: grpc::bind("127.0.0.1:0").await?,
            http: grpc::bind("127.0.0.1:0").await?,
            admin: Some(grpc::bind("127.0.0.1:0").await?),
        })
    }
}

/// Runs a service's gRPC server and side HTTP port until shutdown; if either fails, the other is
/// stopped too.
pub async fn serve_all(
    server: &config::ServerConfig,
    listeners: Listeners,
    routes: tonic::service::Routes,
    service_names: &[&str],
    readiness: http::Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // the side port stays up until the gRPC calls are drained, answering /readyz 503 meanwhile
    let drained = Shutdown::new();
    let http = http::serve(
        listeners.http,
        http::router(readiness.clone().leaving_on(shutdown.clone())),
        drained.clone(),
    );
    // the gRPC health status follows the same checks as /readyz (the chart's probes ask it)
    let grpc = async {
        let served = grpc::serve_with_readiness(
            server,
            listeners.grpc,
            routes,
            service_names,
            readiness,
            shutdown.clone(),
        )
        .await;
        drained.trigger();
        served
    };
    let stop_on_error = |r: anyhow::Result<()>| {
        if r.is_err() {
            shutdown.trigger();
        }
        r
    };
    let (g, h) = tokio::join!(async { stop_on_error(grpc.await) }, async {
        stop_on_error(http.await)
    });
    // the last spans of the drained calls would otherwise die with the process
    telemetry::flush().await;
    g.and(h)
}
