//! The transfers service's value types and errors. `Currency`, `AccountId` and paging come from
//! the accounts crate, so both services parse them the same way.

mod amount;
mod error;

pub use accounts::domain::{AccountId, Currencies, Currency, PageSize, PageToken};
pub use amount::Amount;
pub use error::LedgerError;
