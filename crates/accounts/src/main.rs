//! The accounts service binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    accounts::cli::main().await
}
