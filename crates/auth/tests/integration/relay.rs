//! The outbox relay: auth.outbox → Redis Stream `{prefix}events:users`, in order, exactly once per
//! event in these scenarios (Redis down then back, two relays at once).

use std::{collections::HashSet, time::Duration};

use crate::support::*;
use auth::config::{Config, RelayConfig};
use platform::{Shutdown, config::RedisConfig};
use redis::streams::StreamRangeReply;
use test_support::{TestDb, TestRedis};
use uuid::Uuid;

/// (event_id, event_type, payload) of every stream entry, oldest first.
async fn stream(redis: &TestRedis) -> Vec<(String, String, serde_json::Value)> {
    let mut conn = redis.pool.get().await.unwrap();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(auth::relay::stream_key(&redis.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut *conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let field = |k: &str| e.get::<String>(k).unwrap_or_else(|| panic!("field {k}"));
            (
                field("event_id"),
                field("event_type"),
                serde_json::from_str(&field("payload")).unwrap(),
            )
        })
        .collect()
}

/// Event ids in outbox (publishing) order.
async fn outbox_ids(db: &TestDb) -> Vec<String> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM auth.outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    ids.into_iter().map(|u| u.to_string()).collect()
}

async fn unpublished(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM auth.outbox WHERE published_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Waits (generously: the machine is shared) until the stream holds `n` entries.
async fn wait_for_stream_len(redis: &TestRedis, n: usize) {
    for _ in 0..300 {
        if stream(redis).await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "stream has {} entries, expected {n}",
        stream(redis).await.len()
    );
}

async fn wait_until_published(db: &TestDb) {
    for _ in 0..300 {
        if unpublished(db).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} rows still unpublished", unpublished(db).await);
}

#[tokio::test]
async fn sign_up_events_reach_the_stream_in_order_and_are_marked_published() {
    let app = app().await;
    for name in ["ann", "bob", "cyd"] {
        app.sign_up(name).await;
    }
    // each sign-up writes user.created and user.contact_updated
    wait_for_stream_len(&app.redis, 6).await;
    wait_until_published(&app.db).await;
    let entries = stream(&app.redis).await;
    let ids: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
    assert_eq!(
        ids,
        outbox_ids(&app.db).await,
        "stream order = outbox order"
    );
    let kinds: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        kinds,
        ["user.created", "user.contact_updated"].repeat(3),
        "each user's two events, user after user"
    );
    let created = entries.iter().filter(|e| e.1 == "user.created");
    for ((_, kind, payload), name) in created.zip(["ann", "bob", "cyd"]) {
        assert_eq!(kind, "user.created");
        assert_eq!(payload["username"], name);
        assert_eq!(payload["email"], format!("{name}@example.com"));
        assert!(payload["email_id"].as_i64().unwrap() > 0);
        assert!(payload["secret_code"].as_str().unwrap().len() >= 32);
        assert!(payload["expires_at"].is_string());
    }
}

fn test_config(db: &TestDb, redis: &TestRedis, relay_redis: Option<RedisConfig>) -> Config {
    let mut cfg = Config {
        database: db.config(),
        redis: redis.config(),
        ..Config::default()
    };
    cfg.token.private_key = test_support::test_keys().private_b64();
    cfg.relay.redis = relay_redis;
    cfg.relay.poll_interval_ms = 200;
    cfg.relay.backoff_initial_ms = 50;
    cfg.relay.backoff_max_ms = 400;
    cfg
}

#[tokio::test]
async fn with_redis_unreachable_sign_up_succeeds_and_every_event_arrives_once_when_it_returns() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    // the relay's Redis is a closed port; the service's own Redis (throttling) works
    let closed = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        timeout_ms: 300,
        ..redis.config()
    };
    let cfg = test_config(&db, &redis, Some(closed));
    let running = test_support::spawn(move |l, s| auth::startup::run(cfg, l, s)).await;
    let client = proto::auth::v1::auth_service_client::AuthServiceClient::new(
        test_support::channel(running.grpc_addr).await,
    );
    for name in ["ann", "bob", "cyd"] {
        client
            .clone()
            .create_user(proto::auth::v1::CreateUserRequest {
                username: name.into(),
                full_name: "Some One".into(),
                email: format!("{name}@example.com"),
                password: PASSWORD.into(),
            })
            .await
            .expect("sign-up succeeds while Redis is down");
    }
    // several retries happen meanwhile; nothing is lost or marked published
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        unpublished(&db).await,
        6,
        "user.created and user.contact_updated each"
    );
    assert!(stream(&redis).await.is_empty());
    running
        .stop()
        .await
        .expect("stops cleanly while Redis is down");

    // the same service, now pointed at the real Redis, catches up
    let cfg = test_config(&db, &redis, None);
    let running = test_support::spawn(move |l, s| auth::startup::run(cfg, l, s)).await;
    wait_for_stream_len(&redis, 6).await;
    wait_until_published(&db).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let ids: Vec<String> = stream(&redis).await.into_iter().map(|e| e.0).collect();
    assert_eq!(ids, outbox_ids(&db).await, "each event once, in order");
    running.stop().await.unwrap();
}

async fn insert_events(db: &TestDb, n: i64) {
    sqlx::query(
        "INSERT INTO auth.outbox (event_id, event_type, payload)
         SELECT gen_random_uuid(), 'user.created', jsonb_build_object('username', 'u' || g, 'email_id', g)
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('auth_outbox', '')")
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn two_relays_at_once_publish_each_event_exactly_once_in_order() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    insert_events(&db, 120).await;
    let shutdown = Shutdown::new();
    let cfg = RelayConfig {
        batch_size: 7,
        poll_interval_ms: 100,
        ..RelayConfig::default()
    };
    let relays: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(auth::relay::run(
                db.pool.clone(),
                platform::redis::pool(&redis.config()).unwrap(),
                redis.config(),
                cfg.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    // more events while both are running
    for _ in 0..6 {
        insert_events(&db, 20).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_stream_len(&redis, 240).await;
    wait_until_published(&db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = stream(&redis).await.into_iter().map(|e| e.0).collect();
    assert_eq!(ids.len(), 240);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        240,
        "no duplicates"
    );
    assert_eq!(ids, outbox_ids(&db).await, "outbox order kept");
    shutdown.trigger();
    for r in relays {
        tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("relay stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn published_rows_are_deleted_after_the_retention_period() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    insert_events(&db, 5).await;
    let shutdown = Shutdown::new();
    let cfg = RelayConfig {
        retention_secs: 0,
        cleanup_interval_secs: 1,
        poll_interval_ms: 100,
        ..RelayConfig::default()
    };
    let relay = tokio::spawn(auth::relay::run(
        db.pool.clone(),
        platform::redis::pool(&redis.config()).unwrap(),
        redis.config(),
        cfg,
        shutdown.clone(),
    ));
    wait_for_stream_len(&redis, 5).await;
    let mut left: i64 = -1;
    for _ in 0..100 {
        left = sqlx::query_scalar("SELECT count(*) FROM auth.outbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "published rows past retention are deleted");
    assert_eq!(stream(&redis).await.len(), 5);
    shutdown.trigger();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_relay_is_woken_by_the_commit_without_waiting_for_the_poll() {
    // polling alone would take a minute; NOTIFY on commit brings it in well under that
    let app = app_with(|c| c.relay.poll_interval_ms = 60_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the relay is listening
    app.sign_up("ann").await;
    let started = std::time::Instant::now();
    wait_for_stream_len(&app.redis, 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn metrics_show_outbox_and_login_counters() {
    let app = app().await;
    app.sign_up("ann").await;
    let _ = app.login("ann", "wrong password").await;
    wait_for_stream_len(&app.redis, 1).await;
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(app.running.http_addr).await;
        if [
            "outbox_published_total",
            "outbox_backlog",
            "login_failures_total",
        ]
        .iter()
        .all(|m| text.contains(m))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metrics missing:\n{text}");
}

#[tokio::test]
async fn the_requests_traceparent_travels_in_its_own_stream_field_not_in_the_payload() {
    let app = app().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    app.client()
        .create_user(with_metadata(
            proto::auth::v1::CreateUserRequest {
                username: "ann".into(),
                full_name: "Ann".into(),
                email: "ann@example.com".into(),
                password: PASSWORD.into(),
            },
            &[("traceparent", tp)],
        ))
        .await
        .unwrap();
    app.sign_up("bob").await; // no trace context
    wait_for_stream_len(&app.redis, 4).await; // user.created and user.contact_updated each
    let mut conn = app.redis.pool.get().await.unwrap();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(auth::relay::stream_key(&app.redis.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut *conn)
        .await
        .unwrap();
    let created: Vec<_> = reply
        .ids
        .iter()
        .filter(|e| e.get::<String>("event_type").as_deref() == Some("user.created"))
        .collect();
    assert_eq!(created[0].get::<String>("traceparent").as_deref(), Some(tp));
    assert_eq!(created[1].get::<String>("traceparent"), None);
    for e in created {
        let payload: serde_json::Value =
            serde_json::from_str(&e.get::<String>("payload").unwrap()).unwrap();
        let keys: Vec<&String> = payload.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "exactly the contract's fields: {keys:?}");
    }
}
