//! The mailer's working parts, built once at startup and shared by every message task.

use anyhow::Context;
use deadpool_redis::Pool;
use lettre::message::Mailbox;
use platform::Shutdown;

use crate::{
    config::Config,
    store::{EventKeys, Group},
    transport::Transport,
};

/// Everything a message task needs.
pub struct Mailer {
    pub cfg: Config,
    pub pool: Pool,
    pub transport: Transport,
    /// `cfg.from`, parsed once.
    pub from: Mailbox,
    pub group: Group,
    /// `{prefix}events:users:dead`.
    pub dead: String,
    pub shutdown: Shutdown,
}

impl Mailer {
    pub fn new(
        cfg: Config,
        pool: Pool,
        transport: Transport,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let from: Mailbox = cfg.from.parse().context("parsing `from`")?;
        Ok(Self {
            group: Group {
                stream: cfg.stream_key(),
                group: cfg.group.clone(),
                consumer: cfg.consumer_name.clone(),
            },
            dead: cfg.dead_letter_key(),
            cfg,
            pool,
            transport,
            from,
            shutdown,
        })
    }

    /// A fresh lease token: `sending:<consumer>:<random>`.
    pub fn new_lease(&self) -> String {
        format!(
            "sending:{}:{}",
            self.cfg.consumer_name,
            uuid::Uuid::new_v4().simple()
        )
    }

    pub fn event_keys(&self, event_id: &str) -> EventKeys {
        EventKeys {
            state: self.cfg.event_state_key(event_id),
            attempts: self.cfg.attempts_key(event_id),
        }
    }
}
