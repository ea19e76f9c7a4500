//! The mailer under faults: SIGTERM finishes the send in hand and leaves the rest for the next
//! mailer (the side port saying 503 meanwhile); a mailer restarted under its own consumer name
//! sends what its previous process left pending at once, not after `claim_idle_ms`, also the
//! emails it was killed in the middle of sending (their leases expire within `lease_ms`); two
//! live mailers never both send one event, however long a send takes; a sender that loses its
//! lease drops its send.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::support::*;
use test_support::TestRedis;

const WAIT: Duration = Duration::from_secs(30);

fn emails_by_address(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in sink.received() {
        for to in r.rcpt_to {
            *counts.entry(to).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_send_in_hand_and_leaves_the_rest_for_the_next_mailer() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.delay_each(Duration::from_millis(1_200));
    let mut cfg = smtp_config(&redis, &sink, "leaving");
    cfg.read_count = 1; // one send in hand at a time
    let first = start(cfg).await;
    let events: Vec<TestEvent> = (1..=3).map(TestEvent::new).collect();
    for ev in &events {
        publish(&redis, "user.created", ev).await;
    }
    eventually("the first send to be in hand", WAIT, || async {
        (pending(&redis).await == 1).then_some(())
    })
    .await;
    first.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let readyz = test_support::http_status(first.http_addr, "/readyz").await;
    tokio::time::timeout(Duration::from_secs(10), first.handle)
        .await
        .expect("stops within the grace period")
        .unwrap()
        .unwrap();
    assert_eq!(readyz, Some(503), "/readyz while the send in hand finishes");
    assert_eq!(
        sink.received().len(),
        1,
        "the send in hand finished, no other began"
    );
    assert_eq!(pending(&redis).await, 0, "and it was acknowledged");

    sink.delay_each(Duration::ZERO);
    let next = start(smtp_config(&redis, &sink, "next")).await;
    sink.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = emails_by_address(&sink);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each email once: {counts:?}"
    );
    next.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_restarted_under_its_name_sends_what_it_left_pending_at_once() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.reject_all();
    let config = || {
        let mut cfg = smtp_config(&redis, &sink, "mailer-0");
        // a reclaim of the dead process's messages would take a minute: far beyond the wait
        cfg.claim_idle_ms = 60_000;
        cfg.backoff_base_ms = 30_000;
        cfg.backoff_max_ms = 30_000;
        cfg
    };
    let first = start(config()).await;
    let events: Vec<TestEvent> = (1..=3).map(TestEvent::new).collect();
    for ev in &events {
        publish(&redis, "user.created", ev).await;
    }
    // each was read and tried once, and now waits out its backoff, pending for mailer-0
    eventually("three failed attempts", WAIT, || async {
        (sink.rejected() >= 3).then_some(())
    })
    .await;
    first.handle.abort(); // killed: nothing acknowledged
    let _ = first.handle.await;
    assert_eq!(
        pending_by_consumer(&redis).await,
        vec![("mailer-0".to_owned(), 3)]
    );

    sink.reject_next(0);
    let restarted = start(config()).await;
    sink.wait_for(3, Duration::from_secs(5)).await;
    eventually("everything to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    let counts = emails_by_address(&sink);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each email once: {counts:?}"
    );
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_killed_mid_send_sends_those_emails_once_within_5_s_of_its_restart() {
    let redis = TestRedis::new().await;
    let (hole, sink) = (BlackHole::start().await, SmtpSink::start().await);
    let config = |port: u16| {
        let mut cfg = smtp_config(&redis, &sink, "mailer-0");
        cfg.transport.port = port;
        cfg.transport.send_timeout_ms = 30_000; // the sends to the hole hang until the kill
        cfg.claim_idle_ms = 60_000; // a reclaim would take a minute: far beyond the 5 s
        cfg
    };
    let first = start(config(hole.port)).await;
    let events: Vec<TestEvent> = (1..=3).map(TestEvent::new).collect();
    for ev in &events {
        publish(&redis, "user.created", ev).await;
    }
    // all three mid-send: leased by mailer-0, their SMTP connections open and unanswered
    eventually("three sends in hand", WAIT, || async {
        for ev in &events {
            let state = event_state(&redis, &ev.event_id).await?;
            state.starts_with("sending:mailer-0:").then_some(())?;
        }
        (hole.opened() >= 3).then_some(())
    })
    .await;
    first.handle.abort(); // killed mid-send: leases held, nothing acknowledged
    let _ = first.handle.await;
    assert_eq!(
        pending_by_consumer(&redis).await,
        vec![("mailer-0".to_owned(), 3)]
    );
    for ev in &events {
        let state = event_state(&redis, &ev.event_id).await;
        assert!(
            state.as_deref().is_some_and(|s| s.starts_with("sending:")),
            "the dead process's lease is still there: {state:?}"
        );
    }

    let restarted_at = Instant::now();
    let restarted = start(config(sink.port)).await;
    sink.wait_for(3, Duration::from_secs(5)).await;
    let took = restarted_at.elapsed();
    eventually("everything to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let counts = emails_by_address(&sink);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each email once: {counts:?}"
    );
    for ev in &events {
        assert_eq!(
            event_state(&redis, &ev.event_id).await.as_deref(),
            Some("sent")
        );
    }
    println!("three emails killed mid-send arrived {took:?} after the restart");
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_mailers_never_both_send_an_event_however_long_its_send_takes() {
    let redis = TestRedis::new().await;
    // The first mailer's SMTP server takes 2.5 s to accept each message: about four leases
    // (600 ms each), so the first mailer keeps its leases only by renewing them.
    let (slow, other) = (SmtpSink::start().await, SmtpSink::start().await);
    slow.delay_each(Duration::from_millis(2_500));
    let config = |sink: &SmtpSink| {
        let mut cfg = smtp_config(&redis, sink, "twin");
        cfg.lease_ms = 600;
        cfg
    };
    let first = start(config(&slow)).await;
    let events: Vec<TestEvent> = (1..=3).map(TestEvent::new).collect();
    for ev in &events {
        publish(&redis, "user.created", ev).await;
    }
    eventually("three sends in hand", WAIT, || async {
        for ev in &events {
            let state = event_state(&redis, &ev.event_id).await?;
            state.starts_with("sending:").then_some(())?;
        }
        Some(())
    })
    .await;
    // A second live process under the same consumer name (a misconfiguration, and the hardest
    // case: it reads the first one's pending entries at once, and again every 500 ms). It sends
    // to another server, so its sends would show.
    let second = start(config(&other)).await;
    slow.wait_for(3, WAIT).await;
    eventually("everything to be acknowledged", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        other.received().len(),
        0,
        "the second mailer sent nothing the first one was sending"
    );
    let counts = emails_by_address(&slow);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "each email once: {counts:?}"
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_lease_is_taken_over_drops_its_send() {
    let redis = TestRedis::new().await;
    let (hole, sink) = (BlackHole::start().await, SmtpSink::start().await);
    let mut cfg = smtp_config(&redis, &sink, "frozen");
    cfg.transport.port = hole.port;
    cfg.transport.send_timeout_ms = 30_000;
    cfg.claim_idle_ms = 60_000;
    cfg.lease_ms = 900;
    cfg.backoff_base_ms = 30_000;
    cfg.backoff_max_ms = 30_000;
    let mailer = start(cfg).await;
    let ev = TestEvent::new(1);
    publish(&redis, "user.created", &ev).await;
    eventually("the send in hand", WAIT, || async {
        let state = event_state(&redis, &ev.event_id).await?;
        (state.starts_with("sending:frozen:") && hole.opened() >= 1).then_some(())
    })
    .await;
    // As if the lease had expired (the sender frozen) and another consumer had taken it.
    {
        let mut conn = redis.pool.get().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("{}mailer:event:{}", redis.prefix, ev.event_id))
            .arg("sending:someone-else:x")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut *conn)
            .await
            .unwrap();
    }
    // its next renewal (within 300 ms) finds the key not its own: the send is dropped
    eventually("the send's connection to be closed", WAIT, || async {
        (hole.closed() >= 1).then_some(())
    })
    .await;
    let (_, text) = get(&mailer, "/metrics").await;
    assert!(
        metric(&text, "mailer_leases_lost_total{reason=\"taken_over\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(
        event_state(&redis, &ev.event_id).await.as_deref(),
        Some("sending:someone-else:x"),
        "the other's lease is left alone"
    );
    assert_eq!(pending(&redis).await, 1, "the event stays pending");
    mailer.stop().await.unwrap();
}
