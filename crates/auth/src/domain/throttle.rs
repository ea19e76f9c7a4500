//! Rate limits with fixed-window counters in Redis (the commands are in `store`). If Redis is
//! unreachable the limits are skipped (logged): logging in must not depend on Redis being up, and
//! the argon2 cost still bounds guessing speed.

use deadpool_redis::Pool;

use super::error::AuthError;
use crate::{
    config::{LoginThrottleConfig, VerificationConfig},
    store,
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

    /// The failed-login counters of a login attempt with their limits: the IP's, and the
    /// username's when it is well formed.
    fn login_counters(&self, username: Option<&str>, ip: &str) -> Vec<(String, u64)> {
        let mut counters = vec![(
            store::login_failures_ip_key(&self.prefix, ip),
            self.login.max_failures_per_ip,
        )];
        if let Some(u) = username {
            counters.push((
                store::login_failures_user_key(&self.prefix, u),
                self.login.max_failures_per_username,
            ));
        }
        counters
    }

    /// `TooManyAttempts` while either the username or the IP is over its limit; the retry hint is
    /// the later of their windows' ends.
    pub async fn check_login(&self, username: Option<&str>, ip: &str) -> Result<(), AuthError> {
        let counters = self.login_counters(username, ip);
        let keys: Vec<String> = counters.iter().map(|(key, _)| key.clone()).collect();
        let windows = match store::get_login_failures(&self.redis, &keys).await {
            Ok(windows) => windows,
            Err(e) => {
                tracing::warn!(error = %e, "login throttle unavailable; not enforcing it");
                return Ok(());
            }
        };
        let retry_after = windows
            .iter()
            .zip(&counters)
            .filter(|(window, (_, max))| window.count >= *max)
            .map(|(window, _)| window.seconds_left)
            .max();
        match retry_after {
            Some(retry_after_secs) => {
                metrics::counter!("login_throttled_total").increment(1);
                Err(AuthError::TooManyAttempts { retry_after_secs })
            }
            None => Ok(()),
        }
    }

    pub async fn record_login_failure(&self, username: Option<&str>, ip: &str) {
        let keys: Vec<String> = self
            .login_counters(username, ip)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        for e in store::incr_login_failures(&self.redis, &keys, self.login.window_secs).await {
            tracing::warn!(error = %e, "cannot record a login failure");
        }
    }

    /// A successful login forgets the username's failures (not the IP's: one IP guessing many
    /// usernames stays limited).
    pub async fn clear_login(&self, username: &str) {
        let key = store::login_failures_user_key(&self.prefix, username);
        if let Err(e) = store::delete_login_failures(&self.redis, &key).await {
            tracing::warn!(error = %e, "cannot clear login failures");
        }
    }

    /// Counts a resend request; `TooManyRequests` beyond the configured number per window.
    pub async fn hit_resend(&self, username: &str) -> Result<(), AuthError> {
        let key = store::resend_requests_key(&self.prefix, username);
        match store::incr_resend_requests(&self.redis, &key, self.verification.resend_window_secs)
            .await
        {
            Ok(window) if window.count <= self.verification.resend_max_per_window => Ok(()),
            Ok(window) => Err(AuthError::TooManyRequests {
                retry_after_secs: window.seconds_left,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "resend rate limit unavailable; not enforcing it");
                Ok(())
            }
        }
    }
}
