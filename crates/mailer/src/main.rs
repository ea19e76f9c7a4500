//! The mailer binary.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg: mailer::config::Config = platform::config::load("mailer")?;
    platform::telemetry::init("mailer", &cfg.telemetry);
    let http = platform::grpc::bind(&cfg.http_addr).await?;
    mailer::startup::run(cfg, http, platform::Shutdown::on_signals()).await
}
