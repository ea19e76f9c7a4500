//! VerifyEmail and ResendVerificationEmail.

use crate::support::*;
use platform::config::TokenKind;
use proto::auth::v1 as pb;
use tonic::Code;

async fn latest_code(app: &App, username: &str) -> (i64, String) {
    sqlx::query_as(
        "SELECT id, secret_code FROM auth.verify_emails WHERE username = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(username)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

async fn verify(
    app: &App,
    email_id: i64,
    secret_code: &str,
) -> Result<pb::VerifyEmailResponse, tonic::Status> {
    app.client()
        .verify_email(pb::VerifyEmailRequest {
            email_id,
            secret_code: secret_code.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn verification_marks_the_user_verified_and_a_renewed_token_carries_it() {
    let app = app().await;
    let s = app.user_session("ann").await;
    let (id, code) = latest_code(&app, "ann").await;
    let r = verify(&app, id, &code).await.unwrap();
    assert!(r.email_verified);
    assert_eq!(r.username, "ann");
    assert!(r.message.contains("renew"));
    assert!(
        app.get_user(&s.access_token, "me")
            .await
            .unwrap()
            .email_verified
    );
    let renewed = app.renew(&s.refresh_token).await.unwrap();
    let claims = app
        .keys
        .maker(TokenKind::Paseto)
        .verify(&renewed.access_token)
        .unwrap();
    assert!(claims.email_verified);
}

#[tokio::test]
async fn wrong_code_or_unknown_id_is_not_found() {
    let app = app().await;
    app.sign_up("ann").await;
    let (id, code) = latest_code(&app, "ann").await;
    let err = verify(&app, id, "x".repeat(43).as_str()).await.unwrap_err();
    assert_status(&err, Code::NotFound, "verification_not_found");
    let err = verify(&app, id + 1000, &code).await.unwrap_err();
    assert_status(&err, Code::NotFound, "verification_not_found");
    let err = verify(&app, id, "").await.unwrap_err();
    assert_status(&err, Code::NotFound, "verification_not_found");
}

#[tokio::test]
async fn expired_code_is_failed_precondition() {
    let app = app().await;
    app.sign_up("ann").await;
    let (id, code) = latest_code(&app, "ann").await;
    sqlx::query("UPDATE auth.verify_emails SET expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let err = verify(&app, id, &code).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "verification_expired");
}

#[tokio::test]
async fn a_code_works_only_once() {
    let app = app().await;
    app.sign_up("ann").await;
    let (id, code) = latest_code(&app, "ann").await;
    verify(&app, id, &code).await.unwrap();
    let err = verify(&app, id, &code).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "verification_used");
}

#[tokio::test]
async fn a_code_for_a_replaced_address_does_not_verify_the_new_one() {
    let app = app().await;
    let s = app.user_session("ann").await;
    let (old_id, old_code) = latest_code(&app, "ann").await;
    app.client()
        .update_user(test_support::authed(
            pb::UpdateUserRequest {
                username: "me".into(),
                email: Some("ann2@example.com".into()),
                ..Default::default()
            },
            &s.access_token,
        ))
        .await
        .unwrap();
    let err = verify(&app, old_id, &old_code).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "verification_superseded");
    let (id, code) = latest_code(&app, "ann").await;
    verify(&app, id, &code).await.unwrap();
}

#[tokio::test]
async fn resend_writes_a_new_event_for_an_unverified_caller_and_is_rate_limited() {
    let app = app_with(|c| c.verification.resend_max_per_window = 2).await;
    let s = app.user_session("ann").await;
    let resend = || {
        let mut client = app.client();
        let token = s.access_token.clone();
        async move {
            client
                .resend_verification_email(test_support::authed(
                    pb::ResendVerificationEmailRequest {},
                    &token,
                ))
                .await
        }
    };
    let r = resend().await.unwrap().into_inner();
    assert_eq!(r.email, "ann@example.com");
    resend().await.unwrap();
    let err = resend().await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "too_many_requests");
    assert!(tonic_types::StatusExt::get_details_retry_info(&err).is_some());
    let kinds: Vec<String> = app
        .outbox("ann")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            "user.created",
            "user.contact_updated",
            "user.verification_resent",
            "user.verification_resent"
        ]
    );
}

#[tokio::test]
async fn resend_for_a_verified_user_is_failed_precondition() {
    let app = app().await;
    let s = app.user_session("ann").await;
    let (id, code) = latest_code(&app, "ann").await;
    verify(&app, id, &code).await.unwrap();
    let err = app
        .client()
        .resend_verification_email(test_support::authed(
            pb::ResendVerificationEmailRequest {},
            &s.access_token,
        ))
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "already_verified");
}
