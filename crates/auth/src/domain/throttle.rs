//! The login throttle slows guessing without locking owners out (OWASP's authentication guidance),
//! and the resend limit. The Redis commands are in `store`.
//!
//! Failed logins are counted per client, a (username, client IP) pair, and per client IP, each in a
//! window of `window_secs` from its first failure. Past `free_failures_per_client` (or
//! `free_failures_per_ip`) failures, every further failure makes that client (or IP) wait before
//! its next attempt is even checked: `delay_initial_ms`, doubling with each failure, at most
//! `delay_max_ms`; an attempt during the wait gets RESOURCE_EXHAUSTED with the time left as its
//! retry hint and counts nothing. So:
//! - someone guessing another user's password from elsewhere never delays the owner (their pair is
//!   another);
//! - a client that gets its own password wrong waits a few seconds, not 15 minutes;
//! - one IP guessing at many usernames is slowed down as a whole, except for a username that has
//!   logged in from that IP before (within `known_client_ttl_secs`): an owner behind the same NAT
//!   as a guesser still gets in;
//! - a success forgets its pair's failures (not the IP's).
//!
//! When Redis cannot be reached the throttle fails open: logins are checked without it (the argon2
//! cost and `password.max_concurrent_hashes` still bound how fast guesses go), so an outage of
//! Redis does not lock every user out. Each such login is logged at ERROR and counted in
//! `login_throttle_unavailable_total`.

use deadpool_redis::Pool;

use super::error::AuthError;
use crate::{
    config::{LoginThrottleConfig, VerificationConfig},
    store::{self, LoginKeys},
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

    fn keys(&self, username: Option<&str>, ip: &str) -> LoginKeys {
        LoginKeys::new(&self.prefix, username, ip)
    }

    /// `TooManyAttempts` while the client (or its IP, unless the client is known there) must wait.
    pub async fn check_login(&self, username: Option<&str>, ip: &str) -> Result<(), AuthError> {
        let waits = match store::get_login_waits(&self.redis, &self.keys(username, ip)).await {
            Ok(waits) => waits,
            Err(e) => {
                unavailable("check", &e);
                return Ok(());
            }
        };
        let ip_wait_ms = if waits.known_client { 0 } else { waits.ip_ms };
        let wait_ms = waits.client_ms.max(ip_wait_ms);
        if wait_ms == 0 {
            return Ok(());
        }
        metrics::counter!("login_throttled_total").increment(1);
        Err(AuthError::TooManyAttempts {
            retry_after_secs: wait_ms.div_ceil(1_000).max(1),
        })
    }

    /// Counts a failure for the client and its IP, and starts their waits once past the free ones.
    pub async fn record_login_failure(&self, username: Option<&str>, ip: &str) {
        let keys = self.keys(username, ip);
        let counts =
            match store::incr_login_failures(&self.redis, &keys, self.login.window_secs).await {
                Ok(counts) => counts,
                Err(e) => return unavailable("record a failure", &e),
            };
        let client_ms = counts
            .client
            .map_or(0, |n| self.delay_ms(n, self.login.free_failures_per_client));
        let ip_ms = self.delay_ms(counts.ip, self.login.free_failures_per_ip);
        if let Err(e) = store::set_login_waits(&self.redis, &keys, client_ms, ip_ms).await {
            unavailable("start a wait", &e);
        }
    }

    /// A successful login forgets its client's failures (not the IP's: one IP guessing many
    /// usernames stays slowed) and remembers the client as known at this IP.
    pub async fn clear_login(&self, username: &str, ip: &str) {
        let keys = self.keys(Some(username), ip);
        if let Err(e) =
            store::forget_login_failures(&self.redis, &keys, self.login.known_client_ttl_secs).await
        {
            unavailable("clear failures", &e);
        }
    }

    /// The wait after the `failures`-th failure when the first `free` cost nothing.
    fn delay_ms(&self, failures: u64, free: u64) -> u64 {
        if failures <= free {
            return 0;
        }
        let doublings = u32::try_from(failures - free - 1)
            .unwrap_or(u32::MAX)
            .min(32);
        self.login
            .delay_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.login.delay_max_ms)
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

/// Loud on purpose: while this happens, guesses are slowed only by the password hash's cost.
fn unavailable(step: &str, e: &redis::RedisError) {
    metrics::counter!("login_throttle_unavailable_total").increment(1);
    tracing::error!(error = %e, step,
        "login throttle unavailable (Redis): logins are checked without it (fail open)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(cfg: LoginThrottleConfig) -> Throttle {
        let redis = platform::redis::pool(&platform::config::RedisConfig::default()).unwrap();
        Throttle::new(redis, "t:", cfg, VerificationConfig::default())
    }

    #[tokio::test]
    async fn the_delay_starts_after_the_free_failures_doubles_and_is_capped() {
        let t = throttle(LoginThrottleConfig {
            delay_initial_ms: 1_000,
            delay_max_ms: 5_000,
            ..LoginThrottleConfig::default()
        });
        let delays: Vec<u64> = (1..=8).map(|n| t.delay_ms(n, 3)).collect();
        assert_eq!(delays, [0, 0, 0, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(t.delay_ms(u64::MAX, 3), 5_000, "no overflow");
    }
}
