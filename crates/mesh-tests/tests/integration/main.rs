//! The tests across services, one binary (one link, one run) against real PostgreSQL and Redis,
//! the services in-process on ephemeral ports (`support`):
//!
//! - `bulk_http`: the bulk transfer call over HTTP through the gateway (a 1,000-item file past the
//!   ordinary body limit, one answer per item, the replay, its OpenAPI entry);
//! - `journey`: every public RPC over HTTP/JSON through the gateway, the user journey, the error
//!   classes, the gateway's gRPC port;
//! - `mailer_end_to_end`: sign-up → auth's outbox and relay → the mailer → SMTP → the link
//!   verifies the user;
//! - `metrics`, `logs`, `tracing`, `collector_down`: what an on-call engineer sees (`/metrics`, log
//!   lines, traces) and that a missing collector holds nothing up; each of their mesh tests runs
//!   alone in a child process of this binary (`support::ran_in_own_process`), as the tracing
//!   subscriber, the trace exporter and the metrics recorder are one per process;
//! - `dashboard`, `config_docs`: the Grafana dashboard and docs/configuration.md stay true to the
//!   code;
//! - `house_rules`: no service crate links another;
//! - `revocation`: a revoked session's access token stops moving money within 2 s (logout,
//!   password change), through auth's outbox, its relay and every service's in-memory list;
//! - `user_removal`: a removed user's tokens stop moving money within 2 s, and a new user with
//!   the freed username sees none of the old user's accounts (which stay, for a banker);
//! - `money_received_end_to_end`: two users signed up and verified through auth and the mailer,
//!   a deposit and a transfer through accounts and transfers (ledger relay on): the credited user
//!   gets one "You received" email; turned off over HTTP through the gateway, no more;
//! - `webhooks_end_to_end`: a transfer through accounts and transfers (its ledger-events relay
//!   on) reaches a receiver once, signed, with its event id, through the webhooks service;
//! - `tls`: the mesh against a TLS-only PostgreSQL and a TLS Redis (throwaway servers the test
//!   starts), a wrong CA refused at start-up, health following the database.

mod support;

mod bulk_http;
mod collector_down;
mod config_docs;
mod dashboard;
mod house_rules;
mod import_cycles;
mod journey;
mod logs;
mod mailer_end_to_end;
mod metrics;
mod money_received_end_to_end;
mod revocation;
mod tls;
mod tracing;
mod user_removal;
mod webhooks_end_to_end;
