//! The platform crate's integration tests, one binary (helpers, when there are any, in `support/`):
//! `server` (the gRPC server, health, shutdown), `health` (health follows readiness), `revocations`
//! (the revoked-session feed against Redis), `tls` (TLS to PostgreSQL and Redis against
//! throwaway servers).

mod breaker;
mod health;
mod relay_outage;
mod revocations;
mod server;
mod tls;
