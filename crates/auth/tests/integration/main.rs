//! The auth service's integration tests, one binary: the service in-process against a real
//! PostgreSQL (a fresh database per test) and its own Redis namespace. Helpers in `support/`.
//! `hash_memory` measures a process's peak memory, so it runs itself again in a process of its
//! own.

mod deletion;
mod hash_memory;
mod relay;
mod sessions;
mod support;
mod users;
mod verification;
