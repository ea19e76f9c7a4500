//! The transfers service's integration tests, one binary: the service in-process against a real
//! PostgreSQL (a fresh database per test). Helpers in `support/`.

mod account_oracle;
mod batch_outbox;
mod batching;
mod bulk;
mod concurrency;
mod database_down;
mod holds;
mod identity;
mod metadata;
mod migrations;
mod outbox_wakeup;
mod read_replica;
mod reconcile_incremental;
mod reversals;
mod shutdown;
mod sql_reasons;
mod support;
mod throughput_probe;
mod transactions;
mod transfers_api;
