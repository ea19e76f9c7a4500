//! The ledger: transfers, entries, balances, idempotency, reconciliation.

pub mod cli;
pub mod config;
pub mod grpc;
pub mod startup;
