//! What the mailer does with one stream entry, and the types it takes. For user events: `event`
//! parses an entry (parse, don't validate), `render` builds the verification email; `recipients`
//! keeps the recipients table from `user.contact_updated` / `user.deleted`. For ledger events:
//! `money` decides whether the credited user gets a "you received money" email and renders it.
//! `delivery` sends an email at most once per success (lease, shared attempt counter, backoff,
//! `sent` marker) and `dead_letter` moves what cannot be handled aside. `Mailer` holds the parts
//! every message task shares.

pub mod dead_letter;
pub mod delivery;
pub mod event;
pub mod mailer;
pub mod money;
pub mod recipients;
pub mod render;

pub use mailer::{Mailer, Source};
use redis::streams::StreamId;

/// Handles one entry of the mailer's `source` stream.
pub async fn handle(mailer: &Mailer, entry: StreamId) {
    match mailer.source {
        Source::Verification => delivery::handle(mailer, entry).await,
        Source::Recipients => recipients::handle(mailer, entry).await,
        Source::Ledger => money::handle(mailer, entry).await,
    }
}
