//! Every SQL statement of the mailer, one function each: the recipients table
//! (`mailer.recipients`), which the mailer keeps from auth's user events and reads before a
//! "money received" email. Nothing here decides anything.

use sqlx::PgExecutor;
use uuid::Uuid;

/// What a `user.contact_updated` event says of a user.
#[derive(Clone, PartialEq, Eq)]
pub struct Contact {
    pub user_id: Uuid,
    pub email: String,
    pub full_name: String,
    pub email_verified: bool,
    pub notify_money_received: bool,
    /// `auth.users.contact_version`: the higher wins.
    pub version: i64,
}

// the address and name are personal data: not in logs through `{:?}`
impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("user_id", &self.user_id)
            .field("email_verified", &self.email_verified)
            .field("notify_money_received", &self.notify_money_received)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A row of `mailer.recipients`.
#[derive(Clone, sqlx::FromRow)]
pub struct Recipient {
    pub user_id: Uuid,
    /// `None` once the user was deleted.
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub email_verified: bool,
    pub notify_money_received: bool,
    pub deleted: bool,
}

/// The version a tombstone holds: no event of the user is newer.
const TOMBSTONE_VERSION: i64 = i64::MAX;

/// Writes `c` unless the row holds the same or a newer version (a replayed or overtaken event
/// changes nothing). True when it was written.
pub async fn upsert_recipient<'e>(db: impl PgExecutor<'e>, c: &Contact) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO mailer.recipients
             (user_id, email, full_name, email_verified, notify_money_received, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET
             email = EXCLUDED.email,
             full_name = EXCLUDED.full_name,
             email_verified = EXCLUDED.email_verified,
             notify_money_received = EXCLUDED.notify_money_received,
             version = EXCLUDED.version,
             updated_at = now()
         WHERE mailer.recipients.version < EXCLUDED.version",
    )
    .bind(c.user_id)
    .bind(&c.email)
    .bind(&c.full_name)
    .bind(c.email_verified)
    .bind(c.notify_money_received)
    .bind(c.version)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets the user `user_id`: the row becomes a tombstone without address or name, which no
/// later (older) contact event replaces.
pub async fn forget_recipient<'e>(db: impl PgExecutor<'e>, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO mailer.recipients
             (user_id, email, full_name, email_verified, notify_money_received, version, deleted)
         VALUES ($1, NULL, NULL, false, false, $2, true)
         ON CONFLICT (user_id) DO UPDATE SET
             email = NULL, full_name = NULL, email_verified = false,
             notify_money_received = false, version = EXCLUDED.version, deleted = true,
             updated_at = now()",
    )
    .bind(user_id)
    .bind(TOMBSTONE_VERSION)
    .execute(db)
    .await
    .map(|_| ())
}

/// The row of `user_id`, if the mailer has heard of that user.
pub async fn get_recipient<'e>(
    db: impl PgExecutor<'e>,
    user_id: Uuid,
) -> sqlx::Result<Option<Recipient>> {
    sqlx::query_as(
        "SELECT user_id, email, full_name, email_verified, notify_money_received, deleted
         FROM mailer.recipients WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
}
