//! The migrate crate's integration tests, one binary (helpers, when there are any, in `support/`):
//! `migrations` (up/down, constraints), `tls` (`migrate up` against a TLS-only PostgreSQL).

mod migrations;
mod tls;
