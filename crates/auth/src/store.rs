//! Every SQL statement and every Redis command of the auth service, one function each, named
//! `<verb>_<noun>`. Callers pass a transaction when several statements must commit together.
//! Nothing here decides anything: the domain does, with what these return.

use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use platform::token::Role;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

// --- users ----------------------------------------------------------------------------------

/// A row of `auth.users`.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    /// The stable id (never reused); what access tokens carry as `uid`.
    pub id: Uuid,
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub hashed_password: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub email_verified: bool,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Whether the user wants the "you received money" email.
    pub notify_money_received: bool,
    /// Counts the changes of the contact data the mailer keeps (the `version` of
    /// `user.contact_updated`).
    pub contact_version: i64,
}

impl User {
    pub fn role(&self) -> Role {
        self.role
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("email_verified", &self.email_verified)
            .finish_non_exhaustive()
    }
}

const USER_COLUMNS: &str = "id, username, full_name, email, hashed_password, role, email_verified, \
                            password_changed_at, created_at, notify_money_received, contact_version";

pub struct NewUser<'a> {
    pub username: &'a str,
    pub full_name: &'a str,
    pub email: &'a str,
    pub hashed_password: &'a str,
    pub role: &'a str,
    pub email_verified: bool,
}

/// Fails with a unique violation on `users_pkey` (username) or `users_email_key` (email).
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.insert_user", otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_user(conn: &mut PgConnection, u: &NewUser<'_>) -> Result<User, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO auth.users (username, full_name, email, hashed_password, role, email_verified)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
    )))
    .bind(u.username)
    .bind(u.full_name)
    .bind(u.email)
    .bind(u.hashed_password)
    .bind(u.role)
    .bind(u.email_verified)
    .fetch_one(conn)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.get_user", otel.kind = "client", db.system = "postgresql"))]
pub async fn get_user<'e>(
    db: impl PgExecutor<'e>,
    username: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM auth.users WHERE username = $1"
    )))
    .bind(username)
    .fetch_optional(db)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.lock_user", otel.kind = "client", db.system = "postgresql"))]
pub async fn lock_user(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM auth.users WHERE username = $1 FOR UPDATE"
    )))
    .bind(username)
    .fetch_optional(conn)
    .await
}

/// Sets the given fields; a new email clears the verified flag, a new password stamps
/// `password_changed_at`, and a change of the contact data (name, email, the money-received
/// preference) counts one more `contact_version`. Fails with a unique violation on
/// `users_email_key`.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.update_user", otel.kind = "client", db.system = "postgresql"))]
pub async fn update_user(
    conn: &mut PgConnection,
    username: &str,
    full_name: Option<&str>,
    email: Option<&str>,
    hashed_password: Option<&str>,
    notify_money_received: Option<bool>,
) -> Result<User, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "UPDATE auth.users SET
             full_name = COALESCE($2, full_name),
             email = COALESCE($3, email),
             email_verified = CASE WHEN $3::text IS NULL THEN email_verified ELSE false END,
             hashed_password = COALESCE($4, hashed_password),
             password_changed_at = CASE WHEN $4::text IS NULL THEN password_changed_at ELSE now() END,
             notify_money_received = COALESCE($5, notify_money_received),
             contact_version = contact_version
                 + CASE WHEN ($2::text IS NOT NULL AND $2 <> full_name)
                          OR ($3::text IS NOT NULL AND $3 <> email)
                          OR ($5::boolean IS NOT NULL AND $5 <> notify_money_received)
                        THEN 1 ELSE 0 END
         WHERE username = $1
         RETURNING {USER_COLUMNS}"
    )))
    .bind(username)
    .bind(full_name)
    .bind(email)
    .bind(hashed_password)
    .bind(notify_money_received)
    .fetch_one(conn)
    .await
}

/// Marks the user verified if `email` is still their address (one more `contact_version`);
/// `None` when it changed since.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.mark_user_verified", otel.kind = "client", db.system = "postgresql"))]
pub async fn mark_user_verified(
    conn: &mut PgConnection,
    username: &str,
    email: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "UPDATE auth.users SET email_verified = true, contact_version = contact_version + 1
         WHERE username = $1 AND lower(email) = lower($2)
         RETURNING {USER_COLUMNS}"
    )))
    .bind(username)
    .bind(email)
    .fetch_optional(conn)
    .await
}

/// Deletes the user `id`; its sessions, their refresh tokens and its verifications go with it
/// (ON DELETE CASCADE). False when there is no such user.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.delete_user", otel.kind = "client", db.system = "postgresql"))]
pub async fn delete_user(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM auth.users WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

// --- email verification ---------------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
pub struct Verification {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub secret_code: String,
    pub used: bool,
    pub expires_at: DateTime<Utc>,
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.insert_verification", otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_verification(
    conn: &mut PgConnection,
    username: &str,
    email: &str,
    secret_code: &str,
    expires_at: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO auth.verify_emails (username, email, secret_code, expires_at)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(username)
    .bind(email)
    .bind(secret_code)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.lock_verification", otel.kind = "client", db.system = "postgresql"))]
pub async fn lock_verification(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<Verification>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, email, secret_code, used, expires_at
         FROM auth.verify_emails WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.mark_verification_used", otel.kind = "client", db.system = "postgresql"))]
pub async fn mark_verification_used(conn: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE auth.verify_emails SET used = true WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

// --- outbox ---------------------------------------------------------------------------------

/// Reserved payload key holding the trace context inside `auth.outbox` (never published in the
/// payload): the relay's.
pub use platform::outbox::TRACEPARENT_KEY;

/// The channel the relay LISTENs on.
pub const OUTBOX_CHANNEL: &str = "auth_outbox";

/// Writes an event in the caller's transaction and wakes the relay when that transaction commits
/// (NOTIFY is transactional: a rolled-back event wakes no one).
///
/// `traceparent` (W3C trace context of the request) has no column of its own: it is kept in the
/// row's payload under [`TRACEPARENT_KEY`] and moved to the stream entry's own field by the relay,
/// so the published payload is exactly the event contract.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.insert_outbox", otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_outbox(
    conn: &mut PgConnection,
    event_type: &str,
    payload: &serde_json::Value,
    traceparent: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::now_v7();
    let mut payload = payload.clone();
    if let (Some(tp), Some(obj)) = (traceparent, payload.as_object_mut()) {
        obj.insert(TRACEPARENT_KEY.into(), tp.into());
    }
    sqlx::query("INSERT INTO auth.outbox (event_id, event_type, payload) VALUES ($1, $2, $3)")
        .bind(event_id)
        .bind(event_type)
        .bind(&payload)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(conn)
        .await?;
    Ok(event_id)
}

// --- sessions -------------------------------------------------------------------------------

/// Opens a session of the user `user_id` (username `username`); false when that username no
/// longer belongs to that id (deleted since the password was checked, perhaps taken again by a
/// new user), so no session of one user is ever opened for another.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.insert_session", otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_session(
    conn: &mut PgConnection,
    id: Uuid,
    user_id: Uuid,
    username: &str,
    user_agent: &str,
    client_ip: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO auth.sessions (id, username, user_agent, client_ip, expires_at)
         SELECT $1, username, $3, $4, $5 FROM auth.users WHERE username = $2 AND id = $6",
    )
    .bind(id)
    .bind(username)
    .bind(user_agent)
    .bind(client_ip)
    .bind(expires_at)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.insert_refresh_token", otel.kind = "client", db.system = "postgresql"))]
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
    session_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
        .bind(token_hash)
        .bind(session_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// A presented refresh token with its session and user, the session and token rows locked so
/// concurrent renewals of one session are serialised. The token row is locked too so that a renew
/// that waited sees the `rotated_at` the one before it wrote (PostgreSQL re-reads only the rows
/// it locks after a wait; it used to see NULL and fail on `refresh_tokens_one_current`).
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshLookup {
    pub session_id: Uuid,
    pub rotated_at: Option<DateTime<Utc>>,
    pub blocked: bool,
    pub expires_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub email_verified: bool,
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.lock_refresh_token", otel.kind = "client", db.system = "postgresql"))]
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshLookup>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id AS session_id, t.rotated_at, s.blocked, s.expires_at, u.id AS user_id, u.username, u.role,
                u.email_verified
         FROM auth.refresh_tokens t
         JOIN auth.sessions s ON s.id = t.session_id
         JOIN auth.users u ON u.username = s.username
         WHERE t.token_hash = $1
         FOR UPDATE OF s, t",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.rotate_refresh_token", otel.kind = "client", db.system = "postgresql"))]
pub async fn rotate_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE auth.refresh_tokens SET rotated_at = now() WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Blocks one session of `username`; false when there is no such session.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.block_session", otel.kind = "client", db.system = "postgresql"))]
pub async fn block_session<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
    username: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE auth.sessions SET blocked = true, blocked_reason = COALESCE(blocked_reason, $3)
         WHERE id = $1 AND username = $2",
    )
    .bind(id)
    .bind(username)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Blocks every open session of `username` except `keep`; returns the ids it blocked.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.block_other_sessions", otel.kind = "client", db.system = "postgresql"))]
pub async fn block_other_sessions(
    conn: &mut PgConnection,
    username: &str,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE auth.sessions SET blocked = true, blocked_reason = $3
         WHERE username = $1 AND NOT blocked AND expires_at > now()
           AND ($2::uuid IS NULL OR id <> $2)
         RETURNING id",
    )
    .bind(username)
    .bind(keep)
    .bind(reason)
    .fetch_all(conn)
    .await
}

/// The ids of the sessions of `username` that are neither blocked nor expired.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "auth.list_open_sessions", otel.kind = "client", db.system = "postgresql"))]
pub async fn list_open_sessions(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM auth.sessions WHERE username = $1 AND NOT blocked AND expires_at > now()",
    )
    .bind(username)
    .fetch_all(conn)
    .await
}

// --- login and resend throttles (Redis) -----------------------------------------------------
//
// Fixed-window counters under `{prefix}auth:...`: a key is created with its window's expiry by the
// first hit, and INCR never touches the expiry, so the window ends `window_secs` after it began.
// A wait is a key that exists for as long as the wait lasts (`SET ... PX`).

/// The Redis keys of one login attempt: its client's (a username and IP pair, when the username
/// is well formed) and its IP's.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    client_failures: Option<String>,
    client_wait: Option<String>,
    known_client: Option<String>,
    ip_failures: String,
    ip_wait: String,
}

impl LoginKeys {
    pub fn new(prefix: &str, username: Option<&str>, ip: &str) -> Self {
        // bounded: the IP comes from metadata (a parsed username is bounded already)
        let ip: String = ip.chars().take(64).collect();
        let ip = if ip.is_empty() { "unknown".into() } else { ip };
        let client = |kind: &str| username.map(|u| format!("{prefix}auth:{kind}:client:{u}@{ip}"));
        Self {
            client_failures: client("login_failures"),
            client_wait: client("login_wait"),
            known_client: client("login_known"),
            ip_failures: format!("{prefix}auth:login_failures:ip:{ip}"),
            ip_wait: format!("{prefix}auth:login_wait:ip:{ip}"),
        }
    }
}

/// How long a login attempt must still wait, in ms (0: not at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginWaits {
    pub client_ms: u64,
    pub ip_ms: u64,
    /// The username has logged in from this IP before.
    pub known_client: bool,
}

/// The waits of a login attempt; one round trip (PTTL, PTTL, EXISTS).
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.check_login", otel.kind = "client", db.system = "redis"))]
pub async fn get_login_waits(redis: &Pool, keys: &LoginKeys) -> redis::RedisResult<LoginWaits> {
    let mut conn = redis.get().await.map_err(to_redis_err)?;
    let absent = "-";
    let (client_ttl, ip_ttl, known): (i64, i64, bool) = redis::pipe()
        .cmd("PTTL")
        .arg(keys.client_wait.as_deref().unwrap_or(absent))
        .cmd("PTTL")
        .arg(&keys.ip_wait)
        .cmd("EXISTS")
        .arg(keys.known_client.as_deref().unwrap_or(absent))
        .query_async(&mut *conn)
        .await?;
    let ms = |ttl: i64| u64::try_from(ttl).unwrap_or(0);
    Ok(LoginWaits {
        client_ms: keys.client_wait.as_ref().map_or(0, |_| ms(client_ttl)),
        ip_ms: ms(ip_ttl),
        known_client: keys.known_client.is_some() && known,
    })
}

/// Failures counted in the current windows, after counting one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    pub client: Option<u64>,
    pub ip: u64,
}

/// Counts one failed login for the client (when there is one) and the IP, each in a window of
/// `window_secs` from its first failure.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.record_login_failure", otel.kind = "client", db.system = "redis"))]
pub async fn incr_login_failures(
    redis: &Pool,
    keys: &LoginKeys,
    window_secs: u64,
) -> redis::RedisResult<LoginFailures> {
    let client = match &keys.client_failures {
        Some(key) => Some(incr_in_window(redis, key, window_secs).await?.count),
        None => None,
    };
    let ip = incr_in_window(redis, &keys.ip_failures, window_secs)
        .await?
        .count;
    Ok(LoginFailures { client, ip })
}

/// Starts the waits that are not 0 (a wait already running is replaced: it only grows).
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.set_login_waits", otel.kind = "client", db.system = "redis"))]
pub async fn set_login_waits(
    redis: &Pool,
    keys: &LoginKeys,
    client_ms: u64,
    ip_ms: u64,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    if let (Some(key), true) = (&keys.client_wait, client_ms > 0) {
        pipe.cmd("SET")
            .arg(key)
            .arg(1)
            .arg("PX")
            .arg(client_ms)
            .ignore();
    }
    if ip_ms > 0 {
        pipe.cmd("SET")
            .arg(&keys.ip_wait)
            .arg(1)
            .arg("PX")
            .arg(ip_ms)
            .ignore();
    }
    let mut conn = redis.get().await.map_err(to_redis_err)?;
    pipe.query_async(&mut *conn).await
}

/// After a success: the client's failures and wait go, and the client is known at this IP for
/// `known_ttl_secs`.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.clear_login", otel.kind = "client", db.system = "redis"))]
pub async fn forget_login_failures(
    redis: &Pool,
    keys: &LoginKeys,
    known_ttl_secs: u64,
) -> redis::RedisResult<()> {
    let (Some(failures), Some(wait), Some(known)) =
        (&keys.client_failures, &keys.client_wait, &keys.known_client)
    else {
        return Ok(());
    };
    let mut conn = redis.get().await.map_err(to_redis_err)?;
    redis::pipe()
        .cmd("DEL")
        .arg(failures)
        .arg(wait)
        .ignore()
        .cmd("SET")
        .arg(known)
        .arg(1)
        .arg("EX")
        .arg(known_ttl_secs)
        .ignore()
        .query_async(&mut *conn)
        .await
}

/// The resend-verification counter of one username.
pub fn resend_requests_key(prefix: &str, username: &str) -> String {
    format!("{prefix}auth:resend_verification:{username}")
}

/// The sealed answer of the renew that spent the refresh token whose hash is `token_hash`.
pub fn renew_answer_key(prefix: &str, token_hash: &[u8]) -> String {
    let hex: String = token_hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}auth:renew_answer:{hex}")
}

/// Keeps a renew's sealed answer for `ttl_secs`.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.set_renew_answer", otel.kind = "client", db.system = "redis"))]
pub async fn set_renew_answer(
    redis: &Pool,
    key: &str,
    sealed: &[u8],
    ttl_secs: u64,
) -> redis::RedisResult<()> {
    let mut conn = redis.get().await.map_err(to_redis_err)?;
    redis::cmd("SET")
        .arg(key)
        .arg(sealed)
        .arg("EX")
        .arg(ttl_secs)
        .query_async(&mut *conn)
        .await
}

#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.get_renew_answer", otel.kind = "client", db.system = "redis"))]
pub async fn get_renew_answer(redis: &Pool, key: &str) -> redis::RedisResult<Option<Vec<u8>>> {
    let mut conn = redis.get().await.map_err(to_redis_err)?;
    redis::cmd("GET").arg(key).query_async(&mut *conn).await
}

/// A counter and how long its window has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub count: u64,
    /// At least 1, also for a key without expiry or one that just expired (Redis says -1 or -2):
    /// a client told to retry is never told "in 0 s".
    pub seconds_left: u64,
}

/// Counts one resend request, in a window of `window_secs` from the first; returns the window.
#[tracing::instrument(name = "redis", skip_all, fields(otel.name = "auth.throttle.hit_resend", otel.kind = "client", db.system = "redis"))]
pub async fn incr_resend_requests(
    redis: &Pool,
    key: &str,
    window_secs: u64,
) -> redis::RedisResult<Window> {
    incr_in_window(redis, key, window_secs).await
}

/// INCR a counter whose window starts with its first hit (one pipeline: SET NX EX starts the
/// window once; INCR never touches the expiry).
async fn incr_in_window(redis: &Pool, key: &str, window_secs: u64) -> redis::RedisResult<Window> {
    let mut conn = redis.get().await.map_err(to_redis_err)?;
    let (count, ttl): (u64, i64) = redis::pipe()
        .cmd("SET")
        .arg(key)
        .arg(0)
        .arg("EX")
        .arg(window_secs)
        .arg("NX")
        .ignore()
        .cmd("INCR")
        .arg(key)
        .cmd("TTL")
        .arg(key)
        .query_async(&mut *conn)
        .await?;
    Ok(Window {
        count,
        seconds_left: seconds_left(ttl),
    })
}

/// A TTL reply as seconds left, at least 1 (see [`Window::seconds_left`]).
fn seconds_left(ttl: i64) -> u64 {
    u64::try_from(ttl).unwrap_or(1).max(1)
}

fn to_redis_err(e: deadpool_redis::PoolError) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(e.to_string()))
}

// --- user-events stream (Redis) -------------------------------------------------------------

/// The user-events stream the relay writes and the mailer reads.
pub fn stream_key(prefix: &str) -> String {
    format!("{prefix}events:users")
}
