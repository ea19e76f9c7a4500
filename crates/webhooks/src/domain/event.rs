//! A ledger event as the stream carries it (fields `event_id`, `event_type`, `payload`; see
//! `ledger_model::events` and docs/events.md), and the body a receiver gets.

use serde_json::{Map, Value, json};
use uuid::Uuid;

/// One event, parsed from a stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEvent {
    pub event_id: Uuid,
    pub event_type: String,
    /// The users whose accounts the event concerns (never sent to receivers).
    pub owner_ids: Vec<Uuid>,
    /// The JSON body every attempt sends, byte for byte (the signature covers it).
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ledger event: {0}")]
pub struct Malformed(pub &'static str);

/// Fields of a transfer or account row not sent to receivers: who created it is a user id of
/// someone else than the receiver (a counterparty or a banker).
const PRIVATE_FIELDS: [&str; 1] = ["created_by_id"];

impl LedgerEvent {
    /// Builds the event from a stream entry's fields.
    pub fn parse(event_id: &str, event_type: &str, payload: &str) -> Result<Self, Malformed> {
        let event_id = Uuid::parse_str(event_id).map_err(|_| Malformed("event_id"))?;
        let payload: Value = serde_json::from_str(payload).map_err(|_| Malformed("payload"))?;
        let owner_ids = payload["owner_ids"]
            .as_array()
            .ok_or(Malformed("owner_ids"))?
            .iter()
            .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
            .collect();
        let data = ["transfer", "account"]
            .iter()
            .find_map(|k| payload.get(*k).and_then(Value::as_object))
            .ok_or(Malformed("transfer or account"))?;
        let data: Map<String, Value> = data
            .iter()
            .filter(|(k, _)| !PRIVATE_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = json!({
            "id": event_id,
            "type": event_type,
            "version": payload["version"],
            "occurred_at": payload["occurred_at"],
            "account_ids": payload["account_ids"],
            "data": data,
        });
        Ok(Self {
            event_id,
            event_type: event_type.to_owned(),
            owner_ids,
            body: body.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_event_id_type_and_row_but_not_the_owner_ids() {
        let id = Uuid::new_v4();
        let owner = Uuid::new_v4();
        let payload = json!({
            "version": 1, "occurred_at": "2026-12-01T00:00:00Z", "account_ids": [1, 2],
            "owner_ids": [owner],
            "transfer": {"id": 7, "amount": 500, "created_by_id": Uuid::new_v4()},
        });
        let e =
            LedgerEvent::parse(&id.to_string(), "transfer.posted", &payload.to_string()).unwrap();
        assert_eq!(e.owner_ids, vec![owner]);
        let body: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["id"], json!(id));
        assert_eq!(body["type"], "transfer.posted");
        assert_eq!(body["version"], 1);
        assert_eq!(body["data"], json!({"id": 7, "amount": 500}));
        assert!(
            !e.body.contains(&owner.to_string()),
            "owner ids stay inside"
        );
        assert_eq!(
            LedgerEvent::parse("nope", "x", "{}").unwrap_err(),
            Malformed("event_id")
        );
    }
}
