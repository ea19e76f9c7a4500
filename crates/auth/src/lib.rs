//! Identity: users, argon2id passwords, PASETO access tokens, rotating refresh sessions, roles,
//! email verification, and the outbox of user events with its relay to Redis Streams.

pub mod admin;
pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod relay;
pub mod startup;
pub mod store;

pub use platform::token::Role;
