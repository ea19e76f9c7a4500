//! The edge gateway binary. `edge-gateway openapi` prints the OpenAPI document and exits.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: edge_gateway::config::Config = platform::config::load("edge-gateway")?;
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        let table = edge_gateway::routes::RouteTable::from_descriptor_set(proto::DESCRIPTOR_SET)?;
        let doc = edge_gateway::openapi::document(&table, &cfg.public_base_url);
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    platform::telemetry::init("edge-gateway", &cfg.telemetry);
    let listeners = platform::Listeners {
        grpc: platform::grpc::bind(&cfg.grpc_addr).await?,
        http: platform::grpc::bind(&cfg.http_addr).await?,
        admin: Some(platform::grpc::bind(&cfg.admin_addr).await?),
    };
    edge_gateway::startup::run(cfg, listeners, platform::Shutdown::on_signals()).await
}
