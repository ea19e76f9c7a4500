//! The recipients table, from auth's user events (event-carried state: the mailer calls no other
//! service). `user.contact_updated` (written by auth at sign-up, on a change of name, address or
//! the money-received preference, on verification, and once per user by the migration that
//! introduced it) upserts the user's row, the higher `version` winning, so events that arrive
//! twice or out of order leave the newest; `user.deleted` turns the row into a tombstone (address
//! and name forgotten) that no older event brings back. Every other user event is acknowledged
//! and skipped: this consumer group (`recipients.group`) reads the stream beside the
//! verification emails' own.

use redis::streams::StreamId;
use serde::Deserialize;
use uuid::Uuid;

use super::{dead_letter::dead_letter, delivery::ack, mailer::Mailer};
use crate::db::{self, Contact};

/// The event types this consumer acts on.
pub const CONTACT_UPDATED: &str = "user.contact_updated";
pub const USER_DELETED: &str = "user.deleted";

#[derive(Deserialize)]
struct ContactPayload {
    user_id: Uuid,
    email: String,
    full_name: String,
    email_verified: bool,
    notify_money_received: bool,
    version: i64,
}

#[derive(Deserialize)]
struct DeletedPayload {
    user_id: Uuid,
}

/// What an entry asks of the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Upsert(Contact),
    Forget(Uuid),
    /// Another user event (verification mail, a revocation...): nothing to keep.
    None,
}

/// Parses an entry's `event_type` and `payload`; `Err` names what is malformed.
pub fn parse(event_type: Option<&str>, payload: Option<&str>) -> Result<Change, String> {
    let event_type = event_type.ok_or("field `event_type` is missing")?;
    if event_type != CONTACT_UPDATED && event_type != USER_DELETED {
        return Ok(Change::None);
    }
    let payload = payload.ok_or("field `payload` is missing")?;
    let bad = |e: serde_json::Error| format!("payload of {event_type}: {e}");
    if event_type == USER_DELETED {
        let p: DeletedPayload = serde_json::from_str(payload).map_err(bad)?;
        return Ok(Change::Forget(p.user_id));
    }
    let p: ContactPayload = serde_json::from_str(payload).map_err(bad)?;
    if p.version <= 0 {
        return Err(format!("payload of {event_type}: version must be positive"));
    }
    Ok(Change::Upsert(Contact {
        user_id: p.user_id,
        email: p.email,
        full_name: p.full_name,
        email_verified: p.email_verified,
        notify_money_received: p.notify_money_received,
        version: p.version,
    }))
}

/// Applies one entry to the table, then acknowledges it. A database error leaves it pending (it
/// is reclaimed and applied again later: the upsert is idempotent).
pub async fn handle(mailer: &Mailer, entry: StreamId) {
    if let Err(e) = apply(mailer, &entry).await {
        tracing::warn!(stream_id = %entry.id, error = %e, "could not update the recipients table; the message stays pending");
    }
}

async fn apply(mailer: &Mailer, entry: &StreamId) -> anyhow::Result<()> {
    let event_type = entry.get::<String>("event_type");
    let payload = entry.get::<String>("payload");
    match parse(event_type.as_deref(), payload.as_deref()) {
        Err(error) => {
            tracing::error!(error = %error, "invalid user event; dead-lettering it");
            dead_letter(mailer, entry, None, &error, 0, "invalid_event").await
        }
        Ok(Change::None) => ack(mailer, &entry.id).await,
        Ok(Change::Upsert(contact)) => {
            let written = db::upsert_recipient(mailer.db()?, &contact).await?;
            metrics::counter!("mailer_recipient_updates_total",
                "outcome" => if written { "written" } else { "stale" })
            .increment(1);
            tracing::debug!(user_id = %contact.user_id, version = contact.version, written, "recipient updated");
            ack(mailer, &entry.id).await
        }
        Ok(Change::Forget(user_id)) => {
            db::forget_recipient(mailer.db()?, user_id).await?;
            metrics::counter!("mailer_recipient_updates_total", "outcome" => "forgotten")
                .increment(1);
            tracing::info!(%user_id, "recipient forgotten (user deleted)");
            ack(mailer, &entry.id).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_event_parses_and_other_user_events_are_nothing() {
        let id = Uuid::new_v4();
        let payload = serde_json::json!({
            "user_id": id, "username": "ann", "full_name": "Ann", "email": "ann@example.com",
            "email_verified": true, "notify_money_received": false, "version": 3,
        })
        .to_string();
        let Change::Upsert(c) = parse(Some(CONTACT_UPDATED), Some(&payload)).unwrap() else {
            panic!("not an upsert")
        };
        assert_eq!(
            (c.user_id, c.version, c.notify_money_received),
            (id, 3, false)
        );
        assert_eq!(parse(Some("user.created"), None).unwrap(), Change::None);
        let deleted = serde_json::json!({"user_id": id, "username": "ann"}).to_string();
        assert_eq!(
            parse(Some(USER_DELETED), Some(&deleted)).unwrap(),
            Change::Forget(id)
        );
    }

    #[test]
    fn a_malformed_contact_event_is_an_error() {
        assert!(parse(Some(CONTACT_UPDATED), Some("{}")).is_err());
        assert!(parse(Some(CONTACT_UPDATED), None).is_err());
        assert!(parse(None, None).is_err());
    }
}
