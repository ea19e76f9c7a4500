//! The mailer binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mailer::cli::main().await
}
