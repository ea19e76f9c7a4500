//! Sends the emails that user events ask for: reads the user-events Redis Stream with a consumer
//! group and sends with lettre (SMTP in production, `.eml` files in development).
//!
//! `cli` → `startup` (builds it from `config` and runs until shutdown) → `consumer` (the group
//! loop: read, reclaim, hand out) → `domain` (what to do with one event: parse, render, deliver
//! once, dead-letter) → `store` (every Redis command). `transport` sends, `stats` refreshes the
//! stream gauges.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod domain;
pub mod startup;
pub mod stats;
pub mod store;
pub mod transport;
