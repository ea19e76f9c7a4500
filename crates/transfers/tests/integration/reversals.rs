//! Reversals (refunds, chargebacks): a new transfer back that names the original, never summing
//! past it, refused for a reversal, the receiver's or a banker's only, never taking a customer
//! below zero, idempotent, and safe when many race from two instances of the service.

use std::collections::HashSet;

use crate::support::{App, assert_status, with_key};
use futures::{StreamExt, stream};
use platform::error::reason_of;
use proto::transfers::v1::{
    CreateTransferRequest, GetTransferRequest, ReverseTransferRequest, TransferKind,
    TransferResult, transfers_service_client::TransfersServiceClient,
};
use test_support::authed;
use tonic::{Code, Status, transport::Channel};

async fn pay(app: &App, from: i64, to: i64, amount: i64, payer: &str) -> i64 {
    app.client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                ..Default::default()
            },
            &app.token(payer),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap()
        .id
}

async fn reverse_with(
    mut client: TransfersServiceClient<Channel>,
    id: i64,
    amount: i64,
    token: &str,
    key: Option<&str>,
) -> Result<TransferResult, Status> {
    let mut request = authed(
        ReverseTransferRequest {
            id,
            amount,
            description: "refund".into(),
            ..Default::default()
        },
        token,
    );
    if let Some(key) = key {
        request = with_key(request, key);
    }
    client
        .reverse_transfer(request)
        .await
        .map(|r| r.into_inner())
}

async fn reverse(app: &App, id: i64, amount: i64, token: &str) -> Result<TransferResult, Status> {
    reverse_with(app.client.clone(), id, amount, token, None).await
}

async fn reversed_amount(app: &App, id: i64) -> i64 {
    app.client
        .clone()
        .get_transfer(authed(GetTransferRequest { id }, &app.banker()))
        .await
        .unwrap()
        .into_inner()
        .reversed_amount
}

#[tokio::test]
async fn a_receiver_refunds_part_then_the_rest_and_never_more_than_was_paid() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(bob, 500, "USD").await;
    let paid = pay(&app, alice, bob, 800, "alice").await;
    let bob_token = app.token("bob");

    let part = reverse(&app, paid, 300, &bob_token).await.unwrap();
    let refund = part.transfer.as_ref().unwrap();
    assert_eq!(
        (refund.from_account_id, refund.to_account_id, refund.amount),
        (bob, alice, 300),
        "the opposite direction"
    );
    assert_eq!(refund.reverses_id, paid);
    assert_eq!(refund.kind, TransferKind::Transfer as i32);
    assert_eq!(refund.description, "refund");
    assert_eq!(part.to_entry.as_ref().unwrap().balance_after, 500);
    assert_eq!(reversed_amount(&app, paid).await, 300);

    let err = reverse(&app, paid, 501, &bob_token).await.unwrap_err();
    assert_status(err, Code::FailedPrecondition, "amount_exceeds_reversible");
    // 0: all that is left
    let rest = reverse(&app, paid, 0, &bob_token).await.unwrap();
    assert_eq!(rest.transfer.unwrap().amount, 500);
    assert_eq!(reversed_amount(&app, paid).await, 800);
    let err = reverse(&app, paid, 0, &bob_token).await.unwrap_err();
    assert_status(err, Code::FailedPrecondition, "amount_exceeds_reversible");
    let err = reverse(&app, paid, 1, &bob_token).await.unwrap_err();
    assert_status(err, Code::FailedPrecondition, "amount_exceeds_reversible");

    assert_eq!(app.balance(alice).await, 1_000);
    assert_eq!(app.balance(bob).await, 500);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(
        report.reversals_checked, 3,
        "the original and its two reversals"
    );
}

#[tokio::test]
async fn only_the_receiver_or_a_banker_may_reverse_and_a_reversal_is_never_reversed() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.open("carol", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let paid = pay(&app, alice, bob, 400, "alice").await;

    // the payer sees the transfer but did not receive it
    let err = reverse(&app, paid, 100, &app.token("alice"))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "not_account_owner");
    // a stranger is told there is no such transfer, as GetTransfer does
    let err = reverse(&app, paid, 100, &app.token("carol"))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "transfer_not_found");
    let err = reverse(&app, 999_999, 100, &app.token("bob"))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "transfer_not_found");

    // a banker's chargeback
    let chargeback = reverse(&app, paid, 150, &app.banker()).await.unwrap();
    let chargeback = chargeback.transfer.unwrap();
    assert_eq!(chargeback.reverses_id, paid);
    // a reversal of a reversal: refused to its receiver and to a banker
    let err = reverse(&app, chargeback.id, 10, &app.token("alice"))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "transfer_not_reversible");
    let err = reverse(&app, chargeback.id, 10, &app.banker())
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "transfer_not_reversible");

    // a hold moved no money: nothing to reverse
    let hold = app
        .client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: alice,
                to_account_id: bob,
                amount: 10,
                currency: "USD".into(),
                pending: true,
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    let err = reverse(&app, hold.id, 0, &app.token("bob"))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "transfer_not_reversible");

    // a banker may reverse a deposit too (money back to the bank's cash account)
    let deposit = app.deposit(alice, 50, "USD").await.transfer.unwrap();
    let back = reverse(&app, deposit.id, 0, &app.banker()).await.unwrap();
    assert_eq!(back.transfer.unwrap().kind, TransferKind::Withdrawal as i32);
    assert_eq!(app.balance(alice).await, 1_000 - 400 + 150);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test]
async fn a_refund_needs_the_money_and_a_chargeback_never_takes_a_customer_below_zero() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let carol = app.open("carol", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let paid = pay(&app, alice, bob, 600, "alice").await;
    pay(&app, bob, carol, 500, "bob").await;
    // bob holds 100 of the 600
    let err = reverse(&app, paid, 200, &app.token("bob"))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "insufficient_funds");
    let err = reverse(&app, paid, 0, &app.banker()).await.unwrap_err();
    assert_status(err, Code::FailedPrecondition, "insufficient_funds");
    reverse(&app, paid, 100, &app.banker()).await.unwrap();
    assert_eq!(app.balance(bob).await, 0);
    assert_eq!(reversed_amount(&app, paid).await, 100);
}

#[tokio::test]
async fn a_reversal_with_a_key_is_applied_once() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let paid = pay(&app, alice, bob, 500, "alice").await;
    let bob_token = app.token("bob");
    let first = reverse_with(app.client.clone(), paid, 200, &bob_token, Some("refund-1"))
        .await
        .unwrap();
    let again = reverse_with(app.client.clone(), paid, 200, &bob_token, Some("refund-1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer.unwrap().id, first.transfer.unwrap().id);
    let err = reverse_with(app.client.clone(), paid, 250, &bob_token, Some("refund-1"))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "idempotency_key_reused");
    assert_eq!(reversed_amount(&app, paid).await, 200);
    assert_eq!(app.balance(bob).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_partial_refunds_from_two_instances_never_exceed_the_original() {
    let app = App::start().await;
    let (replica, _running) = app.replica(|_| {}).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(bob, 5_000, "USD").await;
    let paid = pay(&app, alice, bob, 1_000, "alice").await;
    let bob_token = app.token("bob");

    // 50 refunds of 30 (1,500 asked of 1,000): 33 fit (990), the other 17 must be refused
    let results: Vec<(usize, Result<TransferResult, Status>)> = stream::iter(0..50)
        .map(|i| {
            let client = if i % 2 == 0 {
                app.client.clone()
            } else {
                replica.clone()
            };
            let token = bob_token.clone();
            async move {
                let key = format!("refund-{i}");
                (i, reverse_with(client, paid, 30, &token, Some(&key)).await)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let mut ids = HashSet::new();
    let mut refused = 0;
    for (i, result) in &results {
        match result {
            Ok(r) => {
                let t = r.transfer.as_ref().unwrap();
                assert!(!r.replayed, "{i}: its own answer");
                assert_eq!((t.reverses_id, t.amount), (paid, 30));
                assert!(ids.insert(t.id), "{i}: a transfer of its own");
            }
            Err(e) => {
                assert_eq!(
                    reason_of(e).as_deref(),
                    Some("amount_exceeds_reversible"),
                    "{i}: {e:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ids.len(), refused), (33, 17));
    assert_eq!(reversed_amount(&app, paid).await, 990);
    let sum: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger.transfers WHERE reverses_id = $1",
    )
    .bind(paid)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sum, 990);
    assert_eq!(app.balance(alice).await, 990);
    assert_eq!(app.balance(bob).await, 5_000 + 1_000 - 990);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}
