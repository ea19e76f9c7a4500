//! The outbox relay after a Redis outage, against the real Redis behind a proxy the test cuts:
//! with the default backoff (capped at `relay.backoff_max_ms`, 1 s) an event written during a
//! 4-second outage is on its stream about a second after Redis answers again, not after a
//! backoff grown to tens of seconds.

use std::time::{Duration, Instant};

use platform::{
    Shutdown,
    outbox::{Outbox, RelayConfig, Streams},
};
use test_support::{TestDb, TestRedis, proxy::TcpProxy};

const AUTH_OUTBOX: Outbox = Outbox {
    table: "auth.outbox",
    channel: "auth_outbox",
    lock_key: 0x5245_4c41_5954_4553, // any constant of this test's own
};

async fn stream_len(redis: &TestRedis, stream: &str) -> usize {
    let mut conn = redis.pool.get().await.unwrap();
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_outage_the_relay_publishes_within_about_a_second() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let target = redis
        .url
        .trim_start_matches("redis://")
        .trim_end_matches('/');
    let proxy = TcpProxy::start(target).await;
    let mut relay_redis = redis.config();
    relay_redis.url = format!("redis://127.0.0.1:{}", proxy.port);
    relay_redis.timeout_ms = 300;
    let stream = format!("{}events:users", redis.prefix);
    let shutdown = Shutdown::new();
    let relay = tokio::spawn(platform::outbox::run(
        db.pool.clone(),
        platform::redis::pool(&relay_redis).unwrap(),
        relay_redis.clone(),
        AUTH_OUTBOX,
        Streams::single(stream.clone()),
        // the defaults, as a service runs them
        RelayConfig::default(),
        shutdown.clone(),
    ));

    proxy.down();
    sqlx::query(
        "INSERT INTO auth.outbox (event_id, event_type, payload) VALUES ($1, 'user.created', '{}')",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&db.pool)
    .await
    .unwrap();
    // long enough for an uncapped doubling backoff (200 ms, 400, 800, 1600, 3200 …) to outgrow it
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        stream_len(&redis, &stream).await,
        0,
        "nothing got through the cut"
    );

    proxy.up();
    let back = Instant::now();
    while stream_len(&redis, &stream).await == 0 {
        assert!(
            back.elapsed() < Duration::from_millis(1_600),
            "published within the backoff cap (1 s) and one attempt of Redis being back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    relay.await.unwrap().unwrap();
}
