//! Only for `end_to_end.rs`, a test binary of its own that is moving to crates/mesh-tests: the
//! shared support lives in `tests/integration/support`. Delete this folder with that file.

#[path = "../integration/support/mod.rs"]
mod shared;

pub use shared::*;
