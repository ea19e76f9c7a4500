//! The webhooks crate's integration tests, one binary (helpers in `support/`): real PostgreSQL
//! (the ledger's triggers write the events), real Redis (platform's relay publishes them, the
//! service's consumer group reads them) and a real HTTP receiver on 127.0.0.1.

mod authorization;
mod delivery;
mod events;
mod ssrf;
mod support;
