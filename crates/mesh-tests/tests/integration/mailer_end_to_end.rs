//! Sign-up to verified user across services: auth's CreateUser writes the outbox row, auth's relay
//! moves it to the stream, the mailer sends the email to a real SMTP server, and the link's
//! email_id/secret_code verify the user through auth's VerifyEmail.

use std::time::Duration;

use proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use test_support::{TestDb, TestRedis};

use crate::support::smtp::{SmtpSink, eventually, link_in, pending, smtp_config, start_mailer};

const WAIT: Duration = Duration::from_secs(60);

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

struct Mesh {
    _db: TestDb,
    redis: TestRedis,
    sink: SmtpSink,
    auth: test_support::Running,
    mailer: test_support::Running,
    client: AuthServiceClient<tonic::transport::Channel>,
}

/// auth (with its relay) and the mailer on one Redis namespace, the mailer sending to a sink.
async fn mesh() -> Mesh {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let keys = test_support::test_keys();
    let mut auth_cfg = auth::config::Config {
        database: db.config(),
        redis: redis.config(),
        ..auth::config::Config::default()
    };
    auth_cfg.token.private_key = keys.private_b64();
    auth_cfg.relay.poll_interval_ms = 200;
    let auth = test_support::spawn(move |l, s| auth::startup::run(auth_cfg, l, s)).await;
    let mailer = start_mailer(smtp_config(&redis, &sink, "e2e")).await;
    let client = AuthServiceClient::new(test_support::channel(auth.grpc_addr).await);
    Mesh {
        _db: db,
        redis,
        sink,
        auth,
        mailer,
        client,
    }
}

#[tokio::test]
async fn sign_up_sends_one_email_whose_link_verifies_the_user() {
    let Mesh {
        _db,
        redis,
        sink,
        auth,
        mailer,
        mut client,
    } = mesh().await;

    let user = client
        .create_user(pb::CreateUserRequest {
            username: "erin".into(),
            full_name: "Erin Example".into(),
            email: "erin@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("sign up")
        .into_inner()
        .user
        .unwrap();
    assert!(!user.email_verified);

    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["erin@example.com".to_owned()]);
    assert!(got[0].data.contains("Erin Example"), "addressed by name");
    let (email_id, code) = link_in(&got[0].data);

    let verified = client
        .verify_email(pb::VerifyEmailRequest {
            email_id,
            secret_code: percent_decode(&code),
        })
        .await
        .expect("the link's code verifies")
        .into_inner();
    assert!(verified.email_verified);
    assert_eq!(verified.username, "erin");

    // single use: following the same link again does not verify twice
    let again = client
        .verify_email(pb::VerifyEmailRequest {
            email_id,
            secret_code: percent_decode(&code),
        })
        .await;
    assert!(again.is_err(), "a used link is refused");

    eventually("the mailer to acknowledge the event", WAIT, || async {
        (pending(&redis).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sink.received().len(),
        1,
        "exactly one email for one sign-up"
    );

    mailer.stop().await.unwrap();
    auth.stop().await.unwrap();
}

#[tokio::test]
async fn a_changed_address_and_a_resend_request_each_get_a_working_link_at_the_current_address() {
    let Mesh {
        _db,
        redis: _redis,
        sink,
        auth,
        mailer,
        mut client,
    } = mesh().await;
    client
        .create_user(pb::CreateUserRequest {
            username: "finn".into(),
            full_name: "Finn Example".into(),
            email: "finn@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("sign up");
    sink.wait_for(1, WAIT).await;
    let token = client
        .login_user(pb::LoginUserRequest {
            username: "finn".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token;

    client
        .update_user(test_support::authed(
            pb::UpdateUserRequest {
                username: "me".into(),
                email: Some("finn@new.example.com".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("change email");
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got[1].rcpt_to, vec!["finn@new.example.com".to_owned()]);
    assert!(
        got[1]
            .data
            .contains("Subject: Confirm your new email address")
    );

    client
        .resend_verification_email(test_support::authed(
            pb::ResendVerificationEmailRequest {},
            &token,
        ))
        .await
        .expect("resend");
    let got = sink.wait_for(3, WAIT).await;
    assert_eq!(got[2].rcpt_to, vec!["finn@new.example.com".to_owned()]);
    assert!(got[2].data.contains("Subject: Your new verification link"));

    let (email_id, code) = link_in(&got[2].data);
    let verified = client
        .verify_email(pb::VerifyEmailRequest {
            email_id,
            secret_code: percent_decode(&code),
        })
        .await
        .expect("the resent link verifies")
        .into_inner();
    assert!(verified.email_verified);
    assert_eq!(verified.username, "finn");

    mailer.stop().await.unwrap();
    auth.stop().await.unwrap();
}
