//! The only public door: HTTP/JSON on :8080 and gRPC on :9090, routed to the services.

pub mod config;
pub mod startup;
