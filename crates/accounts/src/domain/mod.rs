//! The ledger's value types, parsed once at the edge of each handler ("parse, don't validate").
//! The transfers service uses the same types (it depends on this crate's library).

mod account_id;
mod currency;
mod page;

pub use account_id::AccountId;
pub use currency::{Currencies, Currency};
pub use page::{PageSize, PageToken};

/// The owner of every system (bank cash) account. `@` is not allowed in a username, so no user
/// can ever own or collide with it.
pub const SYSTEM_OWNER: &str = "@system";
