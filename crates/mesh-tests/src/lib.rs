//! Tests only: see `tests/integration/main.rs`, one binary of tests across services. The mesh
//! (auth, accounts, transfers, the mailer and the gateway in front) runs in-process against real
//! PostgreSQL and Redis; the tests drive it the way a client would and look at it the way an
//! on-call engineer would: `/metrics`, log lines and traces.
