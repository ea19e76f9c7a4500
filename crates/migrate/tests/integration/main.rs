//! The migrate crate's integration tests, one binary (helpers, when there are any, in `support/`).

mod migrations;
