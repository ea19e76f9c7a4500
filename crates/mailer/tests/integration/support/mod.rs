//! Shared by the mailer's integration tests: the SMTP sink and link helpers of
//! `test_support::smtp`, a mailer config pointed at the sink, event publishing in the relay's
//! exact format, and a proxy that can cut the Redis connection.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use mailer::config::{
    Config, LedgerConfig, RecipientsConfig, SmtpTls, TransportConfig, TransportKind,
};
use test_support::{Running, TestDb, TestRedis};
use tokio::net::TcpListener;

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
        // the verification emails alone: no database (see `money_config`)
        recipients: RecipientsConfig {
            enabled: false,
            ..RecipientsConfig::default()
        },
        ledger: LedgerConfig {
            enabled: false,
            ..LedgerConfig::default()
        },
        ..Config::default()
    }
}

/// `smtp_config` with the recipients table in `db` and the "money received" emails on; an
/// unknown recipient is waited for 1 s.
pub fn money_config(redis: &TestRedis, db: &TestDb, sink: &SmtpSink, consumer: &str) -> Config {
    Config {
        database: db.config(),
        recipients: RecipientsConfig::default(),
        ledger: LedgerConfig {
            unknown_recipient_wait_ms: 1_000,
            ..LedgerConfig::default()
        },
        ..smtp_config(redis, sink, consumer)
    }
}

/// Starts a mailer in-process on an ephemeral HTTP port.
pub async fn start(cfg: Config) -> Running {
    test_support::spawn(move |listeners, shutdown| {
        mailer::startup::run(cfg, listeners.http, shutdown)
    })
    .await
}

/// The payload fields of one test event.
pub struct TestEvent {
    pub event_id: String,
    pub email: String,
    pub email_id: i64,
    pub secret_code: String,
}

impl TestEvent {
    pub fn new(n: i64) -> Self {
        Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            email: format!("user{n}@example.com"),
            email_id: 1000 + n,
            secret_code: format!("code-{n}-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// XADDs `ev` to the user-events stream exactly as auth's relay does.
pub async fn publish(redis: &TestRedis, event_type: &str, ev: &TestEvent) -> String {
    let payload = serde_json::json!({
        "username": format!("user{}", ev.email_id),
        "full_name": "Test User",
        "email": ev.email,
        "email_id": ev.email_id,
        "secret_code": ev.secret_code,
        "expires_at": "2030-01-01T00:00:00Z",
    });
    xadd(
        redis,
        &[
            ("event_id", ev.event_id.as_str()),
            ("event_type", event_type),
            ("payload", &payload.to_string()),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await
}

/// XADDs raw fields to the user-events stream.
pub async fn xadd(redis: &TestRedis, fields: &[(&str, &str)]) -> String {
    let mut conn = redis.pool.get().await.unwrap();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("{}events:users", redis.prefix))
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut *conn).await.unwrap()
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

/// Consumers holding pending messages right now, with how many.
pub async fn pending_by_consumer(redis: &TestRedis) -> Vec<(String, usize)> {
    let mut conn = redis.pool.get().await.unwrap();
    let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(format!("{}events:users", redis.prefix))
        .arg("mailer")
        .query_async(&mut *conn)
        .await
        .unwrap();
    match reply {
        redis::streams::StreamPendingReply::Data(d) => d
            .consumers
            .into_iter()
            .map(|c| (c.name, c.pending))
            .collect(),
        _ => Vec::new(),
    }
}

/// The entries of the dead-letter stream, as field maps.
pub async fn dead_letters(redis: &TestRedis) -> Vec<HashMap<String, String>> {
    let mut conn = redis.pool.get().await.unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{}events:users:dead", redis.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut *conn)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .keys()
                .map(|k| (k.clone(), e.get::<String>(k).unwrap_or_default()))
                .collect()
        })
        .collect()
}

/// Fetches a page of the mailer's side HTTP port.
pub async fn get(running: &Running, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{}{path}", running.http_url()))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The value of a counter/gauge line in Prometheus text (`name{labels} value`), summed over lines
/// that start with `prefix`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP proxy to the real Redis that can be switched off (every connection cut, new ones
/// dropped at once) and on again: Redis going away and coming back, without touching the shared
/// server.
#[derive(Clone)]
pub struct FlakyProxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FlakyProxy {
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cut = Arc::new(cut);
        let (u, c, target) = (up.clone(), cut.clone(), target.to_owned());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let mut cut_rx = c.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {},
                        _ = cut_rx.changed() => {},
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// An SMTP server that never answers: it accepts connections and says nothing (no greeting), so a
/// send to it hangs until its timeout or until it is dropped. Counts connections opened and
/// closed by the client (a dropped send closes its connection).
#[derive(Clone)]
pub struct BlackHole {
    pub port: u16,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl BlackHole {
    pub async fn start() -> Self {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, c) = (opened.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                o.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            opened,
            closed,
        }
    }

    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The state key of event `event_id`: `sending:<consumer>:<token>` (a lease), `sent`, or none.
pub async fn event_state(redis: &TestRedis, event_id: &str) -> Option<String> {
    let mut conn = redis.pool.get().await.unwrap();
    redis::cmd("GET")
        .arg(format!("{}mailer:event:{event_id}", redis.prefix))
        .query_async(&mut *conn)
        .await
        .unwrap()
}
