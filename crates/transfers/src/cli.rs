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
    /// transfer), print what was checked, and exit non-zero on any violation. Incremental by
    /// default: every balance against the checkpoint's totals plus the entries since, and the
    /// rows written since (docs/scaling.md says what that does not see).
    Reconcile {
        /// Sum every entry and check every row of the history again (and rebuild the
        /// checkpoint), instead of the checkpoint plus what was written since.
        #[arg(long)]
        full: bool,
    },
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
        Command::Reconcile { full } => {
            let mode = if full {
                crate::domain::reconcile::Mode::Full
            } else {
                crate::domain::reconcile::Mode::Incremental
            };
            let ok = reconcile(&cfg, mode).await?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Runs the reconciliation and prints its report to stdout; `Ok(false)` when a violation was found.
pub async fn reconcile(
    cfg: &crate::config::Config,
    mode: crate::domain::reconcile::Mode,
) -> anyhow::Result<bool> {
    let db = platform::db::pool(&cfg.database)?;
    let report = crate::domain::reconcile::run(&db, mode).await?;
    db.close().await;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(report.ok())
}
