//! Outbound safety with the default settings: loopback, link-local (the metadata address) and
//! private destinations are refused at registration, and at connect time for a name that
//! resolves to one.

use platform::error::reason_of;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn loopback_and_metadata_urls_are_refused_at_registration_with_the_default_config() {
    let app = App::start_with(|c| c.delivery.allow_private_destinations = false).await;
    let token = app.depositor("ann");
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let err = app.register(&token, url, false).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert_eq!(
            reason_of(&err).as_deref(),
            Some("destination_not_allowed"),
            "{url}"
        );
    }
    for url in [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://u:p@example.com/",
    ] {
        let err = app.register(&token, url, false).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert_eq!(
            reason_of(&err).as_deref(),
            Some("invalid_argument"),
            "{url}"
        );
    }
    let listed = app
        .client
        .clone()
        .list_endpoints(test_support::authed(
            proto::webhooks::v1::ListEndpointsRequest {},
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.endpoints.is_empty(), "nothing was registered");
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time_too() {
    // an endpoint that got in (registered while allowed, or resolving elsewhere then) meets the
    // check again when a delivery connects
    let app = App::start_with(|c| {
        c.delivery.allow_private_destinations = false;
        c.delivery.max_attempts = 1;
    })
    .await;
    let receiver = Receiver::start(&[], Answer::Status(200)).await;
    let owner = test_support::user_id("ann");
    for url in [
        format!("http://localhost:{}/hook", receiver.addr.port()),
        receiver.url(),
    ] {
        sqlx::query("INSERT INTO webhooks.endpoints (owner_id, url, secret) VALUES ($1, $2, $3)")
            .bind(owner)
            .bind(&url)
            .bind(webhooks::domain::signature::new_secret())
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    app.open_account("ann").await;
    app.eventually("both deliveries are dead", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhooks.deliveries WHERE status = 'dead'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
            == 2
    })
    .await;
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM webhooks.attempts ORDER BY error")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(errors.len(), 2);
    for e in &errors {
        assert!(e.contains("not a public address"), "{e}");
    }
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
}
