//! The mailer against a real Redis and a real SMTP server: delivery, dedupe, reclaim after a
//! consumer dies, retries and dead-lettering, replicas sharing the work.

use std::{collections::HashMap, time::Duration};

use crate::support::*;
use test_support::TestRedis;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_event_produces_exactly_one_email_with_the_verification_link() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let mailer = start(smtp_config(&redis, &sink, "m1")).await;

    let mut ev = TestEvent::new(1);
    ev.secret_code = "Ab+/=c-d_e.f~g hij0123456789abcdef0123".into(); // needs URL-encoding
    publish(&redis, "user.created", &ev).await;

    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec![ev.email.clone()]);
    assert_eq!(got[0].mail_from, "no-reply@bank.example.test");
    let (email_id, code) = link_in(&got[0].data);
    assert_eq!(email_id, ev.email_id);
    assert_eq!(code, "Ab%2B%2F%3Dc-d_e.f~g%20hij0123456789abcdef0123");
    assert!(got[0].data.contains("Subject: Verify your email address"));
    assert!(got[0].data.contains("text/html"), "has an HTML part");

    eventually("the message to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 1, "exactly one email");
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn every_event_type_gets_its_own_email() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let mailer = start(smtp_config(&redis, &sink, "m1")).await;

    publish(&redis, "user.email_changed", &TestEvent::new(1)).await;
    publish(&redis, "user.verification_resent", &TestEvent::new(2)).await;
    let got = sink.wait_for(2, WAIT).await;
    let subjects: Vec<bool> = [
        "Subject: Confirm your new email address",
        "Subject: Your new verification link",
    ]
    .iter()
    .map(|s| got.iter().any(|r| r.data.contains(s)))
    .collect();
    assert_eq!(subjects, vec![true, true]);
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn the_same_event_published_twice_is_sent_once() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let mailer = start(smtp_config(&redis, &sink, "m1")).await;

    // e.g. the relay crashed after XADD and before marking the outbox row published
    let ev = TestEvent::new(1);
    publish(&redis, "user.created", &ev).await;
    publish(&redis, "user.created", &ev).await;

    sink.wait_for(1, WAIT).await;
    eventually("both entries to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 1);
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn messages_of_a_consumer_that_died_before_acking_are_reclaimed_and_sent_once() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let stream = format!("{}events:users", redis.prefix);

    // A consumer reads three events and dies without acknowledging them.
    let events: Vec<TestEvent> = (1..=3).map(TestEvent::new).collect();
    {
        let mut conn = redis.pool.get().await.unwrap();
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("mailer")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut *conn)
            .await
            .unwrap();
        for ev in &events {
            publish(&redis, "user.created", ev).await;
        }
        let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("mailer")
            .arg("dead-replica")
            .arg("COUNT")
            .arg(10)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut *conn)
            .await
            .unwrap();
        assert_eq!(read.keys[0].ids.len(), 3);
    }
    assert_eq!(
        pending_by_consumer(&redis).await,
        vec![("dead-replica".to_owned(), 3)]
    );

    // A live mailer joins the same group (its XGROUP CREATE finds the group and keeps it).
    let mailer = start(smtp_config(&redis, &sink, "survivor")).await;
    let got = sink.wait_for(3, WAIT).await;
    let mut to: Vec<String> = got.iter().flat_map(|r| r.rcpt_to.clone()).collect();
    to.sort();
    let mut want: Vec<String> = events.iter().map(|e| e.email.clone()).collect();
    want.sort();
    assert_eq!(to, want);

    eventually(
        "the reclaimed messages to be acknowledged",
        WAIT,
        || async { (pending(&redis).await == 0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 3, "exactly one email per event");
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn a_mailer_stopped_mid_stream_leaves_nothing_unsent_for_the_next_one() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.delay_each(Duration::from_millis(150));
    let mut cfg = smtp_config(&redis, &sink, "first");
    cfg.read_count = 2;
    let first = start(cfg).await;
    let events: Vec<TestEvent> = (1..=12).map(TestEvent::new).collect();
    for ev in &events {
        publish(&redis, "user.created", ev).await;
    }
    sink.wait_for(2, WAIT).await;
    // abort the task: no graceful drain, like a killed process
    first.handle.abort();
    let _ = first.handle.await;

    let second = start(smtp_config(&redis, &sink, "second")).await;
    sink.wait_for(12, WAIT).await;
    eventually("everything to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in sink.received() {
        for to in r.rcpt_to {
            *counts.entry(to).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 12, "every event got its email");
    // A kill between the SMTP server's "queued" and the `sent` marker may resend one email per
    // in-flight message (read_count = 2): the documented crash window, never more.
    let extra: usize = counts.values().map(|c| c - 1).sum();
    assert!(
        extra <= 2,
        "at most the in-flight emails resent: {counts:?}"
    );
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_waiting_out_its_backoff_is_not_taken_over_by_another_replica() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.reject_next(1);
    let tuned = |name: &str| {
        let mut cfg = smtp_config(&redis, &sink, name);
        cfg.transport.send_timeout_ms = 2_000;
        cfg.claim_idle_ms = 2_500;
        cfg.backoff_base_ms = 6_000; // well beyond claim_idle_ms
        cfg.backoff_max_ms = 6_000;
        cfg
    };
    let a = start(tuned("replica-a")).await;
    let ev = TestEvent::new(1);
    publish(&redis, "user.created", &ev).await;
    eventually("the first attempt to be rejected", WAIT, || async {
        (sink.rejected() == 1).then_some(())
    })
    .await;
    let b = start(tuned("replica-b")).await;

    // for most of the backoff the message stays with replica-a, delivered once
    let stream = format!("{}events:users", redis.prefix);
    for _ in 0..35 {
        let mut conn = redis.pool.get().await.unwrap();
        let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("mailer")
            .arg("-")
            .arg("+")
            .arg(10)
            .query_async(&mut *conn)
            .await
            .unwrap();
        if let Some(p) = reply.ids.first() {
            assert_eq!(p.consumer, "replica-a", "taken over during backoff");
            assert_eq!(p.times_delivered, 1);
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec![ev.email.clone()]);
    eventually("the message to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 1);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn stopping_during_a_backoff_returns_promptly_and_leaves_the_message_for_later() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.reject_all();
    let mut cfg = smtp_config(&redis, &sink, "m1");
    cfg.max_attempts = 10;
    cfg.backoff_base_ms = 60_000;
    cfg.backoff_max_ms = 60_000;
    let mailer = start(cfg).await;
    publish(&redis, "user.created", &TestEvent::new(1)).await;
    eventually("the first attempt", WAIT, || async {
        (sink.rejected() == 1).then_some(())
    })
    .await;

    let started = std::time::Instant::now();
    mailer.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped in {:?}",
        started.elapsed()
    );
    assert_eq!(
        pending(&redis).await,
        1,
        "left pending for the next consumer"
    );
    assert!(dead_letters(&redis).await.is_empty());

    // and the next mailer finishes it once SMTP works again
    sink.reject_next(0);
    let mut cfg = smtp_config(&redis, &sink, "m2");
    cfg.claim_idle_ms = 4_500; // > send_timeout_ms
    let next = start(cfg).await;
    sink.wait_for(1, WAIT).await;
    next.stop().await.unwrap();
}

#[tokio::test]
async fn a_transient_smtp_failure_is_retried_and_the_email_sent_once() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.reject_next(2);
    let mailer = start(smtp_config(&redis, &sink, "m1")).await; // max_attempts = 3

    let ev = TestEvent::new(1);
    publish(&redis, "user.created", &ev).await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec![ev.email.clone()]);
    assert_eq!(sink.rejected(), 2);
    eventually("the message to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    assert!(dead_letters(&redis).await.is_empty());
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn an_smtp_server_that_keeps_rejecting_leads_to_the_dead_letter_stream_after_max_attempts() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.reject_all();
    let mailer = start(smtp_config(&redis, &sink, "m1")).await; // max_attempts = 3

    let ev = TestEvent::new(1);
    let original_id = publish(&redis, "user.created", &ev).await;
    let dead = eventually("a dead letter", WAIT, || async {
        let d = dead_letters(&redis).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d["event_id"], ev.event_id);
    assert_eq!(d["event_type"], "user.created");
    assert_eq!(d["attempts"], "3");
    assert_eq!(d["reason"], "max_attempts");
    assert_eq!(d["original_id"], original_id);
    assert!(
        d["error"].contains("550"),
        "last error kept: {}",
        d["error"]
    );
    assert!(d["payload"].contains(&ev.secret_code), "payload kept");
    assert_eq!(sink.rejected(), 3, "one SMTP attempt per try");
    assert!(sink.received().is_empty());
    eventually("the message to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;

    let (status, text) = get(&mailer, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metric(&text, "emails_dead_lettered_total{reason=\"max_attempts\"}") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "emails_failed_total") >= 3.0, "{text}");
    // Once SMTP works again, replaying the dead letter (its fields back onto the stream) sends it.
    sink.reject_next(0);
    xadd(
        &redis,
        &[
            ("event_id", d["event_id"].as_str()),
            ("event_type", d["event_type"].as_str()),
            ("payload", d["payload"].as_str()),
        ],
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec![ev.email.clone()]);

    // the gauges are refreshed every stats_interval_ms (200 ms here)
    eventually("the pending gauge", WAIT, || async {
        let (_, text) = get(&mailer, "/metrics").await;
        let (group, stream) = (
            "group=\"mailer\"".to_owned(),
            format!("stream=\"{}events:users\"", redis.prefix),
        );
        let series = |name: &str| {
            text.lines().any(|l| {
                l.starts_with(&format!("{name}{{")) && l.contains(&group) && l.contains(&stream)
            })
        };
        (series("mailer_stream_pending") && series("mailer_stream_lag")).then_some(())
    })
    .await;
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_that_cannot_be_parsed_is_dead_lettered_at_once_without_retries() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let mailer = start(smtp_config(&redis, &sink, "m1")).await;

    let event_id = uuid::Uuid::new_v4().to_string();
    xadd(
        &redis,
        &[
            ("event_id", event_id.as_str()),
            ("event_type", "user.created"),
            ("payload", "{not json"),
        ],
    )
    .await;
    // and one the mailer has no email for: acknowledged and skipped
    xadd(
        &redis,
        &[
            ("event_id", &uuid::Uuid::new_v4().to_string()),
            ("event_type", "user.logged_in"),
            ("payload", "{}"),
        ],
    )
    .await;
    let dead = eventually("a dead letter", WAIT, || async {
        let d = dead_letters(&redis).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0]["event_id"], event_id);
    assert_eq!(dead[0]["reason"], "invalid_event");
    assert_eq!(dead[0]["attempts"], "0");
    eventually("both entries to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    assert!(sink.received().is_empty());
    assert_eq!(dead_letters(&redis).await.len(), 1);
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn two_replicas_share_the_work_and_together_send_each_email_once() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.delay_each(Duration::from_millis(100)); // keeps messages in flight long enough to see
    let mut a = smtp_config(&redis, &sink, "replica-a");
    a.read_count = 2;
    let mut b = smtp_config(&redis, &sink, "replica-b");
    b.read_count = 2;
    let (ma, mb) = (start(a).await, start(b).await);
    // let both join the group before the burst
    tokio::time::sleep(Duration::from_millis(500)).await;

    let events: Vec<TestEvent> = (1..=30).map(TestEvent::new).collect();
    for ev in &events {
        publish(&redis, "user.created", ev).await;
    }
    let mut seen_working = std::collections::BTreeSet::new();
    let watch = async {
        loop {
            for (consumer, n) in pending_by_consumer(&redis).await {
                if n > 0 {
                    seen_working.insert(consumer);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = sink.wait_for(30, WAIT) => {},
        _ = watch => unreachable!(),
    }
    eventually("everything to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in sink.received() {
        for to in r.rcpt_to {
            *counts.entry(to).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|&c| c == 1), "each once: {counts:?}");
    assert_eq!(
        seen_working.into_iter().collect::<Vec<_>>(),
        vec!["replica-a".to_owned(), "replica-b".to_owned()],
        "both replicas took messages"
    );
    ma.stop().await.unwrap();
    mb.stop().await.unwrap();
}

#[tokio::test]
async fn a_consumer_that_is_gone_and_holds_nothing_is_removed_from_the_group() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let stream = format!("{}events:users", redis.prefix);
    {
        // an old replica (e.g. a previous pod name) that read nothing and went away
        let mut conn = redis.pool.get().await.unwrap();
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("mailer")
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut *conn)
            .await
            .unwrap();
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(&stream)
            .arg("mailer")
            .arg("old-pod")
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    let consumers = || async {
        let mut conn = redis.pool.get().await.unwrap();
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("mailer")
            .query_async(&mut *conn)
            .await
            .unwrap();
        let mut names: Vec<String> = reply.consumers.into_iter().map(|c| c.name).collect();
        names.sort();
        names
    };
    assert_eq!(consumers().await, vec!["old-pod".to_owned()]);

    let mut cfg = smtp_config(&redis, &sink, "new-pod");
    cfg.forget_idle_consumer_secs = 1;
    let mailer = start(cfg).await;
    eventually("the old consumer to be removed", WAIT, || async {
        // (whether the live one is listed yet depends on the Redis version: 7.0 adds a consumer
        // only once it is handed a message)
        (!consumers().await.contains(&"old-pod".to_owned())).then_some(())
    })
    .await;
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn after_redis_goes_away_and_comes_back_the_mailer_resumes_and_sends_each_email_once() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let proxy = FlakyProxy::start("127.0.0.1:6379").await;
    let mut cfg = smtp_config(&redis, &sink, "m1");
    cfg.redis.url = proxy.url();
    let mailer = start(cfg).await;

    publish(&redis, "user.created", &TestEvent::new(1)).await;
    sink.wait_for(1, WAIT).await;

    proxy.down();
    let (status, _) = get(&mailer, "/readyz").await;
    assert_eq!(status, 503, "not ready while Redis is away");
    // events keep arriving while the mailer cannot reach Redis
    for n in 2..=4 {
        publish(&redis, "user.created", &TestEvent::new(n)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.received().len(), 1, "nothing sent while Redis is away");

    proxy.up();
    sink.wait_for(4, WAIT).await;
    eventually("everything to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut to: Vec<String> = sink
        .received()
        .into_iter()
        .flat_map(|r| r.rcpt_to)
        .collect();
    to.sort();
    assert_eq!(
        to,
        (1..=4)
            .map(|n| format!("user{n}@example.com"))
            .collect::<Vec<_>>()
    );
    let (status, _) = get(&mailer, "/readyz").await;
    assert_eq!(status, 200);
    mailer.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_ok_with_redis_and_unavailable_without_it() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let up = start(smtp_config(&redis, &sink, "m1")).await;
    let (status, _) = get(&up, "/readyz").await;
    assert_eq!(status, 200);

    let mut cfg = smtp_config(&redis, &sink, "m2");
    cfg.redis.url = "redis://127.0.0.1:1".into(); // nothing listens there
    let down = start(cfg).await;
    let (status, body) = get(&down, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    let (status, _) = get(&down, "/healthz").await;
    assert_eq!(status, 200, "alive even while Redis is away");

    up.stop().await.unwrap();
    down.stop().await.unwrap();
}
