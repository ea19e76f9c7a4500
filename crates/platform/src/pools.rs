//! Pool usage on `/metrics`: read from the pools when Prometheus scrapes, so the numbers are current
//! and nothing runs between scrapes.
//!
//! - `db_pool_connections{state="idle"|"in_use"}`, `db_pool_max_connections`
//! - `redis_pool_connections{state="idle"|"in_use"}`, `redis_pool_max_connections`,
//!   `redis_pool_waiting` (callers queued for a connection)

/// A pool whose usage is reported.
#[derive(Clone)]
pub enum Pool {
    Postgres(sqlx::PgPool),
    Redis(deadpool_redis::Pool),
}

/// Sets the pool gauges from `pools` (summed per kind: one process normally has one of each).
pub fn record(pools: &[Pool]) {
    let (mut pg_idle, mut pg_used, mut pg_max, mut have_pg) = (0u64, 0u64, 0u64, false);
    let (mut r_idle, mut r_used, mut r_max, mut r_wait, mut have_redis) = (0, 0, 0, 0, false);
    for pool in pools {
        match pool {
            Pool::Postgres(p) if !p.is_closed() => {
                have_pg = true;
                let size = u64::from(p.size());
                let idle = p.num_idle() as u64;
                pg_idle += idle;
                pg_used += size.saturating_sub(idle);
                pg_max += u64::from(p.options().get_max_connections());
            }
            Pool::Redis(p) => {
                have_redis = true;
                let s = p.status();
                r_idle += s.available as u64;
                r_used += s.size.saturating_sub(s.available) as u64;
                r_max += s.max_size as u64;
                r_wait += s.waiting as u64;
            }
            Pool::Postgres(_) => {}
        }
    }
    if have_pg {
        metrics::gauge!("db_pool_connections", "state" => "idle").set(pg_idle as f64);
        metrics::gauge!("db_pool_connections", "state" => "in_use").set(pg_used as f64);
        metrics::gauge!("db_pool_max_connections").set(pg_max as f64);
    }
    if have_redis {
        metrics::gauge!("redis_pool_connections", "state" => "idle").set(r_idle as f64);
        metrics::gauge!("redis_pool_connections", "state" => "in_use").set(r_used as f64);
        metrics::gauge!("redis_pool_max_connections").set(r_max as f64);
        metrics::gauge!("redis_pool_waiting").set(r_wait as f64);
    }
}
