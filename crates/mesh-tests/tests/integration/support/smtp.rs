//! A real SMTP server for the tests that follow an email across services (a sink speaking SMTP on
//! a tokio listener, recording what it receives), a mailer sending to it, and helpers to read the
//! verification link back out of an email. Taken from the mailer's own test support, less what
//! only the mailer's tests need (a sink that rejects or is slow, event publishing).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mailer::config::{Config, SmtpTls, TransportConfig, TransportKind};
use test_support::{Running, TestRedis};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
};

pub const BASE_URL: &str = "https://bank.example.test";

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt_to: Vec<String>,
    /// The raw message as sent (headers + MIME body), dot-unstuffed.
    pub data: String,
}

#[derive(Default)]
struct SinkState {
    received: Mutex<Vec<Received>>,
    notify: Notify,
}

/// An SMTP server on 127.0.0.1 that records every message.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    state: Arc<SinkState>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(SinkState::default());
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, s.clone()));
            }
        });
        Self { port, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived (panics after `timeout` with what did).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} emails within {timeout:?}, got {}: {:?}",
                    got.len(),
                    got.iter().map(|r| &r.rcpt_to).collect::<Vec<_>>()
                );
            }
        }
    }
}

async fn session(stream: tokio::net::TcpStream, state: Arc<SinkState>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut rcpt_to = Vec::new();
    if write
        .write_all(b"220 sink.test ESMTP test sink\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink.test greets you\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            rcpt_to.clear();
            b"250 2.1.0 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            rcpt_to.push(address(&line));
            b"250 2.1.5 OK\r\n"
        } else if upper == "DATA" {
            if write
                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            state.received.lock().unwrap().push(Received {
                rcpt_to: std::mem::take(&mut rcpt_to),
                data,
            });
            state.notify.notify_waiters();
            b"250 2.0.0 queued\r\n"
        } else if upper == "RSET" {
            rcpt_to.clear();
            b"250 2.0.0 OK\r\n"
        } else if upper == "NOOP" {
            b"250 2.0.0 OK\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            b"502 5.5.2 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn address(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(line.len());
    line[start..end].trim().to_owned()
}

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

/// Polls `f` until it returns `Some` (panics after `timeout` naming `what`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decodes quoted-printable (lettre uses it for lines longer than 76 characters, which the link
/// line is); other text passes through.
pub fn qp_decode(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first verification link in a raw email: (email_id, secret_code as it appears, URL-encoded).
pub fn link_in(raw: &str) -> (i64, String) {
    let text = if raw.contains("Content-Transfer-Encoding: quoted-printable") {
        qp_decode(raw)
    } else {
        raw.to_owned()
    };
    let prefix = format!("{BASE_URL}/v1/verify_email?");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no verification link in:\n{text}"));
    let link: String = text[start + prefix.len()..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '<' && *c != '"')
        .collect();
    let mut email_id = None;
    let mut code = None;
    for pair in link.split('&') {
        match pair.split_once('=') {
            Some(("email_id", v)) => email_id = v.parse().ok(),
            Some(("secret_code", v)) => code = Some(v.to_owned()),
            _ => {}
        }
    }
    (
        email_id.expect("email_id in link"),
        code.expect("secret_code in link"),
    )
}
