//! The mailer's integration tests, one binary (one link, one run) against a real Redis and a
//! real SMTP server: `consumer` (delivery, dedupe, reclaim, retries, dead letters, replicas),
//! `file_transport` (the development `.eml` files), `money_received` (the ledger stream and the
//! recipients table, with PostgreSQL) and `logs` (what the JSON logs hold; it re-runs itself in a
//! process of its own, as it installs the global tracing subscriber).

mod support;

mod consumer;
mod faults;
mod file_transport;
mod logs;
mod money_received;
