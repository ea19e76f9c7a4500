//! Command line: serve by default; `create-user` for operators.

use std::io::BufRead;

use clap::{Parser, Subcommand, ValueEnum};
use platform::token::Role;

#[derive(Parser)]
#[command(name = "auth", about = "The auth service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Create a user (the only way to create a banker). The password is read from the
    /// environment variable AUTH_NEW_USER_PASSWORD, else from the first line of stdin.
    /// Users created this way have a verified email.
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        full_name: String,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum, default_value = "depositor")]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Banker,
    Depositor,
}

/// The environment variable `create-user` reads the password from.
pub const NEW_USER_PASSWORD_ENV: &str = "AUTH_NEW_USER_PASSWORD";

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg: crate::config::Config = platform::config::load("auth")?;
    platform::telemetry::init("auth", &cfg.telemetry);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listeners = platform::Listeners::bind(&cfg.server).await?;
            crate::startup::run(cfg, listeners, platform::Shutdown::on_signals()).await
        }
        Command::CreateUser {
            username,
            full_name,
            email,
            role,
        } => {
            let password = match std::env::var(NEW_USER_PASSWORD_ENV) {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let role = match role {
                RoleArg::Banker => Role::Banker,
                RoleArg::Depositor => Role::Depositor,
            };
            let pool = platform::db::pool(&cfg.database)?;
            let user = crate::domain::admin::create_user(
                &pool, &username, &full_name, &email, &password, role,
            )
            .await
            .map_err(|e| match e {
                crate::domain::AuthError::Db(db) => anyhow::anyhow!("database: {db}"),
                other => anyhow::anyhow!(platform::ApiError::from(other).message),
            })?;
            pool.close().await;
            println!(
                "created {} {} <{}>",
                user.role.as_str(),
                user.username,
                user.email
            );
            Ok(())
        }
    }
}
