//! The ledger: transfers, entries, balances, idempotency, reconciliation.
//!
//! The path of a money movement: `grpc.rs` (parse, authorise) → [`ledger::Ledger::apply`] → the
//! SQL function `ledger.transfer` (one statement, one round trip).

pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod ledger;
pub mod reconcile;
pub mod startup;
pub mod store;
