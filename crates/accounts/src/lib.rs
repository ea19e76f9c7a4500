//! Accounts: open, read and freeze accounts (one per owner and currency); per-currency system accounts.
//!
//! The ledger's value types (`Currency`, `AccountId`, page tokens) live in [`domain`] and are
//! shared with the transfers service.

pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod startup;
pub mod store;
