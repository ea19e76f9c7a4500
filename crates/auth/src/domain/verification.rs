//! Email verification: single use, expiring codes.

use chrono::Utc;
use platform::Caller;

use super::{
    Auth, AuthError, secrets,
    users::{publish_contact, send_verification},
};
use crate::store;

/// Marks the user verified. A wrong id or code is NOT_FOUND (indistinguishable); a used or
/// expired code FAILED_PRECONDITION; a code for an address the user has since changed too.
/// Returns the username.
pub async fn verify_email(
    auth: &Auth,
    email_id: i64,
    secret_code: &str,
) -> Result<String, AuthError> {
    if email_id <= 0 || secret_code.is_empty() {
        return Err(AuthError::VerificationNotFound);
    }
    let mut tx = auth.db.begin().await?;
    let v = store::lock_verification(&mut tx, email_id)
        .await?
        .filter(|v| secrets::secrets_equal(&v.secret_code, secret_code))
        .ok_or(AuthError::VerificationNotFound)?;
    if v.used {
        return Err(AuthError::VerificationUsed);
    }
    if v.expires_at <= Utc::now() {
        return Err(AuthError::VerificationExpired);
    }
    let Some(user) = store::mark_user_verified(&mut tx, &v.username, &v.email).await? else {
        return Err(AuthError::VerificationSuperseded);
    };
    store::mark_verification_used(&mut tx, v.id).await?;
    // the mailer may write to this address from now on ("money received")
    publish_contact(&mut tx, &user, None).await?;
    tx.commit().await?;
    Ok(v.username)
}

/// Sends the caller a new verification email (rate-limited). Returns the address.
pub async fn resend(
    auth: &Auth,
    caller: &Caller,
    traceparent: Option<&str>,
) -> Result<String, AuthError> {
    let user = super::users::same_user(caller, store::get_user(&auth.db, &caller.username).await?)
        .ok_or(AuthError::UserNotFound)?;
    if user.email_verified {
        return Err(AuthError::AlreadyVerified);
    }
    auth.throttle.hit_resend(&user.username).await?;
    let mut tx = auth.db.begin().await?;
    send_verification(
        &mut tx,
        &user,
        "user.verification_resent",
        &auth.verification,
        traceparent,
    )
    .await?;
    tx.commit().await?;
    Ok(user.email)
}
