//! Bulk transfers (CreateTransfers): many independent transfers in one request, each with its own
//! idempotency key and its own answer in the order of the request, checked and authorised as
//! CreateTransfer checks each, fed to the group commit together; the request-wide checks (item
//! count, keys present and distinct) refuse the whole request before anything moves.

use crate::support::{App, assert_status, with_key};
use proto::transfers::v1::{
    BulkTransferResult, CreateTransferRequest, CreateTransfersRequest, ItemError, TransferResult,
    bulk_transfer_result::Outcome,
};
use test_support::authed;
use tonic::{Code, Status};

fn item(key: &str, from: i64, to: i64, amount: i64) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount,
        currency: "USD".into(),
        request_id: key.into(),
        description: format!("payout {key}"),
        ..Default::default()
    }
}

async fn bulk(
    app: &App,
    items: Vec<CreateTransferRequest>,
    token: &str,
) -> Result<Vec<BulkTransferResult>, Status> {
    app.client
        .clone()
        .create_transfers(authed(CreateTransfersRequest { items }, token))
        .await
        .map(|r| r.into_inner().results)
}

fn ok(r: &BulkTransferResult) -> &TransferResult {
    match &r.outcome {
        Some(Outcome::Result(t)) => t,
        other => panic!("{} was refused: {other:?}", r.request_id),
    }
}

fn refused(r: &BulkTransferResult) -> &ItemError {
    match &r.outcome {
        Some(Outcome::Error(e)) => e,
        other => panic!("{} was not refused: {other:?}", r.request_id),
    }
}

fn fields(e: &ItemError) -> Vec<&str> {
    e.field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect()
}

#[tokio::test]
async fn a_mixed_bulk_answers_each_item_in_order_and_applies_only_the_good_ones() {
    let app = App::start().await;
    let payer = app.open("payroll", "USD").await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let euro = app.open("carol", "EUR").await;
    let strangers = app.open("stranger", "USD").await;
    app.deposit(payer, 1_000, "USD").await;
    app.deposit(strangers, 500, "USD").await;
    let token = app.token("payroll");

    let items = vec![
        item("p-0", payer, alice, 300),
        item("p-1", payer, bob, 0), // invalid amount: refused before the ledger
        item("p-2", strangers, alice, 100), // not the caller's account
        item("p-3", payer, euro, 10), // currency of the destination differs
        item("p-4", payer, 9_999_999, 10), // no such account
        item("p-5", payer, payer, 10), // same account
        item("p-6", payer, bob, 600), // leaves 100 after p-0
        item("p-7", payer, alice, 200), // only 100 left: insufficient funds
        item("p-8", payer, alice, 2_000_000), // over the per-transfer limit (1,000,000)
        item("p-9", payer, bob, 100), // the last 100
    ];
    let results = bulk(&app, items, &token).await.unwrap();

    assert_eq!(results.len(), 10);
    let keys: Vec<&str> = results.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        keys,
        [
            "p-0", "p-1", "p-2", "p-3", "p-4", "p-5", "p-6", "p-7", "p-8", "p-9"
        ]
    );
    let first = ok(&results[0]);
    assert!(!first.replayed);
    assert_eq!(first.from_account_balance, 700);
    let t = first.transfer.as_ref().unwrap();
    assert_eq!(
        (t.from_account_id, t.to_account_id, t.amount),
        (payer, alice, 300)
    );
    assert_eq!(t.description, "payout p-0");

    let e = refused(&results[1]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::InvalidArgument as i32, "invalid_amount")
    );
    assert_eq!(fields(e), ["items[1].amount"]);
    let e = refused(&results[2]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::PermissionDenied as i32, "not_account_owner")
    );
    let e = refused(&results[3]);
    // a destination the caller cannot read that does not fit is not_found (as the single call)
    assert_eq!(e.code, Code::NotFound as i32, "{e:?}");
    assert_eq!(e.reason, "account_not_found");
    let e = refused(&results[4]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::NotFound as i32, "account_not_found")
    );
    let e = refused(&results[5]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::InvalidArgument as i32, "same_account")
    );
    assert_eq!(fields(e), ["items[5].to_account_id"]);
    assert_eq!(ok(&results[6]).from_account_balance, 100);
    let e = refused(&results[7]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::FailedPrecondition as i32, "insufficient_funds")
    );
    let e = refused(&results[8]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::InvalidArgument as i32, "amount_over_limit")
    );
    assert_eq!(fields(e), ["items[8].amount"]);
    assert_eq!(ok(&results[9]).from_account_balance, 0);

    // exactly the three good items moved, each once
    assert_eq!(app.balance(payer).await, 0);
    assert_eq!(app.balance(alice).await, 300);
    assert_eq!(app.balance(bob).await, 700);
    assert_eq!(app.balance(strangers).await, 500);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ledger.transfers WHERE kind = 'transfer'")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ledger.entries").await,
        2 * (3 + 2),
        "two entries per transfer and deposit"
    );
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(app.total("USD").await, 0);
}

#[tokio::test]
async fn the_same_bulk_again_replays_what_was_applied_and_moves_nothing_twice() {
    let app = App::start().await;
    let payer = app.open("payroll", "USD").await;
    let payees = [
        app.open("alice", "USD").await,
        app.open("bob", "USD").await,
        app.open("carol", "USD").await,
    ];
    app.deposit(payer, 250, "USD").await;
    let token = app.token("payroll");
    let items: Vec<_> = (0..5)
        .map(|i| item(&format!("dec-{i}"), payer, payees[i % 3], 100))
        .collect();

    let first = bulk(&app, items.clone(), &token).await.unwrap();
    assert!(!ok(&first[0]).replayed && !ok(&first[1]).replayed);
    for r in &first[2..] {
        assert_eq!(refused(r).reason, "insufficient_funds");
    }
    assert_eq!(app.balance(payer).await, 50);

    // the retry of the whole file: the applied items replay with their transfers, the refused
    // ones are tried again (a refusal stores no key), with the money that arrived meanwhile
    app.deposit(payer, 100, "USD").await;
    let again = bulk(&app, items.clone(), &token).await.unwrap();
    for (a, b) in first[..2].iter().zip(&again[..2]) {
        let (a, b) = (ok(a), ok(b));
        assert!(b.replayed, "{b:?}");
        assert_eq!(
            a.transfer.as_ref().unwrap().id,
            b.transfer.as_ref().unwrap().id
        );
    }
    assert!(
        !ok(&again[2]).replayed,
        "the item refused before now applies"
    );
    assert_eq!(refused(&again[3]).reason, "insufficient_funds");
    assert_eq!(refused(&again[4]).reason, "insufficient_funds");
    assert_eq!(app.balance(payer).await, 50);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ledger.transfers WHERE kind = 'transfer'")
            .await,
        3
    );

    // and a third time: the three applied items replay, nothing moves
    let third = bulk(&app, items.clone(), &token).await.unwrap();
    assert!(third[..3].iter().all(|r| ok(r).replayed));
    assert_eq!(app.balance(payer).await, 50);
    assert_eq!(
        (
            app.balance(payees[0]).await,
            app.balance(payees[1]).await,
            app.balance(payees[2]).await
        ),
        (100, 100, 100)
    );

    // a key used before for another movement is refused for that item only
    let mut changed = items;
    changed[0].amount = 99;
    changed[4] = item("dec-new", payer, payees[1], 50);
    let results = bulk(&app, changed, &token).await.unwrap();
    assert_eq!(refused(&results[0]).reason, "idempotency_key_reused");
    assert!(ok(&results[1]).replayed);
    assert!(!ok(&results[4]).replayed);
    assert_eq!(app.balance(payer).await, 0);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test]
async fn request_wide_mistakes_refuse_the_whole_bulk_and_move_nothing() {
    let app = App::start_with(|cfg| cfg.bulk.max_items = 3).await;
    let payer = app.open("payroll", "USD").await;
    let payee = app.open("alice", "USD").await;
    app.deposit(payer, 1_000, "USD").await;
    let token = app.token("payroll");
    let good = |i: usize| item(&format!("k-{i}"), payer, payee, 1);

    let err = bulk(&app, (0..4).map(good).collect(), &token)
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "bulk_items_out_of_range");
    let err = bulk(&app, vec![], &token).await.unwrap_err();
    assert_status(err, Code::InvalidArgument, "bulk_items_out_of_range");

    let mut twice = vec![good(0), good(1), good(2)];
    twice[2].request_id = " k-0 ".into(); // the same key once trimmed
    let err = bulk(&app, twice, &token).await.unwrap_err();
    let bad = tonic_types::StatusExt::get_details_bad_request(&err).expect("field violations");
    assert_eq!(bad.field_violations[0].field, "items[2].request_id");
    assert_status(err, Code::InvalidArgument, "duplicate_request_id");

    let mut keyless = vec![good(0), good(1)];
    keyless[1].request_id = String::new();
    let err = bulk(&app, keyless, &token).await.unwrap_err();
    assert_status(err, Code::InvalidArgument, "request_id_required");

    // one key for the whole request would say nothing about which item it names
    let err = app
        .client
        .clone()
        .create_transfers(with_key(
            authed(
                CreateTransfersRequest {
                    items: vec![good(0)],
                },
                &token,
            ),
            "whole-file",
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_argument");

    let err = bulk(&app, vec![good(0)], &app.unverified("payroll"))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "email_not_verified");
    let err = app
        .client
        .clone()
        .create_transfers(tonic::Request::new(CreateTransfersRequest {
            items: vec![good(0)],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // a key too long is that item's own mistake
    let mut long = vec![good(0), good(1)];
    long[1].request_id = "k".repeat(256);
    let results = bulk(&app, long, &token).await.unwrap();
    ok(&results[0]);
    let e = refused(&results[1]);
    assert_eq!(e.reason, "invalid_argument");
    assert_eq!(fields(e), ["items[1].request_id"]);

    assert_eq!(
        app.balance(payer).await,
        999,
        "only the last request's good item moved"
    );
}

#[tokio::test]
async fn each_item_is_authorised_as_the_single_call_would_be() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let hers_in_euro = app.open("alice", "EUR").await;
    let carol_in_euro = app.open("carol", "EUR").await;
    app.deposit(alice, 100, "USD").await;
    app.deposit(bob, 100, "USD").await;
    app.deposit(hers_in_euro, 100, "EUR").await;

    // alice may pay from both her accounts, never from bob's, in one request
    let mut euro = item("a-3", hers_in_euro, carol_in_euro, 20);
    euro.currency = "EUR".into();
    let items = vec![
        item("a-1", alice, bob, 10),
        item("a-2", bob, alice, 10),
        euro,
    ];
    let results = bulk(&app, items.clone(), &app.token("alice"))
        .await
        .unwrap();
    ok(&results[0]);
    let e = refused(&results[1]);
    assert_eq!(
        (e.code, e.reason.as_str()),
        (Code::PermissionDenied as i32, "not_account_owner")
    );
    ok(&results[2]);

    // the single call answers that item the same
    let single = app
        .client
        .clone()
        .create_transfer(authed(items[1].clone(), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(single, Code::PermissionDenied, "not_account_owner");

    // bob's keys are his own: the same request ids are new keys for him
    let results = bulk(&app, vec![item("a-1", bob, alice, 5)], &app.token("bob"))
        .await
        .unwrap();
    assert!(!ok(&results[0]).replayed);
    assert_eq!(
        (
            app.balance(alice).await,
            app.balance(bob).await,
            app.balance(hers_in_euro).await,
            app.balance(carol_in_euro).await
        ),
        (95, 105, 80, 20)
    );
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test]
async fn a_thousand_items_land_in_a_few_group_commits_and_the_ledger_balances() {
    let app = App::start().await;
    let payer = app.open("payroll", "USD").await;
    let mut payees = Vec::new();
    for i in 0..50 {
        payees.push(app.open(&format!("employee{i}"), "USD").await);
    }
    app.deposit(payer, 1_000_000, "USD").await;
    let items: Vec<_> = (0..1_000)
        .map(|i| {
            item(
                &format!("run-{i}"),
                payer,
                payees[i % 50],
                1 + (i as i64 % 7),
            )
        })
        .collect();
    let expected: i64 = items.iter().map(|i| i.amount).sum();

    let results = bulk(&app, items, &app.token("payroll")).await.unwrap();
    assert_eq!(results.len(), 1_000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.request_id, format!("run-{i}"));
        ok(r);
    }
    assert_eq!(app.balance(payer).await, 1_000_000 - expected);
    let batches = app
        .count("SELECT COUNT(DISTINCT created_at) FROM ledger.transfers WHERE kind = 'transfer'")
        .await;
    // batch.max_size is 256 by default: 4 batches at best
    assert!(
        batches <= 8,
        "1,000 items of one request took {batches} group commits"
    );
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(app.total("USD").await, 0);
}

/// Transfers/s of 32 closed-loop clients for 4 s, each call a bulk request of `items` (0: the
/// single CreateTransfer), from the client's own account to others drawn over the set.
async fn transfers_per_second(app: &App, accounts: &[(i64, String)], items: usize) -> f64 {
    let stop = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut tasks = Vec::new();
    for c in 0..32 {
        let client = app.client.clone();
        let accounts = accounts.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let (mut moved, mut call) = (0u64, 0usize);
            let (from, token) = accounts[c % accounts.len()].clone();
            while std::time::Instant::now() < stop {
                call += 1;
                let to = |k: usize| {
                    accounts[(c + 1 + (call * 31 + k * 7) % (accounts.len() - 1)) % accounts.len()]
                        .0
                };
                if items == 0 {
                    let request = item(&uuid::Uuid::new_v4().to_string(), from, to(0), 1);
                    if client
                        .create_transfer(authed(request, &token))
                        .await
                        .is_ok()
                    {
                        moved += 1;
                    }
                } else {
                    let batch = (0..items)
                        .map(|k| item(&uuid::Uuid::new_v4().to_string(), from, to(k), 1))
                        .collect();
                    if let Ok(r) = client
                        .create_transfers(authed(CreateTransfersRequest { items: batch }, &token))
                        .await
                    {
                        let results = r.into_inner().results;
                        moved += results
                            .iter()
                            .filter(|r| matches!(r.outcome, Some(Outcome::Result(_))))
                            .count() as u64;
                    }
                }
            }
            moved
        }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await.unwrap();
    }
    moved as f64 / 4.0
}

/// A manual probe, in-process and without the gateway (the real figures come from `cargo xtask
/// bench`, scenario `ours grpc-direct bulk`):
///
/// ```text
/// cargo test -p transfers --test integration -- --ignored --nocapture bulk::probe
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a manual probe"]
async fn probe_bulk_against_single_transfers() {
    let app = App::start().await;
    let mut accounts = Vec::new();
    for i in 0..200 {
        let owner = format!("probe_{i}");
        let id = app.open(&owner, "USD").await;
        app.deposit(id, 1_000_000, "USD").await;
        accounts.push((id, app.token(&owner)));
    }
    for items in [0, 100] {
        let tps = transfers_per_second(&app, &accounts, items).await;
        let call = if items == 0 {
            "CreateTransfer".to_owned()
        } else {
            format!("CreateTransfers of {items}")
        };
        println!("32 clients, {call:<26} {tps:7.0} transfers/s");
    }
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}
