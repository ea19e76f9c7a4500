//! `cargo xtask chaos`: the fault campaign of issue 14 as a command. On processes it starts itself
//! (a throwaway PostgreSQL and Redis on free ports, never the machine's; the transfers and
//! gateway binaries), it sends keyed transfers through the gateway while it SIGTERMs and
//! SIGKILLs transfers, crash-stops and restarts PostgreSQL and stops Redis. A client that gets an
//! answer promising "maybe" (`outcome_unknown`, a transport error) or "not applied, retry"
//! (`upstream_unavailable`, `database_unavailable`, …) retries with the same key, as the README
//! table tells it to. At the end it checks that every key resolved, every 200 was applied once,
//! no key was applied twice, no definitive refusal was applied, no answer was a 500, Σ balances
//! per currency = 0 and `transfers reconcile` is clean, and prints one table. `--quick` (CI,
//! `.ci/checks/chaos.sh`) runs each fault once in well under a minute.

use std::{
    collections::{BTreeMap, HashMap},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use platform::token::{Keys, Role};
use test_support::{
    process::{ServiceProcess, free_addr, free_port},
    servers::ThrowawayPostgres,
};

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Each fault once, short phases (CI).
    #[arg(long)]
    quick: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

const USERS: usize = 8;
const CURRENCY: &str = "USD";
/// How long a client keeps retrying one key before the campaign counts it unresolved.
const RESOLVE_WITHIN: Duration = Duration::from_secs(30);

/// What the clients saw.
#[derive(Default)]
struct Ledgerbook {
    /// Answers by phase and by `status reason`.
    answers: BTreeMap<(usize, String), usize>,
    /// The final answer of each key: its HTTP status (0: never resolved).
    finals: HashMap<String, u16>,
    /// Answers that broke a promise of the README table (a 500, a body without a reason).
    broken: Vec<String>,
}

struct Mesh {
    pg: ThrowawayPostgres,
    redis: std::process::Child,
    redis_port: u16,
    url: String,
    transfers: Option<ServiceProcess>,
    transfers_env: Vec<(String, String)>,
    transfers_http: std::net::SocketAddr,
    gateway: ServiceProcess,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut build = tokio::process::Command::new("cargo");
    build.args(["build", "-q", "-p", "transfers", "-p", "edge-gateway"]);
    // without the variables `cargo run` set for xtask itself: a build script watching one of
    // them would otherwise rebuild the mesh here, and xtask again on the next `cargo xtask`
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && !matches!(name.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build.status().await?;
    if !status.success() {
        bail!("building the mesh binaries failed");
    }
    let bin = |name: &str| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/debug/{name}")
    };
    println!(
        "chaos: mesh built ({:?}); starting a throwaway PostgreSQL and Redis",
        started.elapsed()
    );
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await?;
    let url = pg.url("localhost", "sslmode=require");
    let db_cfg = platform::config::DatabaseConfig {
        url: url.replace("/postgres?", "/chaos?"),
        ..Default::default()
    };
    platform::db::create_database_if_missing_with(&db_cfg).await?;
    let db = platform::db::pool(&db_cfg)?;
    platform::db::migrate(&db).await?;
    let redis_port = free_port();
    let redis = start_redis(redis_port)?;

    let keys = Keys::generate();
    let (grpc, transfers_http) = (free_addr(), free_addr());
    let transfers_env: Vec<(String, String)> = [
        ("TRANSFERS_DATABASE__URL", db_cfg.url.clone()),
        ("TRANSFERS_TOKEN__PUBLIC_KEY", keys.public_b64()),
        ("TRANSFERS_SERVER__GRPC_ADDR", grpc.to_string()),
        ("TRANSFERS_SERVER__HTTP_ADDR", transfers_http.to_string()),
        ("TRANSFERS_MAX_TRANSFER_AMOUNT", "1000000000".into()),
        (
            "TRANSFERS_TOKEN__REVOCATIONS__REDIS__URL",
            format!("redis://127.0.0.1:{redis_port}"),
        ),
        ("TRANSFERS_TELEMETRY__LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let transfers = ServiceProcess::start(&bin("transfers"), &transfers_env, transfers_http).await;
    let (gateway_http, gateway_grpc, admin, nowhere) =
        (free_addr(), free_addr(), free_addr(), free_addr());
    let gateway_env: Vec<(String, String)> = [
        ("EDGE_GATEWAY_HTTP_ADDR", gateway_http.to_string()),
        ("EDGE_GATEWAY_GRPC_ADDR", gateway_grpc.to_string()),
        ("EDGE_GATEWAY_ADMIN_ADDR", admin.to_string()),
        (
            "EDGE_GATEWAY_UPSTREAMS__TRANSFERS",
            format!("http://{grpc}"),
        ),
        ("EDGE_GATEWAY_UPSTREAMS__AUTH", format!("http://{nowhere}")),
        (
            "EDGE_GATEWAY_UPSTREAMS__ACCOUNTS",
            format!("http://{nowhere}"),
        ),
        ("EDGE_GATEWAY_RATE_LIMIT__PER_IP_PER_MINUTE", "0".into()),
        ("EDGE_GATEWAY_TELEMETRY__LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let gateway = ServiceProcess::start(&bin("edge-gateway"), &gateway_env, gateway_http).await;
    let mut mesh = Mesh {
        pg,
        redis,
        redis_port,
        url: db_cfg.url.clone(),
        transfers: Some(transfers),
        transfers_env,
        transfers_http,
        gateway,
    };

    // accounts straight in the database (the accounts service's job), funded through the API
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut accounts = Vec::new();
    for u in 0..USERS {
        let owner = format!("chaos_user{u}");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO ledger.accounts (owner, owner_id, currency) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(&owner)
        .bind(test_support::user_id(&owner))
        .bind(CURRENCY)
        .fetch_one(&db)
        .await?;
        accounts.push((owner, id));
    }
    let banker = test_support::access_token(&keys, "chaos_banker", Role::Banker, true);
    for (_, id) in &accounts {
        let resp = http
            .post(format!("http://{gateway_http}/v1/accounts/{id}:deposit"))
            .bearer_auth(&banker)
            .header("idempotency-key", format!("fund-{id}"))
            .json(&serde_json::json!({"amount": "100000000", "currency": CURRENCY}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("funding account {id}: {}", resp.text().await?);
        }
    }

    let book = Arc::new(Mutex::new(Ledgerbook::default()));
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tokens: Vec<String> = accounts
        .iter()
        .map(|(owner, _)| test_support::access_token(&keys, owner, Role::Depositor, true))
        .collect();
    let accounts = Arc::new(accounts);
    let tokens = Arc::new(tokens);
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let (http, book, phase, stop) =
                (http.clone(), book.clone(), phase.clone(), stop.clone());
            let (accounts, tokens) = (accounts.clone(), tokens.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let from = (c + n) % USERS;
                    let to = (from + 1 + n % (USERS - 1)) % USERS;
                    let key = format!("chaos-{c}-{n}");
                    let body = serde_json::json!({
                        "from_account_id": accounts[from].1.to_string(),
                        "to_account_id": accounts[to].1.to_string(),
                        "amount": "1",
                        "currency": CURRENCY,
                    });
                    let url = format!("http://{gateway_http}/v1/transfers");
                    let status =
                        send_until_resolved(&http, &url, &tokens[from], &key, &body, &book, &phase)
                            .await;
                    book.lock().unwrap().finals.insert(key, status);
                }
            })
        })
        .collect();

    let (step, outage) = if args.quick {
        (Duration::from_secs(3), Duration::from_millis(1_500))
    } else {
        (Duration::from_secs(15), Duration::from_secs(5))
    };
    let faults = [
        "no fault",
        "SIGTERM transfers",
        "SIGKILL transfers",
        "PostgreSQL crash-stopped",
        "Redis stopped",
    ];
    for (i, fault) in faults.iter().enumerate() {
        phase.store(i, std::sync::atomic::Ordering::SeqCst);
        println!("chaos: phase {i}: {fault} (at {:?})", started.elapsed());
        tokio::time::sleep(step / 2).await;
        match i {
            1 | 2 => {
                let mut old = mesh.transfers.take().expect("transfers runs");
                if i == 1 {
                    old.sigterm();
                    old.wait(Duration::from_secs(15)).await;
                } else {
                    old.sigkill();
                    old.wait(Duration::from_secs(5)).await;
                }
                drop(old);
                mesh.transfers = Some(
                    ServiceProcess::start(
                        &bin("transfers"),
                        &mesh.transfers_env,
                        mesh.transfers_http,
                    )
                    .await,
                );
            }
            3 => {
                let pg = mesh.pg;
                let pg = tokio::task::spawn_blocking(move || {
                    pg.stop();
                    std::thread::sleep(outage);
                    pg.start_again();
                    pg
                })
                .await?;
                mesh.pg = pg;
            }
            4 => {
                let _ = mesh.redis.kill();
                let _ = mesh.redis.wait();
                tokio::time::sleep(outage).await;
                mesh.redis = start_redis(mesh.redis_port)?;
            }
            _ => {}
        }
        tokio::time::sleep(step / 2).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    println!(
        "chaos: faults done (at {:?}); letting every key resolve",
        started.elapsed()
    );
    for c in clients {
        c.await?;
    }

    // the database's view
    let db = platform::db::pool(&platform::config::DatabaseConfig {
        url: mesh.url.clone(),
        ..Default::default()
    })?;
    let applied: Vec<String> = sqlx::query_scalar(
        "SELECT k.key FROM ledger.idempotency_keys k WHERE k.key LIKE 'chaos-%'",
    )
    .fetch_all(&db)
    .await?;
    let transfers_moved: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger.transfers t WHERE t.amount = 1")
            .fetch_one(&db)
            .await?;
    let sums: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, COALESCE(SUM(balance), 0)::bigint FROM ledger.accounts GROUP BY currency",
    )
    .fetch_all(&db)
    .await?;
    db.close().await;
    let reconcile = tokio::process::Command::new(bin("transfers"))
        .arg("reconcile")
        .envs(
            mesh.transfers_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .context("running transfers reconcile")?;

    let book = book.lock().unwrap();
    let applied_set: std::collections::HashSet<&str> = applied.iter().map(String::as_str).collect();
    let mut violations = book.broken.clone();
    let mut ok = 0;
    let mut refused = 0;
    for (key, status) in &book.finals {
        match status {
            200 => {
                ok += 1;
                if !applied_set.contains(key.as_str()) {
                    violations.push(format!("{key}: answered 200 but not in the ledger"));
                }
            }
            0 => violations.push(format!("{key}: never resolved within {RESOLVE_WITHIN:?}")),
            _ => {
                refused += 1;
                if applied_set.contains(key.as_str()) {
                    violations.push(format!("{key}: refused ({status}) but applied"));
                }
            }
        }
    }
    if transfers_moved != ok as i64 {
        violations.push(format!(
            "the ledger holds {transfers_moved} transfers of the campaign, the clients saw {ok} succeed (a transfer lost or doubled)"
        ));
    }
    for (currency, sum) in &sums {
        if *sum != 0 {
            violations.push(format!("Σ balances in {currency} = {sum}, not 0"));
        }
    }
    if !reconcile.status.success() {
        violations.push(format!(
            "reconcile failed:\n{}",
            String::from_utf8_lossy(&reconcile.stdout)
        ));
    }

    println!();
    println!("| phase | fault | answer | count |");
    println!("|---|---|---|---|");
    for ((p, answer), count) in &book.answers {
        println!("| {p} | {} | {answer} | {count} |", faults[*p]);
    }
    println!();
    println!(
        "keys: {} ({ok} applied, {refused} refused), ledger: {transfers_moved} transfers, Σ balances: {sums:?}, reconcile: {}, took {:?}",
        book.finals.len(),
        if reconcile.status.success() {
            "clean"
        } else {
            "FAILED"
        },
        started.elapsed()
    );
    drop(mesh.gateway);
    drop(mesh.transfers);
    let _ = mesh.redis.kill();
    let _ = mesh.redis.wait();
    drop(mesh.pg);
    if violations.is_empty() {
        println!("chaos: every answer kept its promise");
        Ok(())
    } else {
        for v in violations.iter().take(50) {
            println!("VIOLATION: {v}");
        }
        bail!("{} promises broken", violations.len())
    }
}

/// Sends one keyed transfer until it gets a definitive answer, retrying with the same key on
/// every answer the README table says to retry (and on transport errors): its final status.
async fn send_until_resolved(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    body: &serde_json::Value,
    book: &Mutex<Ledgerbook>,
    phase: &std::sync::atomic::AtomicUsize,
) -> u16 {
    let deadline = Instant::now() + RESOLVE_WITHIN;
    // an earlier answer of this key said "maybe applied": a replay is then expected
    let mut maybe_seen = false;
    let mut answered_not_applied = None;
    while Instant::now() < deadline {
        let sent = http
            .post(url)
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        let p = phase.load(std::sync::atomic::Ordering::SeqCst);
        let (status, reason, replayed) = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let reason = body["details"][0]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                (status, reason, body["replayed"].as_bool().unwrap_or(false))
            }
            // the gateway itself unreachable: nothing is known; retry
            Err(e) => (0, format!("transport error: {}", e.without_url()), false),
        };
        // what the README table promises for this answer: "maybe" or "not applied"
        match (status, reason.as_str()) {
            (200, _) => {}
            (0, _) | (_, "outcome_unknown" | "upstream_timeout") => maybe_seen = true,
            _ => answered_not_applied = Some(format!("{status} {reason}")),
        }
        {
            let mut book = book.lock().unwrap();
            let label = if status == 200 {
                "200".to_owned()
            } else {
                format!("{status} {reason}")
            };
            *book.answers.entry((p, label)).or_default() += 1;
            if status >= 500 && status != 503 && status != 504 {
                book.broken.push(format!("{key}: {status} {reason}"));
            }
            if status >= 500 && reason.is_empty() {
                book.broken
                    .push(format!("{key}: {status} without a reason"));
            }
        }
        if status == 200
            && replayed
            && !maybe_seen
            && let Some(earlier) = &answered_not_applied
        {
            // every earlier answer promised "not applied", yet the key was already applied
            book.lock().unwrap().broken.push(format!(
                "{key}: answered {earlier} (not applied) but a retry replayed it"
            ));
        }
        match status {
            200 => return 200,
            // "not applied, retry" or "maybe: retry with the same key" (README table)
            0 | 503 | 504 => tokio::time::sleep(Duration::from_millis(100)).await,
            definitive => return definitive,
        }
    }
    0
}

fn start_redis(port: u16) -> anyhow::Result<std::process::Child> {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server")?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not start on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}
