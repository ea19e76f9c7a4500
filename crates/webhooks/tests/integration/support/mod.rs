//! A running webhooks service with its own database and Redis namespace, the ledger's relay, and
//! a scriptable HTTP receiver.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use platform::{Shutdown, token::Role};
use proto::webhooks::v1::{
    CreateEndpointRequest, CreateEndpointResponse, webhooks_service_client::WebhooksServiceClient,
};
use test_support::{TestDb, TestRedis, access_token, authed, channel, spawn, test_keys};
use tonic::{Status, transport::Channel};
use uuid::Uuid;
use webhooks::config::Config;

pub struct App {
    pub db: TestDb,
    pub redis: TestRedis,
    pub keys: platform::token::Keys,
    pub client: WebhooksServiceClient<Channel>,
    pub running: Option<test_support::Running>,
    pub relay: Shutdown,
}

/// Settings for tests: loopback allowed (the receiver is on 127.0.0.1), short waits.
pub fn test_config(db: &TestDb, redis: &TestRedis, keys: &platform::token::Keys) -> Config {
    let mut cfg = Config {
        database: db.config(),
        redis: redis.config(),
        ..Config::default()
    };
    cfg.token.public_key = Some(keys.public_b64());
    cfg.delivery.allow_private_destinations = true;
    cfg.delivery.backoff_initial_ms = 200;
    cfg.delivery.backoff_max_ms = 1_000;
    cfg.delivery.timeout_ms = 1_000;
    cfg.delivery.connect_timeout_ms = 500;
    cfg.delivery.poll_interval_ms = 50;
    cfg.delivery.max_attempts = 5;
    cfg.consumer.block_ms = 200;
    cfg
}

impl App {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let redis = TestRedis::new().await;
        let keys = test_keys();
        let mut cfg = test_config(&db, &redis, &keys);
        tweak(&mut cfg);
        let running = spawn(move |l, s| webhooks::startup::run(cfg, l, s)).await;
        let client = WebhooksServiceClient::new(channel(running.grpc_addr).await);
        let relay = Shutdown::new();
        start_relay(&db, &redis, relay.clone());
        Self {
            db,
            redis,
            keys,
            client,
            running: Some(running),
            relay,
        }
    }

    pub fn depositor(&self, name: &str) -> String {
        access_token(&self.keys, name, Role::Depositor, true)
    }

    pub fn banker(&self, name: &str) -> String {
        access_token(&self.keys, name, Role::Banker, true)
    }

    pub async fn register(
        &self,
        token: &str,
        url: &str,
        all_accounts: bool,
    ) -> Result<CreateEndpointResponse, Status> {
        self.client
            .clone()
            .create_endpoint(authed(
                CreateEndpointRequest {
                    url: url.into(),
                    all_accounts,
                },
                token,
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// Opens a USD account for `username` (owner id as in its tokens), as the accounts service
    /// does: the insert fires `account.opened`.
    pub async fn open_account(&self, username: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO ledger.accounts (owner, owner_id, currency) VALUES ($1, $2, 'USD')
             RETURNING id",
        )
        .bind(username)
        .bind(test_support::user_id(username))
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Writes a posted transfer row as ledger.transfer_batch does (the trigger fires the same
    /// way for any insert); returns its id.
    pub async fn transfer(&self, from: i64, to: i64, amount: i64) -> i64 {
        insert_transfer(&self.db, from, to, amount).await
    }

    /// Waits (generously: the machine is shared) until `check` holds.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        eventually(what, &mut check).await
    }
}

pub async fn eventually<F, Fut>(what: &str, check: &mut F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Inserts a posted transfer with whichever creator columns the schema has (the ledger's
/// migrations add `created_by_id`).
pub async fn insert_transfer(db: &TestDb, from: i64, to: i64, amount: i64) -> i64 {
    let has_creator_id: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
         WHERE table_schema = 'ledger' AND table_name = 'transfers' AND column_name = 'created_by_id')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let sql = if has_creator_id {
        "INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind, created_by, created_by_id)
         VALUES ($1, $2, $3, 'USD', 'transfer', 'tester', gen_random_uuid()) RETURNING id"
    } else {
        "INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind, created_by)
         VALUES ($1, $2, $3, 'USD', 'transfer', 'tester') RETURNING id"
    };
    sqlx::query_scalar(sql)
        .bind(from)
        .bind(to)
        .bind(amount)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Runs the ledger's relay (the one the transfers service runs) for this test's database and
/// Redis namespace until `shutdown`.
pub fn start_relay(db: &TestDb, redis: &TestRedis, shutdown: Shutdown) {
    let cfg = platform::outbox::RelayConfig {
        poll_interval_ms: 100,
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        ..platform::outbox::RelayConfig::default()
    };
    tokio::spawn(platform::outbox::run(
        db.pool.clone(),
        platform::redis::pool(&redis.config()).unwrap(),
        redis.config(),
        ledger_model::events::OUTBOX,
        platform::outbox::Streams::single(ledger_model::events::stream_key(&redis.prefix)),
        cfg,
        shutdown,
    ));
}

impl Drop for App {
    fn drop(&mut self) {
        self.relay.trigger();
        if let Some(r) = &self.running {
            r.shutdown.trigger();
        }
    }
}

/// What the receiver answers next.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Never answers (holds the request for a minute).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct ReceiverState {
    script: VecDeque<Answer>,
    /// Answer when the script is used up.
    then: Option<Answer>,
    received: Vec<Received>,
}

/// An HTTP server on 127.0.0.1 that records every POST and answers from a script.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub addr: SocketAddr,
}

impl Receiver {
    /// Answers `script` in order, then `then` for ever.
    pub async fn start(script: &[Answer], then: Answer) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            script: script.iter().copied().collect(),
            then: Some(then),
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/hook", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { state, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// From now on answers `answer` (the script is dropped).
    pub fn answer_from_now(&self, answer: Answer) {
        let mut s = self.state.lock().unwrap();
        s.script.clear();
        s.then = Some(answer);
    }
}

async fn handle(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = {
        let mut s = state.lock().unwrap();
        s.received.push(Received {
            headers,
            body,
            at: std::time::Instant::now(),
        });
        let next = s.script.pop_front();
        next.or(s.then).unwrap_or(Answer::Status(200))
    };
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }
    }
}

/// The event ids of the webhook requests received.
pub fn event_ids(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect()
}

pub fn body_json(r: &Received) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

/// A fresh id nobody has.
pub fn any_uuid() -> String {
    Uuid::new_v4().to_string()
}
