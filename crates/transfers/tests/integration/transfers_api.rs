//! The transfers service through gRPC against a real PostgreSQL: money movements, every refusal
//! with its status and reason, and the reads.

use crate::support::{App, assert_status, with_key};
use proto::transfers::v1::{
    CreateTransferRequest, DepositRequest, GetTransferRequest, ListEntriesRequest,
    ListTransfersRequest, ReconcileRequest, TransferKind, WithdrawRequest,
};
use test_support::authed;
use tonic::Code;

fn transfer(from: i64, to: i64, amount: i64, currency: &str) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount,
        currency: currency.into(),
        request_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_transfer_writes_two_entries_and_moves_both_balances() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let funded = app.deposit(alice, 10_000, "usd").await;
    assert_eq!(funded.transfer.unwrap().kind, TransferKind::Deposit as i32);
    assert_eq!(funded.to_entry.unwrap().balance_after, 10_000);

    let result = app
        .client
        .clone()
        .create_transfer(authed(
            transfer(alice, bob, 2_500, "usd"),
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    let t = result.transfer.unwrap();
    assert_eq!(
        (t.from_account_id, t.to_account_id, t.amount),
        (alice, bob, 2_500)
    );
    assert_eq!(t.currency, "USD");
    assert_eq!(t.kind, TransferKind::Transfer as i32);
    assert_eq!(t.created_by, "alice");
    let (from, to) = (result.from_entry.unwrap(), result.to_entry.unwrap());
    assert_eq!(
        (from.account_id, from.amount, from.balance_after),
        (alice, -2_500, 7_500)
    );
    assert_eq!(
        (to.account_id, to.amount, to.balance_after),
        (bob, 2_500, 2_500)
    );
    assert_eq!(from.transfer_id, t.id);
    assert_eq!(result.from_account_balance, 7_500);
    assert!(!result.replayed);
    assert_eq!(app.balance(alice).await, 7_500);
    assert_eq!(app.balance(bob).await, 2_500);

    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    let usd = report.totals.iter().find(|t| t.currency == "USD").unwrap();
    assert_eq!(usd.total_balance, 0);
}

#[tokio::test]
async fn transfer_refusals_carry_their_status_and_reason() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let alice_eur = app.open("alice", "EUR").await;
    let bob = app.open("bob", "USD").await;
    let bob_eur = app.open("bob", "EUR").await;
    let carol = app.open("carol", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(alice_eur, 1_000, "EUR").await;
    app.deposit(bob, 1_000, "USD").await;
    let mut client = app.client.clone();
    let alice_token = app.token("alice");

    let cases: Vec<(CreateTransferRequest, Code, &str)> = vec![
        (
            transfer(alice, bob, 0, "USD"),
            Code::InvalidArgument,
            "invalid_amount",
        ),
        (
            transfer(alice, bob, -5, "USD"),
            Code::InvalidArgument,
            "invalid_amount",
        ),
        (
            transfer(alice, bob, 1_000_001, "USD"),
            Code::InvalidArgument,
            "amount_over_limit",
        ),
        (
            transfer(alice, alice, 10, "USD"),
            Code::InvalidArgument,
            "same_account",
        ),
        (
            transfer(alice, bob, 10, "XYZ"),
            Code::InvalidArgument,
            "unsupported_currency",
        ),
        (
            transfer(alice, bob, 10, ""),
            Code::InvalidArgument,
            "unsupported_currency",
        ),
        (
            transfer(0, bob, 10, "USD"),
            Code::InvalidArgument,
            "invalid_argument",
        ),
        (
            transfer(alice, 999_999, 10, "USD"),
            Code::NotFound,
            "account_not_found",
        ),
        // any source that is not the caller's, there or not, is one answer (issue 15, finding 9)
        (
            transfer(999_999, bob, 10, "USD"),
            Code::PermissionDenied,
            "not_account_owner",
        ),
        (
            transfer(bob, carol, 10, "USD"),
            Code::PermissionDenied,
            "not_account_owner",
        ),
        // the currency of someone else's account is not told
        (
            transfer(alice, bob_eur, 10, "USD"),
            Code::NotFound,
            "account_not_found",
        ),
        (
            transfer(alice, bob, 10, "EUR"),
            Code::FailedPrecondition,
            "currency_mismatch",
        ),
        (
            transfer(alice_eur, bob_eur, 10, "USD"),
            Code::FailedPrecondition,
            "currency_mismatch",
        ),
        (
            transfer(alice, bob, 1_001, "USD"),
            Code::FailedPrecondition,
            "insufficient_funds",
        ),
    ];
    for (request, code, reason) in cases {
        let err = client
            .create_transfer(authed(request.clone(), &alice_token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {err:?}");
        assert_eq!(
            platform::error::reason_of(&err).as_deref(),
            Some(reason),
            "{request:?}: {err:?}"
        );
    }
    // nothing moved
    assert_eq!(app.balance(alice).await, 1_000);
    assert_eq!(app.balance(bob).await, 1_000);
    assert_eq!(app.balance(carol).await, 0);
}

#[tokio::test]
async fn transfer_from_a_frozen_account_is_account_frozen_and_to_someone_elses_frozen_one_not_found()
 {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(bob, 1_000, "USD").await;
    app.freeze(bob).await;
    let mut client = app.client.clone();
    // alice may not read bob's account: that it is frozen is not hers to know
    let err = client
        .create_transfer(authed(transfer(alice, bob, 10, "USD"), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let err = client
        .create_transfer(authed(transfer(bob, alice, 10, "USD"), &app.token("bob")))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "account_frozen");
    let err = client
        .deposit(authed(
            DepositRequest {
                account_id: bob,
                amount: 5,
                currency: "USD".into(),
                request_id: String::new(),
                ..Default::default()
            },
            &app.banker(),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "account_frozen");
}

#[tokio::test]
async fn transfer_from_someone_elses_account_is_permission_denied() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let err = app
        .client
        .clone()
        .create_transfer(authed(transfer(alice, bob, 10, "USD"), &app.token("bob")))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "not_account_owner");
    // a banker is not an owner either: bankers move money with Deposit/Withdraw
    let err = app
        .client
        .clone()
        .create_transfer(authed(transfer(alice, bob, 10, "USD"), &app.banker()))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "not_account_owner");
    assert_eq!(app.balance(alice).await, 1_000);
}

#[tokio::test]
async fn an_unverified_email_may_not_move_money_unless_configured_off() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let err = app
        .client
        .clone()
        .create_transfer(authed(
            transfer(alice, bob, 10, "USD"),
            &app.unverified("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "email_not_verified");

    let relaxed = App::start_with(|cfg| cfg.require_verified_email = false).await;
    let alice = relaxed.open("alice", "USD").await;
    let bob = relaxed.open("bob", "USD").await;
    relaxed.deposit(alice, 1_000, "USD").await;
    relaxed
        .client
        .clone()
        .create_transfer(authed(
            transfer(alice, bob, 10, "USD"),
            &relaxed.unverified("alice"),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_depositor_cannot_reach_the_system_account() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let cash: i64 = sqlx::query_scalar(
        "SELECT id FROM ledger.accounts WHERE kind = 'system' AND currency = 'USD'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let mut client = app.client.clone();
    let err = client
        .create_transfer(authed(
            transfer(alice, cash, 10, "USD"),
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let err = client
        .list_entries(authed(
            ListEntriesRequest {
                account_id: cash,
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
}

#[tokio::test]
async fn deposit_and_withdraw_are_banker_only_and_balance_against_the_system_account() {
    let app = App::start().await;
    let alice = app.open("alice", "EUR").await;
    let mut client = app.client.clone();
    let deposit = |amount| DepositRequest {
        account_id: alice,
        amount,
        currency: "EUR".into(),
        request_id: String::new(),
        ..Default::default()
    };
    let withdraw = |amount| WithdrawRequest {
        account_id: alice,
        amount,
        currency: "EUR".into(),
        request_id: String::new(),
        ..Default::default()
    };
    let err = client
        .deposit(authed(deposit(100), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "banker_only");
    let err = client
        .withdraw(authed(withdraw(100), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "banker_only");

    let d = client
        .deposit(authed(deposit(5_000), &app.banker()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.to_entry.unwrap().balance_after, 5_000);
    assert_eq!(
        d.from_account_balance, -5_000,
        "the bank's cash goes negative"
    );
    let w = client
        .withdraw(authed(withdraw(1_500), &app.banker()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.transfer.as_ref().unwrap().kind,
        TransferKind::Withdrawal as i32
    );
    assert_eq!(w.from_account_balance, 3_500);
    let err = client
        .withdraw(authed(withdraw(3_501), &app.banker()))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "insufficient_funds");
    let err = client
        .deposit(authed(
            DepositRequest {
                currency: "USD".into(),
                ..deposit(1)
            },
            &app.banker(),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "currency_mismatch");
    let err = client
        .deposit(authed(
            DepositRequest {
                account_id: 999_999,
                ..deposit(1)
            },
            &app.banker(),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let err = client
        .deposit(authed(deposit(1_000_001), &app.banker()))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "amount_over_limit");

    // the bank's own cash account is not a customer account to deposit into
    let cash: i64 = sqlx::query_scalar(
        "SELECT id FROM ledger.accounts WHERE kind = 'system' AND currency = 'EUR'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let err = client
        .deposit(authed(
            DepositRequest {
                account_id: cash,
                ..deposit(1)
            },
            &app.banker(),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");

    assert_eq!(app.total("EUR").await, 0);
    assert!(app.reconcile().await.ok);
}

#[tokio::test]
async fn reads_show_the_owner_and_a_banker_and_hide_from_others() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let t = app
        .client
        .clone()
        .create_transfer(authed(
            transfer(alice, bob, 300, "USD"),
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    let mut client = app.client.clone();
    for who in [app.token("alice"), app.token("bob"), app.banker()] {
        let got = client
            .get_transfer(authed(GetTransferRequest { id: t.id }, &who))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, t);
    }
    let mallory = app.token("mallory");
    let err = client
        .get_transfer(authed(GetTransferRequest { id: t.id }, &mallory))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "transfer_not_found");
    let err = client
        .get_transfer(authed(
            GetTransferRequest { id: 999_999 },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "transfer_not_found");
    let err = client
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: alice,
                ..Default::default()
            },
            &mallory,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let err = client
        .list_entries(authed(
            ListEntriesRequest {
                account_id: alice,
                ..Default::default()
            },
            &mallory,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let err = client
        .reconcile(authed(ReconcileRequest::default(), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "banker_only");
    let err = client
        .get_transfer(tonic::Request::new(GetTransferRequest { id: t.id }))
        .await
        .unwrap_err();
    assert_status(err, Code::Unauthenticated, "missing_token");
}

#[tokio::test]
async fn the_statement_pages_newest_first_with_the_balance_after_each_line() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let mut client = app.client.clone();
    for amount in [100, 200, 300] {
        client
            .create_transfer(authed(
                transfer(alice, bob, amount, "USD"),
                &app.token("alice"),
            ))
            .await
            .unwrap();
    }
    // alice: +1000, -100, -200, -300 → newest first: -300 (400), -200 (700), -100 (900), +1000
    let token = app.token("alice");
    let page = |page_token: String| ListEntriesRequest {
        account_id: alice,
        page_size: 3,
        page_token,
        ..Default::default()
    };
    let first = client
        .list_entries(authed(page(String::new()), &token))
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<(i64, i64)> = first
        .entries
        .iter()
        .map(|e| (e.amount, e.balance_after))
        .collect();
    assert_eq!(lines, [(-300, 400), (-200, 700), (-100, 900)]);
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_entries(authed(page(first.next_page_token), &token))
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<(i64, i64)> = second
        .entries
        .iter()
        .map(|e| (e.amount, e.balance_after))
        .collect();
    assert_eq!(lines, [(1_000, 1_000)]);
    assert_eq!(second.next_page_token, "");

    // bob's transfers (incoming), newest first, paged by 2
    let bob_token = app.token("bob");
    let first = client
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: bob,
                page_size: 2,
                page_token: String::new(),
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let amounts: Vec<i64> = first.transfers.iter().map(|t| t.amount).collect();
    assert_eq!(amounts, [300, 200]);
    let second = client
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: bob,
                page_size: 2,
                page_token: first.next_page_token,
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    let amounts: Vec<i64> = second.transfers.iter().map(|t| t.amount).collect();
    assert_eq!(amounts, [100]);
    assert_eq!(second.next_page_token, "");

    let err = client
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: bob,
                page_size: 2,
                page_token: "garbage!".into(),
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_page_token");
}

#[tokio::test]
async fn reusing_an_idempotency_key_with_other_parameters_is_failed_precondition() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let mut client = app.client.clone();
    let token = app.token("alice");
    let first = client
        .create_transfer(with_key(
            authed(transfer(alice, bob, 100, "USD"), &token),
            "pay-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    let again = client
        .create_transfer(with_key(
            authed(transfer(alice, bob, 100, "USD"), &token),
            "pay-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.transfer, first.transfer);
    assert_eq!(again.from_account_balance, first.from_account_balance);
    let err = client
        .create_transfer(with_key(
            authed(transfer(alice, bob, 101, "USD"), &token),
            "pay-1",
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "idempotency_key_reused");
    // the request_id field works as the key when no metadata is sent
    let by_field = CreateTransferRequest {
        request_id: "pay-1".into(),
        ..transfer(alice, bob, 100, "USD")
    };
    let replay = client
        .create_transfer(authed(by_field, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    // keys are per user: bob may use "pay-1" for his own transfer
    let back = client
        .create_transfer(with_key(
            authed(transfer(bob, alice, 50, "USD"), &app.token("bob")),
            "pay-1",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!back.replayed);
    // without a key every request moves money
    for _ in 0..2 {
        client
            .create_transfer(authed(transfer(alice, bob, 10, "USD"), &token))
            .await
            .unwrap();
    }
    assert_eq!(app.balance(alice).await, 1_000 - 100 + 50 - 20);
    let keys = app
        .count("SELECT COUNT(*) FROM ledger.idempotency_keys")
        .await;
    assert_eq!(keys, 2);
}

#[tokio::test]
async fn reconcile_reports_a_tampered_balance() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    assert!(app.reconcile().await.ok);
    sqlx::query("UPDATE ledger.accounts SET balance = balance + 1 WHERE id = $1")
        .bind(alice)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let report = app.reconcile().await;
    assert!(!report.ok);
    assert!(
        report.violations.iter().any(|v| v.contains("currency USD")),
        "{:?}",
        report.violations
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains(&format!("account {alice}"))),
        "{:?}",
        report.violations
    );
    assert!(report.accounts_checked >= 2);
    assert_eq!(report.transfers_checked, 1);

    // the CLI subcommand's check says the same
    let cfg = transfers::config::Config {
        database: app.db.config(),
        ..Default::default()
    };
    assert!(
        !transfers::cli::reconcile(&cfg, transfers::domain::reconcile::Mode::Full)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn key_cleanup_deletes_only_keys_past_retention_in_bounded_batches() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let mut client = app.client.clone();
    for key in ["old-1", "old-2", "old-3", "fresh"] {
        client
            .create_transfer(with_key(
                authed(transfer(alice, bob, 1, "USD"), &app.token("alice")),
                key,
            ))
            .await
            .unwrap();
    }
    sqlx::query(
        "UPDATE ledger.idempotency_keys SET created_at = now() - interval '25 hours'
         WHERE key LIKE 'old-%'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let deleted = transfers::store::delete_expired_keys(&app.db.pool, 24, 2)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "one statement deletes at most one batch");
    let deleted = transfers::store::delete_expired_keys(&app.db.pool, 24, 2)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM ledger.idempotency_keys")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(left, ["fresh"]);
}

#[test]
fn retention_below_24_hours_is_refused_at_startup() {
    use platform::config::Validate;
    let mut cfg = transfers::config::Config::default();
    assert!(cfg.validate().is_ok());
    cfg.idempotency.retention_hours = 23;
    assert!(cfg.validate().is_err());
}

#[tokio::test]
async fn a_nul_byte_in_request_id_is_invalid_text_not_a_database_error() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 100, "USD").await;
    let mut req = transfer(alice, bob, 5, "USD");
    req.request_id = "key\u{0}".into();
    let err = app
        .client
        .clone()
        .create_transfer(authed(req, &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_text");
    assert_eq!(app.balance(alice).await, 100, "nothing moved");
}
