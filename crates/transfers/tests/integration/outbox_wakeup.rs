//! How the ledger outbox wakes its relay (migration 20261203000100, issue 18): a writing statement
//! sends `NOTIFY ledger_outbox` only when the newest older event is published already (the relay
//! may be idle), not while events wait (the relay is at work), because every NOTIFY makes the
//! commits of all writers queue on PostgreSQL's one notification lock. And nothing waits for the
//! polling fallback: with it an hour away, every event is still published within a second,
//! through a burst and after a pause.

use std::time::{Duration, Instant};

use crate::support::App;
use futures::{StreamExt, stream};
use sqlx::postgres::PgListener;
use test_support::TestRedis;

/// The notifications that arrive on `listener` until none has come for `quiet`.
async fn notifications(listener: &mut PgListener, quiet: Duration) -> usize {
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(quiet, listener.recv()).await {
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_writer_notifies_only_when_the_events_before_its_own_are_published() {
    // no relay runs here (the tests' default): published_at is set by hand to play it
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let mut listener = PgListener::connect_with(&app.db.pool).await.unwrap();
    listener.listen("ledger_outbox").await.unwrap();

    // the relay has caught up: the next writer wakes it
    sqlx::query("UPDATE ledger.outbox SET published_at = now() WHERE published_at IS NULL")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.transfer(alice, bob, 1, "alice").await;
    assert_eq!(
        notifications(&mut listener, Duration::from_millis(500)).await,
        1,
        "the first event after the relay caught up notifies"
    );

    // its event is not published yet: the writers after it leave the relay alone
    for _ in 0..20 {
        app.transfer(alice, bob, 1, "alice").await;
    }
    assert_eq!(
        notifications(&mut listener, Duration::from_millis(500)).await,
        0,
        "no NOTIFY while older events wait"
    );
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.outbox WHERE published_at IS NULL")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(waiting, 21, "each transfer wrote its event");

    // caught up again (and a statement that writes no event never notifies)
    sqlx::query("UPDATE ledger.outbox SET published_at = now() WHERE published_at IS NULL")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO ledger.outbox (event_type, payload) SELECT 'x', '{}' WHERE false")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        notifications(&mut listener, Duration::from_millis(300)).await,
        0
    );
    app.transfer(bob, alice, 1, "bob").await;
    assert_eq!(
        notifications(&mut listener, Duration::from_millis(500)).await,
        1,
        "caught up again: the next writer notifies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_promptly_with_the_fallback_poll_an_hour_away() {
    let redis = TestRedis::new().await;
    let redis_cfg = redis.config();
    let app = App::start_with(|cfg| {
        cfg.relay.enabled = true;
        cfg.relay.redis = Some(redis_cfg);
        cfg.relay.poll_interval_ms = 3_600_000;
    })
    .await;
    let owners = ["alice", "bob", "carol", "dave"];
    let mut accounts = Vec::new();
    for owner in owners {
        let account = app.open(owner, "USD").await;
        app.deposit(account, 1_000_000, "USD").await;
        accounts.push(account);
    }

    // a burst: 400 transfers, 32 at a time (the batcher's multi-row batches, the relay busy)
    stream::iter(0..400usize)
        .map(|i| {
            let (from, to) = (i % 4, (i + 1) % 4);
            app.transfer(accounts[from], accounts[to], 1, owners[from])
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // single writers a little apart (while the relay still polls often after the burst) ...
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.transfer(accounts[i % 4], accounts[(i + 2) % 4], 1, owners[i % 4])
            .await;
    }
    // ... and one after the relay has gone back to waiting for NOTIFY
    tokio::time::sleep(platform::outbox::BUSY_FOR + Duration::from_secs(1)).await;
    app.transfer(accounts[0], accounts[1], 1, owners[0]).await;

    let started = Instant::now();
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger.outbox WHERE published_at IS NULL")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        if waiting == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{waiting} events still unpublished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // each event's wait, from its transaction's start to its publication
    let (events, slowest_ms): (i64, f64) = sqlx::query_as(
        "SELECT count(*), (EXTRACT(EPOCH FROM max(published_at - created_at)) * 1000)::float8
         FROM ledger.outbox",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    eprintln!(
        "{events} events, the slowest published {slowest_ms:.0} ms after its transaction began"
    );
    assert_eq!(events, 4 + 4 + 400 + 5 + 1, "opened, deposits, transfers");
    assert!(
        slowest_ms < 3_000.0,
        "every event published within 3 s (a lost wake-up would wait 5 s or an hour): {slowest_ms:.0} ms"
    );
}

#[tokio::test]
async fn the_outboxes_are_vacuumed_after_a_fixed_number_of_dead_rows_whatever_their_size() {
    // (autovacuum is off on the development machines, so what the settings do is not observable
    // here; that they are set is: migration 20261203000200)
    let app = App::start().await;
    for table in ["ledger.outbox", "auth.outbox"] {
        let options: Vec<String> = sqlx::query_scalar(
            "SELECT unnest(reloptions) FROM pg_class WHERE oid = $1::text::regclass",
        )
        .bind(table)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        assert!(
            options.contains(&"autovacuum_vacuum_scale_factor=0".to_owned())
                && options.contains(&"autovacuum_vacuum_threshold=10000".to_owned()),
            "{table}: {options:?}"
        );
    }
}
