//! The auth domain: parsed inputs, the operations behind each RPC, and their errors. Handlers in
//! `grpc.rs` parse the request into these types, call one function here and map the result. Also
//! the operator's actions (`admin`, behind the CLI) and the outbox relay (`relay`, a background
//! job `startup` spawns). Every SQL statement and Redis command they need is in `store`.

pub mod admin;
pub mod error;
pub mod password;
pub mod relay;
pub mod secrets;
pub mod sessions;
pub mod throttle;
pub mod types;
pub mod users;
pub mod verification;

use std::sync::Arc;

use platform::token::TokenMaker;
use sqlx::PgPool;

pub use error::AuthError;
pub use password::Hasher;
pub use throttle::Throttle;
pub use types::{Email, FullName, Password, Username, Violation};

use crate::config::{SessionConfig, VerificationConfig};
/// A user as `auth.users` holds it (the row type lives with its SQL in `store`).
pub use crate::store::User;

/// What the domain operations need; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub db: PgPool,
    /// Redis for the answers kept for renew retries (`sessions::renew`).
    pub redis: deadpool_redis::Pool,
    pub key_prefix: String,
    pub hasher: Hasher,
    pub tokens: Arc<dyn TokenMaker>,
    pub throttle: Throttle,
    pub session: SessionConfig,
    pub verification: VerificationConfig,
}

/// Collects the violations of several parses into one INVALID_ARGUMENT.
pub(crate) fn collect<T>(violations: &mut Vec<Violation>, r: Result<T, Violation>) -> Option<T> {
    r.map_err(|v| violations.push(v)).ok()
}
