//! `migrate up` applies every pending migration (creating the database if missing);
//! `migrate down [--to VERSION]` reverts; `migrate status` lists what is applied.
//! Configuration: `MIGRATE_DATABASE__URL`, `TXN_DATABASE__URL` or `DATABASE_URL`.

use clap::{Parser, Subcommand};
use platform::config::{DatabaseConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "Apply or revert the database schema")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending migration (harmless when there is none).
    Up,
    /// Revert migrations newer than `--to` (default 0: everything).
    Down {
        #[arg(long, default_value_t = 0)]
        to: i64,
    },
    /// List applied migrations.
    Status,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    database: DatabaseConfig,
    telemetry: TelemetryConfig,
}

impl platform::config::Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg: Config = platform::config::load("migrate")?;
    if let Ok(url) = std::env::var("DATABASE_URL")
        && std::env::var_os("MIGRATE_DATABASE__URL").is_none()
        && std::env::var_os("TXN_DATABASE__URL").is_none()
    {
        cfg.database.url = url;
    }
    platform::telemetry::init("migrate", &cfg.telemetry);
    match cli.command {
        Command::Up => {
            platform::db::create_database_if_missing_with(&cfg.database)
                .await
                .map_err(|e| {
                    platform::db::explain_setting_error(&e, &cfg.database)
                        .unwrap_or_else(|| e.into())
                })?;
            let pool = platform::db::pool(&cfg.database)?;
            platform::db::check_at_start(&pool, &cfg.database).await?;
            platform::db::migrate(&pool).await?;
            tracing::info!("migrations applied");
        }
        Command::Down { to } => {
            let pool = platform::db::pool(&cfg.database)?;
            platform::db::migrate_down(&pool, to).await?;
            tracing::info!(to, "migrations reverted");
        }
        Command::Status => {
            let pool = platform::db::pool(&cfg.database)?;
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT version, description FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            for m in platform::db::MIGRATOR
                .iter()
                .filter(|m| m.migration_type.is_up_migration())
            {
                let applied = rows.iter().any(|(v, _)| *v == m.version);
                println!(
                    "{} {} {}",
                    if applied { "applied" } else { "pending" },
                    m.version,
                    m.description
                );
            }
        }
    }
    Ok(())
}
