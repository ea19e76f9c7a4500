//! "You received money": the mailer's consumer of the ledger-events stream
//! (`{prefix}events:ledger`, its own group `ledger.group`).
//!
//! # The rule
//! An event credits a customer when it is `transfer.posted`, `deposit.posted`, `hold.posted` (a
//! captured hold: the money moves now) or `transfer.reversed` (a reversal or refund: the money
//! goes back). `hold.created` credits nothing yet, `hold.voided` / `hold.expired` and
//! `withdrawal.posted` credit no customer, account events move no money. For a crediting event
//! the email goes to `to_owner_id` when
//! - it is a user (not NULL: a system account is nobody to tell),
//! - that user differs from `from_owner_id` (a move between one's own accounts is not "received"),
//! - the mailer knows the user (`mailer.recipients`, from auth's user events), not deleted, with a
//!   verified address and `notify_money_received` on.
//!
//! Every other case is acknowledged and skipped, counted as
//! `mailer_events_skipped_total{reason}` (`ignored_type`, `system_account`, `own_accounts`,
//! `unknown_recipient`, `deleted_user`, `unverified`, `opted_out`).
//!
//! # Unknown recipient
//! The two streams are not ordered with each other: a credit can come before the user event that
//! makes its recipient known (in practice only within moments of a sign-up or verification). An
//! unknown recipient is looked up again every 500 ms for `ledger.unknown_recipient_wait_ms`
//! (10 s), then the event is skipped (`unknown_recipient`, a log line): no email rather than a
//! held-up stream. A recipient who is known but unverified or opted out is skipped at once.
//!
//! # Exactly once
//! The email goes through [`Delivery`], as a verification email does: the lease and `sent`
//! marker per event id in Redis, so a duplicate stream entry (the relay publishes at least once)
//! sends nothing more within `dedupe_ttl_secs`.

use std::time::{Duration, Instant};

use redis::streams::StreamId;
use serde::Deserialize;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    dead_letter::dead_letter,
    delivery::{Delivery, ack, domain_of},
    mailer::Mailer,
    render,
};
use crate::db::{self, Recipient};

/// The event types that credit a customer's account.
pub const CREDIT_TYPES: [&str; 4] = [
    "transfer.posted",
    "deposit.posted",
    "hold.posted",
    "transfer.reversed",
];

/// The transfer row of an event's payload, as far as the email needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct Transfer {
    pub id: i64,
    pub to_account_id: i64,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    from_owner_id: Option<Uuid>,
    to_owner_id: Option<Uuid>,
    transfer: Transfer,
}

/// A crediting ledger event.
#[derive(Debug, Clone)]
pub struct Credit {
    pub event_id: String,
    /// One of [`CREDIT_TYPES`].
    pub event_type: &'static str,
    pub from_owner_id: Option<Uuid>,
    pub to_owner_id: Option<Uuid>,
    pub transfer: Transfer,
}

/// What a ledger entry is to the mailer.
#[derive(Debug)]
pub enum Parsed {
    Credit(Box<Credit>),
    /// A type that credits no one (acknowledged and skipped).
    Ignored,
}

/// Parses an entry's fields; `Err` names what is malformed (the entry is dead-lettered).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    let event_id = get("event_id").ok_or("field `event_id` is missing")?;
    Uuid::parse_str(&event_id).map_err(|_| format!("event_id is not a uuid: {event_id}"))?;
    let event_type = get("event_type").ok_or("field `event_type` is missing")?;
    let Some(kind) = CREDIT_TYPES.iter().find(|t| **t == event_type) else {
        return Ok(Parsed::Ignored);
    };
    let payload = get("payload").ok_or("field `payload` is missing")?;
    let p: Payload = serde_json::from_str(&payload)
        .map_err(|e| format!("payload of {event_type} is not of the expected shape: {e}"))?;
    Ok(Parsed::Credit(Box::new(Credit {
        event_id,
        event_type: kind,
        from_owner_id: p.from_owner_id,
        to_owner_id: p.to_owner_id,
        transfer: p.transfer,
    })))
}

/// Why no email goes out for a crediting event (the `reason` label of the skip counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    SystemAccount,
    OwnAccounts,
    UnknownRecipient,
    DeletedUser,
    Unverified,
    OptedOut,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemAccount => "system_account",
            Self::OwnAccounts => "own_accounts",
            Self::UnknownRecipient => "unknown_recipient",
            Self::DeletedUser => "deleted_user",
            Self::Unverified => "unverified",
            Self::OptedOut => "opted_out",
        }
    }
}

/// Whom the credit is for, before looking the user up: `Err` when it goes to no one.
pub fn credited_user(c: &Credit) -> Result<Uuid, Skip> {
    let to = c.to_owner_id.ok_or(Skip::SystemAccount)?;
    if c.from_owner_id == Some(to) {
        return Err(Skip::OwnAccounts);
    }
    Ok(to)
}

/// Whether the known `r` gets the email: the address and name to write to, or why not.
pub fn deliverable(r: &Recipient) -> Result<(&str, &str), Skip> {
    if r.deleted {
        return Err(Skip::DeletedUser);
    }
    let (Some(email), Some(name)) = (r.email.as_deref(), r.full_name.as_deref()) else {
        return Err(Skip::DeletedUser);
    };
    if !r.email_verified {
        return Err(Skip::Unverified);
    }
    if !r.notify_money_received {
        return Err(Skip::OptedOut);
    }
    Ok((email, name))
}

/// How often an unknown recipient is looked up again.
const UNKNOWN_RECHECK: Duration = Duration::from_millis(500);

/// Handles one ledger entry; a Redis or database error leaves it pending (reclaimed later).
pub async fn handle(mailer: &Mailer, entry: StreamId) {
    let span = tracing::info_span!("mailer.ledger_event", stream_id = %entry.id);
    let result = handle_entry(mailer, &entry).instrument(span).await;
    if let Err(e) = result {
        tracing::warn!(stream_id = %entry.id, error = %e, "could not finish handling a ledger event; the message stays pending");
    }
}

async fn handle_entry(mailer: &Mailer, entry: &StreamId) -> anyhow::Result<()> {
    let credit = match parse(|k| entry.get::<String>(k)) {
        Err(error) => {
            tracing::error!(error = %error, "invalid ledger event; dead-lettering it");
            return dead_letter(mailer, entry, None, &error, 0, "invalid_event").await;
        }
        Ok(Parsed::Ignored) => return skip_and_ack(mailer, entry, "ignored_type").await,
        Ok(Parsed::Credit(c)) => c,
    };
    let user_id = match credited_user(&credit) {
        Ok(u) => u,
        Err(why) => return skip_and_ack(mailer, entry, why.as_str()).await,
    };
    let Some(recipient) = wait_for_recipient(mailer, user_id).await? else {
        if mailer.shutdown.is_triggered() {
            // not "unknown": the wait was cut short; the entry stays pending for the next mailer
            tracing::info!(event_id = %credit.event_id, "shutdown while waiting for the recipient; the event stays pending");
            return Ok(());
        }
        tracing::warn!(%user_id, event_id = %credit.event_id,
            "the credited user is not known to the mailer (no user.contact_updated yet); no email");
        return skip_and_ack(mailer, entry, Skip::UnknownRecipient.as_str()).await;
    };
    let (email, name) = match deliverable(&recipient) {
        Ok(to) => to,
        Err(why) => return skip_and_ack(mailer, entry, why.as_str()).await,
    };
    let delivery = Delivery::new(mailer, entry, &credit.event_id, "money.received");
    let message = match render::render_money_received(
        &mailer.cfg.public_base_url,
        &mailer.from,
        (name, email),
        &render::Credited {
            id: credit.transfer.id,
            to_account_id: credit.transfer.to_account_id,
            amount: credit.transfer.amount,
            currency: &credit.transfer.currency,
            description: credit.transfer.description.as_deref(),
        },
    ) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "the email cannot be rendered; dead-lettering the event");
            return delivery
                .dead_letter(&e.to_string(), 0, "unrenderable")
                .await;
        }
    };
    delivery.run(message, domain_of(email)).await
}

/// The recipient row of `user_id`, looked up again while unknown for up to
/// `ledger.unknown_recipient_wait_ms` (or until shutdown).
async fn wait_for_recipient(mailer: &Mailer, user_id: Uuid) -> anyhow::Result<Option<Recipient>> {
    let deadline =
        Instant::now() + Duration::from_millis(mailer.cfg.ledger.unknown_recipient_wait_ms);
    loop {
        if let Some(r) = db::get_recipient(mailer.db()?, user_id).await? {
            return Ok(Some(r));
        }
        if Instant::now() + UNKNOWN_RECHECK > deadline || mailer.shutdown.is_triggered() {
            return Ok(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(UNKNOWN_RECHECK) => {},
            _ = mailer.shutdown.wait() => {},
        }
    }
}

async fn skip_and_ack(
    mailer: &Mailer,
    entry: &StreamId,
    reason: &'static str,
) -> anyhow::Result<()> {
    tracing::debug!(reason, "no money-received email for this ledger event");
    metrics::counter!("mailer_events_skipped_total", "reason" => reason).increment(1);
    ack(mailer, &entry.id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(from: Option<Uuid>, to: Option<Uuid>) -> Credit {
        Credit {
            event_id: Uuid::new_v4().to_string(),
            event_type: "transfer.posted",
            from_owner_id: from,
            to_owner_id: to,
            transfer: Transfer {
                id: 1,
                to_account_id: 2,
                amount: 100,
                currency: "USD".into(),
                description: None,
            },
        }
    }

    fn recipient(verified: bool, notify: bool) -> Recipient {
        Recipient {
            user_id: Uuid::new_v4(),
            email: Some("a@example.com".into()),
            full_name: Some("A".into()),
            email_verified: verified,
            notify_money_received: notify,
            deleted: false,
        }
    }

    #[test]
    fn the_credit_goes_to_the_payee_unless_it_is_a_system_account_or_the_payer() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(credited_user(&credit(Some(a), Some(b))), Ok(b));
        assert_eq!(credited_user(&credit(None, Some(b))), Ok(b), "a deposit");
        assert_eq!(
            credited_user(&credit(Some(a), None)),
            Err(Skip::SystemAccount)
        );
        assert_eq!(
            credited_user(&credit(Some(a), Some(a))),
            Err(Skip::OwnAccounts)
        );
    }

    #[test]
    fn only_a_verified_user_who_did_not_opt_out_is_written_to() {
        assert!(deliverable(&recipient(true, true)).is_ok());
        assert_eq!(deliverable(&recipient(false, true)), Err(Skip::Unverified));
        assert_eq!(deliverable(&recipient(true, false)), Err(Skip::OptedOut));
        let mut gone = recipient(true, true);
        (gone.deleted, gone.email, gone.full_name) = (true, None, None);
        assert_eq!(deliverable(&gone), Err(Skip::DeletedUser));
    }

    #[test]
    fn only_crediting_types_are_credits() {
        let fields = |t: &str| {
            let payload = serde_json::json!({
                "from_owner_id": null, "to_owner_id": Uuid::new_v4(), "owner_ids": [],
                "transfer": {"id": 5, "to_account_id": 9, "amount": 250, "currency": "EUR",
                             "description": "rent", "kind": "deposit"},
            });
            let map = [
                ("event_id".to_owned(), Uuid::new_v4().to_string()),
                ("event_type".to_owned(), t.to_owned()),
                ("payload".to_owned(), payload.to_string()),
            ];
            move |k: &str| map.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        for t in CREDIT_TYPES {
            assert!(matches!(parse(fields(t)), Ok(Parsed::Credit(_))), "{t}");
        }
        for t in [
            "hold.created",
            "hold.voided",
            "withdrawal.posted",
            "account.opened",
        ] {
            assert!(matches!(parse(fields(t)), Ok(Parsed::Ignored)), "{t}");
        }
        let broken = |k: &str| match k {
            "event_id" => Some(Uuid::new_v4().to_string()),
            "event_type" => Some("deposit.posted".to_owned()),
            _ => Some("{}".to_owned()),
        };
        assert!(parse(broken).is_err());
    }
}
