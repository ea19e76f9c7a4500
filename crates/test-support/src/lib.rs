//! Helpers for integration tests against real PostgreSQL and Redis.
//!
//! - [`TestDb::new`]: a fresh database with every migration applied, dropped when the test ends.
//! - [`TestRedis::new`]: a key namespace of its own in the real Redis, cleaned up at the end.
//! - [`spawn`]: runs a service in-process on ephemeral ports; [`channel`] connects to it.
//! - [`process::ServiceProcess`]: a service binary as a process of its own (signals, exit code).
//!
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the server and
//! `REDIS_URL` (default `redis://127.0.0.1:6379`) the Redis; an unreachable one fails the test with
//! a message naming the URL.

pub mod process;
pub mod proxy;
pub mod servers;

pub mod smtp;

use std::{future::Future, net::SocketAddr, time::Duration};

use platform::{
    Listeners, Shutdown,
    config::{DatabaseConfig, RedisConfig, TokenKind},
    token::{Claims, Keys, Role, TokenMaker},
};
use sqlx::{
    ConnectOptions, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

pub fn database_server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database of the test's own, with every migration applied.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub url: String,
    admin: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// An empty database (no migrations), for migration tests.
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrate: bool) -> Self {
        let server = database_server_url();
        let admin: PgConnectOptions = server
            .parse::<PgConnectOptions>()
            .unwrap_or_else(|e| panic!("DATABASE_URL={server} is not a valid URL: {e}"))
            .database("postgres");
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {server} (set DATABASE_URL): {e}")
        });
        let name = format!("txn_test_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let opts = admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await
            .expect("connect to test database");
        if migrate {
            platform::db::migrate(&pool)
                .await
                .expect("apply migrations");
        }
        let url = opts.to_url_lossy().to_string();
        Self {
            pool,
            name,
            url,
            admin,
        }
    }

    /// Database settings for a service under test.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.url.clone(),
            max_connections: 20,
            min_connections: 0,
            acquire_timeout_ms: 30_000,
            ..DatabaseConfig::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async; do the cleanup on a thread with its own runtime.
        let admin = self.admin.clone();
        let name = self.name.clone();
        // The pool's connections belong to the test's runtime, which this join blocks: do not
        // close the pool here; `WITH (FORCE)` ends its connections from the server side.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut conn) = admin.connect().await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A Redis namespace of the test's own: every key starts with `prefix`.
pub struct TestRedis {
    pub pool: deadpool_redis::Pool,
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub async fn new() -> Self {
        let url = redis_url();
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let cfg = self::RedisConfig {
            url: url.clone(),
            pool_size: 16,
            key_prefix: prefix.clone(),
            timeout_ms: 5_000,
            tls_ca_file: None,
        };
        let pool = platform::redis::pool(&cfg).expect("redis pool");
        platform::redis::ping(&pool)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Redis at {url} (set REDIS_URL): {e}"));
        Self { pool, url, prefix }
    }

    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            url: self.url.clone(),
            pool_size: 16,
            key_prefix: self.prefix.clone(),
            timeout_ms: 5_000,
            tls_ca_file: None,
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.prefix);
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(url)
                && let Ok(mut conn) = client.get_connection()
            {
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(&pattern)
                        .query(&mut conn)
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: redis::RedisResult<()> =
                            redis::cmd("DEL").arg(keys).query(&mut conn);
                    }
                }
            }
        })
        .join();
    }
}

/// A service running in-process.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The gateway's private admin port (`/metrics`, `/readyz`, `/healthz`); others ignore it.
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: Shutdown,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The gateway's admin port: `/metrics`, `/readyz`, `/healthz` (its HTTP port is public).
    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.admin_addr.expect("spawned with an admin listener")
        )
    }

    /// Triggers shutdown and waits for the service to stop.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.handle.await?
    }
}

/// Starts a service (its `run(listeners, shutdown)`) on ephemeral ports.
pub async fn spawn<F, Fut>(run: F) -> Running
where
    F: FnOnce(Listeners, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listeners = Listeners::ephemeral().await.expect("bind ephemeral ports");
    let grpc_addr = listeners.grpc.local_addr().unwrap();
    let http_addr = listeners.http.local_addr().unwrap();
    let admin_addr = listeners.admin.as_ref().map(|l| l.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(run(listeners, shutdown.clone()));
    // Answer only once the service serves: its start-up (a first database connection, say) may
    // take a moment, and requests sent meanwhile would wait in the socket's backlog and then be
    // served all at once, in no particular order. A service that stops during start-up (a test
    // of a refused configuration) is returned as it is.
    // (the HTTP port answers every service's `/healthz`, the gateway's with 404: any answer will do;
    // not every service serves its admin listener)
    let started = std::time::Instant::now();
    while !handle.is_finished()
        && started.elapsed() < Duration::from_secs(10)
        && !answers_http(http_addr).await
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        grpc_addr,
        http_addr,
        admin_addr,
        shutdown,
        handle,
    }
}

/// Whether an HTTP server answers `GET /healthz` at `addr` (any status) within half a second.
async fn answers_http(addr: SocketAddr) -> bool {
    http_status(addr, "/healthz").await.is_some()
}

/// The status of `GET path` at `addr` (plain HTTP/1.1), `None` when nothing answers within half a
/// second: for probes (`/readyz`) without an HTTP client dependency.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
        // "HTTP/1.1 503"
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        if !head.starts_with(b"HTTP/") {
            return None;
        }
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
}

/// A connected channel to `addr` (retries for up to 5 s while the server starts).
pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut last = None;
    for _ in 0..50 {
        match endpoint.connect().await {
            Ok(ch) => return ch,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {addr}: {last:?}");
}

/// A token key pair for a test run; services under test get `keys.public_b64()`.
pub fn test_keys() -> Keys {
    Keys::generate()
}

/// The user id the tokens of [`access_token`] carry for `username`: the same for the same name
/// (so a test that opens an account for a user directly can give it that user's id), different
/// for different names. Tests of a service other than auth have no users table to take it from.
pub fn user_id(username: &str) -> Uuid {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: &str| {
        let mut h = DefaultHasher::new();
        (salt, username).hash(&mut h);
        h.finish()
    };
    Uuid::from_u64_pair(half("test-support user id"), half("second half"))
}

/// An access token for `username` (user id [`user_id`]) signed with `keys` (PASETO).
pub fn access_token(keys: &Keys, username: &str, role: Role, email_verified: bool) -> String {
    keys.maker(TokenKind::Paseto)
        .sign(&Claims::access(
            username,
            user_id(username),
            role,
            Uuid::new_v4(),
            email_verified,
            Duration::from_secs(900),
        ))
        .expect("sign test token")
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// Keeps a `TokenMaker` import useful for callers that verify in tests.
pub fn verifier(keys: &Keys) -> std::sync::Arc<dyn TokenMaker> {
    keys.maker(TokenKind::Paseto)
}

/// Set in the child process that runs one test alone (see [`ran_in_own_process`]).
const OWN_PROCESS: &str = "TEST_SUPPORT_OWN_PROCESS";

/// Runs test `name` (its path in this test binary, `logs::…`) alone in a child process of the
/// binary and fails if it fails there; `true` when it did. `false` when already in that child:
/// the caller runs its body then. For a test that installs the global tracing subscriber, reads
/// the process-wide metrics recorder or measures the process's memory: each test crate has one
/// integration-test binary, whose other tests run in the same process at the same time.
pub fn ran_in_own_process(name: &str) -> bool {
    if std::env::var_os(OWN_PROCESS).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS, "1")
        .output()
        .expect("re-running the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // exactly one test ran: a misspelt or renamed test would otherwise run nothing and pass
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    true
}
