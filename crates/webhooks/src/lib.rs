//! Webhooks: endpoints that receive the ledger's events as signed HTTP requests.
//!
//! main → [`cli`] → [`startup`] → [`grpc`] (handlers) and [`consumer`] (the stream of ledger
//! events → one delivery per matching endpoint) → [`domain`] (endpoints, the deliverer with its
//! retries, the signature, the outbound-safety rules) → [`store`] (every SQL statement and Redis
//! command). The events come from the ledger's outbox (`ledger.outbox`, written by triggers in
//! each change's transaction) through the transfers service's relay; shapes in docs/events.md.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod domain;
pub mod grpc;
pub mod startup;
pub mod store;
