//! Signed deliveries, retries with backoff, dead letters and replay.

use std::time::Duration;

use proto::webhooks::v1::{
    DeliveryStatus, ListDeliveriesRequest, ListDeliveryAttemptsRequest, ReplayDeliveryRequest,
};
use test_support::authed;
use webhooks::domain::signature;

use crate::support::*;

#[tokio::test]
async fn the_receiver_verifies_the_signature_and_a_tampered_body_or_old_timestamp_fails() {
    let app = App::start().await;
    let receiver = Receiver::start(&[], Answer::Status(200)).await;
    let created = app
        .register(&app.depositor("ann"), &receiver.url(), false)
        .await
        .unwrap();
    let secret = created.secret;
    assert!(secret.starts_with("whsec_"));
    let ann = app.open_account("ann").await;
    app.eventually("the receiver got the event", || async {
        !receiver.received().is_empty()
    })
    .await;
    let got = &receiver.received()[0];
    let header = got.headers["webhook-signature"].to_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        signature::verify(
            &secret,
            header,
            &got.body,
            now,
            signature::DEFAULT_TOLERANCE_SECS
        ),
        Ok(())
    );
    let body = body_json(got);
    assert_eq!(body["data"]["id"], ann);
    assert_eq!(got.headers["webhook-id"].to_str().unwrap(), body["id"]);
    assert_eq!(got.headers["webhook-event"], "account.opened");
    assert_eq!(got.headers["content-type"], "application/json");

    let mut tampered = got.body.to_vec();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert_eq!(
        signature::verify(
            &secret,
            header,
            &tampered,
            now,
            signature::DEFAULT_TOLERANCE_SECS
        ),
        Err(signature::Invalid::Mismatch)
    );
    let an_hour_later = now + 3_600;
    assert_eq!(
        signature::verify(
            &secret,
            header,
            &got.body,
            an_hour_later,
            signature::DEFAULT_TOLERANCE_SECS
        ),
        Err(signature::Invalid::Stale)
    );
    assert_eq!(
        signature::verify(&signature::new_secret(), header, &got.body, now, 300),
        Err(signature::Invalid::Mismatch),
        "another endpoint's secret does not verify it"
    );
}

#[tokio::test]
async fn a_receiver_answering_500_three_times_then_200_gets_the_event_after_the_backoff() {
    let app = App::start().await;
    let receiver = Receiver::start(
        &[
            Answer::Status(500),
            Answer::Status(500),
            Answer::Status(500),
        ],
        Answer::Status(200),
    )
    .await;
    let token = app.depositor("ann");
    let endpoint = app
        .register(&token, &receiver.url(), false)
        .await
        .unwrap()
        .endpoint
        .unwrap();
    app.open_account("ann").await;
    app.eventually("four attempts reached the receiver", || async {
        receiver.received().len() >= 4
    })
    .await;
    let list = || async {
        app.client
            .clone()
            .list_deliveries(authed(
                ListDeliveriesRequest {
                    endpoint_id: endpoint.id.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries
    };
    app.eventually("the delivery is delivered", || async {
        list().await[0].status == DeliveryStatus::Delivered as i32
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 4, "no attempt after the 200");
    let ids = event_ids(&received);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every attempt has the same event id"
    );
    // backoff: 200 ms, then 400, then 800 (test settings), each wait at least that
    for (n, pair) in received.windows(2).enumerate() {
        let waited = pair[1].at - pair[0].at;
        let backoff = Duration::from_millis(200 << n);
        assert!(
            waited >= backoff,
            "attempt {} came after {waited:?}, before {backoff:?}",
            n + 2
        );
    }
    let delivery = &list().await[0];
    assert_eq!(delivery.attempts, 4);
    assert_eq!(delivery.event_id, ids[0]);
    let attempts = app
        .client
        .clone()
        .list_delivery_attempts(authed(
            ListDeliveryAttemptsRequest {
                delivery_id: delivery.id,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .attempts;
    let codes: Vec<i32> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [500, 500, 500, 200], "the delivery log");
    assert_eq!(attempts[0].error, "HTTP 500");
    assert_eq!(attempts[3].error, "");
}

#[tokio::test]
async fn a_receiver_that_never_answers_ends_in_the_dead_letters_and_a_replay_delivers_it() {
    let app = App::start_with(|c| {
        c.delivery.timeout_ms = 300;
        c.delivery.max_attempts = 2;
        c.delivery.backoff_initial_ms = 100;
    })
    .await;
    let receiver = Receiver::start(&[], Answer::Hang).await;
    let token = app.depositor("ann");
    let endpoint = app
        .register(&token, &receiver.url(), false)
        .await
        .unwrap()
        .endpoint
        .unwrap();
    app.open_account("ann").await;
    let dead_letters = || async {
        app.client
            .clone()
            .list_deliveries(authed(
                ListDeliveriesRequest {
                    endpoint_id: endpoint.id.clone(),
                    dead_only: true,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries
    };
    app.eventually("the delivery is a dead letter", || async {
        !dead_letters().await.is_empty()
    })
    .await;
    let dead = dead_letters().await.remove(0);
    assert_eq!(dead.status, DeliveryStatus::Dead as i32);
    assert_eq!(dead.attempts, 2, "max_attempts, then no more");
    assert!(
        dead.last_error.starts_with("timeout"),
        "{}",
        dead.last_error
    );
    assert_eq!(receiver.received().len(), 2);

    receiver.answer_from_now(Answer::Status(204));
    let replayed = app
        .client
        .clone()
        .replay_delivery(authed(
            ReplayDeliveryRequest {
                delivery_id: dead.id,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.status, DeliveryStatus::Pending as i32);
    assert_eq!(replayed.attempts, 0);
    app.eventually("the replay is delivered", || async {
        dead_letters().await.is_empty() && receiver.received().len() >= 3
    })
    .await;
    let ids = event_ids(&receiver.received());
    assert_eq!(
        ids[2], dead.event_id,
        "the replay carries the same event id"
    );
}
