//! The gateway's machinery against a small in-test upstream implementing our own `AuthService`
//! contract (not a fake of Postgres or Redis): routing, transcoding, metadata, error mapping, limits,
//! the gRPC door, OpenAPI and Swagger UI, health. The real services are driven through the gateway
//! in mesh-tests (its `journey` module): a service crate never links another.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use edge_gateway::config::Config;
use platform::{ApiError, config::ServerConfig, http::Readiness};
use proto::auth::v1::{
    self as pb,
    auth_service_server::{AuthService, AuthServiceServer},
};
use serde_json::{Value, json};
use test_support::Running;
use tonic::{Request, Response, Status};

mod faults;

/// Echoes what the gateway sent, and fails on cue.
struct Echo;

/// Set when the upstream has received the `slow_signal` login (the concurrency test's slow call).
static SLOW_CALL_STARTED: AtomicBool = AtomicBool::new(false);

fn md(req: &Request<impl Sized>, key: &str) -> String {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tonic::async_trait]
impl AuthService for Echo {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let r = req.into_inner();
        match r.username.as_str() {
            "taken" => Err(ApiError::already_exists("username_taken", "username is taken").into()),
            "x" => Err(ApiError::invalid_field("username", "3 to 32 characters").into()),
            _ => Ok(Response::new(pb::CreateUserResponse {
                user: Some(pb::User {
                    username: r.username,
                    full_name: r.full_name,
                    email: r.email,
                    role: pb::Role::Depositor as i32,
                    ..Default::default()
                }),
            })),
        }
    }

    async fn login_user(
        &self,
        req: Request<pb::LoginUserRequest>,
    ) -> Result<Response<pb::LoginUserResponse>, Status> {
        if req.get_ref().username == "slow_signal" {
            SLOW_CALL_STARTED.store(true, Ordering::SeqCst);
        }
        if req.get_ref().username.starts_with("slow") {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        // still in hand when the drain test's SIGTERM comes
        if req.get_ref().username.starts_with("drain") {
            tokio::time::sleep(faults::UPSTREAM_TAKES).await;
        }
        if req.get_ref().password != "right" {
            return Err(ApiError::unauthenticated("invalid_credentials", "wrong").into());
        }
        // echo the metadata the gateway set
        Ok(Response::new(pb::LoginUserResponse {
            session_id: md(&req, "x-client-ip"),
            access_token: md(&req, "x-client-user-agent"),
            refresh_token: md(&req, "x-request-id"),
            ..Default::default()
        }))
    }

    async fn get_user(
        &self,
        req: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(pb::User {
            username: req.get_ref().username.clone(),
            full_name: md(&req, "authorization"),
            email: md(&req, "idempotency-key"),
            role: pb::Role::Banker as i32,
            ..Default::default()
        }))
    }

    async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        match req.get_ref().email_id {
            1 => Ok(Response::new(pb::VerifyEmailResponse {
                email_verified: true,
                username: "alice".into(),
                message: "verified".into(),
            })),
            2 => Err(ApiError::failed_precondition("verification_expired", "expired").into()),
            _ => Err(ApiError::not_found("verification_not_found", "no such link").into()),
        }
    }
}

struct Mesh {
    gateway: Running,
    _upstream: Running,
    http: reqwest::Client,
}

impl Mesh {
    async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        // the upstream believes the client facts only from a gateway with the shared secret
        let gateway_secret = platform::config::GatewaySecret("gateway-test-secret".into());
        let upstream_server = ServerConfig {
            gateway_secret: Some(gateway_secret.clone()),
            ..ServerConfig::default()
        };
        let upstream = test_support::spawn(|l, s| async move {
            let routes = tonic::service::Routes::new(AuthServiceServer::new(Echo));
            platform::serve_all(
                &upstream_server,
                l,
                routes,
                &[proto::service_names::AUTH],
                Readiness::new(),
                s,
            )
            .await
        })
        .await;
        // accounts points at a port nobody listens on: upstream down
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let mut cfg = Config::default();
        cfg.upstreams.insert("auth".into(), upstream.grpc_url());
        cfg.upstreams
            .insert("accounts".into(), format!("http://{closed_addr}"));
        cfg.upstreams
            .insert("transfers".into(), format!("http://{closed_addr}"));
        // generous on a loaded machine; the timeout test sets its own
        cfg.limits.request_timeout_ms = 20_000;
        cfg.rate_limit.per_ip_per_minute = 0;
        cfg.server.gateway_secret = Some(gateway_secret);
        tune(&mut cfg);
        let gateway = test_support::spawn(move |l, s| edge_gateway::startup::run(cfg, l, s)).await;
        // a token on every request, as a client would send (the routes behind one are 401 at
        // the gateway without it); the in-test upstream does not verify it
        let mut token = reqwest::header::HeaderMap::new();
        token.insert("authorization", "Bearer test-token".parse().unwrap());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(token)
            .build()
            .unwrap();
        let mesh = Self {
            gateway,
            _upstream: upstream,
            http,
        };
        mesh.wait_up().await;
        mesh
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.http_url())
    }

    async fn wait_up(&self) {
        for _ in 0..300 {
            if self
                .http
                .get(self.url("/openapi.json"))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway did not start");
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }
}

fn reason(body: &Value) -> &str {
    body["details"][0]["reason"].as_str().unwrap_or("")
}

fn assert_error_shape(body: &Value) {
    assert!(body["code"].is_i64(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["details"].is_array(), "{body}");
}

#[tokio::test]
async fn json_body_is_transcoded_and_answer_uses_snake_case_and_enum_names() {
    let m = Mesh::start(|_| {}).await;
    let (status, headers, body) = m
        .send(m.http.post(m.url("/v1/users")).json(&json!({
            "username": "alice", "fullName": "Alice A", "email": "a@example.com", "password": "pw"
        })))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["full_name"], "Alice A");
    assert_eq!(body["user"]["role"], "ROLE_DEPOSITOR");
    assert_eq!(body["user"]["email_verified"], false);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!headers["x-request-id"].is_empty());
}

#[tokio::test]
async fn headers_become_metadata_and_the_request_id_is_echoed() {
    let m = Mesh::start(|_| {}).await;
    let (status, headers, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .header("user-agent", "walkthrough/1.0")
                .header("x-request-id", "req-42")
                .header("x-forwarded-for", "6.6.6.6")
                .json(&json!({"username": "alice", "password": "right"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // the peer, not the client's X-Forwarded-For (no trusted proxies configured)
    assert_eq!(body["session_id"], "127.0.0.1");
    assert_eq!(body["access_token"], "walkthrough/1.0");
    assert_eq!(body["refresh_token"], "req-42");
    assert_eq!(headers["x-request-id"], "req-42");

    let (status, _, body) = m
        .send(
            m.http
                .get(m.url("/v1/users/bob"))
                .header("authorization", "Bearer tok")
                .header("idempotency-key", "k-1"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["username"], "bob");
    assert_eq!(body["full_name"], "Bearer tok");
    assert_eq!(body["email"], "k-1");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let m = Mesh::start(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let (_, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .header("x-forwarded-for", "198.51.100.7")
                .json(&json!({"username": "alice", "password": "right"})),
        )
        .await;
    assert_eq!(body["session_id"], "198.51.100.7");
}

#[tokio::test]
async fn upstream_errors_keep_status_reason_and_field_violations() {
    let m = Mesh::start(|_| {}).await;
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/users"))
                .json(&json!({"username": "taken"})),
        )
        .await;
    assert_eq!(status, 409);
    assert_error_shape(&body);
    assert_eq!(body["code"], 6);
    assert_eq!(reason(&body), "username_taken");

    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/users"))
                .json(&json!({"username": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "username"
    );

    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .json(&json!({"username": "a", "password": "wrong"})),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(reason(&body), "invalid_credentials");

    // an RPC the upstream does not implement yet
    let (status, _, body) = m.send(m.http.delete(m.url("/v1/sessions/current"))).await;
    assert_eq!(status, 501);
    assert_error_shape(&body);
}

#[tokio::test]
async fn gateway_errors_are_json_with_their_own_status() {
    let m = Mesh::start(|c| {
        c.limits.body_limit_bytes = 1024;
        c.limits.request_timeout_ms = 1_500;
    })
    .await;
    // unknown route
    let (status, _, body) = m.send(m.http.get(m.url("/v1/nothing"))).await;
    assert_eq!(status, 404);
    assert_error_shape(&body);
    assert_eq!(reason(&body), "route_not_found");
    // wrong method
    let (status, headers, body) = m.send(m.http.put(m.url("/v1/users/alice"))).await;
    assert_eq!(status, 405);
    assert_eq!(reason(&body), "method_not_allowed");
    assert!(headers["allow"].to_str().unwrap().contains("GET"));
    // also on the gateway's own pages
    let (status, _, body) = m.send(m.http.post(m.url("/openapi.json"))).await;
    assert_eq!(status, 405);
    assert_eq!(reason(&body), "method_not_allowed");
    // malformed JSON
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/users"))
                .header("content-type", "application/json")
                .body("{\"username\": "),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(reason(&body), "malformed_json");
    // wrong field type names the field
    let (status, _, body) = m
        .send(
            m.http
                .get(m.url("/v1/verify_email?email_id=abc&secret_code=s")),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "email_id"
    );
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .json(&json!({"username": 5})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "username"
    );
    // body too large
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/users"))
                .json(&json!({"full_name": "x".repeat(4000)})),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(reason(&body), "body_too_large");
    // upstream down
    let (status, _, body) = m.send(m.http.get(m.url("/v1/accounts/1"))).await;
    assert_eq!(status, 503);
    assert_eq!(reason(&body), "upstream_unavailable");
    // upstream too slow (the gateway's deadline is 1.5 s, the upstream takes 5 s): the upstream
    // had the request and did not answer by the deadline, so what it did is unknown (503
    // outcome_unknown); 504 is only an upstream's own deadline answer (nothing applied)
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .json(&json!({"username": "slow", "password": "right"})),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(reason(&body), "outcome_unknown");
    assert_error_shape(&body);
}

#[tokio::test]
async fn credential_rpcs_are_rate_limited_per_ip_with_retry_after() {
    let m = Mesh::start(|c| {
        c.rate_limit.per_ip_per_minute = 1;
        c.rate_limit.burst = 2;
    })
    .await;
    let login = || {
        m.http
            .post(m.url("/v1/sessions"))
            .json(&json!({"username": "alice", "password": "right"}))
    };
    assert_eq!(m.send(login()).await.0, 200);
    assert_eq!(m.send(login()).await.0, 200);
    let (status, headers, body) = m.send(login()).await;
    assert_eq!(status, 429);
    assert_eq!(reason(&body), "rate_limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // other RPCs are not limited
    assert_eq!(m.send(m.http.get(m.url("/v1/users/bob"))).await.0, 200);
    // the gRPC door shares the budget: it is no way around the limit
    let channel = test_support::channel(m.gateway.grpc_addr).await;
    let mut client = proto::auth::v1::auth_service_client::AuthServiceClient::new(channel);
    let status = client
        .login_user(pb::LoginUserRequest {
            username: "alice".into(),
            password: "right".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        platform::error::reason_of(&status).as_deref(),
        Some("rate_limited")
    );
}

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_are_refused_at_once_with_503() {
    let m = Mesh::start(|c| {
        c.limits.concurrency_limit = 1;
        c.limits.request_timeout_ms = 20_000;
    })
    .await;
    let slow = {
        let req = m
            .http
            .post(m.url("/v1/sessions"))
            .json(&json!({"username": "slow_signal", "password": "right"}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    // once the slow call (5 s upstream) holds the only slot, the next request is refused
    for _ in 0..200 {
        if SLOW_CALL_STARTED.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        SLOW_CALL_STARTED.load(Ordering::SeqCst),
        "the slow call never arrived"
    );
    let (status, headers, body) = m.send(m.http.get(m.url("/v1/users/bob"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(reason(&body), "gateway_overloaded");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(slow.await.unwrap(), 200);
    // the slot is free again
    assert_eq!(m.send(m.http.get(m.url("/v1/users/bob"))).await.0, 200);
}

#[tokio::test]
async fn verification_link_answers_a_browser_with_html_and_a_client_with_json() {
    let m = Mesh::start(|_| {}).await;
    let page = |id: u32| {
        m.http
            .get(m.url(&format!("/v1/verify_email?email_id={id}&secret_code=s")))
            .header("accept", "text/html,application/xhtml+xml")
    };
    let resp = page(1).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(resp.text().await.unwrap().contains("Email verified"));
    assert!(
        page(2)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Link expired")
    );
    assert!(
        page(3)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Invalid link")
    );

    let (status, _, body) = m
        .send(
            m.http
                .get(m.url("/v1/verify_email?email_id=1&secret_code=s")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["email_verified"], true);
}

#[tokio::test]
async fn grpc_port_proxies_calls_with_metadata_and_lists_services_by_reflection() {
    let m = Mesh::start(|_| {}).await;
    let channel = test_support::channel(m.gateway.grpc_addr).await;
    let mut client = proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    let mut req = Request::new(pb::GetUserRequest {
        username: "carol".into(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer g".parse().unwrap());
    let user = client.get_user(req).await.unwrap().into_inner();
    assert_eq!(user.username, "carol");
    assert_eq!(user.full_name, "Bearer g");

    let mut req = Request::new(pb::LoginUserRequest {
        username: "a".into(),
        password: "right".into(),
    });
    req.metadata_mut()
        .insert("x-client-ip", "6.6.6.6".parse().unwrap());
    let resp = client.login_user(req).await.unwrap().into_inner();
    assert_eq!(
        resp.session_id, "127.0.0.1",
        "the client cannot set its own IP"
    );

    // errors pass through with their details
    let status = client
        .create_user(pb::CreateUserRequest {
            username: "taken".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert_eq!(
        platform::error::reason_of(&status).as_deref(),
        Some("username_taken")
    );

    // a service of ours whose upstream is down
    let mut accounts =
        proto::accounts::v1::accounts_service_client::AccountsServiceClient::new(channel.clone());
    let status = accounts
        .get_account(proto::accounts::v1::GetAccountRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // reflection (v1alpha, what grpcurl 1.8 speaks) lists the public services
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in [
        proto::service_names::AUTH,
        proto::service_names::ACCOUNTS,
        proto::service_names::TRANSFERS,
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    // health of the gateway itself
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let ok = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status, 1);
}

#[tokio::test]
async fn openapi_swagger_health_and_metrics_are_served() {
    let m = Mesh::start(|_| {}).await;
    let (status, _, doc) = m.send(m.http.get(m.url("/openapi.json"))).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/tokens:renew"]["post"].is_object());
    let resp = m.http.get(m.url("/swagger/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );
    let init = m
        .http
        .get(m.url("/swagger/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    // the public port serves the API and its documents only
    for path in ["/metrics", "/readyz", "/healthz"] {
        let resp = m.http.get(m.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "public {path}");
    }
    let admin = |path: &str| format!("{}{path}", m.gateway.admin_url());
    assert_eq!(
        m.http.get(admin("/healthz")).send().await.unwrap().status(),
        200
    );
    // accounts and transfers are down in this mesh, auth answers: still ready (their routes
    // answer 503), and it says which are missing
    let resp = m.http.get(admin("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("degraded: upstream accounts"), "{text}");
    assert!(!text.contains("upstream auth"), "{text}");
    let _ = m.send(m.http.get(m.url("/v1/users/bob"))).await;
    let metrics = m
        .http
        .get(admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = Mesh::start(|c| c.limits.header_read_timeout_ms = 300).await;
    let addr = m
        .gateway
        .http_url()
        .trim_start_matches("http://")
        .to_owned();

    // a whole request in time is answered, and the connection stays usable
    let mut ok = tokio::net::TcpStream::connect(&addr).await.unwrap();
    ok.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = ok.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // half the headers, then nothing: closed soon after the timeout, without an answer
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "a partial request was answered: {}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut off before the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    // none configured (the default): no CORS headers at all
    let m = Mesh::start(|_| {}).await;
    let resp = m
        .http
        .get(m.url("/openapi.json"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    drop(m);

    let m = Mesh::start(|c| c.cors_allowed_origins = vec!["https://app.example.com/".into()]).await;
    // a preflight from the allowed origin names what the API needs
    let resp = m
        .http
        .request(reqwest::Method::OPTIONS, m.url("/v1/users"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(h.get("access-control-allow-credentials").is_none());
    // a real call carries the header; another origin gets none
    let (status, headers, _) = m
        .send(
            m.http
                .get(m.url("/openapi.json"))
                .header("origin", "https://app.example.com"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let resp = m
        .http
        .get(m.url("/openapi.json"))
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_origin_that_is_not_an_origin_stops_start_up() {
    let cfg = Config {
        cors_allowed_origins: vec!["app.example.com".into()],
        ..Config::default()
    };
    let listeners = platform::Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let err = edge_gateway::startup::run(cfg, listeners, platform::Shutdown::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("cors_allowed_origins"),
        "{err:#}"
    );
}

#[tokio::test]
async fn with_no_upstream_answering_the_gateway_is_not_ready_over_http_and_grpc() {
    let m = Mesh::start(|c| {
        let auth = c.upstreams["accounts"].clone(); // the closed port
        c.upstreams.insert("auth".into(), auth);
    })
    .await;
    let resp = m
        .http
        .get(format!("{}/readyz", m.gateway.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("no upstream answers"));
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        test_support::channel(m.gateway.grpc_addr).await,
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: proto::service_names::AUTH.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
}

#[tokio::test]
async fn a_flood_of_half_sent_bodies_leaves_a_normal_request_answered_within_a_second() {
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = Mesh::start(|c| {
        c.limits.concurrency_limit = 8;
        c.limits.max_connections_per_ip = 32;
        c.limits.body_read_timeout_ms = 1_500;
    })
    .await;
    let addr = m
        .gateway
        .http_url()
        .trim_start_matches("http://")
        .to_owned();
    // 200 connections from 127.0.0.1 that send their headers and 3 of 100 bytes of body
    let mut flood = Vec::new();
    for _ in 0..200 {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        let _ = stream
            .write_all(
                b"POST /v1/sessions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"a",
            )
            .await;
        flood.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // a complete request from another client (another loopback address) is answered at once
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = other
        .post(m.url("/v1/sessions"))
        .json(&json!({"username": "alice", "password": "right"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );

    // each half-sent body is answered 408 at its deadline, or (beyond the 32 connections one IP
    // may hold) its connection was closed at once; none is left hanging
    let started = Instant::now();
    let mut timed_out = 0;
    let mut closed = 0;
    for mut stream in flood {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("a flood connection was still open 5 s after its body deadline");
        let answer = String::from_utf8_lossy(&answer);
        if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains("body_read_timeout"), "{answer}");
            timed_out += 1;
        } else {
            assert!(answer.is_empty() || read.is_err(), "{answer}");
            closed += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!((1..=32).contains(&timed_out), "{timed_out} answered 408");
    assert!(closed >= 168, "{closed} closed at once");
}

#[tokio::test]
async fn headers_beyond_the_limit_are_431_not_500() {
    let m = Mesh::start(|_| {}).await;
    let (status, _, body) = m
        .send(
            m.http
                .get(m.url("/v1/users/bob"))
                .header("x-padding", "a".repeat(20 * 1024)),
        )
        .await;
    assert_eq!(status, 431, "{body}");
    assert_error_shape(&body);
    assert_eq!(reason(&body), "headers_too_large");
    // below the limit (16 KiB by default) headers pass
    let (status, _, body) = m
        .send(
            m.http
                .get(m.url("/v1/users/bob"))
                .header("x-padding", "a".repeat(8 * 1024)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_become_new_metric_series() {
    let m = Mesh::start(|_| {}).await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let (status, _, _) = m
            .send(m.http.request(method, m.url(&format!("/nowhere/{i}"))))
            .await;
        assert_eq!(status, 404);
    }
    let metrics = m
        .http
        .get(format!("{}/metrics", m.gateway.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .collect();
    assert!(
        series
            .iter()
            .all(|l| !l.contains("MADEUP") && !l.contains("nowhere")),
        "{series:#?}"
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.contains("route=\"unmatched\"")),
        "{series:#?}"
    );
}

#[tokio::test]
async fn a_nul_byte_in_any_text_field_is_400_naming_the_field() {
    let m = Mesh::start(|_| {}).await;
    let cases = [
        (
            m.http.post(m.url("/v1/transfers")).json(&json!({
                "from_account_id": "1", "to_account_id": "2", "amount": "100",
                "currency": "USD", "request_id": "key\u{0}1"})),
            "request_id",
        ),
        (
            m.http
                .post(m.url("/v1/accounts/1:freeze"))
                .json(&json!({"reason": "fraud\u{0}"})),
            "reason",
        ),
        (m.http.get(m.url("/v1/accounts?owner=al%00ice")), "owner"),
        (
            m.http.post(m.url("/v1/users")).json(&json!({
                "username": "al\u{0}ice", "full_name": "Alice", "email": "a@example.com",
                "password": "password123"})),
            "username",
        ),
        (m.http.get(m.url("/v1/users/al%00ice")), "username"),
    ];
    for (req, field) in cases {
        let (status, _, body) = m.send(req).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(reason(&body), "invalid_text", "{field}: {body}");
        assert_eq!(
            body["details"][1]["field_violations"][0]["field"], field,
            "{body}"
        );
    }
}

#[tokio::test]
async fn transcoding_refuses_path_overrides_duplicate_keys_and_bodies_that_are_not_json() {
    let m = Mesh::start(|_| {}).await;
    // a query parameter naming a path variable would read another resource
    let (status, _, body) = m
        .send(m.http.get(m.url("/v1/users/bob?username=alice")))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["details"][1]["field_violations"][0]["field"],
        "username"
    );
    // a key named twice: refused, not "last one wins"
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .header("content-type", "application/json")
                .body(r#"{"username": "alice", "password": "wrong", "password": "right"}"#),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(reason(&body), "duplicate_key");
    let login = r#"{"username": "alice", "password": "right"}"#;
    let with_type = |ct: &str| {
        m.http
            .post(m.url("/v1/sessions"))
            .header("content-type", ct)
            .body(login)
    };
    // JSON under a type that is not JSON: 415
    for ct in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let (status, _, body) = m.send(with_type(ct)).await;
        assert_eq!(status, 415, "{ct}: {body}");
        assert_eq!(reason(&body), "unsupported_media_type");
    }
    // a real form: 415 too
    let (status, _, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("username=alice&password=right"),
        )
        .await;
    assert_eq!(status, 415, "{body}");
    // JSON, JSON with a charset, curl's default type holding JSON (`curl -d`), no type at all
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
    ] {
        let (status, _, body) = m.send(with_type(ct)).await;
        assert_eq!(status, 200, "{ct}: {body}");
    }
    let (status, _, body) = m.send(m.http.post(m.url("/v1/sessions")).body(login)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn bytes_that_are_not_the_request_message_are_invalid_argument_through_the_grpc_door() {
    let m = Mesh::start(|_| {}).await;
    let channel = test_support::channel(m.gateway.grpc_addr).await;
    let status = edge_gateway::upstream::unary(
        channel,
        "/transactions.auth.v1.AuthService/LoginUser",
        bytes::Bytes::from_static(b"\xff\xff\xff\xff"),
        tonic::metadata::MetadataMap::new(),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn without_a_token_a_route_behind_one_is_401_before_its_body_is_checked() {
    let m = Mesh::start(|_| {}).await;
    let bare = reqwest::Client::new();
    // a body that would be 400, and one that would be 415: 401 both, no token
    for (ct, body) in [
        ("application/json", r#"{"amount": ""}"#),
        ("text/plain", "hello"),
    ] {
        let (status, _, body) = m
            .send(
                bare.post(m.url("/v1/transfers"))
                    .header("content-type", ct)
                    .body(body),
            )
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(reason(&body), "missing_token");
    }
    let (status, _, body) = m.send(bare.get(m.url("/v1/users/bob"))).await;
    assert_eq!(status, 401, "{body}");
    // the routes that hand out credentials need none
    let (status, _, body) = m
        .send(
            bare.post(m.url("/v1/sessions"))
                .json(&json!({"username": "alice", "password": "right"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
