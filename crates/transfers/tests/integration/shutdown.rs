//! SIGTERM drains: the transfers binary, run as a process of its own, answers every call it had
//! taken (including the ones still queued for a batch) before it exits, within
//! `server.shutdown_grace_secs`, and says it is leaving (`/readyz` 503) while it does.

use std::time::Duration;

use futures::future::join_all;
use platform::token::Role;
use proto::transfers::v1::{
    CreateTransferRequest, DepositRequest, transfers_service_client::TransfersServiceClient,
};
use test_support::{
    TestDb, access_token, authed, channel,
    process::{ServiceProcess, free_addr},
    test_keys,
};

use crate::support::BANKER;

/// Calls in flight when the signal comes.
const IN_FLIGHT: usize = 48;

/// The batcher's window: long enough that every call still waits in its queue at the signal.
const WINDOW_MS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_call_in_flight_and_queued_before_exiting() {
    let db = TestDb::new().await;
    let keys = test_keys();
    let (grpc, http) = (free_addr(), free_addr());
    let env: Vec<(String, String)> = [
        ("TRANSFERS_DATABASE__URL", db.url.clone()),
        ("TRANSFERS_TOKEN__PUBLIC_KEY", keys.public_b64()),
        ("TRANSFERS_SERVER__GRPC_ADDR", grpc.to_string()),
        ("TRANSFERS_SERVER__HTTP_ADDR", http.to_string()),
        ("TRANSFERS_SERVER__SHUTDOWN_GRACE_SECS", "10".into()),
        ("TRANSFERS_BATCH__WINDOW_US", (WINDOW_MS * 1000).to_string()),
        ("TRANSFERS_MAX_TRANSFER_AMOUNT", "1000000".into()),
        (
            "TRANSFERS_TOKEN__REVOCATIONS__REDIS__KEY_PREFIX",
            format!("test:{}:", uuid::Uuid::new_v4().simple()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut service = ServiceProcess::start(env!("CARGO_BIN_EXE_transfers"), &env, http).await;
    let client = TransfersServiceClient::new(channel(grpc).await);

    let open = |owner: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO ledger.accounts (owner, owner_id, currency) \
                 VALUES ($1, $2, 'USD') RETURNING id",
            )
            .bind(owner)
            .bind(test_support::user_id(owner))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (alice, bob) = (open("alice").await, open("bob").await);
    client
        .clone()
        .deposit(authed(
            DepositRequest {
                account_id: alice,
                amount: 1_000,
                currency: "USD".into(),
                ..Default::default()
            },
            &access_token(&keys, BANKER, Role::Banker, true),
        ))
        .await
        .expect("the funding deposit");

    let token = access_token(&keys, "alice", Role::Depositor, true);
    let calls = (0..IN_FLIGHT).map(|_| {
        let mut client = client.clone();
        let token = token.clone();
        tokio::spawn(async move {
            client
                .create_transfer(authed(
                    CreateTransferRequest {
                        from_account_id: alice,
                        to_account_id: bob,
                        amount: 1,
                        currency: "USD".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
        })
    });
    let calls: Vec<_> = calls.collect();
    // every call is sent and waits in the batcher's window (WINDOW_MS) when the signal comes
    tokio::time::sleep(Duration::from_millis(WINDOW_MS / 4)).await;
    service.sigterm();
    tokio::time::sleep(Duration::from_millis(WINDOW_MS / 4)).await;
    let readyz = test_support::http_status(http, "/readyz").await;
    let answers = join_all(calls).await;
    let ended = service.wait(Duration::from_secs(15)).await;

    let failed: Vec<String> = answers
        .iter()
        .filter_map(|a| match a.as_ref().unwrap() {
            Ok(_) => None,
            Err(e) => Some(format!("{:?} {}", e.code(), e.message())),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {IN_FLIGHT} calls in flight at SIGTERM failed: {failed:?}\n{}",
        failed.len(),
        service.log_text()
    );
    let moved: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers WHERE amount = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        moved, IN_FLIGHT as i64,
        "the ledger holds exactly the answered transfers"
    );
    let bobs: i64 = sqlx::query_scalar("SELECT balance FROM ledger.accounts WHERE id = $1")
        .bind(bob)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(bobs, IN_FLIGHT as i64);
    assert!(
        ended.status.success(),
        "exit after a drain: {:?}",
        ended.status
    );
    let after = ended.after_signal.unwrap();
    assert!(
        after < Duration::from_secs(10),
        "exits within the grace period, took {after:?}"
    );
    // leaving: the side port says so to a load balancer while the calls finish
    assert_eq!(readyz, Some(503), "/readyz during the drain");
}
