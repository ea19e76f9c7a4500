//! deadpool-redis pool builder, with TLS (`rediss://`) verified against `redis.tls_ca_file`.

use deadpool_redis::{Manager, Pool, PoolConfig, Runtime, Timeouts};
use std::time::Duration;

use crate::config::RedisConfig;

/// A client for `cfg.url`: plain for `redis://`, TLS for `rediss://` with the server's certificate
/// checked against `redis.tls_ca_file` (else the system roots) and the URL's host name. A CA file
/// that cannot be read, or one set for a plaintext URL, is refused naming the key.
pub fn client(cfg: &RedisConfig) -> anyhow::Result<redis::Client> {
    let tls = cfg.url.starts_with("rediss://");
    let Some(ca) = &cfg.tls_ca_file else {
        return redis::Client::open(cfg.url.as_str())
            .map_err(|e| anyhow::anyhow!("redis.url: {e}"));
    };
    anyhow::ensure!(
        tls,
        "redis.tls_ca_file is set but redis.url is not a rediss:// (TLS) URL"
    );
    crate::tls::read_ca_file(ca).map_err(|e| anyhow::anyhow!("redis.tls_ca_file: {e:#}"))?;
    let pem = std::fs::read(ca)?;
    redis::Client::build_with_tls(
        cfg.url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(|e| anyhow::anyhow!("redis.url / redis.tls_ca_file: {e}"))
}

/// Builds a pool; connections open on first use.
pub fn pool(cfg: &RedisConfig) -> anyhow::Result<Pool> {
    // the connection info carries the TLS parameters (the CA) the client was built with
    let manager = Manager::new(client(cfg)?.get_connection_info().clone())?;
    let timeout = Some(Duration::from_millis(cfg.timeout_ms));
    Ok(Pool::builder(manager)
        .config(PoolConfig {
            max_size: cfg.pool_size,
            timeouts: Timeouts {
                wait: timeout,
                create: timeout,
                recycle: timeout,
            },
            ..PoolConfig::default()
        })
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// One PING at start-up. A refused certificate (the CA in `redis.tls_ca_file` did not sign it, or
/// it is not for the URL's host) does not heal by waiting, so it stops start-up naming the
/// setting; Redis being down is logged and left to readiness.
pub async fn check_at_start(pool: &Pool, cfg: &RedisConfig) -> anyhow::Result<()> {
    let Err(error) = ping(pool).await else {
        return Ok(());
    };
    let chain = format!("{error:#}");
    match crate::tls::certificate_problem(&chain) {
        Some(crate::tls::CertificateProblem::UnknownIssuer) => anyhow::bail!(
            "redis.tls_ca_file ({}) does not hold the CA that signed the Redis server's \
             certificate: {chain}",
            cfg.tls_ca_file.as_ref().map_or_else(
                || "unset: the system roots".to_owned(),
                |p| p.display().to_string()
            )
        ),
        Some(crate::tls::CertificateProblem::WrongName) => anyhow::bail!(
            "the Redis server's certificate is not valid for the host of redis.url (connect by \
             the name in the certificate): {chain}"
        ),
        Some(crate::tls::CertificateProblem::Other) => {
            anyhow::bail!("TLS to Redis failed; check redis.url and redis.tls_ca_file: {chain}")
        }
        None => {
            tracing::warn!(error = %chain, "Redis not reachable at start-up; not ready until it is");
            Ok(())
        }
    }
}

/// Readiness: PING.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut *conn).await?;
    Ok(())
}
