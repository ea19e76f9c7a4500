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
