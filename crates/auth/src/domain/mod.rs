//! The auth domain: parsed inputs, the operations behind each RPC, and their errors. Handlers in
//! `grpc.rs` parse the request into these types, call one function here and map the result.

pub mod error;
pub mod password;
pub mod secrets;
pub mod sessions;
pub mod types;
pub mod users;
pub mod verification;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use platform::token::{Role, TokenMaker};
use sqlx::PgPool;

pub use error::AuthError;
pub use password::Hasher;
pub use types::{Email, FullName, Password, Username, Violation};

use crate::{
    config::{SessionConfig, VerificationConfig},
    throttle::Throttle,
};

/// What the domain operations need; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub db: PgPool,
    pub hasher: Hasher,
    pub tokens: Arc<dyn TokenMaker>,
    pub throttle: Throttle,
    pub session: SessionConfig,
    pub verification: VerificationConfig,
}

/// A row of `auth.users`.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub hashed_password: String,
    pub role: String,
    pub email_verified: bool,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl User {
    pub fn role(&self) -> Role {
        // the CHECK constraint allows only these two
        Role::parse(&self.role).unwrap_or(Role::Depositor)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("email_verified", &self.email_verified)
            .finish_non_exhaustive()
    }
}

/// Collects the violations of several parses into one INVALID_ARGUMENT.
pub(crate) fn collect<T>(violations: &mut Vec<Violation>, r: Result<T, Violation>) -> Option<T> {
    r.map_err(|v| violations.push(v)).ok()
}
