//! TLS to PostgreSQL and Redis against throwaway servers the tests start themselves (a cluster
//! that accepts only TLS, a `redis-server` on a TLS port), with certificates made by the test:
//! verify-full works, and each misconfiguration stops start-up with a message naming the setting.

use platform::config::{DatabaseConfig, RedisConfig};
use test_support::servers::{ThrowawayPostgres, ThrowawayRedis};

fn database(pg: &ThrowawayPostgres, host: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: pg.url(host, ""),
        ssl_mode: Some("verify-full".into()),
        ssl_root_cert: Some(pg.certs.ca.clone()),
        acquire_timeout_ms: 5_000,
        ..DatabaseConfig::default()
    }
}

/// What `check_at_start` said, or `None` when it let the service start.
async fn start_up_error(cfg: &DatabaseConfig) -> Option<String> {
    let pool = platform::db::pool(cfg).expect("pool");
    let result = platform::db::check_at_start(&pool, cfg).await;
    pool.close().await;
    result.err().map(|e| format!("{e:#}"))
}

#[tokio::test]
async fn postgres_tls_settings_are_checked_at_start_up() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();

    // verify-full with the right CA and host name: connected over TLS
    let cfg = database(&pg, "localhost");
    assert_eq!(start_up_error(&cfg).await, None);
    let pool = platform::db::pool(&cfg).unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    pool.close().await;

    // the same through the URL alone (sslmode / sslrootcert), as libpq spells them
    let url_only = DatabaseConfig {
        url: pg.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", pg.certs.ca.display()),
        ),
        ..DatabaseConfig::default()
    };
    assert_eq!(start_up_error(&url_only).await, None);

    // a CA that did not sign the server's certificate
    let wrong_ca = DatabaseConfig {
        ssl_root_cert: Some(pg.certs.other_ca.clone()),
        ..database(&pg, "localhost")
    };
    let err = start_up_error(&wrong_ca)
        .await
        .expect("a wrong CA stops start-up");
    assert!(err.contains("database.ssl_root_cert"), "{err}");

    // the certificate is for `localhost`, not `127.0.0.1`
    let err = start_up_error(&database(&pg, "127.0.0.1"))
        .await
        .expect("a wrong host name stops start-up");
    assert!(
        err.contains("database.url") && err.contains("127.0.0.1"),
        "{err}"
    );

    // verify-ca does not check the name: the same host is accepted
    let verify_ca = DatabaseConfig {
        ssl_mode: Some("verify-ca".into()),
        ..database(&pg, "127.0.0.1")
    };
    assert_eq!(start_up_error(&verify_ca).await, None);

    // plaintext against a server that accepts only TLS
    let disable = DatabaseConfig {
        ssl_mode: Some("disable".into()),
        ..database(&pg, "localhost")
    };
    let err = start_up_error(&disable)
        .await
        .expect("sslmode=disable stops start-up");
    assert!(
        err.contains("database.ssl_mode") && err.contains("requires TLS"),
        "{err}"
    );

    // what waiting cannot fix is refused before any connection
    let err = platform::db::pool(&DatabaseConfig {
        ssl_mode: Some("always".into()),
        ..database(&pg, "localhost")
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.ssl_mode"), "{err}");
    let err = platform::db::pool(&DatabaseConfig {
        ssl_root_cert: Some(pg.dir.join("missing.pem")),
        ..database(&pg, "localhost")
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.ssl_root_cert"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_does_not_stop_start_up() {
    let cfg = DatabaseConfig {
        url: "postgres://postgres@127.0.0.1:1/postgres".into(),
        acquire_timeout_ms: 500,
        ..DatabaseConfig::default()
    };
    assert_eq!(
        start_up_error(&cfg).await,
        None,
        "readiness waits for it instead"
    );
}

fn redis(server: &ThrowawayRedis, host: &str) -> RedisConfig {
    RedisConfig {
        url: server.url(host),
        tls_ca_file: Some(server.certs.ca.clone()),
        timeout_ms: 3_000,
        ..RedisConfig::default()
    }
}

async fn redis_start_up_error(cfg: &RedisConfig) -> Option<String> {
    let pool = platform::redis::pool(cfg).expect("pool");
    platform::redis::check_at_start(&pool, cfg)
        .await
        .err()
        .map(|e| format!("{e:#}"))
}

#[tokio::test]
async fn redis_tls_settings_are_checked_at_start_up() {
    let server = tokio::task::spawn_blocking(ThrowawayRedis::start)
        .await
        .unwrap();

    let cfg = redis(&server, "localhost");
    assert_eq!(redis_start_up_error(&cfg).await, None);
    platform::redis::ping(&platform::redis::pool(&cfg).unwrap())
        .await
        .expect("PING over TLS");

    let wrong_ca = RedisConfig {
        tls_ca_file: Some(server.certs.other_ca.clone()),
        ..redis(&server, "localhost")
    };
    let err = redis_start_up_error(&wrong_ca)
        .await
        .expect("a wrong CA stops start-up");
    assert!(err.contains("redis.tls_ca_file"), "{err}");

    let err = redis_start_up_error(&redis(&server, "127.0.0.1"))
        .await
        .expect("a wrong host name stops start-up");
    assert!(err.contains("redis.url"), "{err}");

    let err = platform::redis::pool(&RedisConfig {
        url: format!("redis://localhost:{}", server.port),
        ..redis(&server, "localhost")
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("redis.tls_ca_file") && err.contains("rediss://"),
        "{err}"
    );
}
