//! For the tests that follow an email across services: the SMTP sink and link helpers of
//! `test_support::smtp`, and a mailer sending to the sink.

use mailer::config::{Config, SmtpTls, TransportConfig, TransportKind};
use test_support::{Running, TestRedis};

pub use test_support::smtp::{BASE_URL, SmtpSink, eventually, link_in};

/// A mailer config for tests: this test's Redis namespace, SMTP to `sink` without TLS, short
/// waits so retries and reclaims happen within seconds.
pub fn smtp_config(redis: &TestRedis, sink: &SmtpSink, consumer: &str) -> Config {
    Config {
        http_addr: "127.0.0.1:0".into(),
        redis: redis.config(),
        consumer_name: consumer.into(),
        public_base_url: BASE_URL.into(),
        from: "Transactions <no-reply@bank.example.test>".into(),
        transport: TransportConfig {
            kind: TransportKind::Smtp,
            host: "127.0.0.1".into(),
            port: sink.port,
            tls: SmtpTls::None,
            send_timeout_ms: 4_000,
            ..TransportConfig::default()
        },
        max_attempts: 3,
        backoff_base_ms: 50,
        backoff_max_ms: 400,
        claim_idle_ms: 5_000,
        read_count: 8,
        block_ms: 200,
        stats_interval_ms: 200,
        shutdown_grace_secs: 5,
        // verification emails only (no database); money_received_end_to_end turns these on
        recipients: mailer::config::RecipientsConfig {
            enabled: false,
            ..Default::default()
        },
        ledger: mailer::config::LedgerConfig {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// Starts a mailer in-process on an ephemeral HTTP port.
pub async fn start_mailer(cfg: Config) -> Running {
    test_support::spawn(move |listeners, shutdown| {
        mailer::startup::run(cfg, listeners.http, shutdown)
    })
    .await
}

/// Messages read by the group but not acknowledged.
pub async fn pending(redis: &TestRedis) -> usize {
    let mut conn = redis.pool.get().await.unwrap();
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(format!("{}events:users", redis.prefix))
        .arg("mailer")
        .query_async(&mut *conn)
        .await
        .unwrap();
    reply.count()
}
