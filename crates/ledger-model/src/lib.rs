//! The ledger model shared by the accounts and transfers services.
//!
//! Both services own parts of the `ledger` schema: accounts opens and freezes account rows,
//! transfers moves their balances. What both need to agree on lives here, once, so neither
//! service links the other: the value types parsed at the edge of every handler ("parse, don't
//! validate": [`AccountId`], [`Currency`], [`PageSize`], [`PageToken`]), the account row with its
//! enum columns ([`Account`], [`AccountKind`], [`AccountStatus`]), the one read of an account
//! ([`store::get_account`]), who may see an account ([`Account::visible_to`]), and the start-up
//! job that creates each currency's system account ([`keep_ensuring_system_accounts`]), and the
//! names of the ledger's event outbox and stream ([`events`]).

mod account;
mod account_id;
mod currency;
pub mod events;
mod page;
pub mod store;
mod system_accounts;

pub use account::{Account, AccountKind, AccountStatus, SYSTEM_OWNER};
pub use account_id::AccountId;
pub use currency::{Currencies, Currency, default_currencies};
pub use page::{PageSize, PageToken};
pub use system_accounts::keep_ensuring_system_accounts;
