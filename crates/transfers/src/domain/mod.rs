//! The transfers service's operations and the types they take: money movements ([`Ledger`],
//! its batcher, [`Command`], [`Outcome`]), the reads ([`Reads`]), the reconciliation
//! ([`reconcile`]) and the error enum with its reasons. `Currency`, `AccountId` and paging come
//! from the `ledger-model` library, shared with the accounts service.

pub mod amount;
pub mod batch;
pub mod error;
pub mod ledger;
pub mod memo;
pub mod movement;
pub mod reads;
pub mod reconcile;

pub use amount::Amount;
pub use error::{LedgerError, Refusal};
pub use ledger::Ledger;
pub use ledger_model::{
    Account, AccountId, AccountKind, Currencies, Currency, PageSize, PageToken,
};
pub use memo::Memo;
pub use movement::{
    Command, EntryLine, Kind, Leg, Operation, Outcome, Reversed, Status, TransferId,
};
pub use reads::{Reads, TimeRange};
