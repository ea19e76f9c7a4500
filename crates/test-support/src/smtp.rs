//! A real SMTP server for tests (a sink speaking SMTP on a tokio listener, which records what it
//! receives and can be told to reject or to be slow), and helpers to read a verification link
//! back out of an email. Used by the mailer's tests and the mesh tests that follow an email
//! across services.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
};

/// The public base URL the tests' mailers put into verification links.
pub const BASE_URL: &str = "https://bank.example.test";

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The raw message as sent (headers + MIME body), dot-unstuffed.
    pub data: String,
}

#[derive(Default)]
struct SinkState {
    received: Mutex<Vec<Received>>,
    notify: Notify,
    /// Recipients to reject with a 550 before accepting again; `u64::MAX` = reject all.
    reject: AtomicU64,
    rejected: AtomicUsize,
    /// Pause before answering the end of DATA (a slow server), in ms.
    delay_ms: AtomicU64,
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

    pub fn reject_all(&self) {
        self.state.reject.store(u64::MAX, Ordering::SeqCst);
    }

    pub fn reject_next(&self, n: u64) {
        self.state.reject.store(n, Ordering::SeqCst);
    }

    pub fn delay_each(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
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

fn should_reject(state: &SinkState) -> bool {
    let r = state
        .reject
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u64::MAX => Some(u64::MAX),
            n => Some(n - 1),
        });
    r.is_ok()
}

async fn session(stream: tokio::net::TcpStream, state: Arc<SinkState>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut mail_from = String::new();
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
            mail_from = address(&line);
            rcpt_to.clear();
            b"250 2.1.0 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            if should_reject(&state) {
                state.rejected.fetch_add(1, Ordering::SeqCst);
                b"550 5.7.1 rejected by the test sink\r\n"
            } else {
                rcpt_to.push(address(&line));
                b"250 2.1.5 OK\r\n"
            }
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
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            state.received.lock().unwrap().push(Received {
                mail_from: mail_from.clone(),
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
