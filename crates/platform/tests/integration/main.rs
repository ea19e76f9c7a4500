//! The platform crate's integration tests, one binary (helpers, when there are any, in `support/`):
//! `server` (the gRPC server, health, shutdown), `tls` (TLS to PostgreSQL and Redis against
//! throwaway servers).

mod server;
mod tls;
