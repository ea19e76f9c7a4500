//! The ledger: transfers, entries, balances, idempotency, reconciliation.
//!
//! The path of a money movement: `grpc.rs` (parse, authorise) → [`ledger::Ledger::apply`] → the
//! batcher ([`batch`]) → the SQL function `ledger.transfer_batch` (one statement, one round trip,
//! one transaction for every request in the batch).

pub mod batch;
pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod ledger;
pub mod reconcile;
pub mod startup;
pub mod store;
