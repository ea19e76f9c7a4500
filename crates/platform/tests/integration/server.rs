//! The shared gRPC server: health answers SERVING, reflection lists the service, and shutdown lets
//! an in-flight call finish.

use std::time::Duration;

use platform::config::ServerConfig;
use proto::auth::v1::{
    CreateUserRequest, CreateUserResponse, User,
    auth_service_client::AuthServiceClient,
    auth_service_server::{AuthService, AuthServiceServer},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A stand-in service whose CreateUser takes 500 ms, to have a call in flight at shutdown.
struct Slow;

#[tonic::async_trait]
impl AuthService for Slow {
    async fn create_user(
        &self,
        request: tonic::Request<CreateUserRequest>,
    ) -> Result<tonic::Response<CreateUserResponse>, tonic::Status> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(tonic::Response::new(CreateUserResponse {
            user: Some(User {
                username: request.into_inner().username,
                ..User::default()
            }),
        }))
    }
}

fn start() -> impl FnOnce(
    platform::Listeners,
    platform::Shutdown,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>,
> {
    |listeners, shutdown| {
        Box::pin(async move {
            let cfg = ServerConfig {
                shutdown_grace_secs: 5,
                ..ServerConfig::default()
            };
            platform::serve_all(
                &cfg,
                listeners,
                tonic::service::Routes::new(AuthServiceServer::new(Slow)),
                &[proto::service_names::AUTH],
                platform::http::Readiness::new(),
                shutdown,
            )
            .await
        })
    }
}

#[tokio::test]
async fn health_answers_serving_for_the_service_and_overall() {
    let svc = test_support::spawn(start()).await;
    let mut health = HealthClient::new(test_support::channel(svc.grpc_addr).await);
    for service in ["", proto::service_names::AUTH] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn unimplemented_rpcs_answer_unimplemented() {
    let svc = test_support::spawn(start()).await;
    let mut client = AuthServiceClient::new(test_support::channel(svc.grpc_addr).await);
    let err = client
        .login_user(proto::auth::v1::LoginUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_the_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let svc = test_support::spawn(start()).await;
    let mut client = ServerReflectionClient::new(test_support::channel(svc.grpc_addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    // grpcurl resolves the error details' types by symbol to print the reason
    let details = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "google.rpc.ErrorInfo".into(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req, details]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&proto::service_names::AUTH.to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    svc.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_call_finish() {
    let svc = test_support::spawn(start()).await;
    let mut client = AuthServiceClient::new(test_support::channel(svc.grpc_addr).await);
    let call = tokio::spawn(async move {
        client
            .create_user(CreateUserRequest {
                username: "inflight".into(),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    svc.stop().await.expect("server stops cleanly");
    let answer = call.await.unwrap().expect("the in-flight call completed");
    assert_eq!(answer.into_inner().user.unwrap().username, "inflight");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drained within the grace period"
    );
}

/// How long the listener keeps serving after the signal (`server.shutdown_delay_ms`).
const DELAY: Duration = Duration::from_millis(1_200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_health_says_not_serving_while_new_calls_are_served_for_the_delay() {
    let svc = test_support::spawn(|listeners, shutdown| async move {
        let cfg = ServerConfig {
            shutdown_grace_secs: 5,
            shutdown_delay_ms: DELAY.as_millis() as u64,
            ..ServerConfig::default()
        };
        platform::serve_all(
            &cfg,
            listeners,
            tonic::service::Routes::new(AuthServiceServer::new(Slow)),
            &[proto::service_names::AUTH],
            platform::http::Readiness::new(),
            shutdown,
        )
        .await
    })
    .await;
    let addr = svc.grpc_addr;
    let call = |username: &'static str, channel: tonic::transport::Channel| {
        tokio::spawn(async move {
            AuthServiceClient::new(channel)
                .create_user(CreateUserRequest {
                    username: username.into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().user.unwrap().username)
                .map_err(|e| format!("{:?} {}", e.code(), e.message()))
        })
    };
    let before = call("before", test_support::channel(addr).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = std::time::Instant::now();
    svc.shutdown.signal(); // what SIGTERM does

    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut health = HealthClient::new(test_support::channel(addr).await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers during the delay")
        .into_inner()
        .status;
    assert_eq!(
        status,
        ServingStatus::NotServing as i32,
        "health after the signal"
    );
    let readyz = test_support::http_status(svc.http_addr, "/readyz").await;
    assert_eq!(readyz, Some(503), "/readyz after the signal");
    // a new connection and a new call, still served
    let during = call("during", test_support::channel(addr).await);
    // one more near the end of the delay, on a connection opened during it: in flight when the
    // listener closes, it is drained
    let late = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("a new connection during the delay");
    tokio::time::sleep(DELAY.saturating_sub(signalled.elapsed() + Duration::from_millis(150)))
        .await;
    let last = call("last", late);

    tokio::time::sleep((DELAY + Duration::from_millis(150)).saturating_sub(signalled.elapsed()))
        .await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "no new connections once the delay is over"
    );
    svc.handle.await.unwrap().expect("the server stops cleanly");
    let stopped = signalled.elapsed();
    for (name, answer) in [("before", before), ("during", during), ("last", last)] {
        assert_eq!(
            answer.await.unwrap().as_deref(),
            Ok(name),
            "the call {name}"
        );
    }
    // `last` began about 150 ms before the delay ended and takes 500 ms
    assert!(
        stopped >= DELAY + Duration::from_millis(300) && stopped < Duration::from_secs(5),
        "stops once the calls in flight finished, within the grace: {stopped:?}"
    );
}

#[tokio::test]
async fn a_shutdown_begun_in_process_skips_the_delay() {
    let svc = test_support::spawn(|listeners, shutdown| async move {
        let cfg = ServerConfig {
            shutdown_delay_ms: 3_000,
            ..ServerConfig::default()
        };
        platform::serve_all(
            &cfg,
            listeners,
            tonic::service::Routes::new(AuthServiceServer::new(Slow)),
            &[proto::service_names::AUTH],
            platform::http::Readiness::new(),
            shutdown,
        )
        .await
    })
    .await;
    let started = std::time::Instant::now();
    svc.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_delay_not_shorter_than_the_grace_is_refused() {
    let svc = test_support::spawn(|listeners, shutdown| async move {
        let cfg = ServerConfig {
            shutdown_grace_secs: 2,
            shutdown_delay_ms: 2_000,
            ..ServerConfig::default()
        };
        platform::serve_all(
            &cfg,
            listeners,
            tonic::service::Routes::new(AuthServiceServer::new(Slow)),
            &[proto::service_names::AUTH],
            platform::http::Readiness::new(),
            shutdown,
        )
        .await
    })
    .await;
    let err = svc.handle.await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("server.shutdown_delay_ms"),
        "{err:#}"
    );
}

#[tokio::test]
async fn side_port_serves_health_and_metrics() {
    let svc = test_support::spawn(start()).await;
    let body = |path: &'static str| {
        let addr = svc.http_addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    assert!(body("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(body("/readyz").await.starts_with("HTTP/1.1 200"));
    // one RPC so the RED counters exist
    let mut client = AuthServiceClient::new(test_support::channel(svc.grpc_addr).await);
    let _ = client
        .login_user(proto::auth::v1::LoginUserRequest::default())
        .await;
    let metrics = body("/metrics").await;
    assert!(metrics.contains("grpc_server_requests_total"), "{metrics}");
    assert!(metrics.contains("LoginUser"), "{metrics}");
    svc.stop().await.unwrap();
}
