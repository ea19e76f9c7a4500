//! The only public door: HTTP/JSON on :8080 and gRPC on :9090, routed to the services.
//!
//! Everything is derived from the contract's descriptor set: [`routes`] reads each RPC's
//! `google.api.http` rule into a route, [`transcode`] turns JSON into the request message and the
//! reply back into JSON by reflection, [`upstream`] forwards the encoded message to the service of
//! the proto package, [`openapi`] describes the same routes. Adding an RPC needs no code here.

pub mod cli;
pub mod client;
pub mod config;
pub mod connections;
pub mod error;
pub mod field_path;
pub mod grpc_proxy;
pub mod http_api;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod startup;
pub mod template;
pub mod transcode;
pub mod upstream;
pub mod verify_page;
