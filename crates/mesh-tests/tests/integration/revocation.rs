//! Revocation that bites for money: a session revoked in auth (logout, a password change) stops
//! moving money in transfers within 2 s, and so does a token that says "verified" after an email
//! change, through auth's outbox and relay to the revoked-session
//! stream every service follows (`platform::revocations`), with no database call per request.

use std::time::{Duration, Instant};

use crate::support::Mesh;
use platform::token::Role;
use proto::{
    auth::v1::{LoginUserRequest, LogoutRequest, UpdateUserRequest},
    transfers::v1::CreateTransferRequest,
};

const PASSWORD: &str = "correct-horse-42";
/// What the finding asks: refused within 2 s of the revocation.
const WITHIN: Duration = Duration::from_secs(2);

/// A verified depositor `ann` with a funded USD account, a payee account, and the mesh.
async fn funded() -> (Mesh, i64, i64) {
    let m = Mesh::start().await;
    auth::admin::create_user(
        &m.db.pool,
        "ann",
        "Ann Example",
        "ann@example.com",
        PASSWORD,
        Role::Depositor,
    )
    .await
    .expect("ann");
    // with a token of the real ann (her user id): accounts belong to ids, not to usernames
    let from = m.open_account(&login(&m).await, "USD").await;
    let to = m
        .open_account(&m.token("bob", Role::Depositor), "USD")
        .await;
    m.deposit(from, 100_000, "USD").await;
    (m, from, to)
}

async fn login(m: &Mesh) -> String {
    m.auth_client
        .clone()
        .login_user(LoginUserRequest {
            username: "ann".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token
}

async fn transfer(m: &Mesh, token: &str, from: i64, to: i64) -> Result<(), tonic::Status> {
    m.transfers_client
        .clone()
        .create_transfer(test_support::authed(
            CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount: 1,
                currency: "USD".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|_| ())
}

/// Retries a 1-cent transfer with `token` until it is refused with `reason`; fails after
/// [`WITHIN`].
async fn refused_within(
    m: &Mesh,
    token: &str,
    (from, to): (i64, i64),
    reason: &str,
    revoked_at: Instant,
) {
    loop {
        match transfer(m, token, from, to).await {
            Err(e) if platform::error::reason_of(&e).as_deref() == Some(reason) => return,
            Err(e) => panic!("unexpected refusal: {e:?}"),
            Ok(()) => assert!(
                revoked_at.elapsed() < WITHIN,
                "the revoked session still moved money {:?} after the revocation",
                revoked_at.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_logged_out_sessions_token_is_refused_by_create_transfer_within_2_s() {
    let (m, from, to) = funded().await;
    let token = login(&m).await;
    transfer(&m, &token, from, to)
        .await
        .expect("moves money while logged in");

    m.auth_client
        .clone()
        .logout(test_support::authed(LogoutRequest {}, &token))
        .await
        .expect("logout");
    refused_within(&m, &token, (from, to), "token_revoked", Instant::now()).await;
    m.stop().await;
}

#[tokio::test]
async fn a_password_change_revokes_the_other_sessions_tokens_within_2_s() {
    let (m, from, to) = funded().await;
    let stolen = login(&m).await;
    let owner = login(&m).await;
    transfer(&m, &stolen, from, to)
        .await
        .expect("both sessions move money");

    m.auth_client
        .clone()
        .update_user(test_support::authed(
            UpdateUserRequest {
                username: "me".into(),
                password: Some("a-brand-new-password".into()),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("change password");
    refused_within(&m, &stolen, (from, to), "token_revoked", Instant::now()).await;
    transfer(&m, &owner, from, to)
        .await
        .expect("the session that changed the password keeps working");
    m.stop().await;
}

#[tokio::test]
async fn after_an_email_change_a_token_that_says_verified_stops_moving_money_within_2_s() {
    let (m, from, to) = funded().await;
    let token = login(&m).await;
    transfer(&m, &token, from, to)
        .await
        .expect("verified: moves money");

    m.auth_client
        .clone()
        .update_user(test_support::authed(
            UpdateUserRequest {
                username: "me".into(),
                email: Some("ann@new.example.com".into()),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("change email");
    refused_within(&m, &token, (from, to), "email_not_verified", Instant::now()).await;
    m.stop().await;
}
