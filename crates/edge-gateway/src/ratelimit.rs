//! A token bucket per client IP, in memory (per gateway replica), bounded in the IPs it tracks.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_minute == 0` means unlimited. `burst` and `max_tracked` are at least 1, as the
    /// gateway's config validation refuses anything less (`rate_limit.burst`,
    /// `rate_limit.max_tracked_ips`): an empty bucket would refuse every request, and a bound of
    /// no IPs would leave nothing to forget.
    pub fn new(per_minute: u32, burst: u32, max_tracked: usize) -> Self {
        assert!(burst >= 1, "rate limit burst must be at least 1");
        assert!(max_tracked >= 1, "rate limit must track at least 1 IP");
        Self {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst),
            max_tracked,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= self.max_tracked && !buckets.contains_key(&ip) {
            // forget the buckets that have refilled (they behave as new ones), else the oldest half
            let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
            buckets.retain(|_, b| now.duration_since(b.at) < full_after);
            if buckets.len() >= self.max_tracked {
                let mut ats: Vec<Instant> = buckets.values().map(|b| b.at).collect();
                ats.sort();
                let cut = ats[ats.len() / 2];
                buckets.retain(|_, b| b.at > cut);
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_refill() {
        let rl = RateLimiter::new(60, 3, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check_at(ip, t0).is_ok());
        }
        let wait = rl.check_at(ip, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        // another IP has its own bucket
        assert!(rl.check_at("192.0.2.2".parse().unwrap(), t0).is_ok());
        // one second later one token is back
        assert!(rl.check_at(ip, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn zero_rate_is_unlimited_and_tracking_is_bounded() {
        let rl = RateLimiter::new(0, 1, 10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(rl.check(ip).is_ok());
        }
        let rl = RateLimiter::new(60, 1, 10);
        let t0 = Instant::now();
        for i in 0..100u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            let _ = rl.check_at(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(rl.buckets.lock().unwrap().len() <= 10);
    }
}
