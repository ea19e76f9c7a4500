//! Command line: serve by default; `reconcile` checks the ledger once and exits.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "transfers", about = "The transfers service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Check the ledger (per-currency totals, balances against entries, two entries per
    /// transfer), print what was checked, and exit non-zero on any violation.
    Reconcile,
}

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg: crate::config::Config = platform::config::load("transfers")?;
    platform::telemetry::init("transfers", &cfg.telemetry);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listeners = platform::Listeners::bind(&cfg.server).await?;
            crate::startup::run(cfg, listeners, platform::Shutdown::on_signals()).await
        }
        Command::Reconcile => {
            let ok = reconcile(&cfg).await?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Runs the reconciliation and prints its report to stdout; `Ok(false)` when a violation was found.
pub async fn reconcile(cfg: &crate::config::Config) -> anyhow::Result<bool> {
    let db = platform::db::pool(&cfg.database)?;
    let report = crate::domain::reconcile::run(&db).await?;
    db.close().await;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(report.ok())
}
