//! The locked-row tests, a binary of their own: they measure how long transfers between other
//! accounts wait while one row is held, so they run apart from the integration binary's other
//! tests (cargo runs test binaries one after another; inside one binary its tests share the two
//! cores at once). Same helpers as `tests/integration` (`support/`).

mod locked_rows;
#[path = "../integration/support/mod.rs"]
#[allow(dead_code)] // the helpers only the integration binary's tests use
mod support;
