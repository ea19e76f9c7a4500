//! Group commit: requests collected into one batch are applied by one SQL call, each answered on
//! its own; replicas never deadlock; a failed batch leaves nothing behind and keyed retries apply
//! each transfer exactly once; the queue and request deadlines are bounded.
//!
//! Failures are injected in the database itself (a statement trigger on `ledger.transfers` that
//! sleeps or raises while a row sits in `public.batch_gate`), so the service has no test hooks.

use std::{collections::HashSet, time::Duration};

use crate::support::{App, assert_status, with_key};
use futures::{StreamExt, stream};
use platform::error::reason_of;
use proto::transfers::v1::{
    CreateTransferRequest, TransferResult, transfers_service_client::TransfersServiceClient,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::PgPool;
use test_support::authed;
use tonic::{Code, Status, transport::Channel};

type Client = TransfersServiceClient<Channel>;

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

async fn send(
    mut client: Client,
    token: String,
    from: i64,
    to: i64,
    amount: i64,
    key: Option<String>,
) -> Result<TransferResult, Status> {
    let mut req = authed(transfer(from, to, amount), &token);
    if let Some(key) = key {
        req = with_key(req, &key);
    }
    client.create_transfer(req).await.map(|r| r.into_inner())
}

/// Installs the failure gate: while `public.batch_gate` holds 'sleep' every insert into
/// `ledger.transfers` sleeps 60 s; while it holds 'fail' it raises.
async fn install_gate(pool: &PgPool) {
    for sql in [
        "CREATE TABLE public.batch_gate (mode text NOT NULL)",
        "CREATE FUNCTION public.batch_gate_check() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM public.batch_gate WHERE mode = 'sleep') THEN
                 PERFORM pg_sleep(60);
             END IF;
             IF EXISTS (SELECT 1 FROM public.batch_gate WHERE mode = 'fail') THEN
                 RAISE EXCEPTION 'injected failure';
             END IF;
             RETURN NULL;
         END $$",
        "CREATE TRIGGER batch_gate BEFORE INSERT ON ledger.transfers
         FOR EACH STATEMENT EXECUTE FUNCTION public.batch_gate_check()",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

async fn set_gate(pool: &PgPool, mode: Option<&str>) {
    sqlx::query("DELETE FROM public.batch_gate")
        .execute(pool)
        .await
        .unwrap();
    if let Some(mode) = mode {
        sqlx::query("INSERT INTO public.batch_gate (mode) VALUES ($1)")
            .bind(mode)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Waits (up to 60 s) for a batch to sleep in the gate; returns its backend's pid.
async fn sleeping_batch(pool: &PgPool) -> i32 {
    for _ in 0..600 {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE query LIKE '%transfer_batch%' AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()
             LIMIT 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no batch reached the gate within 60 s");
}

/// Kills the batch's backend, and any other batch sleeping in the gate (the gate must be opened
/// first, so no new one starts sleeping).
async fn terminate(pool: &PgPool, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(done, "the batch's backend was terminated");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE '%transfer_batch%' AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn transfers_count(app: &App) -> i64 {
    app.count("SELECT COUNT(*) FROM ledger.transfers WHERE kind = 'transfer'")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_answers_each_caller_on_its_own_and_applies_only_the_good_ones() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let carol = app.open("carol", "USD").await;
    let dave = app.open("dave", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    app.deposit(carol, 100, "USD").await;
    app.deposit(dave, 300, "USD").await;
    app.freeze(carol).await;
    let total_before = app.total("USD").await;
    // This replica closes a batch only when 9 requests are in (or after a whole second).
    let (client, _replica) = app
        .replica(|cfg| {
            cfg.batch.max_size = 9;
            cfg.batch.window_us = 1_000_000;
        })
        .await;
    let (a, b, c, d) = (
        app.token("alice"),
        app.token("bob"),
        app.token("carol"),
        app.token("dave"),
    );
    let k1 = Some("k1".to_owned());
    let jobs = vec![
        (a.clone(), alice, bob, 100, k1.clone()), // 0 ok
        (a.clone(), alice, bob, 100, k1.clone()), // 1 the same request again: replay of 0
        (a.clone(), alice, bob, 50, k1.clone()),  // 2 the key with other parameters
        (a.clone(), alice, bob, 5_000, None),     // 3 insufficient funds
        (c.clone(), carol, bob, 10, None),        // 4 from a frozen account
        (b.clone(), bob, carol, 10, None),        // 5 to someone else's frozen account
        (d.clone(), dave, alice, 300, None),      // 6 ok: dave's all
        (d.clone(), dave, bob, 1, None),          // 7 insufficient: dave spent it in 6
        (a.clone(), alice, bob, 200, None),       // 8 ok, against alice's running balance
    ];
    // Sent one after another (arrival order is the order of application), all in flight at once.
    let mut calls = Vec::new();
    for (token, from, to, amount, key) in jobs {
        calls.push(tokio::spawn(send(
            client.clone(),
            token,
            from,
            to,
            amount,
            key,
        )));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut r = Vec::new();
    for call in calls {
        r.push(call.await.unwrap());
    }

    let first = r[0].as_ref().expect("0 applies");
    assert!(!first.replayed);
    assert_eq!(first.from_account_balance, 900);
    let again = r[1].as_ref().expect("1 replays 0");
    assert!(again.replayed);
    assert_eq!(
        again.transfer.as_ref().unwrap().id,
        first.transfer.as_ref().unwrap().id,
        "both callers with key k1 get the one transfer"
    );
    let err = |i: usize| r[i].as_ref().unwrap_err().clone();
    assert_status(err(2), Code::FailedPrecondition, "idempotency_key_reused");
    assert_status(err(3), Code::FailedPrecondition, "insufficient_funds");
    assert_status(err(4), Code::FailedPrecondition, "account_frozen");
    // bob may not read carol's account, so he is not told it is frozen
    assert_status(err(5), Code::NotFound, "account_not_found");
    let dave_out = r[6].as_ref().expect("6 applies");
    assert_eq!(dave_out.from_account_balance, 0);
    assert_eq!(dave_out.to_entry.as_ref().unwrap().balance_after, 1_200);
    assert_status(err(7), Code::FailedPrecondition, "insufficient_funds");
    let last = r[8].as_ref().expect("8 applies");
    assert_eq!(last.from_account_balance, 1_000, "900 + 300 - 200");
    assert_eq!(last.to_entry.as_ref().unwrap().balance_after, 300);

    // All nine were one batch: one transaction, so one commit timestamp for its transfers.
    assert_eq!(transfers_count(&app).await, 3);
    assert_eq!(
        app.count(
            "SELECT COUNT(DISTINCT created_at) FROM ledger.transfers WHERE kind = 'transfer'"
        )
        .await,
        1,
        "the good transfers were applied in one transaction"
    );
    assert_eq!(app.balance(alice).await, 1_000);
    assert_eq!(app.balance(bob).await, 300);
    assert_eq!(app.balance(carol).await, 100);
    assert_eq!(app.balance(dave).await, 0);
    assert_eq!(app.total("USD").await, total_before);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hammering_one_hot_account_never_deadlock_and_conserve_money() {
    let app = App::start().await;
    // the second replica holds conflicting batches back (`batch.hold_conflicting`), so both
    // ways of sending batches run against the hot account at once
    let (replica, _running) = app.replica(|cfg| cfg.batch.hold_conflicting = true).await;
    let shop = app.open("shop", "USD").await;
    app.deposit(shop, 2_000, "USD").await;
    let mut customers = Vec::new();
    for i in 0..20 {
        let owner = format!("cust_{i}");
        let id = app.open(&owner, "USD").await;
        app.deposit(id, 5_000, "USD").await;
        customers.push((id, app.token(&owner)));
    }
    let shop_token = app.token("shop");
    let customers_before: i64 = 20 * 5_000 + 2_000;

    // 1,000 transfers, every one into or out of the shop, spread over both replicas.
    let mut rng = StdRng::seed_from_u64(8);
    let jobs: Vec<(Client, String, i64, i64, i64)> = (0..1_000)
        .map(|i| {
            let client = if i % 2 == 0 {
                app.client.clone()
            } else {
                replica.clone()
            };
            let (customer, token) = &customers[rng.random_range(0..customers.len())];
            if rng.random_range(0..10) < 7 {
                let amount = rng.random_range(1..=400);
                (client, token.clone(), *customer, shop, amount)
            } else {
                let amount = rng.random_range(1..=600);
                (client, shop_token.clone(), shop, *customer, amount)
            }
        })
        .collect();
    let results: Vec<_> = stream::iter(jobs)
        .map(|(client, token, from, to, amount)| send(client, token, from, to, amount, None))
        .buffer_unordered(64)
        .collect()
        .await;
    let mut ok = 0_i64;
    for result in results {
        match result {
            Ok(_) => ok += 1,
            Err(status) if reason_of(&status).as_deref() == Some("insufficient_funds") => {}
            Err(status) => panic!("only insufficient_funds may fail, got {status:?}"),
        }
    }
    assert!(ok > 500, "most transfers go through (ok={ok})");
    assert_eq!(transfers_count(&app).await, ok);
    let batches = app
        .count("SELECT COUNT(DISTINCT created_at) FROM ledger.transfers WHERE kind = 'transfer'")
        .await;
    assert!(
        batches < ok,
        "concurrent transfers were grouped ({ok} in {batches} transactions)"
    );
    let customers_after: i64 = sqlx::query_scalar(
        "SELECT SUM(balance)::bigint FROM ledger.accounts WHERE kind = 'customer' AND currency = 'USD'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(customers_after, customers_before);
    assert_eq!(app.total("USD").await, 0);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_mid_commit_leaves_nothing_and_keyed_retries_apply_each_once() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 10_000, "USD").await;
    install_gate(&app.db.pool).await;
    let (client, _replica) = app
        .replica(|cfg| {
            cfg.batch.max_size = 6;
            cfg.batch.window_us = 1_000_000;
        })
        .await;
    let token = app.token("alice");
    let amounts = [100, 200, 300, 400, 500, 600];

    set_gate(&app.db.pool, Some("sleep")).await;
    let calls: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| {
            tokio::spawn(send(
                client.clone(),
                token.clone(),
                alice,
                bob,
                *amount,
                Some(format!("kill-{i}")),
            ))
        })
        .collect();
    let pid = sleeping_batch(&app.db.pool).await;
    assert_eq!(
        transfers_count(&app).await,
        0,
        "nothing of a batch in flight is visible"
    );
    set_gate(&app.db.pool, None).await;
    terminate(&app.db.pool, pid).await;
    let mut first = Vec::new();
    for call in calls {
        first.push(call.await.unwrap());
    }
    // Whatever each caller heard, the database holds whole transfers only.
    let applied = transfers_count(&app).await;
    let answered_ok = first.iter().filter(|r| r.is_ok()).count() as i64;
    assert_eq!(applied, answered_ok, "{first:?}");

    // The clients retry with their keys (all of them, as a client that lost answers would).
    let mut ids = HashSet::new();
    for round in 0..2 {
        for (i, amount) in amounts.iter().enumerate() {
            let r = send(
                client.clone(),
                token.clone(),
                alice,
                bob,
                *amount,
                Some(format!("kill-{i}")),
            )
            .await
            .unwrap_or_else(|e| panic!("retry {round} of kill-{i} failed: {e:?}"));
            if round == 1 {
                assert!(r.replayed);
            }
            ids.insert((i, r.transfer.unwrap().id));
        }
    }
    assert_eq!(ids.len(), 6, "each key always answers the same transfer");
    assert_eq!(transfers_count(&app).await, 6, "each applied exactly once");
    assert_eq!(app.balance(alice).await, 10_000 - 2_100);
    assert_eq!(app.balance(bob).await, 2_100);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_statement_fails_is_rolled_back_whole_and_keyed_retries_apply_each_once() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 10_000, "USD").await;
    install_gate(&app.db.pool).await;
    let (client, _replica) = app
        .replica(|cfg| {
            cfg.batch.max_size = 5;
            cfg.batch.window_us = 1_000_000;
        })
        .await;
    let token = app.token("alice");

    set_gate(&app.db.pool, Some("fail")).await;
    let calls: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(send(
                client.clone(),
                token.clone(),
                alice,
                bob,
                100 * (i + 1),
                Some(format!("fail-{i}")),
            ))
        })
        .collect();
    for call in calls {
        let status = call
            .await
            .unwrap()
            .expect_err("the batch and its retries fail");
        assert_status(status, Code::Internal, "internal");
    }
    assert_eq!(transfers_count(&app).await, 0, "no partial batch");
    assert_eq!(app.balance(alice).await, 10_000);
    assert_eq!(app.balance(bob).await, 0);

    set_gate(&app.db.pool, None).await;
    let mut ids = Vec::new();
    for round in 0..2 {
        let calls: Vec<_> = (0..5)
            .map(|i| {
                tokio::spawn(send(
                    client.clone(),
                    token.clone(),
                    alice,
                    bob,
                    100 * (i + 1),
                    Some(format!("fail-{i}")),
                ))
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let r = call.await.unwrap().expect("the retry applies");
            assert_eq!(r.replayed, round == 1);
            let id = r.transfer.unwrap().id;
            if round == 0 {
                ids.push(id);
            } else {
                assert_eq!(ids[i], id);
            }
        }
    }
    assert_eq!(transfers_count(&app).await, 5, "each applied exactly once");
    assert_eq!(app.balance(alice).await, 10_000 - 1_500);
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_an_expired_request_is_never_applied() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 10_000, "USD").await;
    install_gate(&app.db.pool).await;
    // One batch of one at a time, one more waiting for it, one in the queue.
    let (client, _replica) = app
        .replica(|cfg| {
            cfg.batch.max_size = 1;
            cfg.batch.window_us = 0;
            cfg.batch.max_in_flight = 1;
            cfg.batch.queue_capacity = 1;
        })
        .await;
    let token = app.token("alice");

    set_gate(&app.db.pool, Some("sleep")).await;
    let stuck = tokio::spawn(send(client.clone(), token.clone(), alice, bob, 1, None));
    let pid = sleeping_batch(&app.db.pool).await;

    // A request whose deadline (500 ms) passes while it waits behind the stuck batch.
    let mut expiring = authed(transfer(alice, bob, 7), &token);
    expiring.set_timeout(Duration::from_millis(500));
    let expired = client.clone().create_transfer(expiring).await.unwrap_err();
    assert!(
        matches!(expired.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{expired:?}"
    );

    // The collector holds the expired one waiting for the slot; fill the queue until refused.
    let mut waiting = Vec::new();
    let mut refused = None;
    for amount in 2..=5 {
        let started = std::time::Instant::now();
        let mut c = client.clone();
        let req = authed(transfer(alice, bob, amount), &token);
        match tokio::time::timeout(Duration::from_millis(1_500), c.create_transfer(req)).await {
            Ok(Err(status)) => {
                assert!(started.elapsed() < Duration::from_secs(5));
                refused = Some(status);
                break;
            }
            Ok(Ok(r)) => panic!("nothing can be applied while the gate sleeps: {r:?}"),
            Err(_) => waiting.push(amount), // queued (its call was dropped)
        }
    }
    let refused = refused.expect("a full queue refuses");
    assert_status(refused, Code::Unavailable, "transfer_queue_full");

    set_gate(&app.db.pool, None).await;
    terminate(&app.db.pool, pid).await;
    let _ = stuck.await.unwrap();
    // Let the queue drain, then check the expired request moved nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok = send(client.clone(), token.clone(), alice, bob, 11, None)
        .await
        .expect("the service works again");
    assert!(!ok.replayed);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM ledger.transfers WHERE amount = 7")
            .await,
        0,
        "the expired request was not applied"
    );
    for amount in waiting {
        let sql = "SELECT COUNT(*) FROM ledger.transfers WHERE amount = $1";
        let n: i64 = sqlx::query_scalar(sql)
            .bind(amount)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "a queued request whose caller left was not applied");
    }
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_batching_off_each_request_is_applied_at_once_through_the_same_path() {
    let app = App::start_with(|cfg| cfg.batch.enabled = false).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let token = app.token("alice");
    let key = Some("off-1".to_owned());
    let first = send(
        app.client.clone(),
        token.clone(),
        alice,
        bob,
        300,
        key.clone(),
    )
    .await
    .unwrap();
    let again = send(app.client.clone(), token.clone(), alice, bob, 300, key)
        .await
        .unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.transfer.unwrap().id, again.transfer.unwrap().id);
    let short = send(app.client.clone(), token, alice, bob, 5_000, None)
        .await
        .unwrap_err();
    assert_status(short, Code::FailedPrecondition, "insufficient_funds");
    assert_eq!(app.balance(alice).await, 700);
    assert!(app.reconcile().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_metrics_are_exported() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let mut s = tokio::net::TcpStream::connect(app.running.http_addr)
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    for name in [
        "transfer_batch_size",
        "transfer_queue_wait_seconds",
        "transfer_batch_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("{name}_count")),
            "{name} missing:\n{text}"
        );
    }
    // batch sizes are counted in transfers, not bucketed like seconds
    assert!(
        text.contains("transfer_batch_size_bucket{le=\"10\"}"),
        "transfer_batch_size has count buckets:\n{text}"
    );
}
