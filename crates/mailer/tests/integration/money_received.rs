//! "You received money" against real PostgreSQL (the recipients table), Redis (both streams) and
//! SMTP: a credit to a known, verified user makes exactly one email with the amount, also when the
//! stream holds the event twice; an opted-out user, a move between one's own accounts and an
//! unknown recipient make none (each acknowledged); the recipients table keeps the newest version
//! and forgets a deleted user; a mailer killed mid-send of a money email sends it once within 5 s
//! of its restart, as for verification emails.

use std::time::{Duration, Instant};

use crate::support::*;
use test_support::{TestDb, TestRedis};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// XADDs a user event to `{prefix}events:users` as auth's relay does.
async fn publish_user(redis: &TestRedis, event_type: &str, payload: serde_json::Value) {
    let id = Uuid::new_v4().to_string();
    xadd(
        redis,
        &[
            ("event_id", &id),
            ("event_type", event_type),
            ("payload", &payload.to_string()),
        ],
    )
    .await;
}

/// `user.contact_updated` for `user`.
async fn contact(
    redis: &TestRedis,
    user: Uuid,
    email: &str,
    verified: bool,
    notify: bool,
    version: i64,
) {
    let payload = serde_json::json!({
        "user_id": user, "username": "u", "full_name": "Bea Payee", "email": email,
        "email_verified": verified, "notify_money_received": notify, "version": version,
    });
    publish_user(redis, "user.contact_updated", payload).await;
}

/// Waits until the recipients table holds `user` at `version`.
async fn known(db: &TestDb, user: Uuid, version: i64) {
    eventually("the recipient to be known", WAIT, || async {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM mailer.recipients WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&db.pool)
                .await
                .unwrap();
        (v == Some(version)).then_some(())
    })
    .await;
}

fn ledger_stream(redis: &TestRedis) -> String {
    format!("{}events:ledger", redis.prefix)
}

/// The mailer's group on the ledger stream exists (it is created at the stream's end: only later
/// entries are read).
async fn ledger_group_ready(redis: &TestRedis) {
    eventually("the mailer's ledger group", WAIT, || async {
        let mut conn = redis.pool.get().await.unwrap();
        let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(ledger_stream(redis))
            .query_async(&mut *conn)
            .await;
        groups
            .ok()
            .filter(|g| g.groups.iter().any(|g| g.name == "mailer"))
            .map(|_| ())
    })
    .await;
}

/// XADDs a ledger event exactly as the transfers service's relay does; returns the entry id.
async fn publish_ledger(
    redis: &TestRedis,
    event_id: &str,
    event_type: &str,
    (from, to): (Option<Uuid>, Option<Uuid>),
    amount: i64,
) -> String {
    let owners: Vec<Uuid> = [from, to].into_iter().flatten().collect();
    let payload = serde_json::json!({
        "version": 1, "occurred_at": "2026-12-02T00:12:03.417211+00:00", "account_ids": [12, 57],
        "owner_ids": owners, "from_owner_id": from, "to_owner_id": to,
        "transfer": {
            "id": 9001, "from_account_id": 12, "to_account_id": 57, "amount": amount,
            "currency": "USD", "kind": "transfer", "status": "posted", "hold": false,
            "hold_id": null, "description": "order 1234", "reverses_id": null,
            "created_at": "2026-12-02T00:12:03.417211+00:00",
        },
    });
    let mut conn = redis.pool.get().await.unwrap();
    redis::cmd("XADD")
        .arg(ledger_stream(redis))
        .arg("*")
        .arg("event_id")
        .arg(event_id)
        .arg("event_type")
        .arg(event_type)
        .arg("payload")
        .arg(payload.to_string())
        .query_async(&mut *conn)
        .await
        .unwrap()
}

/// Waits until the ledger group has read entry `id` and holds nothing pending: handled and
/// acknowledged (sent or skipped).
async fn ledger_done(redis: &TestRedis, id: &str) {
    eventually("the ledger entry to be acknowledged", WAIT, || async {
        let mut conn = redis.pool.get().await.unwrap();
        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(ledger_stream(redis))
            .query_async(&mut *conn)
            .await
            .unwrap();
        let g = groups.groups.into_iter().find(|g| g.name == "mailer")?;
        (g.last_delivered_id == id && g.pending == 0).then_some(())
    })
    .await;
}

struct Setup {
    redis: TestRedis,
    db: TestDb,
    sink: SmtpSink,
    mailer: test_support::Running,
}

async fn setup() -> Setup {
    let redis = TestRedis::new().await;
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let mailer = start(money_config(&redis, &db, &sink, "m1")).await;
    ledger_group_ready(&redis).await;
    Setup {
        redis,
        db,
        sink,
        mailer,
    }
}

#[tokio::test]
async fn a_credit_to_a_known_verified_user_sends_one_email_with_the_amount_even_if_published_twice()
{
    let Setup {
        redis,
        db,
        sink,
        mailer,
    } = setup().await;
    let (payer, payee) = (Uuid::new_v4(), Uuid::new_v4());
    contact(&redis, payee, "bea@example.com", true, true, 2).await;
    known(&db, payee, 2).await;

    let event_id = Uuid::new_v4().to_string();
    publish_ledger(
        &redis,
        &event_id,
        "transfer.posted",
        (Some(payer), Some(payee)),
        2500,
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["bea@example.com".to_owned()]);
    assert!(
        got[0].data.contains("Subject: You received 25.00 USD"),
        "{}",
        got[0].data
    );
    assert!(
        got[0].data.contains("in your account 57"),
        "{}",
        got[0].data
    );

    // the relay published it again (at least once): same event id, no second email
    let again = publish_ledger(
        &redis,
        &event_id,
        "transfer.posted",
        (Some(payer), Some(payee)),
        2500,
    )
    .await;
    ledger_done(&redis, &again).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sink.received().len(),
        1,
        "exactly one email for one event id"
    );
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn an_opted_out_user_a_move_between_own_accounts_and_a_debit_send_nothing() {
    let Setup {
        redis,
        db,
        sink,
        mailer,
    } = setup().await;
    let (opted_out, mover, payer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    contact(&redis, opted_out, "out@example.com", true, false, 3).await;
    contact(&redis, mover, "mover@example.com", true, true, 2).await;
    known(&db, opted_out, 3).await;
    known(&db, mover, 2).await;

    let new = || Uuid::new_v4().to_string();
    publish_ledger(
        &redis,
        &new(),
        "transfer.posted",
        (Some(payer), Some(opted_out)),
        100,
    )
    .await;
    publish_ledger(
        &redis,
        &new(),
        "transfer.posted",
        (Some(mover), Some(mover)),
        100,
    )
    .await;
    publish_ledger(
        &redis,
        &new(),
        "withdrawal.posted",
        (Some(mover), None),
        100,
    )
    .await;
    publish_ledger(
        &redis,
        &new(),
        "hold.created",
        (Some(payer), Some(mover)),
        100,
    )
    .await;
    // a credit that does go out, last: once it is here, the ones before were handled too
    let last = publish_ledger(&redis, &new(), "deposit.posted", (None, Some(mover)), 700).await;
    let got = sink.wait_for(1, WAIT).await;
    ledger_done(&redis, &last).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_now = sink.received();
    assert_eq!(
        got_now.len(),
        1,
        "only the deposit: {:?}",
        got_now.iter().map(|r| &r.rcpt_to).collect::<Vec<_>>()
    );
    assert_eq!(got[0].rcpt_to, vec!["mover@example.com".to_owned()]);
    assert!(
        got[0].data.contains("You received 7.00 USD"),
        "{}",
        got[0].data
    );
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_recipient_is_waited_for_then_skipped_and_a_late_one_still_gets_the_email() {
    let Setup {
        redis,
        db,
        sink,
        mailer,
    } = setup().await;
    // nobody ever tells the mailer of this user: skipped after ledger.unknown_recipient_wait_ms
    let stranger = Uuid::new_v4();
    let id = publish_ledger(
        &redis,
        &Uuid::new_v4().to_string(),
        "transfer.posted",
        (None, Some(stranger)),
        100,
    )
    .await;
    ledger_done(&redis, &id).await;
    assert!(sink.received().is_empty(), "no email to an unknown user");

    // the user event comes moments after the credit (the streams are not ordered with each
    // other): within the wait, the email goes out
    let late = Uuid::new_v4();
    publish_ledger(
        &redis,
        &Uuid::new_v4().to_string(),
        "transfer.posted",
        (None, Some(late)),
        4200,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    contact(&redis, late, "late@example.com", true, true, 2).await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["late@example.com".to_owned()]);
    assert!(got[0].data.contains("42.00 USD"));
    let _ = db;
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn the_recipients_table_keeps_the_newest_version_and_forgets_a_deleted_user() {
    let Setup {
        redis,
        db,
        sink,
        mailer,
    } = setup().await;
    let user = Uuid::new_v4();
    contact(&redis, user, "new@example.com", true, true, 5).await;
    known(&db, user, 5).await;
    // an older event arriving late changes nothing
    contact(&redis, user, "old@example.com", false, false, 4).await;
    let marker = Uuid::new_v4();
    contact(&redis, marker, "m@example.com", true, true, 1).await;
    known(&db, marker, 1).await;
    let (email, verified): (Option<String>, bool) =
        sqlx::query_as("SELECT email, email_verified FROM mailer.recipients WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (email.as_deref(), verified),
        (Some("new@example.com"), true)
    );

    // deleted: address and name forgotten, and no later (older) event brings them back
    publish_user(
        &redis,
        "user.deleted",
        serde_json::json!({"user_id": user, "username": "u"}),
    )
    .await;
    known(&db, user, i64::MAX).await;
    contact(&redis, user, "new@example.com", true, true, 6).await;
    let id = publish_ledger(
        &redis,
        &Uuid::new_v4().to_string(),
        "transfer.posted",
        (None, Some(user)),
        100,
    )
    .await;
    ledger_done(&redis, &id).await;
    let (email, deleted): (Option<String>, bool) =
        sqlx::query_as("SELECT email, deleted FROM mailer.recipients WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((email, deleted), (None, true));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sink.received().is_empty(), "no email to a deleted user");
    mailer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_killed_mid_send_of_a_money_email_sends_it_once_within_5_s_of_its_restart() {
    let redis = TestRedis::new().await;
    let db = TestDb::new().await;
    let (hole, sink) = (BlackHole::start().await, SmtpSink::start().await);
    let config = |port: u16| {
        let mut cfg = money_config(&redis, &db, &sink, "mailer-0");
        cfg.transport.port = port;
        cfg.transport.send_timeout_ms = 30_000; // the send to the hole hangs until the kill
        cfg.claim_idle_ms = 60_000; // a reclaim would take a minute
        cfg
    };
    let first = start(config(hole.port)).await;
    ledger_group_ready(&redis).await;
    let (payer, payee) = (Uuid::new_v4(), Uuid::new_v4());
    contact(&redis, payee, "bea@example.com", true, true, 2).await;
    known(&db, payee, 2).await;
    let event_id = Uuid::new_v4().to_string();
    let entry = publish_ledger(
        &redis,
        &event_id,
        "transfer.posted",
        (Some(payer), Some(payee)),
        2500,
    )
    .await;
    eventually("the money email's send in hand", WAIT, || async {
        let state = event_state(&redis, &event_id).await?;
        (state.starts_with("sending:mailer-0:") && hole.opened() >= 1).then_some(())
    })
    .await;
    first.handle.abort(); // killed mid-send: the lease stays, nothing acknowledged
    let _ = first.handle.await;
    assert!(
        event_state(&redis, &event_id)
            .await
            .is_some_and(|s| s.starts_with("sending:")),
        "the dead process's lease is still there"
    );

    let restarted_at = Instant::now();
    let restarted = start(config(sink.port)).await;
    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    let took = restarted_at.elapsed();
    assert_eq!(got[0].rcpt_to, vec!["bea@example.com".to_owned()]);
    ledger_done(&redis, &entry).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sink.received().len(), 1, "exactly one email");
    println!("the money email killed mid-send arrived {took:?} after the restart");
    restarted.stop().await.unwrap();
}
