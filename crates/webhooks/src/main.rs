//! The webhooks service binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhooks::cli::main().await
}
