//! The edge gateway binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: edge_gateway::config::Config = platform::config::load("edge-gateway")?;
    platform::telemetry::init("edge-gateway", &cfg.telemetry);
    let listeners = platform::Listeners {
        grpc: platform::grpc::bind(&cfg.grpc_addr).await?,
        http: platform::grpc::bind(&cfg.http_addr).await?,
    };
    edge_gateway::startup::run(cfg, listeners, platform::Shutdown::on_signals()).await
}
