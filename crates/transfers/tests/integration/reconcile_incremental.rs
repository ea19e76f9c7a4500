//! Incremental Reconcile (issue 18): a checkpoint of per-account entry totals up to a watermark
//! plus the entries since. A clean ledger is clean both ways, the checkpoint advances, a balance
//! changed by hand is caught by both, an entry changed by hand at or below the watermark only by
//! the full check (as documented), an old hold or transfer ended or reversed wrongly by a row
//! written since is caught by both, and transfers committing during a run give no false alarm.

use crate::support::App;
use futures::{StreamExt, stream};
use proto::transfers::v1::{
    CreateTransferRequest, PostTransferRequest, ReconcileRequest, ReconcileResponse,
    ReverseTransferRequest,
};
use test_support::authed;

async fn reconcile(app: &App, full: bool) -> ReconcileResponse {
    app.client
        .clone()
        .reconcile(authed(ReconcileRequest { full }, &app.banker()))
        .await
        .unwrap()
        .into_inner()
}

async fn transfer(app: &App, from: i64, to: i64, amount: i64, token: &str) {
    app.client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

async fn watermark(app: &App) -> Option<i64> {
    sqlx::query_scalar("SELECT entry_watermark FROM ledger.reconcile_checkpoint")
        .fetch_optional(&app.db.pool)
        .await
        .unwrap()
}

async fn max_entry(app: &App) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM ledger.entries")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_clean_ledger_is_clean_and_the_checkpoint_advances() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 10_000, "USD").await;
    let token = app.token("alice");
    for _ in 0..5 {
        transfer(&app, alice, bob, 100, &token).await;
    }

    // no checkpoint yet: the first run is full and writes one at the sequence's head
    assert_eq!(watermark(&app).await, None);
    let first = reconcile(&app, false).await;
    assert!(first.ok, "{:?}", first.violations);
    assert!(first.full, "no checkpoint yet: a full run");
    assert_eq!(
        first.entries_checked, 12,
        "1 deposit + 5 transfers, 2 entries each"
    );
    assert!(first.checkpoint_advanced);
    assert_eq!(first.entry_watermark, max_entry(&app).await);
    assert_eq!(watermark(&app).await, Some(first.entry_watermark));

    // three more transfers: the next run sums only their 6 entries and moves the watermark
    for _ in 0..3 {
        transfer(&app, alice, bob, 7, &token).await;
    }
    let second = reconcile(&app, false).await;
    assert!(second.ok, "{:?}", second.violations);
    assert!(!second.full);
    assert_eq!(second.entries_checked, 6);
    assert_eq!(second.transfers_checked, 3);
    assert_eq!(
        second.accounts_checked,
        app.count("SELECT COUNT(*) FROM ledger.accounts").await,
        "every account, the system ones too"
    );
    assert!(second.checkpoint_advanced);
    assert!(second.entry_watermark > first.entry_watermark);
    assert_eq!(second.entry_watermark, max_entry(&app).await);
    let totals: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT account_id, entries_total, entries FROM ledger.reconcile_account_totals
         WHERE account_id = ANY($1) ORDER BY account_id",
    )
    .bind(vec![alice, bob])
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        totals,
        vec![(alice, 10_000 - 521, 9), (bob, 521, 8)],
        "the checkpoint holds each account's entries up to the watermark"
    );

    // nothing new: nothing summed, still clean; the full check agrees
    let third = reconcile(&app, false).await;
    assert!(third.ok && !third.full && third.entries_checked == 0);
    let full = reconcile(&app, true).await;
    assert!(full.ok, "{:?}", full.violations);
    assert!(full.full);
    assert_eq!(full.entries_checked, 18);
    assert_eq!(full.transfers_checked, 9);
}

#[tokio::test]
async fn a_balance_changed_by_hand_is_caught_by_both_and_stops_the_checkpoint() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    transfer(&app, alice, bob, 250, &app.token("alice")).await;
    let before = reconcile(&app, false).await;
    assert!(before.ok && before.checkpoint_advanced);

    sqlx::query("UPDATE ledger.accounts SET balance = balance + 40 WHERE id = $1")
        .bind(bob)
        .execute(&app.db.pool)
        .await
        .unwrap();
    transfer(&app, alice, bob, 5, &app.token("alice")).await;

    for full in [false, true] {
        let r = reconcile(&app, full).await;
        assert!(!r.ok, "full = {full}: the changed balance must be found");
        assert_eq!(r.full, full);
        assert!(
            r.violations
                .iter()
                .any(|v| v == &format!("account {bob}: balance 295 but its entries sum to 255")),
            "full = {full}: {:?}",
            r.violations
        );
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("USD: balances sum to 40")),
            "{:?}",
            r.violations
        );
        assert!(!r.checkpoint_advanced, "a broken ledger never advances it");
        assert_eq!(r.entry_watermark, before.entry_watermark);
    }
    assert_eq!(watermark(&app).await, Some(before.entry_watermark));
}

#[tokio::test]
async fn an_entry_changed_below_the_watermark_is_caught_by_the_full_check_only_above_by_both() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    transfer(&app, alice, bob, 300, &app.token("alice")).await;
    let checked = reconcile(&app, false).await;
    assert!(checked.ok && checked.checkpoint_advanced);

    // an entry the checkpoint already summed: the incremental check trusts its total (the
    // documented limit), the full one sums the entries again
    sqlx::query(
        "UPDATE ledger.entries SET amount = amount + 1
         WHERE id = (SELECT MIN(id) FROM ledger.entries WHERE account_id = $1)",
    )
    .bind(bob)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let incremental = reconcile(&app, false).await;
    assert!(
        incremental.ok,
        "not seen below the watermark, as documented"
    );
    let full = reconcile(&app, true).await;
    assert!(!full.ok);
    assert!(
        full.violations
            .iter()
            .any(|v| v == &format!("account {bob}: balance 300 but its entries sum to 301")),
        "{:?}",
        full.violations
    );
    assert!(!full.checkpoint_advanced);

    // put it back; an entry written after the watermark and then changed is caught by both
    sqlx::query(
        "UPDATE ledger.entries SET amount = amount - 1
         WHERE id = (SELECT MIN(id) FROM ledger.entries WHERE account_id = $1)",
    )
    .bind(bob)
    .execute(&app.db.pool)
    .await
    .unwrap();
    transfer(&app, alice, bob, 20, &app.token("alice")).await;
    sqlx::query(
        "UPDATE ledger.entries SET amount = amount + 2
         WHERE id = (SELECT MAX(id) FROM ledger.entries WHERE account_id = $1)",
    )
    .bind(bob)
    .execute(&app.db.pool)
    .await
    .unwrap();
    for full in [false, true] {
        let r = reconcile(&app, full).await;
        assert!(!r.ok, "full = {full}");
        assert!(
            r.violations
                .iter()
                .any(|v| v == &format!("account {bob}: balance 320 but its entries sum to 322")),
            "full = {full}: {:?}",
            r.violations
        );
        assert!(
            r.violations
                .iter()
                .any(|v| v.starts_with("transfer ") && v.contains("summing to 2")),
            "full = {full}: the transfer since the watermark is checked too: {:?}",
            r.violations
        );
    }
}

/// A transfer (or hold) of `amount` from `from` to `to`: its id.
async fn make(app: &App, from: i64, to: i64, amount: i64, pending: bool, token: &str) -> i64 {
    app.client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                pending,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap()
        .id
}

/// The incremental run finds the holds and reversed transfers to check through the rows written
/// since the checkpoint (the holds they end, the transfers they reverse): old rows ended or
/// reversed correctly since give no alarm, ended or reversed wrongly are caught, as by the full
/// check.
#[tokio::test]
async fn an_old_hold_or_transfer_ended_or_reversed_wrongly_since_the_checkpoint_is_caught_by_both()
{
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let (alice_token, bob_token) = (app.token("alice"), app.token("bob"));
    let posted_later = make(&app, alice, bob, 300, true, &alice_token).await;
    let voided_by_hand = make(&app, alice, bob, 40, true, &alice_token).await;
    let paid = make(&app, alice, bob, 200, false, &alice_token).await;
    let checked = reconcile(&app, false).await;
    assert!(
        checked.ok && checked.checkpoint_advanced,
        "{:?}",
        checked.violations
    );

    // ended and reversed through the API after the checkpoint: clean
    app.client
        .clone()
        .post_transfer(authed(
            PostTransferRequest {
                id: posted_later,
                amount: 300,
                ..Default::default()
            },
            &alice_token,
        ))
        .await
        .unwrap();
    app.client
        .clone()
        .reverse_transfer(authed(
            ReverseTransferRequest {
                id: paid,
                amount: 50,
                ..Default::default()
            },
            &bob_token,
        ))
        .await
        .unwrap();
    let clean = reconcile(&app, false).await;
    assert!(clean.ok, "{:?}", clean.violations);
    assert!(!clean.full && clean.checkpoint_advanced);
    assert_eq!(clean.reversals_checked, 1, "the reversal written since");

    // by hand, after that checkpoint: a void of the old pending hold that leaves it pending, and
    // a second reversal of the old transfer (with its entries and balances, so that only the
    // reversal rule is broken) past its amount, its reversed_amount left as it was
    sqlx::query(
        "INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind,
                                       created_by, created_by_id, status, hold_id)
         SELECT from_account_id, to_account_id, amount, currency, kind, created_by, created_by_id,
                'voided', id
         FROM ledger.transfers WHERE id = $1",
    )
    .bind(voided_by_hand)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH r AS (
            INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind,
                                          created_by, created_by_id, reverses_id)
            SELECT to_account_id, from_account_id, 200, currency, kind, created_by, created_by_id, id
            FROM ledger.transfers WHERE id = $1
            RETURNING id, from_account_id, to_account_id, amount),
         e AS (
            INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after)
            SELECT from_account_id, id, -amount, 0 FROM r
            UNION ALL SELECT to_account_id, id, amount, 0 FROM r)
         UPDATE ledger.accounts a SET balance = a.balance + d.delta
         FROM (SELECT from_account_id AS id, -amount AS delta FROM r
               UNION ALL SELECT to_account_id, amount FROM r) d
         WHERE a.id = d.id",
    )
    .bind(paid)
    .execute(&app.db.pool)
    .await
    .unwrap();

    let expected = vec![
        format!(
            "hold {voided_by_hand} (pending, amount 40): ended 1 time(s), as Some(\"voided\"), for Some(40)"
        ),
        format!(
            "transfer {paid} (amount 200): reversed_amount 50, its reversals sum to 250, 0 of them do not mirror it"
        ),
    ];
    for full in [false, true] {
        let r = reconcile(&app, full).await;
        assert_eq!(r.full, full);
        assert_eq!(r.violations, expected, "full = {full}");
        assert!(!r.checkpoint_advanced);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_committing_during_runs_give_no_false_alarm() {
    let app = App::start().await;
    let accounts: Vec<i64> = {
        let mut v = Vec::new();
        for i in 0..8 {
            let a = app.open(&format!("user{i}"), "USD").await;
            app.deposit(a, 1_000_000, "USD").await;
            v.push(a);
        }
        v
    };
    let first = reconcile(&app, false).await;
    assert!(first.ok && first.checkpoint_advanced);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (app_client, keys) = (app.client.clone(), accounts.clone());
        let tokens: Vec<String> = (0..8).map(|i| app.token(&format!("user{i}"))).collect();
        let done = done.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let jobs = (0..600u64).map(|i| {
                let from = (i % 8) as usize;
                let to = ((i * 5 + 3) % 8) as usize;
                let to = if to == from { (to + 1) % 8 } else { to };
                (
                    keys[from],
                    keys[to],
                    tokens[from].clone(),
                    1 + (i % 50) as i64,
                )
            });
            let mut results = stream::iter(jobs)
                .map(|(from, to, token, amount)| {
                    let mut c = app_client.clone();
                    async move {
                        c.create_transfer(authed(
                            CreateTransferRequest {
                                from_account_id: from,
                                to_account_id: to,
                                amount,
                                currency: "USD".into(),
                                ..Default::default()
                            },
                            &token,
                        ))
                        .await
                    }
                })
                .buffer_unordered(16);
            while let Some(r) = results.next().await {
                r.expect("transfer");
                n += 1;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            n
        })
    };

    let mut runs = 0;
    let mut advanced = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let r = reconcile(&app, false).await;
        assert!(r.ok, "run {runs} during the load: {:?}", r.violations);
        runs += 1;
        if r.checkpoint_advanced {
            advanced += 1;
        }
    }
    assert_eq!(load.await.unwrap(), 600);
    assert!(runs >= 1, "at least one run overlapped the load");
    let after = reconcile(&app, false).await;
    assert!(after.ok, "{:?}", after.violations);
    assert!(after.checkpoint_advanced);
    assert_eq!(after.entry_watermark, max_entry(&app).await);
    // the checkpoint's totals are exactly each account's entries: nothing was skipped or
    // counted twice while ids committed out of order
    let off: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ledger.accounts a
         LEFT JOIN ledger.reconcile_account_totals c ON c.account_id = a.id
         WHERE a.balance <> COALESCE(c.entries_total, 0)",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(off, 0);
    let full = reconcile(&app, true).await;
    assert!(full.ok, "{:?}", full.violations);
    println!("{runs} incremental runs during the load, {advanced} advanced the checkpoint");
}
