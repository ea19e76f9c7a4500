//! Concurrency: ordered locking never deadlocks, and one idempotency key moves money once.
//! In-flight requests are bounded (`buffer_unordered`) to what a 2-core machine runs sensibly.

use std::collections::HashSet;

use crate::support::{App, with_key};
use futures::{StreamExt, stream};
use platform::error::reason_of;
use proto::transfers::v1::CreateTransferRequest;
use rand::{Rng, SeedableRng, rngs::StdRng};
use test_support::authed;

/// Requests in flight at once.
const IN_FLIGHT: usize = 48;

fn transfer(from: i64, to: i64, amount: i64) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount,
        currency: "USD".into(),
        request_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_direction_transfers_between_two_accounts_never_deadlock() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 500_000, "USD").await;
    app.deposit(bob, 500_000, "USD").await;
    let (alice_token, bob_token) = (app.token("alice"), app.token("bob"));

    // 200 transfers, alternating direction, amounts 1..=1000: nobody can run dry
    let mut rng = StdRng::seed_from_u64(4);
    let jobs: Vec<(i64, i64, i64, String)> = (0..200)
        .map(|i| {
            let amount = rng.random_range(1..=1_000);
            if i % 2 == 0 {
                (alice, bob, amount, alice_token.clone())
            } else {
                (bob, alice, amount, bob_token.clone())
            }
        })
        .collect();
    let expected_alice: i64 = 500_000
        + jobs
            .iter()
            .map(|(from, _, amount, _)| if *from == alice { -amount } else { *amount })
            .sum::<i64>();

    let results: Vec<_> = stream::iter(jobs)
        .map(|(from, to, amount, token)| {
            let mut client = app.client.clone();
            async move {
                client
                    .create_transfer(authed(transfer(from, to, amount), &token))
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for result in &results {
        if let Err(status) = result {
            panic!("a transfer failed: {status:?}");
        }
    }
    assert_eq!(app.balance(alice).await, expected_alice);
    assert_eq!(app.balance(alice).await + app.balance(bob).await, 1_000_000);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_random_transfers_among_eight_accounts_only_ever_fails_for_insufficient_funds() {
    let app = App::start().await;
    let mut accounts = Vec::new();
    for i in 0..8 {
        let owner = format!("user_{i}");
        let id = app.open(&owner, "USD").await;
        app.deposit(id, 10_000, "USD").await;
        accounts.push((id, app.token(&owner)));
    }
    let total_before = app.total("USD").await;
    let customers_before: i64 = 8 * 10_000;

    let mut rng = StdRng::seed_from_u64(500);
    let jobs: Vec<(i64, i64, i64, String)> = (0..600)
        .map(|_| {
            let from = rng.random_range(0..accounts.len());
            let mut to = rng.random_range(0..accounts.len() - 1);
            if to >= from {
                to += 1;
            }
            let amount = rng.random_range(1..=4_000);
            (
                accounts[from].0,
                accounts[to].0,
                amount,
                accounts[from].1.clone(),
            )
        })
        .collect();

    let results: Vec<_> = stream::iter(jobs)
        .map(|(from, to, amount, token)| {
            let mut client = app.client.clone();
            async move {
                client
                    .create_transfer(authed(transfer(from, to, amount), &token))
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut ok = 0_i64;
    let mut short = 0_i64;
    for result in results {
        match result {
            Ok(_) => ok += 1,
            Err(status) if reason_of(&status).as_deref() == Some("insufficient_funds") => {
                short += 1
            }
            Err(status) => panic!("only insufficient_funds may fail, got {status:?}"),
        }
    }
    assert_eq!(ok + short, 600);
    assert!(ok > 100, "most transfers should go through (ok={ok})");

    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(
        app.total("USD").await,
        total_before,
        "money neither made nor lost"
    );
    assert_eq!(total_before, 0);
    let customers_after: i64 = sqlx::query_scalar(
        "SELECT SUM(balance)::bigint FROM ledger.accounts WHERE kind = 'customer' AND currency = 'USD'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(customers_after, customers_before);
    let transfers = app
        .count("SELECT COUNT(*) FROM ledger.transfers WHERE kind = 'transfer'")
        .await;
    assert_eq!(transfers, ok);
    let entries = app.count("SELECT COUNT(*) FROM ledger.entries").await;
    assert_eq!(entries, 2 * (ok + 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_requests_with_one_key_make_exactly_one_transfer() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 10_000, "USD").await;
    let token = app.token("alice");

    let calls = (0..20).map(|_| {
        let mut client = app.client.clone();
        let token = token.clone();
        async move {
            client
                .create_transfer(with_key(
                    authed(transfer(alice, bob, 700), &token),
                    "rent-2026-11",
                ))
                .await
                .map(|r| r.into_inner())
        }
    });
    let answers = futures::future::join_all(calls).await;
    let answers: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("every identical request succeeds"))
        .collect();
    let ids: HashSet<i64> = answers
        .iter()
        .map(|a| a.transfer.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids.len(), 1, "all 20 answers carry the same transfer id");
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert!(
        answers
            .iter()
            .all(|a| a.from_account_balance == 10_000 - 700)
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ledger.transfers WHERE kind = 'transfer'")
            .await,
        1
    );
    assert_eq!(app.balance(alice).await, 10_000 - 700);
    assert_eq!(app.balance(bob).await, 700);
}
