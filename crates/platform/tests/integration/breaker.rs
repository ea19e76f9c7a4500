//! The database's circuit breaker against a throwaway PostgreSQL that the test stops: while it is
//! down, queries fail at once with `database_unavailable` instead of waiting out the acquire
//! timeout; once it is back, the same pool reaches it again without a restart.

use std::time::{Duration, Instant};

use platform::{ApiError, config::DatabaseConfig};
use test_support::servers::ThrowawayPostgres;

async fn select_one(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_fails_queries_at_once_and_the_pool_recovers_without_restart() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let cfg = DatabaseConfig {
        url: pg.url("localhost", ""),
        ssl_mode: Some("verify-full".into()),
        ssl_root_cert: Some(pg.certs.ca.clone()),
        // what callers would wait for without the breaker
        acquire_timeout_ms: 5_000,
        breaker_probe_interval_ms: 100,
        connect_timeout_ms: 500,
        ..DatabaseConfig::default()
    };
    let pool = platform::db::pool(&cfg).unwrap();
    select_one(&pool).await.expect("the database answers");

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    // the first callers may meet the outage before the probe does (it looks every 100 ms)
    let first = select_one(&pool).await.unwrap_err();
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "the first caller answered in {:?}, not after the acquire timeout",
        stopped.elapsed()
    );
    assert_eq!(
        ApiError::from(first).into_status().code(),
        tonic::Code::Unavailable
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let err = select_one(&pool).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "with the breaker open a query fails at once: {:?} ({err})",
            started.elapsed()
        );
        let status = ApiError::from(err).into_status();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(
            platform::error::reason_of(&status).as_deref(),
            Some("database_unavailable")
        );
    }

    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let back = Instant::now();
    loop {
        if select_one(&pool).await.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "the pool reaches the database again within 2 s of its start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    drop(pg);
}

#[test]
fn waits_outside_their_bounds_are_refused_naming_the_key() {
    for (cfg, key) in [
        (
            DatabaseConfig {
                acquire_timeout_ms: 10,
                ..DatabaseConfig::default()
            },
            "database.acquire_timeout_ms",
        ),
        (
            DatabaseConfig {
                breaker_probe_interval_ms: 5,
                ..DatabaseConfig::default()
            },
            "database.breaker_probe_interval_ms",
        ),
        (
            DatabaseConfig {
                connect_timeout_ms: 0,
                ..DatabaseConfig::default()
            },
            "database.connect_timeout_ms",
        ),
    ] {
        let err = platform::db::pool(&cfg).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}
