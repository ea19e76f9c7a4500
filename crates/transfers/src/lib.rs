//! The ledger: transfers, entries, balances, idempotency, reconciliation.
//!
//! main → [`cli`] → [`startup`] → [`grpc`] (handlers) → [`domain`] (operations and types) →
//! [`store`] (every SQL statement). The path of a money movement: `grpc.rs` (parse, authorise) →
//! [`domain::Ledger::apply`] → the batcher ([`domain::batch`]) → [`store::apply_batch`], one call
//! of the SQL function `ledger.transfer_batch` (one statement, one round trip, one transaction for
//! every request in the batch).

pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod startup;
pub mod store;
