//! Shared setup: a fresh database, the transfers service in-process, accounts made with SQL.

use platform::{
    error::reason_of,
    token::{Keys, Role},
};
use proto::transfers::v1::{
    CreateTransferRequest, DepositRequest, ReconcileRequest, ReconcileResponse, TransferResult,
    transfers_service_client::TransfersServiceClient,
};
use test_support::{Running, TestDb, access_token, authed, channel, spawn, test_keys};
use tonic::{Code, Status, transport::Channel};
use transfers::config::Config;

pub const BANKER: &str = "bank_ann";

pub struct App {
    pub client: TransfersServiceClient<Channel>,
    pub keys: Keys,
    pub db: TestDb,
    pub running: Running,
}

impl App {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        Self::start_on(db, tweak).await
    }

    pub async fn start_on(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Self {
        let keys = test_keys();
        let mut cfg = test_config(&db, &keys);
        tweak(&mut cfg);
        let running =
            spawn(move |listeners, shutdown| transfers::startup::run(cfg, listeners, shutdown))
                .await;
        let client = TransfersServiceClient::new(channel(running.grpc_addr).await);
        Self {
            client,
            keys,
            db,
            running,
        }
    }

    /// A second instance of the transfers service on the same database (another replica), with
    /// its own config tweaks.
    pub async fn replica(
        &self,
        tweak: impl FnOnce(&mut Config),
    ) -> (TransfersServiceClient<Channel>, Running) {
        let mut cfg = test_config(&self.db, &self.keys);
        tweak(&mut cfg);
        let running =
            spawn(move |listeners, shutdown| transfers::startup::run(cfg, listeners, shutdown))
                .await;
        let client = TransfersServiceClient::new(channel(running.grpc_addr).await);
        (client, running)
    }

    /// A verified depositor's token.
    pub fn token(&self, user: &str) -> String {
        access_token(&self.keys, user, Role::Depositor, true)
    }

    pub fn unverified(&self, user: &str) -> String {
        access_token(&self.keys, user, Role::Depositor, false)
    }

    pub fn banker(&self) -> String {
        access_token(&self.keys, BANKER, Role::Banker, true)
    }

    /// Opens a customer account directly in the database (the accounts service's job).
    pub async fn open(&self, owner: &str, currency: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO ledger.accounts (owner, owner_id, currency) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(owner)
        .bind(test_support::user_id(owner))
        .bind(currency)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    pub async fn freeze(&self, account: i64) {
        sqlx::query(
            "UPDATE ledger.accounts SET status = 'frozen', frozen_reason = 'test' WHERE id = $1",
        )
        .bind(account)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub async fn balance(&self, account: i64) -> i64 {
        sqlx::query_scalar("SELECT balance FROM ledger.accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// A banker's deposit, no idempotency key.
    pub async fn deposit(&self, account: i64, amount: i64, currency: &str) -> TransferResult {
        self.client
            .clone()
            .deposit(authed(
                DepositRequest {
                    account_id: account,
                    amount,
                    currency: currency.into(),
                    request_id: String::new(),
                    ..Default::default()
                },
                &self.banker(),
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// `user`'s transfer of `amount` USD, no idempotency key; panics if it is refused.
    pub async fn transfer(&self, from: i64, to: i64, amount: i64, user: &str) -> TransferResult {
        self.client
            .clone()
            .create_transfer(authed(
                CreateTransferRequest {
                    from_account_id: from,
                    to_account_id: to,
                    amount,
                    currency: "USD".into(),
                    ..Default::default()
                },
                &self.token(user),
            ))
            .await
            .expect("transfer")
            .into_inner()
    }

    pub async fn reconcile(&self) -> ReconcileResponse {
        self.client
            .clone()
            .reconcile(authed(ReconcileRequest { full: true }, &self.banker()))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn total(&self, currency: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(balance), 0)::bigint FROM ledger.accounts WHERE currency = $1",
        )
        .bind(currency)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

fn test_config(db: &TestDb, keys: &Keys) -> Config {
    let mut cfg = Config {
        database: db.config(),
        max_transfer_amount: 1_000_000,
        ..Config::default()
    };
    cfg.database.max_connections = 16;
    cfg.token.public_key = Some(keys.public_b64());
    cfg
}

pub fn assert_status(err: Status, code: Code, reason: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert_eq!(reason_of(&err).as_deref(), Some(reason), "{err:?}");
}

/// Adds `idempotency-key` metadata.
pub fn with_key<T>(mut req: tonic::Request<T>, key: &str) -> tonic::Request<T> {
    req.metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    req
}
