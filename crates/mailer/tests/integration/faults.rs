//! The mailer under faults: SIGTERM finishes the send in hand and leaves the rest for the next
//! mailer (the side port saying 503 meanwhile); a mailer restarted under its own consumer name
//! sends what its previous process left pending at once, not after `claim_idle_ms`.

use std::{collections::HashMap, time::Duration};

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
