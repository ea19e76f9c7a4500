//! The accounts service's operations and the types they take. The ledger's value types
//! (`AccountId`, `Currency`, paging) come from the `ledger-model` library, which the transfers
//! service shares.

mod operations;
mod reason;

pub use ledger_model::{
    Account, AccountId, AccountKind, AccountStatus, Currencies, Currency, PageSize, PageToken,
    SYSTEM_OWNER,
};
pub use operations::Accounts;
pub use reason::{Owner, StatusReason};
