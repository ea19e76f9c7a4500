//! The auth service running in-process against a fresh database and its own Redis namespace.

use auth::config::Config;
use platform::token::Keys;
use proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use test_support::{Running, TestDb, TestRedis};
use tonic::{Code, Request, Status, transport::Channel};

pub const PASSWORD: &str = "correct horse battery";
/// `server.gateway_secret` of the test service: calls that say they come from the gateway carry
/// it in `x-gateway-secret`.
pub const GATEWAY_SECRET: &str = "test-gateway-secret";

pub struct App {
    pub db: TestDb,
    pub redis: TestRedis,
    pub keys: Keys,
    pub running: Running,
    pub client: AuthServiceClient<Channel>,
}

pub async fn app() -> App {
    app_with(|_| {}).await
}

/// Starts the service with test settings, after `tweak` adjusts them.
pub async fn app_with(tweak: impl FnOnce(&mut Config)) -> App {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let keys = test_support::test_keys();
    let mut cfg = Config {
        database: db.config(),
        redis: redis.config(),
        ..Config::default()
    };
    cfg.token.private_key = keys.private_b64();
    cfg.relay.poll_interval_ms = 200;
    cfg.server.gateway_secret = Some(platform::config::GatewaySecret(GATEWAY_SECRET.into()));
    tweak(&mut cfg);
    let running = test_support::spawn(move |l, s| auth::startup::run(cfg, l, s)).await;
    let client = AuthServiceClient::new(test_support::channel(running.grpc_addr).await);
    App {
        db,
        redis,
        keys,
        running,
        client,
    }
}

impl App {
    pub fn client(&self) -> AuthServiceClient<Channel> {
        self.client.clone()
    }

    pub async fn sign_up(&self, username: &str) -> pb::User {
        self.client()
            .create_user(pb::CreateUserRequest {
                username: username.into(),
                full_name: format!("{username} Example"),
                email: format!("{username}@example.com"),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("sign up {username}: {e:?}"))
            .into_inner()
            .user
            .unwrap()
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<pb::LoginUserResponse, Status> {
        self.client()
            .login_user(pb::LoginUserRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Signs up and logs in; returns the login answer.
    pub async fn user_session(&self, username: &str) -> pb::LoginUserResponse {
        self.sign_up(username).await;
        self.login(username, PASSWORD).await.expect("login")
    }

    /// Creates a banker through the operator path and logs in.
    pub async fn banker_session(&self, username: &str) -> pb::LoginUserResponse {
        auth::admin::create_user(
            &self.db.pool,
            username,
            "Bank Staff",
            &format!("{username}@bank.example.com"),
            PASSWORD,
            platform::token::Role::Banker,
        )
        .await
        .expect("create banker");
        self.login(username, PASSWORD).await.expect("banker login")
    }

    pub async fn renew(&self, refresh_token: &str) -> Result<pb::RenewAccessTokenResponse, Status> {
        self.client()
            .renew_access_token(pb::RenewAccessTokenRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_user(&self, token: &str, username: &str) -> Result<pb::User, Status> {
        self.client()
            .get_user(test_support::authed(
                pb::GetUserRequest {
                    username: username.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn outbox(&self, username: &str) -> Vec<(String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT event_type, payload FROM auth.outbox WHERE payload->>'username' = $1 ORDER BY id",
        )
        .bind(username)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

/// Asserts a status's code and reason.
#[track_caller]
pub fn assert_status(err: &Status, code: Code, reason: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert_eq!(
        platform::error::reason_of(err).as_deref(),
        Some(reason),
        "{err:?}"
    );
}

pub fn with_metadata<T>(msg: T, pairs: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(msg);
    for (k, v) in pairs {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}
