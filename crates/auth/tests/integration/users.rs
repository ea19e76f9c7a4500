//! Sign-up, GetUser and UpdateUser through the gRPC API.

use crate::support::*;
use proto::auth::v1 as pb;
use tonic::Code;

fn signup(username: &str, full_name: &str, email: &str, password: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        username: username.into(),
        full_name: full_name.into(),
        email: email.into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn sign_up_creates_an_unverified_depositor_a_verification_and_a_user_created_event() {
    let app = app().await;
    let user = app
        .client()
        .create_user(signup(
            "zoe",
            "Zoë O'Neil-Smith",
            "zoe@example.com",
            PASSWORD,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.username, "zoe");
    assert_eq!(user.full_name, "Zoë O'Neil-Smith");
    assert_eq!(user.role, pb::Role::Depositor as i32);
    assert!(!user.email_verified);
    assert!(user.created_at.is_some());

    let (hash,): (String,) =
        sqlx::query_as("SELECT hashed_password FROM auth.users WHERE username = 'zoe'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );

    let (id, code): (i64, String) = sqlx::query_as(
        "SELECT id, secret_code FROM auth.verify_emails WHERE username = 'zoe' AND NOT used",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(code.len() >= 32);

    let events = app.outbox("zoe").await;
    assert_eq!(
        events.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["user.created", "user.contact_updated"]
    );
    let contact = &events[1].1;
    assert_eq!(contact["user_id"], user.id.as_str());
    assert_eq!(contact["email"], "zoe@example.com");
    assert_eq!(contact["email_verified"], false);
    assert_eq!(contact["notify_money_received"], true);
    assert_eq!(contact["version"], 1);
    assert!(user.notify_money_received, "on by default");
    let (kind, payload) = &events[0];
    assert_eq!(kind, "user.created");
    assert_eq!(payload["username"], "zoe");
    assert_eq!(payload["full_name"], "Zoë O'Neil-Smith");
    assert_eq!(payload["email"], "zoe@example.com");
    assert_eq!(payload["email_id"], id);
    assert_eq!(payload["secret_code"], code.as_str());
    let expires = payload["expires_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires).is_ok(),
        "{expires}"
    );
}

#[tokio::test]
async fn duplicate_username_is_already_exists_and_writes_no_event() {
    let app = app().await;
    app.sign_up("zoe").await;
    let err = app
        .client()
        .create_user(signup("zoe", "Other Zoe", "other@example.com", PASSWORD))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "username_taken");
    assert!(!err.message().contains("constraint"), "{}", err.message());
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM auth.outbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        events, 2,
        "only the first sign-up wrote its events (user.created, user.contact_updated)"
    );
}

#[tokio::test]
async fn duplicate_email_in_any_case_is_already_exists_and_the_failed_transaction_leaves_nothing() {
    let app = app().await;
    app.sign_up("zoe").await;
    let err = app
        .client()
        .create_user(signup("zoe2", "Zoe Two", "ZOE@Example.com", PASSWORD))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "email_taken");
    assert!(
        !err.message().contains("users_email_key"),
        "{}",
        err.message()
    );
    assert!(app.outbox("zoe2").await.is_empty(), "no outbox row");
    let (verifications,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM auth.verify_emails WHERE username = 'zoe2'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(verifications, 0);
}

#[tokio::test]
async fn each_validation_rule_is_invalid_argument_naming_the_field() {
    let app = app().await;
    let long_name = "x".repeat(101);
    let long_password = "p".repeat(129);
    let cases = [
        (signup("ab", "Ann", "ann@example.com", PASSWORD), "username"),
        (
            signup("Ann", "Ann", "ann@example.com", PASSWORD),
            "username",
        ),
        (
            signup("ann-b", "Ann", "ann@example.com", PASSWORD),
            "username",
        ),
        (
            signup(&"a".repeat(33), "Ann", "ann@example.com", PASSWORD),
            "username",
        ),
        (signup("ann", "", "ann@example.com", PASSWORD), "full_name"),
        (
            signup("ann", &long_name, "ann@example.com", PASSWORD),
            "full_name",
        ),
        (signup("ann", "Ann", "not-an-email", PASSWORD), "email"),
        (signup("ann", "Ann", "ann@localhost", PASSWORD), "email"),
        (signup("ann", "Ann", "ann@example.com", "short"), "password"),
        (
            signup("ann", "Ann", "ann@example.com", &long_password),
            "password",
        ),
    ];
    for (req, field) in cases {
        let err = app.client().create_user(req).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, "invalid_argument");
        let bad = tonic_types::StatusExt::get_details_bad_request(&err).expect("field violations");
        assert_eq!(bad.field_violations[0].field, field, "{err:?}");
    }
    // a control character has its own reason, the same in every text field of the API
    let err = app
        .client()
        .create_user(signup("ann", "Ann\u{7}", "ann@example.com", PASSWORD))
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "invalid_text");
    let bad = tonic_types::StatusExt::get_details_bad_request(&err).expect("field violations");
    assert_eq!(bad.field_violations[0].field, "full_name", "{err:?}");
    let (users,): (i64,) = sqlx::query_as("SELECT count(*) FROM auth.users")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn get_user_me_returns_the_caller_and_needs_a_token() {
    let app = app().await;
    let s = app.user_session("ann").await;
    for who in ["me", "", "ann"] {
        let me = app.get_user(&s.access_token, who).await.unwrap();
        assert_eq!(me.username, "ann");
    }
    let err = app
        .client()
        .get_user(pb::GetUserRequest {
            username: "me".into(),
        })
        .await
        .unwrap_err();
    assert_status(&err, Code::Unauthenticated, "missing_token");
}

#[tokio::test]
async fn depositor_reading_another_user_is_permission_denied_and_a_banker_may() {
    let app = app().await;
    let ann = app.user_session("ann").await;
    app.sign_up("bob").await;
    let err = app.get_user(&ann.access_token, "bob").await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "forbidden");
    // the same answer whether or not the user exists: nothing about other users leaks
    let err = app.get_user(&ann.access_token, "nobody").await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "forbidden");

    let banker = app.banker_session("teller").await;
    assert_eq!(
        app.get_user(&banker.access_token, "bob")
            .await
            .unwrap()
            .username,
        "bob"
    );
    let err = app
        .get_user(&banker.access_token, "nobody")
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "user_not_found");
}

fn update(username: &str) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        username: username.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn depositor_updating_another_user_is_permission_denied() {
    let app = app().await;
    let ann = app.user_session("ann").await;
    app.sign_up("bob").await;
    let req = pb::UpdateUserRequest {
        full_name: Some("Hacked".into()),
        ..update("bob")
    };
    let err = app
        .client()
        .update_user(test_support::authed(req, &ann.access_token))
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "forbidden");
    let bob = app
        .get_user(&app.banker_session("teller").await.access_token, "bob")
        .await;
    assert_eq!(bob.unwrap().full_name, "bob Example");
}

#[tokio::test]
async fn depositor_updates_own_name_and_banker_may_update_anyone() {
    let app = app().await;
    let ann = app.user_session("ann").await;
    let req = pb::UpdateUserRequest {
        full_name: Some("Ann Marie".into()),
        ..update("me")
    };
    let user = app
        .client()
        .update_user(test_support::authed(req, &ann.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.full_name, "Ann Marie");

    let banker = app.banker_session("teller").await;
    let req = pb::UpdateUserRequest {
        full_name: Some("Ann By Banker".into()),
        ..update("ann")
    };
    let user = app
        .client()
        .update_user(test_support::authed(req, &banker.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.full_name, "Ann By Banker");

    let bad = pb::UpdateUserRequest {
        full_name: Some(String::new()),
        ..update("me")
    };
    let err = app
        .client()
        .update_user(test_support::authed(bad, &ann.access_token))
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "invalid_argument");
}

#[tokio::test]
async fn password_change_revokes_the_users_other_sessions_but_not_the_current_one() {
    let app = app().await;
    let here = app.user_session("ann").await;
    let elsewhere = app.login("ann", PASSWORD).await.unwrap();
    let req = pb::UpdateUserRequest {
        password: Some("a brand new password".into()),
        ..update("me")
    };
    let user = app
        .client()
        .update_user(test_support::authed(req, &here.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(user.password_changed_at.unwrap().seconds >= user.created_at.unwrap().seconds);

    let err = app.renew(&elsewhere.refresh_token).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "session_blocked");
    app.renew(&here.refresh_token)
        .await
        .expect("the current session stays");

    let err = app.login("ann", PASSWORD).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "invalid_credentials");
    app.login("ann", "a brand new password").await.unwrap();
}

#[tokio::test]
async fn email_change_clears_the_verified_flag_and_sends_a_new_verification() {
    let app = app().await;
    let ann = app.user_session("ann").await;
    sqlx::query("UPDATE auth.users SET email_verified = true WHERE username = 'ann'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let req = pb::UpdateUserRequest {
        email: Some("ann.new@example.org".into()),
        ..update("me")
    };
    let user = app
        .client()
        .update_user(test_support::authed(req, &ann.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.email, "ann.new@example.org");
    assert!(!user.email_verified);
    let events = app.outbox("ann").await;
    assert_eq!(
        events.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [
            "user.created",
            "user.contact_updated",
            "user.email_changed",
            "user.contact_updated"
        ]
    );
    assert_eq!(events[2].1["email"], "ann.new@example.org");
    // the mailer learns the new, unverified address
    assert_eq!(events[3].1["email"], "ann.new@example.org");
    assert_eq!(events[3].1["email_verified"], false);
    assert_eq!(events[3].1["version"], 2);

    // taking someone else's address is refused
    app.sign_up("bob").await;
    let req = pb::UpdateUserRequest {
        email: Some("BOB@example.com".into()),
        ..update("me")
    };
    let err = app
        .client()
        .update_user(test_support::authed(req, &ann.access_token))
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "email_taken");
    assert_eq!(
        app.outbox("ann").await.len(),
        4,
        "the failed change wrote no event"
    );
}

#[tokio::test]
async fn update_user_turns_the_money_received_email_off_and_on_and_tells_the_mailer() {
    let app = app().await;
    let ann = app.user_session("ann").await;
    let set = |on: bool| pb::UpdateUserRequest {
        notify_money_received: Some(on),
        ..update("me")
    };
    let user = app
        .client()
        .update_user(test_support::authed(set(false), &ann.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(!user.notify_money_received);
    let shown = app.get_user(&ann.access_token, "me").await.unwrap();
    assert!(!shown.notify_money_received, "GetUser shows the preference");

    // the same value again changes nothing and tells nobody; a password change neither
    app.client()
        .update_user(test_support::authed(set(false), &ann.access_token))
        .await
        .unwrap();
    let req = pb::UpdateUserRequest {
        password: Some("a brand new password".into()),
        ..update("me")
    };
    app.client()
        .update_user(test_support::authed(req, &ann.access_token))
        .await
        .unwrap();
    let user = app
        .client()
        .update_user(test_support::authed(set(true), &ann.access_token))
        .await
        .unwrap()
        .into_inner();
    assert!(user.notify_money_received);

    let contacts: Vec<serde_json::Value> = app
        .outbox("ann")
        .await
        .into_iter()
        .filter(|(k, _)| k == "user.contact_updated")
        .map(|(_, p)| p)
        .collect();
    let seen: Vec<(bool, i64)> = contacts
        .iter()
        .map(|p| {
            (
                p["notify_money_received"].as_bool().unwrap(),
                p["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(true, 1), (false, 2), (true, 3)]);
    assert!(contacts.iter().all(|p| p["user_id"] == user.id.as_str()));
}

#[tokio::test]
async fn verifying_the_address_tells_the_mailer_it_is_verified() {
    let app = app().await;
    app.sign_up("ann").await;
    let (id, code): (i64, String) = sqlx::query_as(
        "SELECT id, secret_code FROM auth.verify_emails WHERE username = 'ann' AND NOT used",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    app.client()
        .verify_email(pb::VerifyEmailRequest {
            email_id: id,
            secret_code: code,
        })
        .await
        .unwrap();
    let (kind, last) = app.outbox("ann").await.pop().unwrap();
    assert_eq!(kind, "user.contact_updated");
    assert_eq!(last["email_verified"], true);
    assert_eq!(last["version"], 2);
}

#[tokio::test]
async fn operator_command_creates_a_verified_banker() {
    let app = app().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .args([
            "create-user",
            "--username",
            "boss",
            "--full-name",
            "The Boss",
            "--email",
            "boss@bank.example.com",
            "--role",
            "banker",
        ])
        .env("AUTH_DATABASE__URL", &app.db.url)
        .env("AUTH_NEW_USER_PASSWORD", PASSWORD)
        .env("AUTH_TELEMETRY__LOG_FORMAT", "pretty")
        .output()
        .expect("run auth create-user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = app.login("boss", PASSWORD).await.unwrap();
    let user = s.user.unwrap();
    assert_eq!(user.role, pb::Role::Banker as i32);
    assert!(user.email_verified);

    // the same name again is refused with a clear message
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .args([
            "create-user",
            "--username",
            "boss",
            "--full-name",
            "B",
            "--email",
            "b2@bank.example.com",
            "--role",
            "banker",
        ])
        .env("AUTH_DATABASE__URL", &app.db.url)
        .env("AUTH_NEW_USER_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("username already taken"));
}

#[tokio::test]
async fn operator_command_reads_the_password_from_stdin() {
    use std::io::Write;
    let app = app().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .args([
            "create-user",
            "--username",
            "dora",
            "--full-name",
            "Dora Depositor",
            "--email",
            "dora@example.com",
        ])
        .env("AUTH_DATABASE__URL", &app.db.url)
        .env_remove("AUTH_NEW_USER_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = app.login("dora", PASSWORD).await.unwrap().user.unwrap();
    assert_eq!(
        user.role,
        pb::Role::Depositor as i32,
        "depositor is the default role"
    );
}

#[tokio::test]
async fn a_nul_byte_in_a_text_field_is_invalid_argument_not_a_database_error() {
    let app = app().await;
    let refused = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(
            platform::error::reason_of(&status).as_deref(),
            Some("invalid_text"),
            "{field}"
        );
    };
    let status = app
        .client()
        .create_user(signup("zo\0e", "Zoë", "zoe@example.com", PASSWORD))
        .await
        .unwrap_err();
    refused(status, "username");
    let status = app
        .client()
        .create_user(signup("zoe", "Zo\0ë", "zoe@example.com", PASSWORD))
        .await
        .unwrap_err();
    refused(status, "full_name");
    let status = app
        .client()
        .login_user(pb::LoginUserRequest {
            username: "zo\0e".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    refused(status, "username");
    let status = app
        .client()
        .verify_email(pb::VerifyEmailRequest {
            email_id: 1,
            secret_code: "code\0".into(),
        })
        .await
        .unwrap_err();
    refused(status, "secret_code");
}

#[tokio::test]
async fn the_migration_tells_the_mailer_of_every_user_that_existed_before_it() {
    let db = test_support::TestDb::new().await;
    // the schema as it was before 20261202000800, with a user in it
    platform::db::migrate_down(&db.pool, 20261202000500)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO auth.users (username, full_name, email, hashed_password, email_verified)
         VALUES ('old', 'Old Timer', 'old@example.com', 'x', true)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    platform::db::migrate(&db.pool).await.unwrap();
    let events: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT event_type, payload FROM auth.outbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM auth.users WHERE username = 'old'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "user.contact_updated");
    let p = &events[0].1;
    assert_eq!(p["user_id"], id.to_string());
    assert_eq!(p["email"], "old@example.com");
    assert_eq!(p["email_verified"], true);
    assert_eq!(p["notify_money_received"], true);
    assert_eq!(p["version"], 1);
}
