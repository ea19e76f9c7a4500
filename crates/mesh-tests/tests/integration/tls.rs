//! The services as on AWS (RDS and ElastiCache with in-transit encryption): auth, accounts and
//! transfers reach a PostgreSQL that accepts only TLS with `verify-full` and the test's CA; auth's
//! relay publishes to, and the mailer consumes from, a Redis on a TLS port only; a wrong CA stops a
//! service's start-up naming the setting; and each service's gRPC health follows the database:
//! NOT_SERVING within seconds of it stopping, SERVING again when it is back, with no restart.
//! The servers are throwaway ones the test starts (`test_support::servers`).

use std::time::{Duration, Instant};

use platform::config::{DatabaseConfig, RedisConfig};
use proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use test_support::servers::{ThrowawayPostgres, ThrowawayRedis};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn database(pg: &ThrowawayPostgres) -> DatabaseConfig {
    DatabaseConfig {
        url: pg.url("localhost", ""),
        ssl_mode: Some("verify-full".into()),
        ssl_root_cert: Some(pg.certs.ca.clone()),
        acquire_timeout_ms: 1_000,
        ..DatabaseConfig::default()
    }
}

fn redis(server: &ThrowawayRedis) -> RedisConfig {
    RedisConfig {
        url: server.url("localhost"),
        tls_ca_file: Some(server.certs.ca.clone()),
        key_prefix: "tls-mesh:".into(),
        timeout_ms: 3_000,
        ..RedisConfig::default()
    }
}

/// Every name's health on `svc` (the server `""` and its service) equals `want` within `within`.
async fn wait_health(
    svc: &test_support::Running,
    name: &str,
    want: ServingStatus,
    within: Duration,
) {
    let channel = test_support::channel(svc.grpc_addr).await;
    let started = Instant::now();
    loop {
        let mut all = true;
        for service in ["", name] {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status)
                .unwrap_or(-1);
            all &= status == want as i32;
        }
        if all {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{name} did not turn {want:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_runs_over_tls_and_its_health_follows_the_database() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let redis_server = tokio::task::spawn_blocking(ThrowawayRedis::start)
        .await
        .unwrap();
    // the schema, over the same TLS settings `migrate up` uses
    platform::db::create_database_if_missing_with(&database(&pg))
        .await
        .unwrap();
    let pool = platform::db::pool(&database(&pg)).unwrap();
    platform::db::migrate(&pool)
        .await
        .expect("migrations over TLS");
    pool.close().await;

    let keys = test_support::test_keys();
    let mut auth_cfg = auth::config::Config {
        database: database(&pg),
        redis: redis(&redis_server),
        ..auth::config::Config::default()
    };
    auth_cfg.token.private_key = keys.private_b64();
    auth_cfg.relay.poll_interval_ms = 200;
    auth_cfg.server.health_check_interval_ms = 200;
    let auth = test_support::spawn(move |l, s| auth::startup::run(auth_cfg, l, s)).await;

    let mut accounts_cfg = accounts::config::Config {
        database: database(&pg),
        ..Default::default()
    };
    accounts_cfg.token.public_key = Some(keys.public_b64());
    accounts_cfg.server.health_check_interval_ms = 200;
    let accounts =
        test_support::spawn(move |l, s| accounts::startup::run(accounts_cfg, l, s)).await;

    let mut transfers_cfg = transfers::config::Config {
        database: database(&pg),
        ..Default::default()
    };
    transfers_cfg.token.public_key = Some(keys.public_b64());
    transfers_cfg.server.health_check_interval_ms = 200;
    let transfers =
        test_support::spawn(move |l, s| transfers::startup::run(transfers_cfg, l, s)).await;

    let mail_dir = std::env::temp_dir().join(format!("tls-mail-{}", uuid::Uuid::new_v4().simple()));
    let mailer_cfg = mailer::config::Config {
        redis: redis(&redis_server),
        database: database(&pg), // its recipients table, over TLS too
        consumer_name: "tls-mailer".into(),
        transport: mailer::config::TransportConfig {
            kind: mailer::config::TransportKind::File,
            file_dir: mail_dir.clone(),
            ..Default::default()
        },
        block_ms: 200,
        ..Default::default()
    };
    let mailer = test_support::spawn(move |l, s| mailer::startup::run(mailer_cfg, l.http, s)).await;
    crate::support::wait_ready(&mailer).await;

    let services = [
        (&auth, proto::service_names::AUTH),
        (&accounts, proto::service_names::ACCOUNTS),
        (&transfers, proto::service_names::TRANSFERS),
    ];
    for (svc, name) in services {
        wait_health(svc, name, ServingStatus::Serving, Duration::from_secs(20)).await;
    }

    // sign-up over TLS to the database; the relay publishes and the mailer consumes over TLS
    let mut client = AuthServiceClient::new(test_support::channel(auth.grpc_addr).await);
    client
        .create_user(pb::CreateUserRequest {
            username: "tessa".into(),
            full_name: "Tessa Tls".into(),
            email: "tessa@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("CreateUser over TLS");
    let started = Instant::now();
    let email = loop {
        let found = std::fs::read_dir(&mail_dir).ok().and_then(|entries| {
            entries
                .flatten()
                .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
        });
        if let Some(entry) = found {
            break std::fs::read_to_string(entry.path()).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no email written: the relay or the mailer did not get through Redis TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(email.contains("tessa@example.com"), "{email}");

    // the database stops crash-like: every service reports NOT_SERVING within a few seconds...
    tokio::task::block_in_place(|| pg.stop());
    for (svc, name) in services {
        wait_health(svc, name, ServingStatus::NotServing, Duration::from_secs(5)).await;
    }
    // ...and SERVING again once it is back, with no restart
    tokio::task::block_in_place(|| pg.start_again());
    for (svc, name) in services {
        wait_health(svc, name, ServingStatus::Serving, Duration::from_secs(15)).await;
    }

    for svc in [mailer, transfers, accounts, auth] {
        svc.stop().await.expect("service stops cleanly");
    }
    let _ = std::fs::remove_dir_all(&mail_dir);
}

#[tokio::test]
async fn a_service_given_the_wrong_ca_refuses_to_start_naming_the_setting() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let mut cfg = accounts::config::Config {
        database: DatabaseConfig {
            ssl_root_cert: Some(pg.certs.other_ca.clone()),
            ..database(&pg)
        },
        ..Default::default()
    };
    cfg.token.public_key = Some(test_support::test_keys().public_b64());
    let svc = test_support::spawn(move |l, s| accounts::startup::run(cfg, l, s)).await;
    let err = tokio::time::timeout(Duration::from_secs(20), svc.handle)
        .await
        .expect("start-up ends")
        .unwrap()
        .expect_err("a wrong CA stops start-up");
    assert!(
        format!("{err:#}").contains("database.ssl_root_cert"),
        "{err:#}"
    );

    let redis_server = tokio::task::spawn_blocking(ThrowawayRedis::start)
        .await
        .unwrap();
    let cfg = mailer::config::Config {
        redis: RedisConfig {
            tls_ca_file: Some(redis_server.certs.other_ca.clone()),
            ..redis(&redis_server)
        },
        consumer_name: "tls-mailer".into(),
        ..Default::default()
    };
    let svc = test_support::spawn(move |l, s| mailer::startup::run(cfg, l.http, s)).await;
    let err = tokio::time::timeout(Duration::from_secs(20), svc.handle)
        .await
        .expect("start-up ends")
        .unwrap()
        .expect_err("a wrong CA stops start-up");
    assert!(format!("{err:#}").contains("redis.tls_ca_file"), "{err:#}");
}
