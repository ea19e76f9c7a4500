//! Holds (two-phase transfers) and balances at a point in time, through gRPC against a real
//! PostgreSQL: a hold reserves money without moving it, a post moves it (or less), a void or an
//! expiry releases it, each hold ends exactly once, and the statement answers "what was the
//! balance at T".

use std::{collections::HashMap, time::Duration};

use crate::support::{App, assert_status, with_key};
use futures::{StreamExt, stream};
use platform::error::reason_of;
use proto::transfers::v1::{
    CreateTransferRequest, GetBalanceRequest, GetTransferRequest, ListEntriesRequest,
    ListTransfersRequest, PostTransferRequest, TransferResult, TransferStatus, VoidTransferRequest,
    transfers_service_client::TransfersServiceClient,
};
use test_support::authed;
use tonic::{Code, Status, transport::Channel};

type Client = TransfersServiceClient<Channel>;

fn hold_request(from: i64, to: i64, amount: i64, timeout_secs: i64) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount,
        currency: "USD".into(),
        pending: true,
        hold_timeout_secs: timeout_secs,
        ..Default::default()
    }
}

async fn hold(app: &App, user: &str, from: i64, to: i64, amount: i64) -> TransferResult {
    app.client
        .clone()
        .create_transfer(authed(hold_request(from, to, amount, 0), &app.token(user)))
        .await
        .expect("the hold is made")
        .into_inner()
}

async fn post(
    client: &Client,
    token: &str,
    hold: i64,
    amount: i64,
) -> Result<TransferResult, Status> {
    client
        .clone()
        .post_transfer(authed(
            PostTransferRequest {
                id: hold,
                amount,
                request_id: String::new(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn void(client: &Client, token: &str, hold: i64) -> Result<TransferResult, Status> {
    client
        .clone()
        .void_transfer(authed(
            VoidTransferRequest {
                id: hold,
                request_id: String::new(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

/// (balance, pending debits, pending credits) of an account, from the database.
async fn amounts(app: &App, account: i64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT balance, pending_debits, pending_credits FROM ledger.accounts WHERE id = $1",
    )
    .bind(account)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

async fn status_of(app: &App, transfer: i64) -> String {
    sqlx::query_scalar("SELECT status FROM ledger.transfers WHERE id = $1")
        .bind(transfer)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_hold_posted_for_less_moves_only_the_posted_amount_and_releases_the_rest() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 10_000, "USD").await;

    let held = hold(&app, "alice", alice, bob, 6_000).await;
    let hold_transfer = held.transfer.clone().unwrap();
    assert!(hold_transfer.hold, "the answer is a hold");
    assert_eq!(hold_transfer.status, TransferStatus::Pending as i32);
    assert!(
        held.from_entry.is_none() && held.to_entry.is_none(),
        "a hold writes no entries"
    );
    assert_eq!(amounts(&app, alice).await, (10_000, 6_000, 0));
    assert_eq!(amounts(&app, bob).await, (0, 0, 6_000));

    let posted = post(&app.client, &app.token("alice"), hold_transfer.id, 2_500)
        .await
        .expect("the creator posts the hold");
    let post_transfer = posted.transfer.clone().unwrap();
    assert_eq!(post_transfer.status, TransferStatus::Posted as i32);
    assert_eq!(
        post_transfer.hold_id, hold_transfer.id,
        "the post names its hold"
    );
    assert_eq!(post_transfer.amount, 2_500);
    assert_eq!(posted.from_entry.as_ref().unwrap().amount, -2_500);
    assert_eq!(posted.to_entry.as_ref().unwrap().amount, 2_500);
    assert_eq!(posted.from_account_balance, 7_500);

    assert_eq!(
        amounts(&app, alice).await,
        (7_500, 0, 0),
        "the posted amount left, the rest is available again"
    );
    assert_eq!(
        amounts(&app, bob).await,
        (2_500, 0, 0),
        "the receiver got the posted amount"
    );
    assert_eq!(status_of(&app, hold_transfer.id).await, "posted");

    // the statement shows posted entries only: the deposit and the post
    let entries = app
        .client
        .clone()
        .list_entries(authed(
            ListEntriesRequest {
                account_id: alice,
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let lines: Vec<(i64, i64)> = entries
        .iter()
        .map(|e| (e.amount, e.balance_after))
        .collect();
    assert_eq!(lines, [(-2_500, 7_500), (10_000, 10_000)]);
    // the hold and its post show in the account's transfers
    let listed = app
        .client
        .clone()
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: alice,
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfers;
    assert!(listed.iter().any(|t| t.id == hold_transfer.id && t.hold));
    assert!(listed.iter().any(|t| t.hold_id == hold_transfer.id));
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(report.holds_checked, 1);
}

#[tokio::test]
async fn a_hold_reduces_the_available_balance_and_spending_the_reserved_money_is_refused() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    hold(&app, "alice", alice, bob, 700).await;

    let spend = |amount| CreateTransferRequest {
        from_account_id: alice,
        to_account_id: bob,
        amount,
        currency: "USD".into(),
        ..Default::default()
    };
    let err = app
        .client
        .clone()
        .create_transfer(authed(spend(301), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "insufficient_funds");
    let err = app
        .client
        .clone()
        .create_transfer(authed(
            hold_request(alice, bob, 301, 0),
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "insufficient_funds");
    app.client
        .clone()
        .create_transfer(authed(spend(300), &app.token("alice")))
        .await
        .expect("what is not reserved can be spent");
    assert_eq!(amounts(&app, alice).await, (700, 700, 0));

    // the constraint holds the same rule if the SQL were ever wrong
    let refused = sqlx::query("UPDATE ledger.accounts SET pending_debits = 701 WHERE id = $1")
        .bind(alice)
        .execute(&app.db.pool)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("customer_available_non_negative"),
        "{refused}"
    );
    assert!(app.reconcile().await.ok);
}

#[tokio::test]
async fn a_void_releases_everything_and_each_hold_ends_exactly_once() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let id = hold(&app, "alice", alice, bob, 400)
        .await
        .transfer
        .unwrap()
        .id;

    let voided = void(&app.client, &app.token("alice"), id).await.unwrap();
    let voiding = voided.transfer.unwrap();
    assert_eq!(voiding.status, TransferStatus::Voided as i32);
    assert_eq!(voiding.hold_id, id);
    assert!(voided.from_entry.is_none(), "a void moves nothing");
    assert_eq!(amounts(&app, alice).await, (1_000, 0, 0));
    assert_eq!(amounts(&app, bob).await, (0, 0, 0));
    assert_eq!(status_of(&app, id).await, "voided");

    for err in [
        post(&app.client, &app.token("alice"), id, 0)
            .await
            .unwrap_err(),
        void(&app.client, &app.token("alice"), id)
            .await
            .unwrap_err(),
        post(&app.client, &app.banker(), id, 100).await.unwrap_err(),
    ] {
        assert_status(err, Code::FailedPrecondition, "hold_not_pending");
    }
    // a post of more than was held, and a post of something that is not a hold
    let second = hold(&app, "alice", alice, bob, 100)
        .await
        .transfer
        .unwrap()
        .id;
    let err = post(&app.client, &app.token("alice"), second, 101)
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "amount_exceeds_hold");
    let plain = app.deposit(alice, 5, "USD").await.transfer.unwrap().id;
    let err = post(&app.client, &app.banker(), plain, 0)
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "hold_not_found");
    // the whole hold when no amount is given
    let all = post(&app.client, &app.token("alice"), second, 0)
        .await
        .unwrap();
    assert_eq!(all.transfer.unwrap().amount, 100);
    assert!(app.reconcile().await.ok);
}

#[tokio::test]
async fn only_the_creator_of_a_hold_or_a_banker_may_post_or_void_it() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let first = hold(&app, "alice", alice, bob, 100)
        .await
        .transfer
        .unwrap()
        .id;
    let second = hold(&app, "alice", alice, bob, 100)
        .await
        .transfer
        .unwrap()
        .id;

    // anonymous: no token at all
    let anonymous = app
        .client
        .clone()
        .post_transfer(PostTransferRequest {
            id: first,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let anonymous = app
        .client
        .clone()
        .void_transfer(VoidTransferRequest {
            id: first,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    // another depositor, even the receiver: as if the hold did not exist
    for user in ["mallory", "bob"] {
        let err = post(&app.client, &app.token(user), first, 0)
            .await
            .unwrap_err();
        assert_status(err, Code::NotFound, "hold_not_found");
        let err = void(&app.client, &app.token(user), first)
            .await
            .unwrap_err();
        assert_status(err, Code::NotFound, "hold_not_found");
    }
    // an unverified email cannot move money out
    let err = post(&app.client, &app.unverified("alice"), first, 0)
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("email_not_verified"));
    // the creator and a banker
    post(&app.client, &app.token("alice"), first, 50)
        .await
        .expect("the creator posts");
    void(&app.client, &app.banker(), second)
        .await
        .expect("a banker voids");
    assert_eq!(amounts(&app, alice).await, (950, 0, 0));
    assert_eq!(amounts(&app, bob).await, (50, 0, 0));
    // and everyone who may read a transfer sees the hold
    let seen = app
        .client
        .clone()
        .get_transfer(authed(GetTransferRequest { id: first }, &app.token("bob")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.status, TransferStatus::Posted as i32);
    assert!(seen.hold);
}

#[tokio::test]
async fn a_retried_post_with_its_key_returns_the_first_answer_and_other_parameters_are_refused() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let id = hold(&app, "alice", alice, bob, 500)
        .await
        .transfer
        .unwrap()
        .id;
    let keyed = |amount| {
        with_key(
            authed(
                PostTransferRequest {
                    id,
                    amount,
                    request_id: String::new(),
                    ..Default::default()
                },
                &app.token("alice"),
            ),
            "capture-1",
        )
    };
    let first = app
        .client
        .clone()
        .post_transfer(keyed(300))
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .clone()
        .post_transfer(keyed(300))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        first.transfer, again.transfer,
        "the same post, not a second one"
    );
    assert_eq!(first.from_entry, again.from_entry);
    let err = app
        .client
        .clone()
        .post_transfer(keyed(200))
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "idempotency_key_reused");
    assert_eq!(amounts(&app, alice).await, (700, 0, 0));
    // a hold made with a key replays as a hold
    let keyed_hold = || {
        with_key(
            authed(hold_request(alice, bob, 10, 0), &app.token("alice")),
            "hold-1",
        )
    };
    let made = app
        .client
        .clone()
        .create_transfer(keyed_hold())
        .await
        .unwrap()
        .into_inner();
    let replay = app
        .client
        .clone()
        .create_transfer(keyed_hold())
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed && replay.transfer == made.transfer && replay.from_entry.is_none());
    assert_eq!(amounts(&app, alice).await, (700, 10, 0), "held once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_and_voids_from_two_replicas_end_each_hold_exactly_once() {
    let app = App::start().await;
    let (replica, _running) = app.replica(|_| {}).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 100_000, "USD").await;
    let mut holds = Vec::new();
    for _ in 0..20 {
        holds.push(
            hold(&app, "alice", alice, bob, 1_000)
                .await
                .transfer
                .unwrap()
                .id,
        );
    }
    // 200 requests: every hold gets 5 posts and 5 voids, spread over both replicas
    let jobs: Vec<(usize, i64)> = (0..200).map(|i| (i, holds[i % 20])).collect();
    let results: Vec<(i64, Result<TransferResult, Status>)> = stream::iter(jobs)
        .map(|(i, id)| {
            let client = if i % 2 == 0 {
                app.client.clone()
            } else {
                replica.clone()
            };
            let token = if i % 3 == 0 {
                app.banker()
            } else {
                app.token("alice")
            };
            async move {
                let r = if (i / 20) % 2 == 0 {
                    post(&client, &token, id, 600).await
                } else {
                    void(&client, &token, id).await
                };
                (id, r)
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    let mut ended: HashMap<i64, Vec<i32>> = HashMap::new();
    for (id, r) in results {
        match r {
            Ok(r) => ended
                .entry(id)
                .or_default()
                .push(r.transfer.unwrap().status),
            Err(e) => assert_eq!(
                reason_of(&e).as_deref(),
                Some("hold_not_pending"),
                "every other answer says the hold already ended: {e:?}"
            ),
        }
    }
    assert_eq!(ended.len(), 20, "every hold ended");
    assert!(
        ended.values().all(|ends| ends.len() == 1),
        "each exactly once: {ended:?}"
    );
    let posts = ended
        .values()
        .filter(|ends| ends[0] == TransferStatus::Posted as i32)
        .count() as i64;
    assert_eq!(amounts(&app, alice).await, (100_000 - 600 * posts, 0, 0));
    assert_eq!(amounts(&app, bob).await, (600 * posts, 0, 0));
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_with_a_timeout_expires_once_by_the_sweep_of_two_replicas_and_cannot_be_posted_after()
 {
    let fast_sweep = |cfg: &mut transfers::config::Config| cfg.holds.sweep_interval_ms = 50;
    let app = App::start_with(fast_sweep).await;
    let (_replica, _running) = app.replica(fast_sweep).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let made = app
        .client
        .clone()
        .create_transfer(authed(
            hold_request(alice, bob, 250, 1),
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    assert!(made.expires_at.is_some(), "the hold says when it expires");
    assert_eq!(amounts(&app, alice).await, (1_000, 250, 0));

    let mut expired = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if status_of(&app, made.id).await == "expired" {
            expired = true;
            break;
        }
    }
    assert!(expired, "the sweep expired the hold within 6 s");
    assert_eq!(amounts(&app, alice).await, (1_000, 0, 0), "released");
    assert_eq!(amounts(&app, bob).await, (0, 0, 0));
    let ends = app
        .count("SELECT COUNT(*) FROM ledger.transfers WHERE hold_id IS NOT NULL")
        .await;
    assert_eq!(ends, 1, "expired once, though two replicas sweep");
    let err = post(&app.client, &app.token("alice"), made.id, 0)
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "hold_not_pending");

    // a timeout longer than allowed, and a timeout without a hold
    let err = app
        .client
        .clone()
        .create_transfer(authed(
            hold_request(alice, bob, 1, 31 * 24 * 3600),
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut not_pending = hold_request(alice, bob, 1, 60);
    not_pending.pending = false;
    let err = app
        .client
        .clone()
        .create_transfer(authed(not_pending, &app.token("alice")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(app.reconcile().await.ok);
}

#[tokio::test]
async fn a_hold_past_its_timeout_cannot_be_posted_even_before_the_sweep_ran() {
    let app = App::start_with(|cfg| cfg.holds.sweep_interval_ms = 3_600_000).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let id = app
        .client
        .clone()
        .create_transfer(authed(
            hold_request(alice, bob, 250, 1),
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let err = post(&app.client, &app.token("alice"), id, 0)
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "hold_expired");
    assert_eq!(
        amounts(&app, alice).await,
        (1_000, 250, 0),
        "still held until the sweep"
    );
}

#[tokio::test]
async fn the_balance_at_each_instant_is_the_one_the_model_kept_and_entries_filter_by_time() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let balance_at = |at: Option<prost_types::Timestamp>| {
        let mut client = app.client.clone();
        let token = app.token("alice");
        async move {
            client
                .get_balance(authed(
                    GetBalanceRequest {
                        account_id: alice,
                        as_of: at,
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let now = || proto::timestamp(chrono::Utc::now());

    let before_anything = now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // the model: (instant after the change, balance then)
    let mut model = vec![(before_anything, 0)];
    let mut balance = 0;
    for (i, amount) in [500, -120, 300, -80, -1, 1_000].into_iter().enumerate() {
        if amount > 0 {
            app.deposit(alice, amount, "USD").await;
        } else {
            app.client
                .clone()
                .create_transfer(authed(
                    CreateTransferRequest {
                        from_account_id: alice,
                        to_account_id: bob,
                        amount: -amount,
                        currency: "USD".into(),
                        request_id: format!("pit-{i}"),
                        ..Default::default()
                    },
                    &app.token("alice"),
                ))
                .await
                .unwrap();
        }
        balance += amount;
        tokio::time::sleep(Duration::from_millis(20)).await;
        model.push((now(), balance));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (at, expected) in &model {
        let answer = balance_at(Some(*at)).await;
        assert_eq!(answer.balance, *expected, "balance at {at:?}");
        assert_eq!(answer.as_of.as_ref(), Some(at));
    }
    let current = balance_at(None).await;
    assert_eq!(current.balance, balance);
    assert_eq!(current.currency, "USD");

    // entries between the second and the fourth change: the third and the fourth
    let page = app
        .client
        .clone()
        .list_entries(authed(
            ListEntriesRequest {
                account_id: alice,
                start_time: Some(model[2].0),
                end_time: Some(model[4].0),
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    let amounts: Vec<i64> = page.entries.iter().map(|e| e.amount).collect();
    assert_eq!(amounts, [-80, 300]);
    // a range that ends before it starts
    let err = app
        .client
        .clone()
        .list_entries(authed(
            ListEntriesRequest {
                account_id: alice,
                start_time: Some(model[4].0),
                end_time: Some(model[2].0),
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // someone else's account is not there
    let err = app
        .client
        .clone()
        .get_balance(authed(
            GetBalanceRequest {
                account_id: alice,
                as_of: None,
            },
            &app.token("mallory"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
}
