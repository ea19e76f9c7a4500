//! deadpool-redis pool builder.

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use std::time::Duration;

use crate::config::RedisConfig;

/// Builds a pool; connections open on first use.
pub fn pool(cfg: &RedisConfig) -> Result<Pool, deadpool_redis::CreatePoolError> {
    let mut c = Config::from_url(cfg.url.clone());
    let timeout = Some(Duration::from_millis(cfg.timeout_ms));
    c.pool = Some(PoolConfig {
        max_size: cfg.pool_size,
        timeouts: Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        },
        ..PoolConfig::default()
    });
    c.create_pool(Some(Runtime::Tokio1))
}

/// Readiness: PING.
pub async fn ping(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let _: String = redis::cmd("PING").query_async(&mut *conn).await?;
    Ok(())
}
