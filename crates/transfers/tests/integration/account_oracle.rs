//! No account oracle (issue 15, finding 9): a money movement tells a caller nothing about an
//! account the caller cannot read (GetAccount hides it as NOT_FOUND), while whoever may read it
//! still gets the precise reason.

use crate::support::{App, assert_status};
use platform::error::reason_of;
use proto::transfers::v1::{CreateTransactionRequest, CreateTransferRequest, TransactionLeg};
use test_support::authed;
use tonic::{Code, Status};

fn transfer(from: i64, to: i64, currency: &str, pending: bool) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount: 10,
        currency: currency.into(),
        pending,
        ..Default::default()
    }
}

/// The bank's USD cash account (made here if the service's start-up has not made it yet).
async fn system_account(app: &App) -> i64 {
    sqlx::query_scalar("SELECT ledger.ensure_system_account('USD')")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn refused(app: &App, request: CreateTransferRequest, token: &str) -> Status {
    app.client
        .clone()
        .create_transfer(authed(request, token))
        .await
        .unwrap_err()
}

/// What a client can tell two answers apart by.
fn answer(s: &Status) -> (Code, Option<String>, String) {
    (s.code(), reason_of(s), s.message().to_owned())
}

#[tokio::test]
async fn an_unknown_foreign_other_currency_or_frozen_destination_is_one_answer_to_a_stranger() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob_eur = app.open("bob", "EUR").await;
    let carol = app.open("carol", "USD").await;
    let dave = app.open("dave", "USD").await;
    app.freeze(carol).await;
    app.deposit(alice, 1_000, "USD").await;
    let token = app.token("alice");
    for pending in [false, true] {
        let unknown = refused(&app, transfer(alice, 999_999, "USD", pending), &token).await;
        assert_status(unknown.clone(), Code::NotFound, "account_not_found");
        let system = refused(
            &app,
            transfer(alice, system_account(&app).await, "USD", pending),
            &token,
        )
        .await;
        let other_currency = refused(&app, transfer(alice, bob_eur, "USD", pending), &token).await;
        let frozen = refused(&app, transfer(alice, carol, "USD", pending), &token).await;
        for other in [&system, &other_currency, &frozen] {
            assert_eq!(answer(other), answer(&unknown), "pending {pending}");
        }
    }
    // an account that can receive does (that much a payment always tells)
    app.client
        .clone()
        .create_transfer(authed(transfer(alice, dave, "USD", false), &token))
        .await
        .unwrap();
    assert_eq!(app.balance(alice).await, 990);
}

#[tokio::test]
async fn the_source_is_checked_first_and_any_source_not_the_callers_is_one_answer() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let bob_eur = app.open("bob", "EUR").await;
    let carol = app.open("carol", "USD").await;
    app.freeze(carol).await;
    app.deposit(bob, 1_000, "USD").await;
    let token = app.token("alice");
    let foreign = refused(&app, transfer(bob, alice, "USD", false), &token).await;
    assert_status(foreign.clone(), Code::PermissionDenied, "not_account_owner");
    // whatever the destination, and whether the source exists at all
    for request in [
        transfer(bob, 999_999, "USD", false),
        transfer(bob, carol, "USD", false),
        transfer(bob, bob_eur, "USD", false),
        transfer(999_999, alice, "USD", false),
        transfer(999_999, 999_998, "USD", true),
        transfer(bob_eur, alice, "USD", false),
        transfer(system_account(&app).await, alice, "USD", false),
    ] {
        let err = refused(&app, request.clone(), &token).await;
        assert_eq!(answer(&err), answer(&foreign), "{request:?}");
    }
}

#[tokio::test]
async fn whoever_may_read_the_destination_gets_the_precise_reason() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let alice_eur = app.open("alice", "EUR").await;
    let bob = app.open("bob", "USD").await;
    let bob_eur = app.open("bob", "EUR").await;
    app.deposit(alice, 1_000, "USD").await;
    let token = app.token("alice");
    // her own account in another currency
    let err = refused(&app, transfer(alice, alice_eur, "USD", false), &token).await;
    assert_status(err, Code::FailedPrecondition, "currency_mismatch");
    // her own source in another currency than the request
    let err = refused(&app, transfer(alice, bob, "EUR", false), &token).await;
    assert_status(err, Code::FailedPrecondition, "currency_mismatch");
    app.freeze(alice).await;
    let err = refused(&app, transfer(alice, bob, "USD", false), &token).await;
    assert_status(err, Code::FailedPrecondition, "account_frozen");

    // a banker reads every account: precise reasons for the legs of a transaction it makes
    let leg = |from, to, currency: &str| TransactionLeg {
        from_account_id: from,
        to_account_id: to,
        amount: 5,
        currency: currency.into(),
        ..Default::default()
    };
    let pay = |legs| {
        let mut client = app.client.clone();
        let banker = app.banker();
        async move {
            client
                .create_transaction(authed(
                    CreateTransactionRequest {
                        legs,
                        ..Default::default()
                    },
                    &banker,
                ))
                .await
                .unwrap_err()
        }
    };
    app.deposit(bob, 100, "USD").await;
    let err = pay(vec![leg(bob, bob_eur, "USD"), leg(bob, bob_eur, "USD")]).await;
    assert_status(err, Code::FailedPrecondition, "currency_mismatch");
    let err = pay(vec![leg(bob, bob_eur, "EUR"), leg(bob, alice, "USD")]).await;
    assert_status(err.clone(), Code::FailedPrecondition, "currency_mismatch");
    assert!(err.message().contains("leg 1"), "{err:?}");
    let err = pay(vec![leg(bob, bob, "USD"), leg(bob, alice, "USD")]).await;
    assert_status(err, Code::InvalidArgument, "same_account");
    let err = pay(vec![leg(bob, 999_999, "USD"), leg(bob, alice, "USD")]).await;
    assert_status(err, Code::NotFound, "account_not_found");
    let err = pay(vec![leg(999_999, bob, "USD"), leg(bob, alice, "USD")]).await;
    assert_status(err, Code::NotFound, "account_not_found");
    let err = pay(vec![leg(bob, alice_eur, "USD"), leg(bob, alice, "USD")]).await;
    assert_status(err, Code::FailedPrecondition, "currency_mismatch");
    // alice's USD account is frozen: the banker is told so
    let err = pay(vec![leg(bob, alice, "USD"), leg(bob, alice, "USD")]).await;
    assert_status(err, Code::FailedPrecondition, "account_frozen");
    assert_eq!(app.balance(bob).await, 100, "nothing moved");
}
