//! The gRPC health status follows the readiness checks (`/readyz`'s): a throwaway PostgreSQL
//! stopped crash-like makes it NOT_SERVING within a few seconds, started again SERVING, with no
//! restart; SIGTERM makes every name NOT_SERVING while in-flight calls drain.

use std::time::{Duration, Instant};

use platform::config::{DatabaseConfig, ServerConfig};
use proto::auth::v1::auth_service_server::AuthServiceServer;
use test_support::servers::ThrowawayPostgres;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A service with no RPCs of its own: health is what is under test.
struct Nothing;

#[tonic::async_trait]
impl proto::auth::v1::auth_service_server::AuthService for Nothing {}

async fn status(channel: &Channel, service: &str) -> i32 {
    match HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
    {
        Ok(resp) => resp.into_inner().status,
        Err(e) => panic!("health check of {service:?} failed: {e}"),
    }
}

/// Waits up to `within` until every name reports `want`; how long it took.
async fn wait_for(channel: &Channel, want: ServingStatus, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for name in ["", proto::service_names::AUTH] {
            all &= status(channel, name).await == want as i32;
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "health did not turn {want:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_without_a_restart() {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start)
        .await
        .unwrap();
    let database = DatabaseConfig {
        url: pg.url("localhost", ""),
        ssl_mode: Some("verify-full".into()),
        ssl_root_cert: Some(pg.certs.ca.clone()),
        acquire_timeout_ms: 1_000,
        ..DatabaseConfig::default()
    };
    let pool = platform::db::pool(&database).unwrap();
    let svc = test_support::spawn(move |listeners, shutdown| async move {
        let cfg = ServerConfig {
            health_check_interval_ms: 200,
            ..ServerConfig::default()
        };
        platform::serve_all(
            &cfg,
            listeners,
            tonic::service::Routes::new(AuthServiceServer::new(Nothing)),
            &[proto::service_names::AUTH],
            platform::http::Readiness::new().postgres(pool),
            shutdown,
        )
        .await
    })
    .await;
    let channel = test_support::channel(svc.grpc_addr).await;
    wait_for(&channel, ServingStatus::Serving, Duration::from_secs(10)).await;

    tokio::task::block_in_place(|| pg.stop());
    let took = wait_for(&channel, ServingStatus::NotServing, Duration::from_secs(5)).await;
    eprintln!("NOT_SERVING {took:?} after the database stopped");

    tokio::task::block_in_place(|| pg.start_again());
    let took = wait_for(&channel, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("SERVING {took:?} after the database came back");
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn sigterm_turns_every_name_not_serving_while_calls_drain() {
    let svc = test_support::spawn(|listeners, shutdown| async move {
        platform::serve_all(
            &ServerConfig::default(),
            listeners,
            tonic::service::Routes::new(AuthServiceServer::new(Nothing)),
            &[proto::service_names::AUTH],
            platform::http::Readiness::new(),
            shutdown,
        )
        .await
    })
    .await;
    let channel = test_support::channel(svc.grpc_addr).await;
    let mut watches = Vec::new();
    for name in ["", proto::service_names::AUTH] {
        let mut stream = HealthClient::new(channel.clone())
            .watch(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap().status;
        assert_eq!(first, ServingStatus::Serving as i32, "{name:?}");
        watches.push((name, stream));
    }
    svc.shutdown.trigger();
    for (name, mut stream) in watches {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a status change")
            .unwrap()
            .unwrap()
            .status;
        assert_eq!(next, ServingStatus::NotServing as i32, "{name:?}");
    }
    svc.handle.await.unwrap().unwrap();
}
