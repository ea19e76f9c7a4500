//! A transfer through the real services reaches a partner's receiver as one signed webhook:
//! accounts and transfers (its ledger-events relay on) → ledger.outbox, written by the triggers
//! in the batch's transaction → `{prefix}events:ledger` → the webhooks service → a local HTTP
//! receiver, which verifies the signature with the endpoint's secret.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use platform::token::Role;
use proto::{
    accounts::v1::{CreateAccountRequest, accounts_service_client::AccountsServiceClient},
    transfers::v1::{
        CreateTransferRequest, DepositRequest, transfers_service_client::TransfersServiceClient,
    },
    webhooks::v1::{CreateEndpointRequest, webhooks_service_client::WebhooksServiceClient},
};
use test_support::{TestDb, TestRedis, access_token, authed, channel, spawn, test_keys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (headers in lower case, body) of each request a tiny HTTP/1.1 receiver got; it answers 200.
type Got = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

async fn receiver() -> (String, Got) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Got = Arc::default();
    let keep = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let got = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let body = buf[end + 4..end + 4 + length].to_vec();
                    got.lock().unwrap().push((headers, body));
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (url, got)
}

#[tokio::test]
async fn a_transfer_through_the_services_reaches_the_receiver_once_signed_with_its_event_id() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let keys = test_keys();

    let mut accounts_cfg = accounts::config::Config {
        database: db.config(),
        ..Default::default()
    };
    accounts_cfg.token.public_key = Some(keys.public_b64());
    let accounts = spawn(move |l, s| accounts::startup::run(accounts_cfg, l, s)).await;

    let mut transfers_cfg = transfers::config::Config {
        database: db.config(),
        ..Default::default()
    };
    transfers_cfg.token.public_key = Some(keys.public_b64());
    transfers_cfg.relay.enabled = true;
    transfers_cfg.relay.redis = Some(redis.config());
    transfers_cfg.relay.poll_interval_ms = 200;
    let transfers = spawn(move |l, s| transfers::startup::run(transfers_cfg, l, s)).await;

    let mut webhooks_cfg = webhooks::config::Config {
        database: db.config(),
        redis: redis.config(),
        ..Default::default()
    };
    webhooks_cfg.token.public_key = Some(keys.public_b64());
    // the receiver is on 127.0.0.1
    webhooks_cfg.delivery.allow_private_destinations = true;
    webhooks_cfg.delivery.poll_interval_ms = 50;
    webhooks_cfg.consumer.block_ms = 200;
    let webhooks = spawn(move |l, s| webhooks::startup::run(webhooks_cfg, l, s)).await;

    let (url, got) = receiver().await;
    let bob = access_token(&keys, "bob", Role::Depositor, true);
    let ann = access_token(&keys, "ann", Role::Depositor, true);
    let banker = access_token(&keys, "bea_banker", Role::Banker, true);
    let secret = WebhooksServiceClient::new(channel(webhooks.grpc_addr).await)
        .create_endpoint(authed(
            CreateEndpointRequest {
                url,
                all_accounts: false,
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;

    let accounts_client = AccountsServiceClient::new(channel(accounts.grpc_addr).await);
    let open = |token: String| {
        let mut c = accounts_client.clone();
        async move {
            c.create_account(authed(
                CreateAccountRequest {
                    currency: "USD".into(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id
        }
    };
    let ann_account = open(ann.clone()).await;
    let bob_account = open(bob.clone()).await;
    let mut transfers_client = TransfersServiceClient::new(channel(transfers.grpc_addr).await);
    transfers_client
        .deposit(authed(
            DepositRequest {
                account_id: ann_account,
                amount: 1_000,
                currency: "USD".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            &banker,
        ))
        .await
        .unwrap();
    let transfer = transfers_client
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: ann_account,
                to_account_id: bob_account,
                amount: 250,
                currency: "USD".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            &ann,
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();

    // bob's endpoint: his account.opened and the transfer he received; not ann's deposit
    for _ in 0..300 {
        if got.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = got.lock().unwrap().clone();
    let bodies: Vec<serde_json::Value> = got
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["account.opened", "transfer.posted"], "{bodies:?}");
    let posted = &bodies[1];
    assert_eq!(
        posted["data"]["id"], transfer.id,
        "the event is the transfer's"
    );
    assert_eq!(posted["data"]["amount"], 250);
    let event_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM ledger.outbox WHERE event_type = 'transfer.posted'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("exactly one transfer.posted event in the outbox");
    assert_eq!(posted["id"], event_id.to_string());
    let (headers, body) = &got[1];
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(header("webhook-id"), event_id.to_string());
    assert_eq!(
        webhooks::domain::signature::verify(
            &secret,
            &header("webhook-signature"),
            body,
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            )
            .unwrap(),
            300,
        ),
        Ok(())
    );
    for svc in [webhooks, transfers, accounts] {
        svc.stop().await.unwrap();
    }
}
