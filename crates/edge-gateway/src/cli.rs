//! Command line: serve by default; `openapi` prints the OpenAPI document and exits.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edge-gateway",
    about = "The public door: HTTP/JSON and gRPC, routed to the services"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP/JSON, gRPC and the admin port (the default).
    Serve,
    /// Print the OpenAPI document of the public API and exit.
    Openapi,
}

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg: crate::config::Config = platform::config::load("edge-gateway")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            let table = crate::routes::RouteTable::from_descriptor_set(proto::DESCRIPTOR_SET)?;
            let doc = crate::openapi::document(&table, &cfg.public_base_url);
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Command::Serve => {
            platform::telemetry::init("edge-gateway", &cfg.telemetry);
            let listeners = platform::Listeners {
                grpc: platform::grpc::bind(&cfg.grpc_addr).await?,
                http: platform::grpc::bind(&cfg.http_addr).await?,
                admin: Some(platform::grpc::bind(&cfg.admin_addr).await?),
            };
            crate::startup::run(cfg, listeners, platform::Shutdown::on_signals()).await
        }
    }
}
