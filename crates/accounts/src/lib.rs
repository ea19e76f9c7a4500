//! Accounts: open, read and freeze accounts (one per owner and currency); per-currency system accounts.
//!
//! main → [`cli`] → [`startup`] → [`grpc`] (handlers) → [`domain`] (operations and types) →
//! [`store`] (every SQL statement). The ledger's value types (`Currency`, `AccountId`, page
//! tokens, the account row) come from the `ledger-model` library, shared with the transfers
//! service.

pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod startup;
pub mod store;
