//! Sign-up, reading and updating users.

use chrono::{SubsecRound, Utc};
use platform::{Caller, token::Role};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Auth, AuthError, Email, FullName, Password, User, Username, Violation, collect, secrets,
    sessions,
};
use crate::{config::VerificationConfig, store};

/// A parsed sign-up request.
#[derive(Debug)]
pub struct SignUp {
    pub username: Username,
    pub full_name: FullName,
    pub email: Email,
    pub password: Password,
}

impl SignUp {
    /// Parses every field, reporting all violations at once.
    pub fn parse(
        username: &str,
        full_name: &str,
        email: &str,
        password: &str,
    ) -> Result<Self, AuthError> {
        let mut v = Vec::new();
        let username = collect(&mut v, Username::parse(username));
        let full_name = collect(&mut v, FullName::parse(full_name));
        let email = collect(&mut v, Email::parse(email));
        let password = collect(&mut v, Password::parse(password));
        match (username, full_name, email, password) {
            (Some(username), Some(full_name), Some(email), Some(password)) => Ok(Self {
                username,
                full_name,
                email,
                password,
            }),
            _ => Err(AuthError::Invalid(v)),
        }
    }
}

/// Signs up a depositor. In one transaction: the user, a verification record and the
/// `user.created` event; if any part fails, none of it exists.
/// `traceparent` is the request's trace context, carried with the event to the mailer.
pub async fn create_user(
    auth: &Auth,
    s: SignUp,
    traceparent: Option<&str>,
) -> Result<User, AuthError> {
    let hashed = auth.hasher.hash(&s.password).await?;
    let mut tx = auth.db.begin().await?;
    let user = store::insert_user(
        &mut tx,
        &store::NewUser {
            username: s.username.as_str(),
            full_name: s.full_name.as_str(),
            email: s.email.as_str(),
            hashed_password: &hashed,
            role: "depositor",
            email_verified: false,
        },
    )
    .await
    .map_err(AuthError::from_insert_user)?;
    send_verification(
        &mut tx,
        &user,
        "user.created",
        &auth.verification,
        traceparent,
    )
    .await?;
    publish_contact(&mut tx, &user, traceparent).await?;
    tx.commit().await?;
    tracing::info!(username = %user.username, "user signed up");
    Ok(user)
}

/// Writes a fresh verification record and the event that makes the mailer send it.
pub(crate) async fn send_verification(
    conn: &mut PgConnection,
    user: &User,
    event_type: &str,
    cfg: &VerificationConfig,
    traceparent: Option<&str>,
) -> Result<(), AuthError> {
    let secret_code = secrets::random_token();
    let ttl = chrono::Duration::seconds(i64::try_from(cfg.code_ttl_secs).unwrap_or(86_400));
    let expires_at = (Utc::now() + ttl).trunc_subsecs(0);
    let email_id =
        store::insert_verification(conn, &user.username, &user.email, &secret_code, expires_at)
            .await?;
    let payload = json!({
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "email_id": email_id,
        "secret_code": secret_code,
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    store::insert_outbox(conn, event_type, &payload, traceparent).await?;
    Ok(())
}

/// The event type that tells the mailer a user's contact data as it is now.
pub const CONTACT_UPDATED: &str = "user.contact_updated";

/// Writes `user.contact_updated` with what the mailer keeps of `user` (event-carried state: it
/// calls no service): the address, whether it is verified, the money-received preference, the
/// name, and `contact_version`, by which the mailer keeps the newest. Called in the transaction
/// of every change of those (sign-up, an update, a verification, the operator's create-user).
pub(crate) async fn publish_contact(
    conn: &mut PgConnection,
    user: &User,
    traceparent: Option<&str>,
) -> Result<(), AuthError> {
    let payload = json!({
        "user_id": user.id,
        "username": user.username,
        "full_name": user.full_name,
        "email": user.email,
        "email_verified": user.email_verified,
        "notify_money_received": user.notify_money_received,
        "version": user.contact_version,
    });
    store::insert_outbox(conn, CONTACT_UPDATED, &payload, traceparent).await?;
    Ok(())
}

/// Whose record the caller asks for: `me`/empty is the caller; a depositor may name only
/// themself (PERMISSION_DENIED otherwise, whether or not the user exists, so nothing leaks);
/// a banker may name anyone.
pub fn target(caller: &Caller, requested: &str) -> Result<String, AuthError> {
    let requested = requested.trim();
    if requested.is_empty() || requested == "me" || requested == caller.username {
        return Ok(caller.username.clone());
    }
    if caller.is_banker() {
        Ok(requested.to_owned())
    } else {
        Err(AuthError::Forbidden)
    }
}

/// `user` unless it holds the caller's username under another id: a token of a deleted user
/// whose username a new user has taken since never reaches the new user's record (its session
/// is revoked too, but revocation reaches auth through Redis and fails open).
pub(crate) fn same_user(caller: &Caller, user: Option<User>) -> Option<User> {
    user.filter(|u| u.username != caller.username || u.id == caller.user_id)
}

pub async fn get_user(auth: &Auth, caller: &Caller, requested: &str) -> Result<User, AuthError> {
    let username = target(caller, requested)?;
    same_user(caller, store::get_user(&auth.db, &username).await?).ok_or(AuthError::UserNotFound)
}

/// A parsed update; `None` fields stay as they are.
#[derive(Debug, Default)]
pub struct Changes {
    pub full_name: Option<FullName>,
    pub email: Option<Email>,
    pub password: Option<Password>,
    /// Whether the user wants the "you received money" email.
    pub notify_money_received: Option<bool>,
}

impl Changes {
    pub fn parse(
        full_name: Option<&str>,
        email: Option<&str>,
        password: Option<&str>,
        notify_money_received: Option<bool>,
    ) -> Result<Self, AuthError> {
        let mut v = Vec::new();
        let full_name = full_name.and_then(|s| collect(&mut v, FullName::parse(s)));
        let email = email.and_then(|s| collect(&mut v, Email::parse(s)));
        let password = password.and_then(|s| collect(&mut v, Password::parse(s)));
        if v.is_empty() {
            Ok(Self {
                full_name,
                email,
                password,
                notify_money_received,
            })
        } else {
            Err(AuthError::Invalid(v))
        }
    }
}

/// Updates a user. A new email clears the verified flag and sends a new verification email; a new
/// password revokes every other session of the user (the caller's own session stays when they
/// change their own password). A change of the name, the email or the money-received preference
/// writes `user.contact_updated` for the mailer, in the same transaction.
pub async fn update_user(
    auth: &Auth,
    caller: &Caller,
    requested: &str,
    changes: Changes,
    traceparent: Option<&str>,
) -> Result<User, AuthError> {
    let username = target(caller, requested)?;
    let hashed = match &changes.password {
        Some(p) => Some(auth.hasher.hash(p).await?),
        None => None,
    };
    let mut tx = auth.db.begin().await?;
    let current = same_user(caller, store::lock_user(&mut tx, &username).await?)
        .ok_or(AuthError::UserNotFound)?;
    let new_email = changes
        .email
        .as_ref()
        .map(Email::as_str)
        .filter(|e| *e != current.email);
    let user = store::update_user(
        &mut tx,
        &username,
        changes.full_name.as_ref().map(FullName::as_str),
        new_email,
        hashed.as_deref(),
        changes.notify_money_received,
    )
    .await
    .map_err(AuthError::from_insert_user)?;
    if hashed.is_some() {
        let keep = (caller.username == username).then_some(caller.session_id);
        let blocked =
            store::block_other_sessions(&mut tx, &username, keep, "password_changed").await?;
        sessions::publish_revoked(auth, &mut tx, &blocked).await?;
    }
    if new_email.is_some() {
        send_verification(
            &mut tx,
            &user,
            "user.email_changed",
            &auth.verification,
            traceparent,
        )
        .await?;
        // the access tokens out there say "verified": every service takes them as unverified
        // from now on, so they stop moving money
        let open = store::list_open_sessions(&mut tx, &username).await?;
        sessions::publish_email_unverified(auth, &mut tx, &open).await?;
    }
    if user.contact_version != current.contact_version {
        publish_contact(&mut tx, &user, traceparent).await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// What [`delete_user`] did.
#[derive(Debug)]
pub struct Deleted {
    pub username: String,
    pub id: Uuid,
    /// The open sessions revoked.
    pub sessions_revoked: usize,
}

/// Deletes a user. The caller may delete themself, confirming with their password (checked like
/// a login: wrong guesses count against the login throttle of the caller's username and IP, so
/// a stolen access token cannot be used to guess it); a banker may delete any depositor without
/// it (bankers are made and removed by the operator, not through the API). In one transaction:
/// the user row goes (its sessions, refresh tokens and verifications by ON DELETE CASCADE), every
/// open session is published as revoked (so its access tokens stop working in every service
/// within a second or two) and a `user.deleted` event is written to the outbox. The username is
/// free at once; the user's accounts stay in the ledger under the deleted id, which no later user
/// gets.
pub async fn delete_user(
    auth: &Auth,
    caller: &Caller,
    requested: &str,
    password: &str,
    client_ip: &str,
    traceparent: Option<&str>,
) -> Result<Deleted, AuthError> {
    let username = target(caller, requested)?;
    let own = username == caller.username;
    if own {
        if password.is_empty() {
            return Err(AuthError::invalid(Violation::new(
                "password",
                "required to delete yourself",
            )));
        }
        auth.throttle
            .check_login(Some(&username), client_ip)
            .await?;
    }
    let user = same_user(caller, store::get_user(&auth.db, &username).await?)
        .ok_or(AuthError::UserNotFound)?;
    if own {
        // a deleted-and-reused name was filtered above, so this is the caller's own hash
        if !auth
            .hasher
            .verify(password, Some(&user.hashed_password))
            .await
        {
            metrics::counter!("login_failures_total").increment(1);
            auth.throttle
                .record_login_failure(Some(&username), client_ip)
                .await;
            return Err(AuthError::WrongPassword);
        }
    } else if user.role() == Role::Banker {
        return Err(AuthError::BankerNotDeletable);
    }

    let mut tx = auth.db.begin().await?;
    // the row as it is now, locked: a password change since the check above is a new password
    let locked = store::lock_user(&mut tx, &username)
        .await?
        .filter(|u| u.id == user.id && (!own || u.hashed_password == user.hashed_password))
        .ok_or(AuthError::UserNotFound)?;
    let open = store::list_open_sessions(&mut tx, &locked.username).await?;
    sessions::publish_revoked(auth, &mut tx, &open).await?;
    if !store::delete_user(&mut tx, locked.id).await? {
        return Err(AuthError::UserNotFound);
    }
    let payload = json!({
        "user_id": locked.id,
        "username": locked.username,
        "deleted_by": caller.username,
        "deleted_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "sessions_revoked": open.len(),
    });
    store::insert_outbox(&mut tx, "user.deleted", &payload, traceparent).await?;
    tx.commit().await?;
    tracing::info!(username = %locked.username, user_id = %locked.id, by = %caller.username,
        sessions_revoked = open.len(), "user deleted");
    Ok(Deleted {
        username: locked.username,
        id: locked.id,
        sessions_revoked: open.len(),
    })
}
