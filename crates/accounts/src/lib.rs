//! Accounts: open, read and freeze accounts (one per owner and currency); per-currency system accounts.

pub mod cli;
pub mod config;
pub mod grpc;
pub mod startup;
