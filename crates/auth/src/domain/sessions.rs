//! Login, refresh-token rotation with reuse detection (RFC 9700), logout.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use platform::{
    Caller,
    revocations::{self, Effect, Revocation},
    token::{Claims, Role},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Auth, AuthError, User, Username, secrets};
use crate::store;

/// Tokens handed out by login and renew (serialised only sealed: see [`renew`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    pub session_id: Uuid,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

/// Where a login comes from (what the gateway saw).
#[derive(Debug, Default, Clone)]
pub struct Client {
    pub user_agent: String,
    pub ip: String,
}

/// Unknown user and wrong password look the same: same error, about the same time (the dummy
/// hash). Failures count against the client (username and IP) and the IP (see `throttle`).
pub async fn login(
    auth: &Auth,
    username: &str,
    password: &str,
    client: &Client,
) -> Result<(User, Issued), AuthError> {
    // A malformed username cannot exist; it is still hashed against so it is not faster.
    let username = Username::parse(username).ok();
    let name = username.as_ref().map(Username::as_str);
    auth.throttle.check_login(name, &client.ip).await?;
    let user = match name {
        Some(n) => store::get_user(&auth.db, n).await?,
        None => None,
    };
    let ok = auth
        .hasher
        .verify(password, user.as_ref().map(|u| u.hashed_password.as_str()))
        .await;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            metrics::counter!("login_failures_total").increment(1);
            auth.throttle.record_login_failure(name, &client.ip).await;
            return Err(AuthError::InvalidCredentials);
        }
    };
    auth.throttle.clear_login(&user.username, &client.ip).await;

    let session_id = Uuid::new_v4();
    // whole seconds: what the client sees equals what PostgreSQL stores (microseconds)
    let refresh_expires_at =
        (Utc::now() + secs(auth.session.refresh_token_ttl_secs)).trunc_subsecs(0);
    let refresh_token = secrets::random_token();
    let mut tx = auth.db.begin().await?;
    let opened = store::insert_session(
        &mut tx,
        session_id,
        user.id,
        &user.username,
        &client.user_agent,
        &client.ip,
        refresh_expires_at,
    )
    .await
    .or_else(|e| match &e {
        // the user's deletion committed while this insert waited for its row
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => Ok(false),
        _ => Err(e),
    })?;
    if !opened {
        // deleted while its password was being checked: as if it never existed
        return Err(AuthError::InvalidCredentials);
    }
    store::insert_refresh_token(&mut tx, &secrets::token_hash(&refresh_token), session_id).await?;
    tx.commit().await?;

    let (access_token, access_expires_at) = access(
        auth,
        &user.username,
        user.id,
        user.role(),
        session_id,
        user.email_verified,
    )?;
    Ok((
        user,
        Issued {
            session_id,
            access_token,
            access_expires_at,
            refresh_token,
            refresh_expires_at,
        },
    ))
}

/// Rotates: the presented token is spent and a new one issued. Presenting a spent token again
/// revokes the session (the thief's and the owner's newest token both stop working), unless it
/// comes within `session.refresh_retry_window_secs` of the renew that spent it: then it is a retry
/// (a client whose answer was lost, or concurrent renews) and gets that renew's answer again.
///
/// That answer is kept in Redis under the spent token's hash for the window, sealed
/// (XChaCha20-Poly1305) with a key derived from the spent token itself
/// ([`secrets::seal_for_token`]): the new refresh token is never stored readable, and only the
/// holder of the spent token, who may have the answer anyway, can open it. It is written before
/// the rotation commits, while the session row is locked, so a concurrent renew waiting on that
/// lock finds it.
pub async fn renew(auth: &Auth, refresh_token: &str) -> Result<Issued, AuthError> {
    let presented = refresh_token.trim();
    let hash = secrets::token_hash(presented);
    let mut tx = auth.db.begin().await?;
    let found = store::lock_refresh_token(&mut tx, &hash)
        .await?
        .ok_or(AuthError::RefreshTokenUnknown)?;
    if found.blocked {
        return Err(AuthError::SessionBlocked);
    }
    if let Some(rotated_at) = found.rotated_at {
        let window = secs(auth.session.refresh_retry_window_secs);
        if Utc::now() - rotated_at <= window {
            drop(tx);
            return renew_again(auth, presented, &hash, found.session_id).await;
        }
        store::block_session(
            &mut *tx,
            found.session_id,
            &found.username,
            "refresh_token_reused",
        )
        .await?;
        publish_revoked(auth, &mut tx, &[found.session_id]).await?;
        tx.commit().await?;
        tracing::warn!(session_id = %found.session_id, username = %found.username,
            "refresh token reuse detected; session revoked");
        return Err(AuthError::RefreshTokenReused);
    }
    if found.expires_at <= Utc::now() {
        return Err(AuthError::SessionExpired);
    }
    store::rotate_refresh_token(&mut tx, &hash).await?;
    let new_token = secrets::random_token();
    store::insert_refresh_token(&mut tx, &secrets::token_hash(&new_token), found.session_id)
        .await?;

    let role = found.role;
    let (access_token, access_expires_at) = access(
        auth,
        &found.username,
        found.user_id,
        role,
        found.session_id,
        found.email_verified,
    )?;
    let issued = Issued {
        session_id: found.session_id,
        access_token,
        access_expires_at,
        refresh_token: new_token,
        // the session's absolute end: rotation does not extend it
        refresh_expires_at: found.expires_at,
    };
    keep_answer(auth, presented, &hash, &issued).await;
    tx.commit().await?;
    Ok(issued)
}

/// Keeps `issued` for a retry of the renew that spent `presented` (see [`renew`]). Without it a
/// retry is told to log in again, so a failure here is logged but does not fail the renew.
async fn keep_answer(auth: &Auth, presented: &str, hash: &[u8], issued: &Issued) {
    let window = auth.session.refresh_retry_window_secs;
    if window == 0 {
        return;
    }
    let sealed = serde_json::to_vec(issued)
        .map_err(|e| e.to_string())
        .and_then(|plain| {
            secrets::seal_for_token(presented, &plain).map_err(|_| "sealing failed".to_owned())
        });
    let result = match sealed {
        Ok(sealed) => {
            let key = store::renew_answer_key(&auth.key_prefix, hash);
            // one second more than the window: the window is judged by the database's clock
            store::set_renew_answer(&auth.redis, &key, &sealed, window + 1)
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    if let Err(error) = result {
        metrics::counter!("renew_answer_unsaved_total").increment(1);
        tracing::warn!(%error, session_id = %issued.session_id,
            "cannot keep the renew's answer for a retry; a retry will be told to log in again");
    }
}

/// The answer of the renew that spent `presented` moments ago, or `RefreshTokenJustRenewed`
/// (the session stays) when it cannot be had.
async fn renew_again(
    auth: &Auth,
    presented: &str,
    hash: &[u8],
    session_id: Uuid,
) -> Result<Issued, AuthError> {
    let key = store::renew_answer_key(&auth.key_prefix, hash);
    let sealed = match store::get_renew_answer(&auth.redis, &key).await {
        Ok(Some(sealed)) => sealed,
        Ok(None) => return Err(AuthError::RefreshTokenJustRenewed),
        Err(error) => {
            tracing::warn!(%error, %session_id, "cannot read a renew's answer for its retry");
            return Err(AuthError::RefreshTokenJustRenewed);
        }
    };
    let issued = secrets::open_with_token(presented, &sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice::<Issued>(&plain).ok())
        .ok_or_else(|| AuthError::Internal("a kept renew answer does not open".into()))?;
    metrics::counter!("renew_retries_answered_total").increment(1);
    tracing::info!(%session_id, "renew retried within the window: the same answer again");
    Ok(issued)
}

/// Revokes the caller's session (the `sid` of their access token).
pub async fn logout(auth: &Auth, caller: &Caller) -> Result<Uuid, AuthError> {
    let mut tx = auth.db.begin().await?;
    if store::block_session(&mut *tx, caller.session_id, &caller.username, "logged_out").await? {
        publish_revoked(auth, &mut tx, &[caller.session_id]).await?;
    }
    tx.commit().await?;
    Ok(caller.session_id)
}

/// Tells every service, through the outbox in the revoking transaction (so a revocation that
/// commits is published, and one that rolls back is not), that every access token of `sessions`
/// is refused from now on until the last of them would have expired.
pub(crate) async fn publish_revoked(
    auth: &Auth,
    conn: &mut PgConnection,
    sessions: &[Uuid],
) -> Result<(), AuthError> {
    let until = Utc::now() + secs(auth.session.access_token_ttl_secs);
    publish_revocations(conn, sessions, Effect::Revoked, until, until).await
}

/// Tells every service that the access tokens of `sessions` issued until now no longer have a
/// verified email (the address changed), so they stop moving money; the sessions stay, and a
/// renew gives a token that says so itself.
pub(crate) async fn publish_email_unverified(
    auth: &Auth,
    conn: &mut PgConnection,
    sessions: &[Uuid],
) -> Result<(), AuthError> {
    let now = Utc::now();
    let until = now + secs(auth.session.access_token_ttl_secs);
    publish_revocations(conn, sessions, Effect::EmailUnverified, now, until).await
}

async fn publish_revocations(
    conn: &mut PgConnection,
    sessions: &[Uuid],
    effect: Effect,
    issued_before: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(), AuthError> {
    for &session_id in sessions {
        let event = Revocation {
            session_id,
            effect,
            issued_before,
            until,
        };
        let payload = serde_json::to_value(&event)
            .map_err(|e| AuthError::Internal(format!("revocation event: {e}")))?;
        store::insert_outbox(conn, revocations::EVENT_TYPE, &payload, None).await?;
    }
    Ok(())
}

fn access(
    auth: &Auth,
    username: &str,
    user_id: Uuid,
    role: Role,
    sid: Uuid,
    email_verified: bool,
) -> Result<(String, DateTime<Utc>), AuthError> {
    let claims = Claims::access(
        username,
        user_id,
        role,
        sid,
        email_verified,
        Duration::from_secs(auth.session.access_token_ttl_secs),
    );
    let token = auth
        .tokens
        .sign(&claims)
        .map_err(|e| AuthError::Internal(format!("signing an access token: {e}")))?;
    Ok((token, claims.exp))
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}
