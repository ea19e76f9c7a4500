//! Multi-leg transactions: every leg applies or none does, through the same group commit; one
//! idempotency key; a failing transaction fails alone and names its leg; the legs share one
//! transaction id and read together; the caller owns every source unless a banker.

use std::time::Duration;

use crate::{
    metadata::violated_fields,
    support::{App, assert_status, with_key},
};
use proto::transfers::v1::{
    CreateTransactionRequest, CreateTransferRequest, GetTransactionRequest, TransactionLeg,
    TransactionResult,
};
use test_support::authed;
use tonic::{Code, Status};

fn leg(from: i64, to: i64, amount: i64) -> TransactionLeg {
    TransactionLeg {
        from_account_id: from,
        to_account_id: to,
        amount,
        currency: "USD".into(),
        ..Default::default()
    }
}

fn payment(legs: Vec<TransactionLeg>) -> CreateTransactionRequest {
    CreateTransactionRequest {
        legs,
        description: "order 17".into(),
        metadata: [("order_id".to_owned(), "17".to_owned())].into(),
        ..Default::default()
    }
}

async fn pay(
    app: &App,
    request: CreateTransactionRequest,
    token: &str,
) -> Result<TransactionResult, Status> {
    app.client
        .clone()
        .create_transaction(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_payment_with_a_fee_leg_moves_both_legs_under_one_transaction_id_and_reads_together() {
    let app = App::start().await;
    let buyer = app.open("buyer", "USD").await;
    let seller = app.open("seller", "USD").await;
    let platform = app.open("platform", "USD").await;
    app.deposit(buyer, 1_000, "USD").await;
    let token = app.token("buyer");
    let mut fee = leg(buyer, platform, 30);
    fee.description = "platform fee".into();
    let request = payment(vec![leg(buyer, seller, 970), fee]);

    let done = app
        .client
        .clone()
        .create_transaction(with_key(authed(request.clone(), &token), "order-17"))
        .await
        .unwrap()
        .into_inner();
    assert!(done.transaction_id > 0);
    assert!(!done.replayed);
    assert_eq!(done.legs.len(), 2);
    let (sale, cut) = (
        done.legs[0].transfer.clone().unwrap(),
        done.legs[1].transfer.clone().unwrap(),
    );
    assert_eq!((sale.to_account_id, sale.amount), (seller, 970));
    assert_eq!((cut.to_account_id, cut.amount), (platform, 30));
    assert_eq!(sale.transaction_id, done.transaction_id);
    assert_eq!(cut.transaction_id, done.transaction_id);
    assert_eq!(sale.description, "order 17");
    assert_eq!(cut.description, "platform fee", "a leg's own description");
    assert_eq!(cut.metadata.get("order_id").map(String::as_str), Some("17"));
    // the legs apply in order against the running balance
    assert_eq!(done.legs[0].from_account_balance, 30);
    assert_eq!(done.legs[1].from_account_balance, 0);
    assert_eq!(
        (
            app.balance(buyer).await,
            app.balance(seller).await,
            app.balance(platform).await
        ),
        (0, 970, 30)
    );

    // one key for the whole transaction: the retry replays both legs
    let again = app
        .client
        .clone()
        .create_transaction(with_key(authed(request.clone(), &token), "order-17"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.transaction_id, done.transaction_id);
    let ids = |r: &TransactionResult| {
        r.legs
            .iter()
            .map(|l| l.transfer.as_ref().unwrap().id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&done));
    let mut other = request;
    other.legs[1].amount = 31;
    let err = app
        .client
        .clone()
        .create_transaction(with_key(authed(other, &token), "order-17"))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "idempotency_key_reused");

    // the seller reads the transaction with both legs (one of them is on its account)
    let read = app
        .client
        .clone()
        .get_transaction(authed(
            GetTransactionRequest {
                id: done.transaction_id,
            },
            &app.token("seller"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.legs.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids(&done)
    );
    let err = app
        .client
        .clone()
        .get_transaction(authed(
            GetTransactionRequest {
                id: done.transaction_id,
            },
            &app.token("stranger"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "transaction_not_found");
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(report.transactions_checked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_fee_leg_lacks_money_applies_nothing_names_the_leg_and_fails_alone_in_its_batch()
 {
    let app = App::start().await;
    let buyer = app.open("buyer", "USD").await;
    let seller = app.open("seller", "USD").await;
    let platform = app.open("platform", "USD").await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(buyer, 1_000, "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    // this replica closes a batch only when 3 requests are in (or after 1 s): all three ride one
    let (client, _replica) = app
        .replica(|cfg| {
            cfg.batch.max_size = 3;
            cfg.batch.window_us = 1_000_000;
        })
        .await;
    let transfer = move |amount| CreateTransferRequest {
        from_account_id: alice,
        to_account_id: bob,
        amount,
        currency: "USD".into(),
        ..Default::default()
    };
    let first = tokio::spawn({
        let mut client = client.clone();
        let token = app.token("alice");
        async move { client.create_transfer(authed(transfer(100), &token)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // 970 to the seller leaves 30 for a fee of 50
    let failing = tokio::spawn({
        let mut client = client.clone();
        let token = app.token("buyer");
        let request = payment(vec![leg(buyer, seller, 970), leg(buyer, platform, 50)]);
        async move { client.create_transaction(authed(request, &token)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = tokio::spawn({
        let mut client = client.clone();
        let token = app.token("alice");
        async move { client.create_transfer(authed(transfer(200), &token)).await }
    });
    let first = first.await.unwrap().unwrap().into_inner();
    let err = failing.await.unwrap().unwrap_err();
    let last = last.await.unwrap().unwrap().into_inner();

    assert_status(err.clone(), Code::FailedPrecondition, "insufficient_funds");
    assert!(err.message().contains("leg 2"), "{err:?}");
    assert!(
        violated_fields(&err).contains(&"legs[1]".to_owned()),
        "{err:?}"
    );
    assert_eq!(
        (
            app.balance(buyer).await,
            app.balance(seller).await,
            app.balance(platform).await
        ),
        (1_000, 0, 0),
        "nothing of the transaction applied, not even its first leg"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ledger.transactions").await,
        0
    );
    // the others of its batch applied (one batch: one instant for both)
    assert_eq!(last.from_account_balance, 700);
    assert_eq!(
        first.transfer.unwrap().created_at,
        last.transfer.unwrap().created_at,
        "they rode the same batch"
    );
    assert_eq!(app.balance(bob).await, 300);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test]
async fn a_depositor_must_own_every_source_a_banker_may_use_any() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let carol = app.open("carol", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(bob, 1_000, "USD").await;
    let err = pay(
        &app,
        payment(vec![leg(alice, carol, 10), leg(bob, carol, 10)]),
        &app.token("alice"),
    )
    .await
    .unwrap_err();
    assert_status(err.clone(), Code::PermissionDenied, "not_account_owner");
    assert!(err.message().contains("leg 2"), "{err:?}");
    assert_eq!(app.balance(alice).await, 1_000);
    assert_eq!(app.balance(bob).await, 1_000);

    let done = pay(
        &app,
        payment(vec![leg(alice, carol, 10), leg(bob, carol, 20)]),
        &app.banker(),
    )
    .await
    .unwrap();
    assert_eq!(done.legs.len(), 2);
    assert_eq!(app.balance(carol).await, 30);
}

#[tokio::test]
async fn a_transaction_has_two_to_the_configured_most_legs_each_checked_on_its_own() {
    let app = App::start_with(|cfg| cfg.transactions.max_legs = 3).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.open("bob", "EUR").await;
    app.deposit(alice, 1_000, "USD").await;
    let token = app.token("alice");
    for legs in [vec![leg(alice, bob, 1)], vec![leg(alice, bob, 1); 4]] {
        let err = pay(&app, payment(legs), &token).await.unwrap_err();
        assert_status(err.clone(), Code::InvalidArgument, "invalid_argument");
        assert_eq!(violated_fields(&err), ["legs"]);
    }
    let err = pay(
        &app,
        payment(vec![leg(alice, bob, 1), leg(alice, alice, 1)]),
        &token,
    )
    .await
    .unwrap_err();
    assert_status(err.clone(), Code::InvalidArgument, "same_account");
    assert!(
        violated_fields(&err).contains(&"legs[1]".to_owned()),
        "{err:?}"
    );
    let err = pay(
        &app,
        payment(vec![leg(alice, bob, 1), leg(alice, bob, 0)]),
        &token,
    )
    .await
    .unwrap_err();
    assert_status(err.clone(), Code::InvalidArgument, "invalid_amount");
    assert!(
        violated_fields(&err).contains(&"legs[1].amount".to_owned()),
        "{err:?}"
    );
    let err = pay(
        &app,
        payment(vec![leg(alice, bob, 1), leg(alice, 999_999, 1)]),
        &token,
    )
    .await
    .unwrap_err();
    assert_status(err.clone(), Code::NotFound, "account_not_found");
    assert!(err.message().contains("leg 2"), "{err:?}");
    // three legs, the most allowed
    pay(&app, payment(vec![leg(alice, bob, 1); 3]), &token)
        .await
        .unwrap();
    assert_eq!(app.balance(bob).await, 3);
}

#[tokio::test]
async fn reconcile_reports_a_transaction_missing_a_leg_and_reversals_that_do_not_add_up() {
    let app = App::start().await;
    let buyer = app.open("buyer", "USD").await;
    let seller = app.open("seller", "USD").await;
    let platform = app.open("platform", "USD").await;
    app.deposit(buyer, 1_000, "USD").await;
    let done = pay(
        &app,
        payment(vec![leg(buyer, seller, 900), leg(buyer, platform, 100)]),
        &app.token("buyer"),
    )
    .await
    .unwrap();
    let sale = done.legs[0].transfer.as_ref().unwrap().id;
    let fee = done.legs[1].transfer.as_ref().unwrap().id;
    app.client
        .clone()
        .reverse_transfer(authed(
            proto::transfers::v1::ReverseTransferRequest {
                id: sale,
                amount: 300,
                ..Default::default()
            },
            &app.token("seller"),
        ))
        .await
        .unwrap();
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);

    // tampering behind the ledger's back: a leg leaves its transaction, a reversal is forgotten
    for sql in [
        "UPDATE ledger.transfers SET transaction_id = NULL WHERE id = $1",
        "UPDATE ledger.transfers SET reversed_amount = 0 WHERE id = $1",
    ] {
        let id = if sql.contains("transaction_id") {
            fee
        } else {
            sale
        };
        sqlx::query(sql)
            .bind(id)
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    let report = app.reconcile().await;
    assert!(!report.ok);
    let transaction = done.transaction_id;
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with(&format!("transaction {transaction}: 2 legs, but 1 found"))),
        "{:?}",
        report.violations
    );
    assert!(
        report.violations.iter().any(|v| v.starts_with(&format!(
            "transfer {sale} (amount 900): reversed_amount 0, its reversals sum to 300"
        ))),
        "{:?}",
        report.violations
    );
}
