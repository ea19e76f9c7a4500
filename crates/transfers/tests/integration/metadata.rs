//! Descriptions and metadata on money movements: stored, returned by every read, bounded by
//! config with field violations, part of the idempotency digest, and found by one key and value.

use std::collections::HashMap;

use crate::support::{App, assert_status, with_key};
use proto::transfers::v1::{
    CreateTransferRequest, DepositRequest, GetTransferRequest, ListTransfersRequest, Transfer,
};
use test_support::authed;
use tonic::{Code, Status};

/// The fields of the field violations a refusal carries.
pub fn violated_fields(err: &Status) -> Vec<String> {
    tonic_types::StatusExt::get_details_bad_request(err)
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn transfer(from: i64, to: i64, amount: i64, metadata: &[(&str, &str)]) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount,
        currency: "USD".into(),
        description: "order payment".into(),
        metadata: tags(metadata),
        ..Default::default()
    }
}

async fn list(app: &App, account: i64, token: &str, key: &str, value: &str) -> Vec<Transfer> {
    app.client
        .clone()
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: account,
                page_size: 100,
                metadata_key: key.into(),
                metadata_value: value.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .transfers
}

#[tokio::test]
async fn description_and_metadata_are_stored_and_returned_by_every_read() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let deposit = app
        .client
        .clone()
        .deposit(authed(
            DepositRequest {
                account_id: alice,
                amount: 1_000,
                currency: "USD".into(),
                description: "opening balance".into(),
                metadata: tags(&[("branch", "leeds")]),
                ..Default::default()
            },
            &app.banker(),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    assert_eq!(deposit.description, "opening balance");
    assert_eq!(deposit.metadata, tags(&[("branch", "leeds")]));

    let made = app
        .client
        .clone()
        .create_transfer(authed(
            transfer(
                alice,
                bob,
                250,
                &[("order_id", "A-17"), ("invoice", "2026/11")],
            ),
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    let want = tags(&[("order_id", "A-17"), ("invoice", "2026/11")]);
    assert_eq!(made.description, "order payment");
    assert_eq!(made.metadata, want);

    let read = app
        .client
        .clone()
        .get_transfer(authed(
            GetTransferRequest { id: made.id },
            &app.token("bob"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (read.description.as_str(), &read.metadata),
        ("order payment", &want)
    );
    let listed = list(&app, alice, &app.token("alice"), "", "").await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].metadata, want, "newest first");
    assert_eq!(listed[1].description, "opening balance");

    let stored: (Option<String>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT description, metadata FROM ledger.transfers WHERE id = $1")
            .bind(made.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.0.as_deref(), Some("order payment"));
    assert_eq!(
        stored.1,
        Some(serde_json::json!({"order_id": "A-17", "invoice": "2026/11"}))
    );
    // a transfer without either stores NULLs (it is not in the metadata index)
    let bare = app
        .client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                description: String::new(),
                ..transfer(alice, bob, 1, &[])
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    let nulls: bool = sqlx::query_scalar(
        "SELECT description IS NULL AND metadata IS NULL FROM ledger.transfers WHERE id = $1",
    )
    .bind(bare.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(nulls);
}

#[tokio::test]
async fn metadata_and_descriptions_past_the_configured_limits_are_field_violations() {
    let app = App::start_with(|cfg| {
        cfg.metadata.max_keys = 3;
        cfg.metadata.max_key_chars = 8;
        cfg.metadata.max_value_chars = 10;
        cfg.metadata.max_description_chars = 20;
    })
    .await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let token = app.token("alice");
    let long_description = CreateTransferRequest {
        description: "x".repeat(21),
        ..transfer(alice, bob, 10, &[])
    };
    let cases = [
        (
            transfer(
                alice,
                bob,
                10,
                &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
            ),
            "metadata",
        ),
        (transfer(alice, bob, 10, &[("too_long_k", "1")]), "metadata"),
        (transfer(alice, bob, 10, &[("", "1")]), "metadata"),
        (
            transfer(alice, bob, 10, &[("order", "12345678901")]),
            "metadata[\"order\"]",
        ),
        (long_description, "description"),
    ];
    for (request, field) in cases {
        let err = app
            .client
            .clone()
            .create_transfer(authed(request.clone(), &token))
            .await
            .unwrap_err();
        assert_status(err.clone(), Code::InvalidArgument, "invalid_argument");
        let violations = violated_fields(&err);
        assert!(
            violations.iter().any(|f| f == field),
            "{request:?}: {violations:?}"
        );
    }
    let err = app
        .client
        .clone()
        .create_transfer(authed(
            transfer(alice, bob, 10, &[("k", "a\u{1}b")]),
            &token,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_text");
    // exactly at the limits is fine
    app.client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                description: "x".repeat(20),
                ..transfer(
                    alice,
                    bob,
                    10,
                    &[("a", "1234567890"), ("bbbbbbbb", ""), ("c", "3")],
                )
            },
            &token,
        ))
        .await
        .unwrap();
    assert_eq!(
        app.balance(alice).await,
        990,
        "only the one within limits moved"
    );
}

#[tokio::test]
async fn the_same_key_with_other_metadata_or_description_is_idempotency_key_reused() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let token = app.token("alice");
    let send = |request: CreateTransferRequest| {
        let mut client = app.client.clone();
        let token = token.clone();
        async move {
            client
                .create_transfer(with_key(authed(request, &token), "order-A-17"))
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = send(transfer(alice, bob, 100, &[("order_id", "A-17")]))
        .await
        .unwrap();
    let again = send(transfer(alice, bob, 100, &[("order_id", "A-17")]))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.transfer.as_ref().unwrap().id,
        first.transfer.as_ref().unwrap().id
    );
    assert_eq!(
        again.transfer.unwrap().metadata,
        tags(&[("order_id", "A-17")])
    );
    let err = send(transfer(alice, bob, 100, &[("order_id", "A-18")]))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "idempotency_key_reused");
    let err = send(CreateTransferRequest {
        description: "another payment".into(),
        ..transfer(alice, bob, 100, &[("order_id", "A-17")])
    })
    .await
    .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "idempotency_key_reused");
    assert_eq!(app.balance(alice).await, 900, "moved once");
}

#[tokio::test]
async fn list_transfers_by_one_metadata_pair_finds_exactly_the_transfers_carrying_it() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let carol = app.open("carol", "USD").await;
    app.deposit(alice, 10_000, "USD").await;
    app.deposit(carol, 10_000, "USD").await;
    let mut wanted = Vec::new();
    for i in 0..12 {
        let order = if i % 3 == 0 { "42" } else { "7" };
        let mut pairs = vec![("order_id", order)];
        if i % 2 == 0 {
            pairs.push(("channel", "web"));
        }
        let t = app
            .client
            .clone()
            .create_transfer(authed(
                transfer(alice, bob, 10, &pairs),
                &app.token("alice"),
            ))
            .await
            .unwrap()
            .into_inner()
            .transfer
            .unwrap();
        if order == "42" {
            wanted.push(t.id);
        }
    }
    // the same pair on a transfer between other accounts is not in alice's list
    app.client
        .clone()
        .create_transfer(authed(
            transfer(carol, bob, 10, &[("order_id", "42")]),
            &app.token("carol"),
        ))
        .await
        .unwrap();
    wanted.reverse();
    let found: Vec<i64> = list(&app, alice, &app.token("alice"), "order_id", "42")
        .await
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        found, wanted,
        "exactly alice's transfers with order_id 42, newest first"
    );
    // bob sees the same ones from the other side, plus carol's
    assert_eq!(
        list(&app, bob, &app.token("bob"), "order_id", "42")
            .await
            .len(),
        5
    );
    assert!(
        list(&app, alice, &app.token("alice"), "order_id", "4")
            .await
            .is_empty()
    );
    assert!(
        list(&app, alice, &app.token("alice"), "nope", "42")
            .await
            .is_empty()
    );
    assert_eq!(
        list(&app, alice, &app.token("alice"), "channel", "web")
            .await
            .len(),
        6
    );
    let err = app
        .client
        .clone()
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: alice,
                metadata_value: "42".into(),
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_argument");

    // the filter's predicate is one the metadata index serves (its `IS NOT NULL` is implied)
    let mut conn = app.db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM ledger.transfers t WHERE t.metadata @> $1::jsonb",
    )
    .bind(serde_json::json!({"order_id": "42"}))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        plan.iter()
            .any(|line| line.contains("transfers_metadata_idx")),
        "{plan:#?}"
    );
}
