//! The xtask binary's integration tests, one binary (helpers, when there are any, in `support/`).

mod schema_docs;
