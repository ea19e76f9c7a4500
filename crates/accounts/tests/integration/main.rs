//! The accounts crate's integration tests, one binary (helpers, when there are any, in `support/`).

mod accounts_api;
mod read_replica;
