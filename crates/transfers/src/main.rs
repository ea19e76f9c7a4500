//! The transfers service binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    transfers::cli::main().await
}
