//! Command line: serve by default.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailer",
    about = "Sends the emails that user events ask for (verification links)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the user-events stream and send emails (the default).
    Serve,
}

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg: crate::config::Config = platform::config::load("mailer")?;
    platform::telemetry::init("mailer", &cfg.telemetry);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let http = platform::grpc::bind(&cfg.http_addr).await?;
            crate::startup::run(cfg, http, platform::Shutdown::on_signals()).await
        }
    }
}
