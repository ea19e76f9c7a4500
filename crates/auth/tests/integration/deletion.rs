//! DeleteUser: who may delete whom, what goes with the user, what is published, and that the
//! username is free afterwards under a new id.

use std::time::Duration;

use crate::support::*;
use platform::{
    config::TokenKind,
    token::{Claims, Role},
};
use proto::auth::v1 as pb;
use tonic::Code;
use uuid::Uuid;

async fn delete(
    app: &App,
    token: &str,
    username: &str,
    password: &str,
) -> Result<pb::DeleteUserResponse, tonic::Status> {
    app.client()
        .delete_user(test_support::authed(
            pb::DeleteUserRequest {
                username: username.into(),
                password: password.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn count(app: &App, sql: &'static str, username: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(username)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_deletes_themself_with_their_password_and_everything_of_theirs_goes() {
    let app = app().await;
    let first = app.user_session("ann").await;
    let second = app.login("ann", PASSWORD).await.unwrap();
    let id = first.user.as_ref().unwrap().id.clone();
    assert!(Uuid::parse_str(&id).is_ok(), "User carries its id: {id:?}");

    // no password, a wrong one: refused, nothing deleted
    let err = delete(&app, &first.access_token, "me", "")
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "invalid_argument");
    let err = delete(&app, &first.access_token, "me", "not the password")
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "wrong_password");
    assert_eq!(
        app.get_user(&first.access_token, "me").await.unwrap().id,
        id
    );

    let deleted = delete(&app, &first.access_token, "me", PASSWORD)
        .await
        .expect("delete");
    assert_eq!(deleted.username, "ann");
    assert_eq!(deleted.id, id);
    assert_eq!(deleted.sessions_revoked, 2, "both open sessions");

    for (what, sql) in [
        (
            "user",
            "SELECT count(*) FROM auth.users WHERE username = $1",
        ),
        (
            "sessions",
            "SELECT count(*) FROM auth.sessions WHERE username = $1",
        ),
        (
            "verifications",
            "SELECT count(*) FROM auth.verify_emails WHERE username = $1",
        ),
    ] {
        assert_eq!(count(&app, sql, "ann").await, 0, "{what} deleted");
    }
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.refresh_tokens")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(tokens, 0, "refresh tokens deleted with their sessions");
    let err = app.renew(&second.refresh_token).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "refresh_token_unknown");
    let err = app.login("ann", PASSWORD).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "invalid_credentials");

    // both sessions published as revoked, and the deletion itself, in the same transaction
    let revoked: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'session_id' FROM auth.outbox WHERE event_type = 'session.revoked'
         ORDER BY payload->>'session_id'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut sessions = vec![first.session_id.clone(), second.session_id.clone()];
    sessions.sort();
    assert_eq!(revoked, sessions);
    let events = app.outbox("ann").await;
    let (kind, payload) = events.last().unwrap();
    assert_eq!(kind, "user.deleted");
    assert_eq!(payload["user_id"], id.as_str());
    assert_eq!(payload["deleted_by"], "ann");
    assert_eq!(payload["sessions_revoked"], 2);

    // the username is free, under a new id
    let again = app.user_session("ann").await;
    let new_id = again.user.unwrap().id;
    assert_ne!(new_id, id, "a new user never gets a deleted user's id");
}

#[tokio::test]
async fn a_depositor_cannot_delete_someone_else_a_banker_deletes_depositors_but_not_bankers() {
    let app = app().await;
    let ann = app.user_session("ann").await;
    app.user_session("bob").await;
    let banker = app.banker_session("bea_banker").await;
    let other_banker = app.banker_session("ben_banker").await;

    let err = delete(&app, &ann.access_token, "bob", PASSWORD)
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "forbidden");
    let err = delete(&app, &ann.access_token, "nobody_here", PASSWORD)
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "forbidden");

    let err = delete(&app, &banker.access_token, "nobody_here", "")
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "user_not_found");
    let err = delete(&app, &banker.access_token, "ben_banker", "")
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "banker_not_deletable");

    let deleted = delete(&app, &banker.access_token, "bob", "")
        .await
        .expect("a banker deletes a depositor without its password");
    assert_eq!(deleted.username, "bob");
    assert_eq!(deleted.sessions_revoked, 1);
    let err = app.get_user(&banker.access_token, "bob").await.unwrap_err();
    assert_status(&err, Code::NotFound, "user_not_found");
    let events = app.outbox("bob").await;
    let (kind, payload) = events.last().unwrap();
    assert_eq!(
        (kind.as_str(), &payload["deleted_by"]),
        ("user.deleted", &"bea_banker".into())
    );

    // the others are untouched
    assert!(app.get_user(&ann.access_token, "me").await.is_ok());
    assert!(app.get_user(&other_banker.access_token, "me").await.is_ok());
}

#[tokio::test]
async fn wrong_passwords_to_delete_count_against_the_login_throttle() {
    let app = app_with(|c| {
        c.login_throttle.free_failures_per_client = 2;
        c.login_throttle.delay_initial_ms = 60_000;
    })
    .await;
    let ann = app.user_session("ann").await;
    let ip = [
        ("x-gateway-secret", GATEWAY_SECRET),
        ("x-client-ip", "203.0.113.7"),
    ];
    let attempt = |password: &'static str| {
        let mut req = with_metadata(
            pb::DeleteUserRequest {
                username: "me".into(),
                password: password.into(),
            },
            &ip,
        );
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", ann.access_token).parse().unwrap(),
        );
        let mut client = app.client();
        async move { client.delete_user(req).await }
    };
    for _ in 0..3 {
        let err = attempt("guess-guess").await.unwrap_err();
        assert_status(&err, Code::PermissionDenied, "wrong_password");
    }
    // past the free failures the next attempt waits, even with the right password
    let err = attempt(PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        app.get_user(&ann.access_token, "me").await.is_ok(),
        "not deleted"
    );
}

#[tokio::test]
async fn a_token_of_a_deleted_user_never_reaches_the_new_user_of_the_same_name() {
    let app = app().await;
    let old = app.user_session("ann").await;
    let old_id = Uuid::parse_str(&old.user.unwrap().id).unwrap();
    delete(&app, &old.access_token, "me", PASSWORD)
        .await
        .expect("delete");
    let new = app.user_session("ann").await;

    // a token of the old ann whose revocation has not arrived (a session id nobody revoked)
    let stale = app
        .keys
        .maker(TokenKind::Paseto)
        .sign(&Claims::access(
            "ann",
            old_id,
            Role::Depositor,
            Uuid::new_v4(),
            true,
            Duration::from_secs(600),
        ))
        .unwrap();
    let err = app.get_user(&stale, "me").await.unwrap_err();
    assert_status(&err, Code::NotFound, "user_not_found");
    let err = app
        .client()
        .update_user(test_support::authed(
            pb::UpdateUserRequest {
                username: "me".into(),
                full_name: Some("Not Ann".into()),
                ..Default::default()
            },
            &stale,
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "user_not_found");
    let err = delete(&app, &stale, "me", PASSWORD).await.unwrap_err();
    assert_status(&err, Code::NotFound, "user_not_found");
    let user = app.get_user(&new.access_token, "me").await.unwrap();
    assert_eq!(user.full_name, "ann Example", "the new ann is untouched");
}
