//! The mailer's working parts, built once at startup and shared by every message task.

use anyhow::Context;
use deadpool_redis::Pool;
use lettre::message::Mailbox;
use platform::Shutdown;
use sqlx::PgPool;

use crate::{
    config::Config,
    store::{EventKeys, Group},
    transport::Transport,
};

/// Which stream a consumer loop reads and what it does with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `{prefix}events:users`, group `group`: verification emails.
    Verification,
    /// `{prefix}events:users`, group `recipients.group`: the recipients table
    /// ([`super::recipients`]).
    Recipients,
    /// The ledger-events stream, group `ledger.group`: "you received money" emails
    /// ([`super::money`]).
    Ledger,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::Recipients => "recipients",
            Self::Ledger => "ledger",
        }
    }
}

/// Everything a message task needs.
pub struct Mailer {
    pub cfg: Config,
    pub pool: Pool,
    /// PostgreSQL (the recipients table); `None` when neither `recipients` nor `ledger` is
    /// enabled.
    pub db: Option<PgPool>,
    pub transport: Transport,
    /// `cfg.from`, parsed once.
    pub from: Mailbox,
    pub source: Source,
    pub group: Group,
    /// This source's dead-letter stream (`{prefix}events:users:dead` for verification emails).
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
        Self::for_source(cfg, pool, None, transport, shutdown, Source::Verification)
    }

    /// The parts of the consumer loop of `source`.
    pub fn for_source(
        cfg: Config,
        pool: Pool,
        db: Option<PgPool>,
        transport: Transport,
        shutdown: Shutdown,
        source: Source,
    ) -> anyhow::Result<Self> {
        let from: Mailbox = cfg.from.parse().context("parsing `from`")?;
        let (stream, group, start, dead) = match source {
            Source::Verification => (
                cfg.stream_key(),
                cfg.group.clone(),
                "0",
                cfg.dead_letter_key(),
            ),
            Source::Recipients => (
                cfg.stream_key(),
                cfg.recipients.group.clone(),
                "0",
                cfg.recipients_dead_letter_key(),
            ),
            Source::Ledger => (
                cfg.ledger_stream_key(),
                cfg.ledger.group.clone(),
                "$",
                cfg.ledger_dead_letter_key(),
            ),
        };
        Ok(Self {
            group: Group {
                stream,
                group,
                consumer: cfg.consumer_name.clone(),
                start,
            },
            dead,
            cfg,
            pool,
            db,
            transport,
            from,
            source,
            shutdown,
        })
    }

    /// The database, for the sources that need it.
    pub fn db(&self) -> anyhow::Result<&PgPool> {
        self.db
            .as_ref()
            .context("the mailer was started without a database")
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
