//! Sends the emails that user events ask for: reads the user-events Redis Stream with a consumer
//! group and sends with lettre (SMTP in production, `.eml` files in development).

pub mod config;
pub mod startup;
