//! `cargo xtask up`: refuses to start if a port of the mesh is taken, creates the database if
//! missing, applies migrations, creates the development token keys under `var/keys`, builds and
//! starts all six services with the dev config (emails as `.eml` files under `var/mail`),
//! prefixes each service's log lines with its name, waits until all are ready, and on
//! Ctrl-C/SIGTERM stops them all (SIGTERM, then SIGKILL after 10 s).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole mesh locally until Ctrl-C.
    Up {
        /// Build and run with --release.
        #[arg(long)]
        release: bool,
    },
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Benchmark: our transfers through the mesh vs the pgbench ceiling and the naive peer.
    Bench(bench::BenchArgs),
    /// Write docs/schema.md from the schema the migrations build (--check: fail if it differs).
    SchemaDocs(schema_docs::SchemaDocsArgs),
    /// Fault campaign: keyed transfers through the gateway while transfers, PostgreSQL and Redis
    /// are killed and restarted; checks every answer kept its promise (--quick: CI).
    Chaos(chaos::ChaosArgs),
}

mod bench;
mod chaos;
mod ports;
mod schema_docs;

/// The six services: name, binary, readiness URL.
const SERVICES: [(&str, &str); 6] = [
    ("auth", "http://127.0.0.1:8081/readyz"),
    ("accounts", "http://127.0.0.1:8082/readyz"),
    ("transfers", "http://127.0.0.1:8083/readyz"),
    ("mailer", "http://127.0.0.1:8084/readyz"),
    ("webhooks", "http://127.0.0.1:8086/readyz"),
    // the gateway's health is on its private admin port (the public 8080 serves only the API)
    ("edge-gateway", "http://127.0.0.1:8085/healthz"),
];

/// What the development mesh of `cargo xtask up` turns on beyond the services' defaults: the
/// ledger-events relay in transfers (off by default so tests start none), and webhooks to local
/// receivers (loopback and private addresses are refused by default).
const DEV_MESH_ENV: [(&str, &str); 2] = [
    ("TRANSFERS_RELAY__ENABLED", "true"),
    ("WEBHOOKS_DELIVERY__ALLOW_PRIVATE_DESTINATIONS", "true"),
];

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/transactions".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Migrate => migrate().await,
        Cmd::Up { release } => up(release).await,
        Cmd::Bench(args) => bench::run(args).await,
        Cmd::SchemaDocs(args) => schema_docs::run(args).await,
        Cmd::Chaos(args) => chaos::run(args).await,
    }
}

async fn migrate() -> anyhow::Result<()> {
    migrate_url(&database_url()).await
}

async fn migrate_url(url: &str) -> anyhow::Result<()> {
    let url = url.to_owned();
    platform::db::create_database_if_missing(&url)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url} (set DATABASE_URL)"))?;
    let pool = platform::db::pool(&platform::config::DatabaseConfig {
        url: url.clone(),
        ..Default::default()
    })?;
    platform::db::migrate(&pool).await?;
    pool.close().await;
    println!("xtask: database {url} migrated");
    Ok(())
}

async fn up(release: bool) -> anyhow::Result<()> {
    ports::ensure_free(&ports::MESH)?;
    let root = root();
    std::env::set_current_dir(&root)?;
    migrate().await?;
    let keys_dir = root.join("var/keys");
    platform::token::Keys::load_or_create_dev(&keys_dir)?;
    std::fs::create_dir_all(root.join("var/mail"))?;

    let bin_dir = build(release, &[]).await?;
    // again: a cold build takes minutes, long enough for something else to take a port
    ports::ensure_free(&ports::MESH)?;
    let mut children = Vec::new();
    for (name, _) in SERVICES {
        children.push((
            name,
            spawn(
                name,
                &bin_dir,
                &keys_dir,
                &database_url(),
                "var/mail",
                &DEV_MESH_ENV,
            )?,
        ));
    }

    let outcome = tokio::select! {
        r = wait_ready() => r.map(|_| None),
        exited = first_exit(&mut children) => Ok(Some(exited)),
    };
    match outcome {
        Ok(None) => println!(
            "xtask: all six services are ready — HTTP http://localhost:8080 (Swagger UI /swagger/), gRPC localhost:9090, mail in var/mail. Ctrl-C stops them."
        ),
        Ok(Some(name)) => {
            stop_all(&mut children).await;
            bail!("{name} exited during start-up; see its log lines above");
        }
        Err(e) => {
            stop_all(&mut children).await;
            return Err(e);
        }
    }

    let failed = tokio::select! {
        _ = signal() => None,
        name = first_exit(&mut children) => Some(name),
    };
    let clean = stop_all(&mut children).await;
    if let Some(name) = failed {
        bail!("{name} exited unexpectedly; stopped the others");
    }
    if !clean {
        bail!("not every service stopped cleanly");
    }
    println!("xtask: all services stopped");
    Ok(())
}

/// Builds the six service binaries (and `extra` packages); returns the directory they are in.
async fn build(release: bool, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "--bins"]);
    for name in SERVICES
        .iter()
        .map(|(n, _)| *n)
        .chain(extra.iter().copied())
    {
        build.args(["-p", name]);
    }
    if release {
        build.arg("--release");
    }
    if !build.status().await?.success() {
        bail!("cargo build failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join(if release { "release" } else { "debug" }))
}

fn spawn(
    name: &'static str,
    bin_dir: &Path,
    keys_dir: &Path,
    database_url: &str,
    mail_dir: &str,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    spawn_logging_to(
        name,
        name,
        bin_dir,
        keys_dir,
        database_url,
        mail_dir,
        extra_env,
        None,
    )
}

/// [`spawn`] under a display `label`; with `log_file` the service's output goes to that file
/// (as a container runtime would take it) instead of being relayed to the terminal line by line.
/// `server.gateway_secret` of the local mesh (shared by the gateway and the services).
const DEV_GATEWAY_SECRET: &str = "dev-gateway-secret-not-for-production";

/// `url` naming its sessions `label` in `pg_stat_activity.application_name` (unless it names
/// them already), so a lock held or a query run by a service shows whose it is.
fn with_application_name(url: &str, label: &str) -> String {
    if url.contains("application_name=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={label}")
}

#[allow(clippy::too_many_arguments)]
fn spawn_logging_to(
    name: &'static str,
    label: &'static str,
    bin_dir: &Path,
    keys_dir: &Path,
    database_url: &str,
    mail_dir: &str,
    extra_env: &[(&str, &str)],
    log_file: Option<&Path>,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(bin_dir.join(name));
    cmd.envs(extra_env.iter().copied());
    cmd.env(
        "TXN_DATABASE__URL",
        with_application_name(database_url, label),
    )
    .env("TXN_REDIS__URL", redis_url())
    // the revoked-session stream auth's relay writes, followed by every service
    .env("TXN_TOKEN__REVOCATIONS__REDIS__URL", redis_url())
    // the gateway vouches for the client IP it forwards with this; the services believe
    // x-client-ip only with it (a development value: production sets its own)
    .env("TXN_SERVER__GATEWAY_SECRET", DEV_GATEWAY_SECRET)
    .env("TXN_TELEMETRY__LOG_FORMAT", "pretty")
    .env(
        "TXN_TOKEN__PUBLIC_KEY_FILE",
        keys_dir.join("token_ed25519.pub"),
    )
    .env(
        "AUTH_TOKEN__PRIVATE_KEY_FILE",
        keys_dir.join("token_ed25519.key"),
    )
    .env("MAILER_TRANSPORT__KIND", "file")
    .env("MAILER_TRANSPORT__FILE_DIR", mail_dir)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    match log_file {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        None => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{label:>12}] {line}");
            }
        });
    }
    Ok(child)
}

async fn wait_ready() -> anyhow::Result<()> {
    for (name, url) in SERVICES {
        wait_url(name, url).await?;
    }
    Ok(())
}

/// Waits up to 60 s for `url` to answer 200.
async fn wait_url(name: &str, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http_ok(url).await {
            println!("xtask: {name} is ready");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} not ready after 60 s ({url})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A minimal GET over TCP: true on a 200 answer.
async fn http_ok(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host)).await
    else {
        return false;
    };
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200")
    )
}

async fn first_exit(children: &mut [(&'static str, Child)]) -> &'static str {
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("xtask: {name} exited with {status}");
                return name;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    println!("xtask: stopping all services");
}

/// SIGTERM to every child, SIGKILL after 10 s. True when every child exited with code 0.
async fn stop_all(children: &mut [(&'static str, Child)]) -> bool {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on a pid we spawned and still own.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    let mut clean = true;
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) if status.success() => println!("xtask: {name} stopped"),
            Ok(Ok(status)) => {
                clean = false;
                eprintln!("xtask: {name} exited with {status}");
            }
            _ => {
                clean = false;
                eprintln!("xtask: {name} did not stop within 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    clean
}
