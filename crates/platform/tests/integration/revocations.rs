//! `platform::revocations::follow` against a real Redis: an entry appended to the stream (as
//! auth's relay writes it) makes the token maker refuse that session's tokens within a second or
//! two, one written before start-up is read too, and an unreachable Redis refuses nothing.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use platform::{
    Shutdown,
    config::{RedisConfig, RevocationsConfig, TokenKind},
    revocations::{self, Effect, Revocation},
    token::{Claims, Keys, Role, TokenError, TokenMaker},
};
use uuid::Uuid;

fn token(maker: &Arc<dyn TokenMaker>, sid: Uuid) -> String {
    let claims = Claims::access(
        "ann",
        Uuid::new_v4(),
        Role::Depositor,
        sid,
        true,
        Duration::from_secs(600),
    );
    maker.sign(&claims).unwrap()
}

/// Appends a revocation of `sid` to the stream of `redis`, as auth's relay does.
async fn revoke(redis: &test_support::TestRedis, sid: Uuid) {
    let until = Utc::now() + chrono::Duration::minutes(15);
    let payload = serde_json::to_string(&Revocation {
        session_id: sid,
        effect: Effect::Revoked,
        issued_before: until,
        until,
    })
    .unwrap();
    let mut conn = redis.pool.get().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(revocations::stream_key(&redis.prefix))
        .arg("*")
        .arg("event_type")
        .arg(revocations::EVENT_TYPE)
        .arg("payload")
        .arg(payload)
        .query_async(&mut *conn)
        .await
        .unwrap();
}

async fn refused_within(maker: &Arc<dyn TokenMaker>, token: &str, limit: Duration) {
    let started = Instant::now();
    while maker.verify(token) != Err(TokenError::Revoked) {
        assert!(started.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_session_revoked_before_or_after_start_up_is_refused_within_2_s() {
    let redis = test_support::TestRedis::new().await;
    let keys = Keys::generate();
    let (before, after, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    revoke(&redis, before).await;
    let shutdown = Shutdown::new();
    let cfg = RevocationsConfig {
        redis: redis.config(),
        ..RevocationsConfig::default()
    };
    let maker = revocations::follow(keys.maker(TokenKind::Paseto), &cfg, shutdown.clone()).unwrap();
    let (t_before, t_after, t_other) = (
        token(&maker, before),
        token(&maker, after),
        token(&maker, other),
    );
    refused_within(&maker, &t_before, Duration::from_secs(2)).await;
    assert!(
        maker.verify(&t_after).is_ok(),
        "verified (and remembered) before its revocation"
    );
    revoke(&redis, after).await;
    refused_within(&maker, &t_after, Duration::from_secs(2)).await;
    assert!(maker.verify(&t_other).is_ok(), "a session nobody revoked");
    shutdown.trigger();
}

#[tokio::test]
async fn an_unreachable_feed_refuses_nothing() {
    let shutdown = Shutdown::new();
    let cfg = RevocationsConfig {
        redis: RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            timeout_ms: 200,
            ..RedisConfig::default()
        },
        ..RevocationsConfig::default()
    };
    let keys = Keys::generate();
    let maker = revocations::follow(keys.maker(TokenKind::Paseto), &cfg, shutdown.clone()).unwrap();
    let t = token(&maker, Uuid::new_v4());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(maker.verify(&t).is_ok(), "fails open: tokens still verify");
    shutdown.trigger();
}
