//! A row held by someone else (an operator's `SELECT ... FOR UPDATE` in psql, a stuck session)
//! stalls nothing but the requests that need it: their batches give up the lock wait after
//! `batch.lock_timeout_ms`, are split, and the requests on other accounts go through at once; the
//! ones on the locked account get `account_busy` by their deadline and move nothing.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::support::{App, assert_status, with_key};
use futures::future::join_all;
use platform::error::reason_of;
use proto::transfers::v1::CreateTransferRequest;
use test_support::authed;
use tonic::Code;

/// How long the test holds the row: many times the lock timeout (500 ms).
const HELD_FOR: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_locked_account_does_not_stop_transfers_between_other_accounts() {
    let app = App::start().await;
    let locked = app.open("alice", "USD").await;
    let others = [
        app.open("bob", "USD").await,
        app.open("carol", "USD").await,
        app.open("dave", "USD").await,
    ];
    app.deposit(locked, 10_000, "USD").await;
    for account in others {
        app.deposit(account, 10_000, "USD").await;
    }

    // hold alice's row from another connection, as psql would
    let holder = hold_row(&app, locked).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(HELD_FOR).await;
        holder.rollback().await.unwrap();
        Instant::now()
    });

    let owners = ["bob", "carol", "dave"];
    let requests = (0..40).map(|i| {
        let mut client = app.client.clone();
        let (from, to, user) = if i % 2 == 0 {
            (locked, others[i % 3], "alice")
        } else {
            (others[i % 3], others[(i + 1) % 3], owners[i % 3])
        };
        let token = app.token(user);
        async move {
            let started = Instant::now();
            let answer = client
                .create_transfer(authed(
                    CreateTransferRequest {
                        from_account_id: from,
                        to_account_id: to,
                        amount: 1,
                        currency: "USD".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await;
            (from == locked, started.elapsed(), Instant::now(), answer)
        }
    });
    let answers = join_all(requests).await;
    let released = release.await.unwrap();

    let mut moved_from_locked = 0;
    for (on_locked, took, done, answer) in &answers {
        if *on_locked {
            match answer {
                Ok(_) => moved_from_locked += 1,
                Err(e) => {
                    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                    assert_eq!(reason_of(e).as_deref(), Some("account_busy"));
                }
            }
            assert!(
                *took < Duration::from_secs(9),
                "answered before its deadline: {took:?}"
            );
        } else {
            assert!(
                answer.is_ok(),
                "a transfer between other accounts failed: {answer:?}"
            );
            assert!(
                *done < released,
                "a transfer between other accounts waited {took:?}, until the locked row was free"
            );
        }
    }
    // (no latency figure here: the 10 s test below, which runs beside this one, asserts the
    // issue's p99; finishing while the row is still held is what shows nothing waits for it)
    let busy = answers
        .iter()
        .filter(|(l, _, _, a)| *l && a.is_err())
        .count();
    assert!(
        busy > 0,
        "the lock was held long enough that some requests gave up"
    );
    // what was refused moved nothing: the locked account's transfers are the answered ones
    let applied: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ledger.transfers WHERE from_account_id = $1 AND kind = 'transfer'",
    )
    .bind(locked)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(applied, moved_from_locked);
    assert_eq!(app.balance(locked).await, 10_000 - moved_from_locked);
    assert!(app.reconcile().await.ok);
}

/// The case: a row held for 10 s under steady load on it and on other accounts.
const HELD_LONG: Duration = Duration::from_secs(10);
/// The deadline each request gets (the server's `server.request_timeout_ms`).
const DEADLINE: Duration = Duration::from_secs(3);

/// One request of the steady load: whether it names the locked account, its key, when it was
/// sent, how long its answer took, and the answer.
struct Sent {
    on_locked: bool,
    key: String,
    sent_at: Instant,
    took: Duration,
    answer: Result<(), tonic::Status>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_held_10_s_under_load_refuses_only_its_own_requests_by_their_deadline_and_applies_none_of_them()
 {
    let app =
        App::start_with(|cfg| cfg.server.request_timeout_ms = DEADLINE.as_millis() as u64).await;
    // the locked account's id sits between its partners': a request tried alone that locks the
    // lower partner first must not keep that partner's other transfers waiting on the held row
    let bob = app.open("bob", "USD").await;
    let carol = app.open("carol", "USD").await;
    let alice = app.open("alice", "USD").await;
    let dave = app.open("dave", "USD").await;
    let erin = app.open("erin", "USD").await;
    let others = [
        (bob, "bob"),
        (carol, "carol"),
        (dave, "dave"),
        (erin, "erin"),
    ];
    app.deposit(alice, 1_000_000, "USD").await;
    for (account, _) in others {
        app.deposit(account, 1_000_000, "USD").await;
    }

    let holder = hold_row(&app, alice).await;
    let held_at = Instant::now();
    let stop_at = held_at + HELD_LONG;

    // closed-loop clients: 6 move money among the other four accounts, 4 to and from alice's
    let clients = (0..10usize).map(|c| {
        let mut client = app.client.clone();
        let tokens: HashMap<&str, String> = ["alice", "bob", "carol", "dave", "erin"]
            .into_iter()
            .map(|user| (user, app.token(user)))
            .collect();
        async move {
            let mut sent = Vec::new();
            let mut n = 0usize;
            while Instant::now() < stop_at {
                n += 1;
                let partner = others[(c + n) % others.len()];
                let ((from, user), to) = if c < 6 {
                    (partner, others[(c + n + 1) % others.len()].0)
                } else if n.is_multiple_of(2) {
                    ((alice, "alice"), partner.0)
                } else {
                    (partner, alice)
                };
                let key = format!("locked-{c}-{n}");
                let sent_at = Instant::now();
                let answer = client
                    .create_transfer(with_key(
                        authed(
                            CreateTransferRequest {
                                from_account_id: from,
                                to_account_id: to,
                                amount: 1,
                                currency: "USD".into(),
                                ..Default::default()
                            },
                            &tokens[user],
                        ),
                        &key,
                    ))
                    .await
                    .map(|_| ());
                sent.push(Sent {
                    on_locked: from == alice || to == alice,
                    key,
                    sent_at,
                    took: sent_at.elapsed(),
                    answer,
                });
            }
            sent
        }
    });
    let sent: Vec<Sent> = join_all(clients).await.into_iter().flatten().collect();
    let released_at = Instant::now();
    holder.rollback().await.unwrap();

    // other accounts: every transfer went through, p99 under a second, some in every second
    let mut others_took: Vec<Duration> = Vec::new();
    let mut done_per_second = vec![0usize; HELD_LONG.as_secs() as usize];
    for s in sent.iter().filter(|s| !s.on_locked) {
        others_took.push(s.took);
        let second = (s.sent_at + s.took).duration_since(held_at).as_secs() as usize;
        if let Some(n) = done_per_second.get_mut(second) {
            *n += 1;
        }
    }
    others_took.sort_unstable();
    let p99 = others_took[(others_took.len() * 99).div_ceil(100) - 1];
    let on_locked: Vec<&Sent> = sent.iter().filter(|s| s.on_locked).collect();
    eprintln!(
        "row held {:?}: other accounts {} transfers, p99 {p99:?}, max {:?}, done per second \
         {done_per_second:?}; the locked account {} requests, slowest answer {:?}",
        released_at.duration_since(held_at),
        others_took.len(),
        others_took.last().copied().unwrap_or_default(),
        on_locked.len(),
        on_locked.iter().map(|s| s.took).max().unwrap_or_default()
    );
    for s in sent.iter().filter(|s| !s.on_locked) {
        assert!(
            s.answer.is_ok(),
            "a transfer between other accounts failed: {:?}",
            s.answer
        );
    }
    assert!(
        p99 < Duration::from_secs(1),
        "other accounts' p99 while the row was held: {p99:?} ({} transfers)",
        others_took.len()
    );
    // The first second may see none: the batches already in flight when the row was taken wait
    // out their lock timeouts one after another (one locks a partner, then waits on the held row;
    // the next waits on that partner) before the split marks the row suspect. After that no
    // batch of other accounts waits on it again, so every later second has completions.
    let slowest = others_took.last().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(2),
        "the stall at the start of the hold is a few lock timeouts at most: {slowest:?}"
    );
    assert!(
        done_per_second[1..].iter().all(|n| *n > 0),
        "transfers between other accounts completed in every second of the hold after the \
         first: {done_per_second:?}"
    );

    // the locked account: refused by its deadline, `account_busy`; none applied
    let mut refused: Vec<String> = Vec::new();
    for s in &on_locked {
        assert!(
            s.took < DEADLINE,
            "a request on the locked account answered after its deadline: {:?}",
            s.took
        );
        match &s.answer {
            // the row is held until every client stopped: nothing on it can have gone through
            Ok(()) => panic!("a transfer on the locked account was applied while the row was held"),
            Err(e) => {
                assert_status(e.clone(), Code::Unavailable, "account_busy");
                refused.push(s.key.clone());
            }
        }
    }
    assert!(
        refused.len() >= 10,
        "the locked account saw steady load: {} requests",
        refused.len()
    );
    // a refusal stays a refusal once the row is free again
    tokio::time::sleep(Duration::from_millis(500)).await;
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger.idempotency_keys WHERE key = ANY($1)")
            .bind(&refused)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        applied, 0,
        "a refused request on the locked account was applied"
    );
    let touching: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ledger.transfers
         WHERE (from_account_id = $1 OR to_account_id = $1) AND kind = 'transfer'",
    )
    .bind(alice)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(touching, 0);
    assert_eq!(app.balance(alice).await, 1_000_000);
    let moved = app
        .count("SELECT COUNT(*) FROM ledger.idempotency_keys WHERE key LIKE 'locked-%'")
        .await;
    assert_eq!(moved, others_took.len() as i64, "every 200 applied once");
    assert_eq!(app.total("USD").await, 0, "Σ balances");
    assert!(app.reconcile().await.ok);
}

/// The caller's own deadline (`grpc-timeout`, shorter than the server's) bounds the lock wait of
/// its batch too: a request whose caller gave up is not applied once the row is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_grpc_timeout_bounds_the_lock_wait_and_what_it_gave_up_on_is_not_applied() {
    // the service would wait up to 5 s for a row and answer after 10 s: the caller allows 300 ms
    let app = App::start_with(|cfg| {
        cfg.batch.lock_timeout_ms = 5_000;
        cfg.server.request_timeout_ms = 10_000;
    })
    .await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;

    let holder = hold_row(&app, bob).await;
    let mut request = with_key(
        authed(
            CreateTransferRequest {
                from_account_id: alice,
                to_account_id: bob,
                amount: 100,
                currency: "USD".into(),
                ..Default::default()
            },
            &app.token("alice"),
        ),
        "gave-up",
    );
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let answer = app.client.clone().create_transfer(request).await;
    let took = started.elapsed();
    let e = answer.expect_err("the row is held past the caller's deadline");
    // (tonic's client answers its own timeout CANCELLED "Timeout expired"; the server's side of
    // it is DEADLINE_EXCEEDED, the batcher's UNAVAILABLE account_busy)
    assert!(
        matches!(
            e.code(),
            Code::Cancelled | Code::DeadlineExceeded | Code::Unavailable
        ),
        "{e:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "answered by its deadline: {took:?}"
    );

    // hold the row 1.5 s longer (well inside the 5 s the batch would wait without the caller's
    // deadline), then free it: a batch still waiting would now go through
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    holder.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let applied = app
        .count("SELECT COUNT(*) FROM ledger.idempotency_keys WHERE key = 'gave-up'")
        .await;
    assert_eq!(
        applied, 0,
        "a transfer whose caller gave up was applied later"
    );
    assert_eq!(app.balance(alice).await, 1_000);
    assert_eq!(app.balance(bob).await, 0);
    assert!(app.reconcile().await.ok);
}

/// `account`'s row locked `FOR UPDATE` by a transaction of the test's own (as psql would), held
/// until the returned transaction ends.
async fn hold_row(app: &App, account: i64) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM ledger.accounts WHERE id = $1 FOR UPDATE")
        .bind(account)
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

/// The backend of a batch that waits for a lock (its `ledger.transfer_batch` call, blocked by
/// the test's own lock), once one does; `except`: a backend already ended.
async fn backend_waiting_on_lock(app: &App, except: i32) -> i32 {
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%transfer_batch%' AND pid <> $1 LIMIT 1",
        )
        .bind(except)
        .fetch_optional(&app.db.pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no batch ever waited on the held row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_database_ends_mid_call_is_outcome_unknown_and_a_keyed_retry_applies_once() {
    // A backend told to go (pg_terminate_backend here; a shutdown or a crash alike) answers
    // FATAL 57P01 whenever the signal lands, also after its commit reached the WAL: that answer
    // does not say "rolled back" as other database errors do. So the batcher must not answer
    // it as a plain database error (it was INTERNAL) but as outcome_unknown, and retry the
    // requests that carry a key.
    let app = App::start_with(|cfg| cfg.batch.lock_timeout_ms = 5_000).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let transfer = |amount: i64| CreateTransferRequest {
        from_account_id: alice,
        to_account_id: bob,
        amount,
        currency: "USD".into(),
        ..Default::default()
    };

    // 1. no idempotency key: the batcher cannot retry it safely, so it cannot know
    let holder = hold_row(&app, bob).await;
    let mut client = app.client.clone();
    let keyless = tokio::spawn({
        let request = authed(transfer(100), &app.token("alice"));
        async move { client.create_transfer(request).await }
    });
    let pid = backend_waiting_on_lock(&app, 0).await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(ended);
    let e = keyless
        .await
        .unwrap()
        .expect_err("its session was ended mid-call");
    assert_status(e, Code::Unavailable, "outcome_unknown");

    // 2. with a key: retried by the batcher; it goes through once the row is free
    let mut client = app.client.clone();
    let keyed = tokio::spawn({
        let request = with_key(authed(transfer(250), &app.token("alice")), "ended-mid-call");
        async move { client.create_transfer(request).await }
    });
    let pid = backend_waiting_on_lock(&app, 0).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&app.db.pool)
        .await
        .unwrap();
    // the retry waits on the row again (its own session); free it
    let _ = backend_waiting_on_lock(&app, pid).await;
    holder.rollback().await.unwrap();
    let done = keyed
        .await
        .unwrap()
        .expect("the batcher's retry with the key went through")
        .into_inner();
    assert!(!done.replayed);
    assert_eq!(
        app.balance(alice).await,
        750,
        "only the keyed transfer moved, once"
    );
    assert_eq!(app.balance(bob).await, 250);
    let keys = app
        .count("SELECT COUNT(*) FROM ledger.idempotency_keys WHERE key = 'ended-mid-call'")
        .await;
    assert_eq!(keys, 1);
    assert!(app.reconcile().await.ok);
}
