//! Sends the emails that user events ask for: reads the user-events Redis Stream with a consumer
//! group and sends with lettre (SMTP in production, `.eml` files in development).
//!
//! `event` parses stream entries, `render` builds the email, `transport` sends it, `consumer`
//! runs the group loop (reclaim, retry, dead-letter, dedupe) and `startup` wires it together.

pub mod cli;
pub mod config;
pub mod consumer;
pub mod event;
pub mod render;
pub mod startup;
pub mod store;
pub mod transport;
