//! Rate limits with fixed-window counters in Redis (`{prefix}auth:...` keys that expire with their
//! window). If Redis is unreachable the limits are skipped (logged): logging in must not depend on
//! Redis being up, and the argon2 cost still bounds guessing speed.

use deadpool_redis::Pool;

use crate::{
    config::{LoginThrottleConfig, VerificationConfig},
    domain::AuthError,
};

#[derive(Clone)]
pub struct Throttle {
    redis: Pool,
    prefix: String,
    login: LoginThrottleConfig,
    verification: VerificationConfig,
}

impl Throttle {
    pub fn new(
        redis: Pool,
        prefix: &str,
        login: LoginThrottleConfig,
        verification: VerificationConfig,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            login,
            verification,
        }
    }

    fn user_key(&self, username: &str) -> String {
        format!("{}auth:login_failures:user:{username}", self.prefix)
    }

    fn ip_key(&self, ip: &str) -> String {
        // bounded: the value comes from metadata, which a caller bypassing the gateway controls
        let ip: String = ip.chars().take(64).collect();
        let ip = if ip.is_empty() { "unknown".into() } else { ip };
        format!("{}auth:login_failures:ip:{ip}", self.prefix)
    }

    /// `TooManyAttempts` while either the username or the IP is over its limit.
    #[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.check_login", otel.kind = "client", db.system = "redis"))]
    pub async fn check_login(&self, username: Option<&str>, ip: &str) -> Result<(), AuthError> {
        let mut checks = vec![(self.ip_key(ip), self.login.max_failures_per_ip)];
        if let Some(u) = username {
            checks.push((self.user_key(u), self.login.max_failures_per_username));
        }
        let result: redis::RedisResult<Option<u64>> = async {
            let mut conn = self.redis.get().await.map_err(to_redis_err)?;
            let mut retry_after = None;
            for (key, max) in &checks {
                let count: Option<u64> = redis::cmd("GET").arg(key).query_async(&mut *conn).await?;
                if count.unwrap_or(0) >= *max {
                    let ttl: i64 = redis::cmd("TTL").arg(key).query_async(&mut *conn).await?;
                    let secs = u64::try_from(ttl).unwrap_or(1).max(1);
                    retry_after = Some(retry_after.map_or(secs, |r: u64| r.max(secs)));
                }
            }
            Ok(retry_after)
        }
        .await;
        match result {
            Ok(Some(retry_after_secs)) => {
                metrics::counter!("login_throttled_total").increment(1);
                Err(AuthError::TooManyAttempts { retry_after_secs })
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "login throttle unavailable; not enforcing it");
                Ok(())
            }
        }
    }

    #[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.record_login_failure", otel.kind = "client", db.system = "redis"))]
    pub async fn record_login_failure(&self, username: Option<&str>, ip: &str) {
        let mut keys = vec![self.ip_key(ip)];
        if let Some(u) = username {
            keys.push(self.user_key(u));
        }
        let window = self.login.window_secs.max(1);
        for key in keys {
            if let Err(e) = self.incr_in_window(&key, window).await {
                tracing::warn!(error = %e, "cannot record a login failure");
            }
        }
    }

    /// A successful login forgets the username's failures (not the IP's: one IP guessing many
    /// usernames stays limited).
    #[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.clear_login", otel.kind = "client", db.system = "redis"))]
    pub async fn clear_login(&self, username: &str) {
        let key = self.user_key(username);
        let result: redis::RedisResult<()> = async {
            let mut conn = self.redis.get().await.map_err(to_redis_err)?;
            redis::cmd("DEL").arg(&key).query_async(&mut *conn).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot clear login failures");
        }
    }

    /// Counts a resend request; `TooManyRequests` beyond the configured number per window.
    #[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.hit_resend", otel.kind = "client", db.system = "redis"))]
    pub async fn hit_resend(&self, username: &str) -> Result<(), AuthError> {
        let key = format!("{}auth:resend_verification:{username}", self.prefix);
        match self
            .incr_in_window(&key, self.verification.resend_window_secs.max(1))
            .await
        {
            Ok((count, _)) if count <= self.verification.resend_max_per_window => Ok(()),
            Ok((_, ttl)) => Err(AuthError::TooManyRequests {
                retry_after_secs: ttl,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "resend rate limit unavailable; not enforcing it");
                Ok(())
            }
        }
    }

    /// INCR a counter whose window starts with its first hit; returns (count, seconds left).
    async fn incr_in_window(&self, key: &str, window_secs: u64) -> redis::RedisResult<(u64, u64)> {
        let mut conn = self.redis.get().await.map_err(to_redis_err)?;
        // SET NX EX starts the window once; INCR never touches the expiry.
        let (count, ttl): (u64, i64) = redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg(0)
            .arg("EX")
            .arg(window_secs)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(key)
            .cmd("TTL")
            .arg(key)
            .query_async(&mut *conn)
            .await?;
        Ok((count, u64::try_from(ttl).unwrap_or(1).max(1)))
    }
}

pub(crate) fn to_redis_err(e: deadpool_redis::PoolError) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(e.to_string()))
}
