//! Identity: users, argon2id passwords, PASETO access tokens, rotating refresh sessions, roles,
//! email verification, and the outbox of user events.

pub mod cli;
pub mod config;
pub mod grpc;
pub mod startup;
