//! The ledger is keyed by user ids, not usernames (issue 15, finding 11): a new user who took a
//! freed username (same `sub`, another `uid`) owns none of the old user's accounts, holds or
//! idempotency keys.

use std::time::Duration;

use crate::support::{App, assert_status, with_key};
use platform::{
    config::TokenKind,
    token::{Claims, Role},
};
use proto::transfers::v1::{CreateTransferRequest, ReverseTransferRequest, VoidTransferRequest};
use test_support::authed;
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn a_new_user_with_a_freed_username_moves_nothing_of_the_old_users() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(bob, 1_000, "USD").await;
    let old_alice = app.token("alice");
    let send = |amount: i64, pending: bool| CreateTransferRequest {
        from_account_id: alice,
        to_account_id: bob,
        amount,
        currency: "USD".into(),
        pending,
        ..Default::default()
    };
    let paid = app
        .client
        .clone()
        .create_transfer(with_key(authed(send(100, false), &old_alice), "k-1"))
        .await
        .unwrap()
        .into_inner();
    let hold = app
        .client
        .clone()
        .create_transfer(authed(send(50, true), &old_alice))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    // bob pays the old alice, so the new one would be the receiver if names were identity
    let to_alice = app
        .client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: bob,
                to_account_id: alice,
                amount: 10,
                currency: "USD".into(),
                ..Default::default()
            },
            &app.token("bob"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();

    let new_alice = app
        .keys
        .maker(TokenKind::Paseto)
        .sign(&Claims::access(
            "alice",
            Uuid::new_v4(),
            Role::Depositor,
            Uuid::new_v4(),
            true,
            Duration::from_secs(900),
        ))
        .unwrap();
    // the old user's key is not hers: no replay, and the account is not hers either
    let err = app
        .client
        .clone()
        .create_transfer(with_key(authed(send(100, false), &new_alice), "k-1"))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "not_account_owner");
    assert!(!paid.replayed);
    let err = app
        .client
        .clone()
        .void_transfer(authed(
            VoidTransferRequest {
                id: hold.id,
                ..Default::default()
            },
            &new_alice,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "hold_not_found");
    let err = app
        .client
        .clone()
        .reverse_transfer(authed(
            ReverseTransferRequest {
                id: to_alice.id,
                ..Default::default()
            },
            &new_alice,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "transfer_not_found");
    // the old user's own token still works: her key replays
    let again = app
        .client
        .clone()
        .create_transfer(with_key(authed(send(100, false), &old_alice), "k-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(app.balance(alice).await, 1_000 - 100 + 10);
    let stored: (Uuid, Uuid) = sqlx::query_as(
        "SELECT k.user_id, t.created_by_id FROM ledger.idempotency_keys k
         JOIN ledger.transfers t ON t.id = k.transfer_id WHERE k.key = 'k-1'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            test_support::user_id("alice"),
            test_support::user_id("alice")
        )
    );
}
