//! Settings of the mailer (see the README's table for every key).
//!
//! Every retry loop, batch and wait has an explicit bound here; [`Config::validate`] rejects
//! values outside the documented ranges at startup instead of misbehaving later.

use std::{fmt, path::PathBuf, time::Duration};

use platform::config::{DatabaseConfig, RedisConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `/healthz`, `/readyz`, `/metrics`.
    pub http_addr: String,
    pub redis: RedisConfig,
    pub telemetry: TelemetryConfig,
    /// This replica's name in the consumer group. Replicas must differ (the default, the
    /// hostname, does in Kubernetes: it is the pod name).
    pub consumer_name: String,
    /// The consumer group every mailer replica joins.
    pub group: String,
    /// Where the verification link points (the public gateway), without a trailing slash.
    pub public_base_url: String,
    /// The `From:` mailbox, e.g. `Transactions <no-reply@example.com>`.
    pub from: String,
    pub transport: TransportConfig,
    /// Send attempts per event before it goes to the dead-letter stream.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each further failure.
    pub backoff_base_ms: u64,
    /// Upper bound of that wait.
    pub backoff_max_ms: u64,
    /// A message pending (read but not acknowledged) for longer than this is taken over by
    /// another consumer with XAUTOCLAIM: its consumer is presumed dead. Must exceed
    /// `transport.send_timeout_ms`, or sends still in flight get taken over.
    pub claim_idle_ms: u64,
    /// How long a send's lease on an event lasts unless renewed: the sender renews it every
    /// third of this while the send is in progress and abandons the send if it cannot. A mailer
    /// killed mid-send holds its event at most this long; then the restarted mailer (same
    /// `consumer_name`) sends it. See `domain::delivery`.
    pub lease_ms: u64,
    /// Messages one XREADGROUP/XAUTOCLAIM fetches, and so the emails in flight at once.
    pub read_count: usize,
    /// How long one XREADGROUP waits for new messages.
    pub block_ms: u64,
    /// Bound on the dead-letter stream (approximate MAXLEN); the oldest entries go first.
    pub dead_letter_maxlen: usize,
    /// How long the "already sent" marker of an event is kept (the dedupe window).
    pub dedupe_ttl_secs: u64,
    /// How often the pending/lag gauges are refreshed (and idle consumers looked for).
    pub stats_interval_ms: u64,
    /// A consumer of the group with nothing pending and idle this long (a replica that is gone,
    /// e.g. an old pod name) is removed from the group, so the group does not grow forever.
    pub forget_idle_consumer_secs: u64,
    /// How long in-flight sends may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// PostgreSQL, for the `mailer.recipients` table (used when `recipients.enabled` or
    /// `ledger.enabled`).
    pub database: DatabaseConfig,
    /// Keeping the recipients of "money received" emails from auth's user events.
    pub recipients: RecipientsConfig,
    /// The "you received money" email from the ledger-events stream.
    pub ledger: LedgerConfig,
}

/// The recipients table: a consumer group of its own on the user-events stream, so the events it
/// needs (`user.contact_updated`, `user.deleted`) reach it whatever the verification-email group
/// does with them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RecipientsConfig {
    pub enabled: bool,
    /// Its consumer group on `{prefix}events:users` (must differ from `group`).
    pub group: String,
}

impl Default for RecipientsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group: "mailer-recipients".into(),
        }
    }
}

/// "You received money": the mailer reads the ledger-events stream with a group of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerConfig {
    pub enabled: bool,
    /// The stream; empty means `{prefix}events:ledger` (what the transfers service's relay writes).
    pub stream: String,
    /// The mailer's consumer group on it (the webhooks service has its own, `webhooks`). Created at
    /// the stream's end (`$`): a first start sends nothing for events from before it.
    pub group: String,
    /// How long an event whose recipient the mailer does not know yet is looked at again (every
    /// 500 ms; auth's events may arrive later than the ledger's) before it is skipped
    /// (`mailer_events_skipped_total{reason="unknown_recipient"}`).
    pub unknown_recipient_wait_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stream: String::new(),
            group: "mailer".into(),
            unknown_recipient_wait_ms: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "0.0.0.0:8084".into(),
            redis: RedisConfig::default(),
            telemetry: TelemetryConfig::default(),
            consumer_name: default_consumer_name(),
            group: "mailer".into(),
            public_base_url: "http://localhost:8080".into(),
            from: "Transactions <no-reply@example.com>".into(),
            transport: TransportConfig::default(),
            // 1 s, 2 s, 4 s … 256 s between tries: an SMTP outage of ~8 minutes is ridden out
            // before anything is dead-lettered
            max_attempts: 10,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            claim_idle_ms: 60_000,
            lease_ms: 3_000,
            read_count: 16,
            block_ms: 2_000,
            dead_letter_maxlen: 100_000,
            dedupe_ttl_secs: 7 * 24 * 3600,
            stats_interval_ms: 5_000,
            forget_idle_consumer_secs: 24 * 3600,
            shutdown_grace_secs: 10,
            database: DatabaseConfig::default(),
            recipients: RecipientsConfig::default(),
            ledger: LedgerConfig::default(),
        }
    }
}

/// `HOSTNAME` (the pod name in Kubernetes), else `/etc/hostname`, else a random name.
fn default_consumer_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("mailer-{}", uuid::Uuid::new_v4().simple()))
}

/// How emails leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Writes each email as an `.eml` file into `file_dir` (development).
    #[default]
    File,
    /// Sends over SMTP (production).
    Smtp,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No encryption at all: only for a local relay or a test sink.
    None,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    pub kind: TransportKind,
    /// Folder for `.eml` files (`kind = "file"`); created when missing.
    pub file_dir: PathBuf,
    /// SMTP relay host (`kind = "smtp"`).
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// SMTP AUTH user; no authentication when empty.
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (e.g. a mounted Kubernetes Secret); wins over `password`.
    pub password_file: Option<PathBuf>,
    /// Bound on one send (connect + SMTP dialogue, or the file write).
    pub send_timeout_ms: u64,
    /// Pooled SMTP connections kept open.
    pub pool_max_size: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            kind: TransportKind::File,
            file_dir: PathBuf::from("var/mail"),
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            password_file: None,
            send_timeout_ms: 30_000,
            pool_max_size: 4,
        }
    }
}

// The password must never reach a log line through `{:?}`.
impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("kind", &self.kind)
            .field("file_dir", &self.file_dir)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("send_timeout_ms", &self.send_timeout_ms)
            .field("pool_max_size", &self.pool_max_size)
            .finish()
    }
}

/// A setting outside its documented range.
#[derive(Debug, thiserror::Error)]
#[error("invalid mailer setting `{key}`: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn check(ok: bool, key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key,
            reason: reason.into(),
        })
    }
}

impl Config {
    /// Rejects settings outside their bounds (called once at startup), naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_names()?;
        self.check_retries()?;
        self.check_stream()?;
        self.check_timeouts()?;
        self.check_smtp()?;
        self.check_money_received()
    }

    /// The two groups of the "money received" email.
    fn check_money_received(&self) -> Result<(), ConfigError> {
        if self.recipients.enabled {
            check(
                !self.recipients.group.trim().is_empty() && self.recipients.group != self.group,
                "recipients.group",
                "must not be empty nor the verification emails' `group` (each group gets every \
                 event once; sharing one would split the events between the two)",
            )?;
        }
        if self.ledger.enabled {
            check(
                !self.ledger.group.trim().is_empty(),
                "ledger.group",
                "must not be empty",
            )?;
            check(
                self.ledger.unknown_recipient_wait_ms <= 600_000,
                "ledger.unknown_recipient_wait_ms",
                "must be at most 600000",
            )?;
        }
        Ok(())
    }

    /// Whether the mailer needs PostgreSQL (the recipients table).
    pub fn uses_database(&self) -> bool {
        self.recipients.enabled || self.ledger.enabled
    }

    /// The names and addresses the mailer works with.
    fn check_names(&self) -> Result<(), ConfigError> {
        check(
            !self.consumer_name.trim().is_empty(),
            "consumer_name",
            "must not be empty",
        )?;
        check(!self.group.trim().is_empty(), "group", "must not be empty")?;
        check(
            self.public_base_url.starts_with("http://")
                || self.public_base_url.starts_with("https://"),
            "public_base_url",
            "must start with http:// or https://",
        )?;
        check(
            self.from.parse::<lettre::message::Mailbox>().is_ok(),
            "from",
            "must be a mailbox such as `Name <no-reply@example.com>`",
        )?;
        Ok(())
    }

    /// The retry loop: attempts and the backoff between them.
    fn check_retries(&self) -> Result<(), ConfigError> {
        check(
            (1..=100).contains(&self.max_attempts),
            "max_attempts",
            "must be 1..=100",
        )?;
        check(
            (1..=3_600_000).contains(&self.backoff_base_ms),
            "backoff_base_ms",
            "must be 1..=3600000",
        )?;
        check(
            self.backoff_max_ms >= self.backoff_base_ms && self.backoff_max_ms <= 3_600_000,
            "backoff_max_ms",
            "must be >= backoff_base_ms and <= 3600000",
        )?;
        Ok(())
    }

    /// Reading the stream: batch, waits, and what is kept how long.
    fn check_stream(&self) -> Result<(), ConfigError> {
        check(
            (1..=1_000).contains(&self.read_count),
            "read_count",
            "must be 1..=1000",
        )?;
        check(
            (10..=60_000).contains(&self.block_ms),
            "block_ms",
            "must be 10..=60000",
        )?;
        check(
            (100..=60_000).contains(&self.stats_interval_ms),
            "stats_interval_ms",
            "must be 100..=60000",
        )?;
        check(
            (1..=30 * 24 * 3600).contains(&self.forget_idle_consumer_secs),
            "forget_idle_consumer_secs",
            "must be 1..=2592000 (30 days)",
        )?;
        check(
            (1..=10_000_000).contains(&self.dead_letter_maxlen),
            "dead_letter_maxlen",
            "must be 1..=10000000",
        )?;
        check(
            (60..=90 * 24 * 3600).contains(&self.dedupe_ttl_secs),
            "dedupe_ttl_secs",
            "must be 60..=7776000 (90 days)",
        )?;
        Ok(())
    }

    /// Timeouts, and the reclaim that must outlast a send.
    fn check_timeouts(&self) -> Result<(), ConfigError> {
        check(
            (1..=600_000).contains(&self.transport.send_timeout_ms),
            "transport.send_timeout_ms",
            "must be 1..=600000",
        )?;
        check(
            self.claim_idle_ms > self.transport.send_timeout_ms
                && self.claim_idle_ms <= 24 * 3_600_000,
            "claim_idle_ms",
            "must exceed transport.send_timeout_ms (else sends still in flight are taken over) \
             and be at most 24 h",
        )?;
        check(
            (300..=60_000).contains(&self.lease_ms),
            "lease_ms",
            "must be 300..=60000 (it is renewed every third of it while a send is in progress)",
        )?;
        check(
            self.shutdown_grace_secs <= 600,
            "shutdown_grace_secs",
            "must be at most 600",
        )?;
        Ok(())
    }

    /// The SMTP relay, when one is used.
    fn check_smtp(&self) -> Result<(), ConfigError> {
        if self.transport.kind == TransportKind::Smtp {
            check(
                !self.transport.host.trim().is_empty(),
                "transport.host",
                "must be set for kind = smtp",
            )?;
            check(self.transport.port != 0, "transport.port", "must not be 0")?;
            check(
                (1..=100).contains(&self.transport.pool_max_size),
                "transport.pool_max_size",
                "must be 1..=100",
            )?;
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1` after `attempt` failures (1-based): base × 2^(n−1),
    /// capped at `backoff_max_ms`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        let ms = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// `{prefix}events:users`: the stream auth's relay writes.
    pub fn stream_key(&self) -> String {
        format!("{}events:users", self.redis.key_prefix)
    }

    /// `{prefix}events:users:dead`: where events go after `max_attempts` failures.
    pub fn dead_letter_key(&self) -> String {
        format!("{}events:users:dead", self.redis.key_prefix)
    }

    /// `{prefix}events:users:recipients:dead`: user events the recipients table cannot take.
    pub fn recipients_dead_letter_key(&self) -> String {
        format!("{}events:users:recipients:dead", self.redis.key_prefix)
    }

    /// The ledger-events stream the "money received" email reads (`ledger.stream`, else
    /// `{prefix}events:ledger`).
    pub fn ledger_stream_key(&self) -> String {
        if self.ledger.stream.trim().is_empty() {
            format!("{}events:ledger", self.redis.key_prefix)
        } else {
            self.ledger.stream.trim().to_owned()
        }
    }

    /// `{prefix}events:ledger:mailer:dead`: ledger events whose email could not be sent.
    pub fn ledger_dead_letter_key(&self) -> String {
        format!("{}events:ledger:mailer:dead", self.redis.key_prefix)
    }

    /// Per-event state: `sending:<consumer>:<token>` (a lease while one consumer sends) or `sent`.
    pub fn event_state_key(&self, event_id: &str) -> String {
        format!("{}mailer:event:{event_id}", self.redis.key_prefix)
    }

    /// Per-event attempt counter and last error (a hash), shared by all replicas.
    pub fn attempts_key(&self, event_id: &str) -> String {
        format!("{}mailer:attempts:{event_id}", self.redis.key_prefix)
    }
}

impl platform::config::Validate for Config {
    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self).map_err(anyhow::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cfg = Config {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..Config::default()
        };
        assert_eq!(cfg.backoff(1), Duration::from_millis(100));
        assert_eq!(cfg.backoff(2), Duration::from_millis(200));
        assert_eq!(cfg.backoff(4), Duration::from_millis(800));
        assert_eq!(cfg.backoff(5), Duration::from_millis(1_000));
        assert_eq!(cfg.backoff(80), Duration::from_millis(1_000));
    }

    #[test]
    fn a_lease_out_of_range_is_rejected() {
        for lease_ms in [299, 60_001] {
            let cfg = Config {
                lease_ms,
                ..Config::default()
            };
            assert_eq!(cfg.validate().unwrap_err().key, "lease_ms");
        }
    }

    #[test]
    fn claim_idle_shorter_than_a_send_is_rejected() {
        let mut cfg = Config::default();
        cfg.claim_idle_ms = cfg.transport.send_timeout_ms;
        assert_eq!(cfg.validate().unwrap_err().key, "claim_idle_ms");
    }

    #[test]
    fn a_claim_idle_too_short_for_a_heartbeat_is_rejected_not_rounded_up() {
        // the backoff heartbeat beats every claim_idle_ms / 2, which must not be 0
        let cfg = Config {
            claim_idle_ms: 1,
            transport: TransportConfig {
                send_timeout_ms: 1,
                ..TransportConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "claim_idle_ms");
    }

    #[test]
    fn a_non_http_public_base_url_is_rejected() {
        let cfg = Config {
            public_base_url: "localhost:8080".into(),
            ..Config::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "public_base_url");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn environment_variables_select_the_transport() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TXN_REDIS__KEY_PREFIX", "dev:");
            jail.set_env("MAILER_PUBLIC_BASE_URL", "https://api.example.com");
            jail.set_env("MAILER_TRANSPORT__KIND", "smtp");
            jail.set_env("MAILER_TRANSPORT__HOST", "smtp.example.com");
            jail.set_env("MAILER_TRANSPORT__PORT", "465");
            jail.set_env("MAILER_TRANSPORT__TLS", "tls");
            jail.set_env("MAILER_TRANSPORT__USERNAME", "mailer");
            jail.set_env("MAILER_MAX_ATTEMPTS", "4");
            let cfg: Config = platform::config::figment::<Config>("mailer").extract()?;
            assert_eq!(cfg.transport.kind, TransportKind::Smtp);
            assert_eq!(cfg.transport.tls, SmtpTls::Tls);
            assert_eq!(cfg.transport.port, 465);
            assert_eq!(cfg.max_attempts, 4);
            assert_eq!(cfg.stream_key(), "dev:events:users");
            assert_eq!(cfg.dead_letter_key(), "dev:events:users:dead");
            cfg.validate().unwrap();
            Ok(())
        });
    }

    #[test]
    fn the_development_default_writes_eml_files_to_var_mail() {
        let cfg = Config::default();
        assert_eq!(cfg.transport.kind, TransportKind::File);
        assert_eq!(cfg.transport.file_dir, PathBuf::from("var/mail"));
        assert_eq!(cfg.group, "mailer");
        assert_eq!(cfg.public_base_url, "http://localhost:8080");
    }

    #[test]
    fn debug_output_hides_the_smtp_password() {
        let mut cfg = Config::default();
        cfg.transport.password = Some("hunter2".into());
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
