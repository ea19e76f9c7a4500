//! Command line: serve by default.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "webhooks", about = "The webhooks service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and deliver events (the default).
    Serve,
}

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg: crate::config::Config = platform::config::load("webhooks")?;
    platform::telemetry::init("webhooks", &cfg.telemetry);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listeners = platform::Listeners::bind(&cfg.server).await?;
            crate::startup::run(cfg, listeners, platform::Shutdown::on_signals()).await
        }
    }
}
