//! Identity: users, argon2id passwords, PASETO access tokens, rotating refresh sessions, roles,
//! email verification, and the outbox of user events with its relay to Redis Streams.

pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod startup;
pub mod store;

/// Other crates' tests use these by these paths: `auth::admin::create_user` makes a banker,
/// `auth::relay::stream_key` names the stream the relay writes.
pub use domain::{admin, relay};

pub use platform::token::Role;
