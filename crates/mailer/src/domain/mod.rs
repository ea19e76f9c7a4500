//! What the mailer does with one user event, and the types it takes: `event` parses a stream
//! entry (parse, don't validate), `render` builds the email, `delivery` sends it at most once
//! per success (lease, shared attempt counter, backoff, `sent` marker) and `dead_letter` moves
//! what cannot be sent aside. `Mailer` holds the parts every message task shares.

pub mod dead_letter;
pub mod delivery;
pub mod event;
pub mod mailer;
pub mod render;

pub use mailer::Mailer;
