//! Sends the emails that events ask for: verification emails from the user-events Redis Stream,
//! "you received money" from the ledger-events stream (to recipients it keeps in
//! `mailer.recipients` from auth's user events), each read with a consumer group, sent with
//! lettre (SMTP in production, `.eml` files in development).
//!
//! `cli` → `startup` (builds it from `config` and runs until shutdown) → `consumer` (the group
//! loop: read, reclaim, hand out) → `domain` (what to do with one event: parse, render, deliver
//! once, dead-letter) → `store` (every Redis command) and `db` (every SQL statement).
//! `transport` sends, `stats` refreshes the stream gauges.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod db;
pub mod domain;
pub mod startup;
pub mod stats;
pub mod store;
pub mod transport;
