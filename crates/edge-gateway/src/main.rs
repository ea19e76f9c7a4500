//! The edge gateway binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    edge_gateway::cli::main().await
}
