//! The user events auth's relay writes to the stream, parsed once at the edge of the consumer.
//!
//! Each stream entry has the fields `event_id` (uuid), `event_type`, `payload` (JSON text) and an
//! optional `traceparent`; all three event types share one payload shape.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The event types that ask for a verification email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    UserCreated,
    EmailChanged,
    VerificationResent,
}

impl EventType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user.created" => Some(Self::UserCreated),
            "user.email_changed" => Some(Self::EmailChanged),
            "user.verification_resent" => Some(Self::VerificationResent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::EmailChanged => "user.email_changed",
            Self::VerificationResent => "user.verification_resent",
        }
    }
}

/// The payload of every user event.
#[derive(Debug, Clone, Deserialize)]
pub struct VerificationPayload {
    pub username: String,
    pub full_name: String,
    pub email: String,
    /// `auth.verify_emails.id`.
    pub email_id: i64,
    pub secret_code: String,
    pub expires_at: DateTime<Utc>,
}

/// A user event the mailer acts on.
#[derive(Debug, Clone)]
pub struct UserEvent {
    pub event_id: String,
    pub event_type: EventType,
    pub payload: VerificationPayload,
    pub traceparent: Option<String>,
}

/// What a stream entry turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Event(Box<UserEvent>),
    /// A well-formed event of a type the mailer has nothing to do for (acknowledged and skipped,
    /// so new event types can be added to the stream without breaking the mailer).
    Ignored {
        event_id: String,
        event_type: String,
    },
}

/// A stream entry that can never be processed (retrying does not help): dead-lettered at once.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEvent {
    #[error("field `{0}` is missing or not text")]
    MissingField(&'static str),
    #[error("event_id is not a uuid: {0}")]
    BadEventId(String),
    #[error("payload of {event_type} is not valid JSON of the expected shape: {error}")]
    BadPayload { event_type: String, error: String },
}

/// Parses the fields of one stream entry (`field → text`).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Parsed, InvalidEvent> {
    let event_id = get("event_id").ok_or(InvalidEvent::MissingField("event_id"))?;
    uuid::Uuid::parse_str(&event_id).map_err(|_| InvalidEvent::BadEventId(event_id.clone()))?;
    let event_type = get("event_type").ok_or(InvalidEvent::MissingField("event_type"))?;
    let Some(kind) = EventType::parse(&event_type) else {
        return Ok(Parsed::Ignored {
            event_id,
            event_type,
        });
    };
    let payload = get("payload").ok_or(InvalidEvent::MissingField("payload"))?;
    let payload: VerificationPayload =
        serde_json::from_str(&payload).map_err(|e| InvalidEvent::BadPayload {
            event_type: event_type.clone(),
            error: e.to_string(),
        })?;
    Ok(Parsed::Event(Box::new(UserEvent {
        event_id,
        event_type: kind,
        payload,
        traceparent: get("traceparent").filter(|t| !t.is_empty()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const PAYLOAD: &str = r#"{"username":"alice","full_name":"Alice A","email":"a@example.com","email_id":7,"secret_code":"s3cr3t","expires_at":"2026-11-26T10:00:00Z"}"#;

    #[test]
    fn a_user_created_entry_parses() {
        let f = fields(&[
            ("event_id", "0b8e8f3e-6f7a-4f55-9d5c-3f0f4d0c2a11"),
            ("event_type", "user.created"),
            ("payload", PAYLOAD),
        ]);
        let Parsed::Event(e) = parse(|k| f.get(k).cloned()).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(e.event_type, EventType::UserCreated);
        assert_eq!(e.payload.email_id, 7);
        assert_eq!(e.traceparent, None);
    }

    #[test]
    fn an_unknown_event_type_is_ignored_not_rejected() {
        let f = fields(&[
            ("event_id", "0b8e8f3e-6f7a-4f55-9d5c-3f0f4d0c2a11"),
            ("event_type", "user.deleted"),
        ]);
        assert!(matches!(
            parse(|k| f.get(k).cloned()).unwrap(),
            Parsed::Ignored { .. }
        ));
    }

    #[test]
    fn a_broken_payload_is_invalid() {
        let f = fields(&[
            ("event_id", "0b8e8f3e-6f7a-4f55-9d5c-3f0f4d0c2a11"),
            ("event_type", "user.created"),
            ("payload", "{not json"),
        ]);
        assert!(matches!(
            parse(|k| f.get(k).cloned()),
            Err(InvalidEvent::BadPayload { .. })
        ));
    }
}
