//! The auth service binary: `auth` (serve) or `auth create-user --role banker ...` (operator).
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    auth::cli::main().await
}
