//! Who may register for and read what: a depositor's endpoint gets only their own accounts'
//! events, every event is for bankers, and another user's endpoints and deliveries are NOT_FOUND.

use std::time::Duration;

use platform::error::reason_of;
use proto::webhooks::v1::{
    DeleteEndpointRequest, ListDeliveriesRequest, ListDeliveryAttemptsRequest,
    ListEndpointsRequest, ReplayDeliveryRequest,
};
use test_support::authed;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a_depositor_cannot_register_for_or_read_another_users_events_or_deliveries() {
    let app = App::start().await;
    let ann_hook = Receiver::start(&[], Answer::Status(200)).await;
    let bob_hook = Receiver::start(&[], Answer::Status(200)).await;
    let bank_hook = Receiver::start(&[], Answer::Status(200)).await;
    let (ann, bob) = (app.depositor("ann"), app.depositor("bob"));

    let err = app.register(&bob, &bob_hook.url(), true).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "every event is for bankers"
    );
    assert_eq!(reason_of(&err).as_deref(), Some("banker_only"));

    let ann_endpoint = app
        .register(&ann, &ann_hook.url(), false)
        .await
        .unwrap()
        .endpoint
        .unwrap();
    app.register(&bob, &bob_hook.url(), false).await.unwrap();
    app.register(&app.banker("bank_cy"), &bank_hook.url(), true)
        .await
        .unwrap();

    let account = app.open_account("ann").await;
    let carl = app.open_account("carl").await;
    app.transfer(account, carl, 10).await;
    app.eventually(
        "ann's and the bank's receivers got their events",
        || async { ann_hook.received().len() >= 2 && bank_hook.received().len() >= 3 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        bob_hook.received().is_empty(),
        "bob gets none of ann's events"
    );
    let types = |r: &Receiver| -> Vec<String> {
        r.received()
            .iter()
            .map(|x| body_json(x)["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut ann_types = types(&ann_hook);
    ann_types.sort();
    assert_eq!(
        ann_types,
        ["account.opened", "transfer.posted"],
        "not carl's account.opened"
    );
    assert_eq!(
        bank_hook.received().len(),
        3,
        "the banker's endpoint gets every event"
    );

    // bob cannot see ann's endpoint, deliveries or attempts, nor replay or delete them
    let listed = app
        .client
        .clone()
        .list_endpoints(authed(ListEndpointsRequest {}, &bob))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.endpoints.iter().all(|e| e.id != ann_endpoint.id));
    let err = app
        .client
        .clone()
        .list_deliveries(authed(
            ListDeliveriesRequest {
                endpoint_id: ann_endpoint.id.clone(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_deref()),
        (Code::NotFound, Some("endpoint_not_found"))
    );
    let ann_deliveries = app
        .client
        .clone()
        .list_deliveries(authed(
            ListDeliveriesRequest {
                endpoint_id: ann_endpoint.id.clone(),
                ..Default::default()
            },
            &ann,
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(ann_deliveries.len(), 2);
    let delivery_id = ann_deliveries[0].id;
    let err = app
        .client
        .clone()
        .list_delivery_attempts(authed(ListDeliveryAttemptsRequest { delivery_id }, &bob))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_deref()),
        (Code::NotFound, Some("delivery_not_found"))
    );
    let err = app
        .client
        .clone()
        .replay_delivery(authed(ReplayDeliveryRequest { delivery_id }, &bob))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .client
        .clone()
        .delete_endpoint(authed(
            DeleteEndpointRequest {
                id: ann_endpoint.id.clone(),
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // ann herself reads her attempts
    let attempts = app
        .client
        .clone()
        .list_delivery_attempts(authed(ListDeliveryAttemptsRequest { delivery_id }, &ann))
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, 200);
    let err = app
        .client
        .clone()
        .list_deliveries(authed(
            ListDeliveriesRequest {
                endpoint_id: "nope".into(),
                ..Default::default()
            },
            &ann,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let _ = any_uuid();
}
