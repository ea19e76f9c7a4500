//! `cargo xtask bench`: creates a fresh database of its own (dropping a leftover one of the same
//! name, and dropping it again at the end unless `--keep-database`), starts the mesh against it
//! on ports of its own (never the standard ones a developer's mesh uses), sets up the accounts
//! through the public API once (loadgen `--setup-only`: sign up, verify, log in, open, fund; the
//! access tokens are kept in a file and re-used by every scenario), then runs every scenario for
//! the same duration and concurrency, interleaved round by round so machine drift hits all of them
//! alike, and prints one table with the ratios the benchmark issue asks for, plus each service's
//! idle and peak RSS.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tokio::process::Command;

mod chart;
mod cpu;
mod growth;
mod scripts;

use crate::{build, migrate_url, ports, root, spawn_logging_to, stop_all, wait_url};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds per scenario per round.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Concurrent clients (loadgen) / connections (pgbench).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Accounts in the bench set.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Interleaved rounds; the tables show min / median / max of each scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Which suite: `standard` (ours vs the yardsticks) or `growth` (the same calls on a small
    /// ledger and after a long history is preloaded).
    #[arg(long, value_enum, default_value = "standard")]
    scenario: Suite,
    /// Transfers of history the growth suite preloads (generated in SQL).
    #[arg(long, default_value_t = 10_000_000)]
    growth_transfers: u64,
    /// Connections of the database-limit scenario: the batches the service sends at once
    /// (`batch.max_in_flight`, 4 by default).
    #[arg(long, default_value_t = 4)]
    db_limit_clients: usize,
    /// Also write the per-round chart here (e.g. docs/bench-rounds.svg); it is always written
    /// to var/bench/rounds.svg.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// A few seconds, small N, debug build: proves the harness runs (CI).
    #[arg(long)]
    smoke: bool,
    /// Database for the benchmark: dropped if it exists and created fresh for every run (its
    /// name must contain `bench`, so the dev database is never dropped by mistake).
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/transactions_bench"
    )]
    database_url: String,
    /// Keep the bench database after the run (to inspect it); the next run drops it anyway.
    #[arg(long)]
    keep_database: bool,
    /// Run only the scenarios whose name contains one of these (comma-separated or repeated),
    /// e.g. `--only "grpc-direct hot"`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also run every scenario of a round with this many busy-loop processes beside it
    /// (`sh -c 'while :; do :; done'`, nice 0, started before and killed after it): each
    /// scenario then appears twice per round, plain and `+ hog N`, one right after the other.
    #[arg(long, default_value_t = 0)]
    hog: usize,
}

const BANKER: &str = "loadgen_banker";
const BANKER_PASSWORD: &str = "loadgen-banker-password";

/// One process of the bench mesh: the binary, its label, the addresses it listens on (as
/// environment overrides of its config) and its readiness URL. The bench listens on ports of its
/// own (28xxx, below the ephemeral range 32768+ where an outgoing connection could hold one), so it runs beside a developer's mesh on the standard ones and never answers in its
/// place.
struct BenchService {
    bin: &'static str,
    label: &'static str,
    env: &'static [(&'static str, &'static str)],
    listeners: &'static [ports::Listener<'static>],
    ready: &'static str,
}

const BENCH_MESH: [BenchService; 6] = [
    BenchService {
        bin: "auth",
        label: "auth",
        env: &[
            ("AUTH_SERVER__GRPC_ADDR", "127.0.0.1:28051"),
            ("AUTH_SERVER__HTTP_ADDR", "127.0.0.1:28081"),
        ],
        listeners: &[
            ports::listener("auth", "gRPC", "127.0.0.1:28051"),
            ports::listener("auth", "side HTTP", "127.0.0.1:28081"),
        ],
        ready: "http://127.0.0.1:28081/readyz",
    },
    BenchService {
        bin: "accounts",
        label: "accounts",
        env: &[
            ("ACCOUNTS_SERVER__GRPC_ADDR", "127.0.0.1:28052"),
            ("ACCOUNTS_SERVER__HTTP_ADDR", "127.0.0.1:28082"),
        ],
        listeners: &[
            ports::listener("accounts", "gRPC", "127.0.0.1:28052"),
            ports::listener("accounts", "side HTTP", "127.0.0.1:28082"),
        ],
        ready: "http://127.0.0.1:28082/readyz",
    },
    BenchService {
        bin: "transfers",
        label: "transfers",
        env: &[
            ("TRANSFERS_SERVER__GRPC_ADDR", "127.0.0.1:28053"),
            ("TRANSFERS_SERVER__HTTP_ADDR", "127.0.0.1:28083"),
            // as a deployment runs it: the ledger-events relay publishes every scenario's events
            // (pgbench's too) to Redis, on the same cores, and the outbox trigger's NOTIFY
            // behaves as it does with a relay that keeps up (one relay publishes at a time, so
            // the holding instance runs none)
            ("TRANSFERS_RELAY__ENABLED", "true"),
        ],
        listeners: &[
            ports::listener("transfers", "gRPC", "127.0.0.1:28053"),
            ports::listener("transfers", "side HTTP", "127.0.0.1:28083"),
        ],
        ready: "http://127.0.0.1:28083/readyz",
    },
    // A second transfers instance, the same binary with `batch.hold_conflicting = true`, so the
    // table shows what holding conflicting batches back does, side by side in the same run.
    BenchService {
        bin: "transfers",
        label: "transfers-holding",
        env: &[
            ("TRANSFERS_SERVER__GRPC_ADDR", "127.0.0.1:28063"),
            ("TRANSFERS_SERVER__HTTP_ADDR", "127.0.0.1:28093"),
            ("TRANSFERS_BATCH__HOLD_CONFLICTING", "true"),
        ],
        listeners: &[
            ports::listener("transfers (holding)", "gRPC", "127.0.0.1:28063"),
            ports::listener("transfers (holding)", "side HTTP", "127.0.0.1:28093"),
        ],
        ready: "http://127.0.0.1:28093/readyz",
    },
    BenchService {
        bin: "mailer",
        label: "mailer",
        env: &[("MAILER_HTTP_ADDR", "127.0.0.1:28084")],
        listeners: &[ports::listener("mailer", "side HTTP", "127.0.0.1:28084")],
        ready: "http://127.0.0.1:28084/readyz",
    },
    BenchService {
        bin: "edge-gateway",
        label: "edge-gateway",
        env: &[
            ("EDGE_GATEWAY_HTTP_ADDR", "127.0.0.1:28080"),
            ("EDGE_GATEWAY_GRPC_ADDR", "127.0.0.1:28090"),
            ("EDGE_GATEWAY_ADMIN_ADDR", "127.0.0.1:28085"),
            ("EDGE_GATEWAY_UPSTREAMS__AUTH", "http://127.0.0.1:28051"),
            ("EDGE_GATEWAY_UPSTREAMS__ACCOUNTS", "http://127.0.0.1:28052"),
            // the webhooks API is not benchmarked and its service is not started here; the
            // gateway needs an upstream for every package it routes (it connects on first use)
            ("EDGE_GATEWAY_UPSTREAMS__WEBHOOKS", "http://127.0.0.1:28054"),
            (
                "EDGE_GATEWAY_UPSTREAMS__TRANSFERS",
                "http://127.0.0.1:28053",
            ),
        ],
        listeners: &[
            ports::listener("edge-gateway", "public HTTP", "127.0.0.1:28080"),
            ports::listener("edge-gateway", "public gRPC", "127.0.0.1:28090"),
            ports::listener("edge-gateway", "admin HTTP", "127.0.0.1:28085"),
        ],
        ready: "http://127.0.0.1:28085/healthz",
    },
];

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Suite {
    Standard,
    Growth,
}

const TRANSFERS_GRPC: &str = "http://127.0.0.1:28053";
/// gRPC address of the second transfers instance (`batch.hold_conflicting = true`).
const HOLD_GRPC: &str = "http://127.0.0.1:28063";
const GATEWAY_GRPC: &str = "http://127.0.0.1:28090";
const GATEWAY_HTTP: &str = "http://127.0.0.1:28080";

fn bench_listeners() -> Vec<ports::Listener<'static>> {
    BENCH_MESH
        .iter()
        .flat_map(|s| s.listeners.iter().copied())
        .collect()
}

/// Drops the bench database if it exists and creates it afresh (then migrates it). Refuses a
/// database whose name lacks `bench`: this is the one command that drops a database.
async fn fresh_database(url: &str) -> anyhow::Result<()> {
    let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
    let name = opts
        .get_database()
        .context("the bench database URL names no database")?
        .to_owned();
    if !name.contains("bench") {
        bail!("refusing to drop database {name:?}: a bench database's name contains \"bench\"");
    }
    let admin = sqlx::PgPool::connect_with(opts.database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .with_context(|| format!("drop database {name}"))?;
    admin.close().await;
    migrate_url(url).await
}

async fn drop_database(url: &str) -> anyhow::Result<()> {
    let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
    let name = opts.get_database().unwrap_or_default().to_owned();
    if !name.contains("bench") {
        return Ok(());
    }
    let admin = sqlx::PgPool::connect_with(opts.database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    println!("xtask bench: database {name} dropped");
    Ok(())
}

/// How many transfers one call of a batch scenario carries.
#[derive(Clone, Copy)]
enum Size {
    /// One: the ceiling (the statement of a transfer that arrives alone).
    One,
    /// The mean batch the service formed in this round's run of the named scenario.
    AsFormedBy(&'static str),
}

#[derive(Clone, Copy)]
enum Kind {
    Loadgen {
        target: &'static str,
        mode: &'static str,
        /// true: the second transfers instance, run with `batch.hold_conflicting = true`
        hold: bool,
    },
    /// `bench/transfer_batch.sql` under pgbench.
    Batch { hot: bool, size: Size },
    /// `bench/naive.sql` under pgbench.
    Naive { hot: bool },
}

const UNIFORM: &str = "ours grpc-direct uniform";
const HOT: &str = "ours grpc-direct hot";
/// Bulk requests (CreateTransfers) of loadgen's default 100 items, from the caller's own account.
const BULK: &str = "ours grpc-direct bulk";

const SCENARIOS: [(&str, Kind); 15] = [
    (
        UNIFORM,
        Kind::Loadgen {
            target: "grpc-direct",
            mode: "uniform",
            hold: false,
        },
    ),
    (
        "ours grpc-gateway uniform",
        Kind::Loadgen {
            target: "grpc-gateway",
            mode: "uniform",
            hold: false,
        },
    ),
    (
        "ours http-gateway uniform",
        Kind::Loadgen {
            target: "http-gateway",
            mode: "uniform",
            hold: false,
        },
    ),
    (
        HOT,
        Kind::Loadgen {
            target: "grpc-direct",
            mode: "hot",
            hold: false,
        },
    ),
    (
        "ours grpc-direct hot, hold then post",
        Kind::Loadgen {
            target: "grpc-direct",
            mode: "hot-hold-post",
            hold: false,
        },
    ),
    (
        "ours grpc-direct uniform, holding",
        Kind::Loadgen {
            target: "grpc-direct",
            mode: "uniform",
            hold: true,
        },
    ),
    (
        "ours grpc-direct hot, holding",
        Kind::Loadgen {
            target: "grpc-direct",
            mode: "hot",
            hold: true,
        },
    ),
    (
        BULK,
        Kind::Loadgen {
            target: "grpc-direct",
            mode: "bulk",
            hold: false,
        },
    ),
    (
        "database limit uniform",
        Kind::Batch {
            hot: false,
            size: Size::AsFormedBy(UNIFORM),
        },
    ),
    (
        "database limit hot",
        Kind::Batch {
            hot: true,
            size: Size::AsFormedBy(HOT),
        },
    ),
    (
        "database limit bulk",
        Kind::Batch {
            hot: false,
            size: Size::AsFormedBy(BULK),
        },
    ),
    (
        "ceiling uniform",
        Kind::Batch {
            hot: false,
            size: Size::One,
        },
    ),
    (
        "ceiling hot",
        Kind::Batch {
            hot: true,
            size: Size::One,
        },
    ),
    ("naive uniform", Kind::Naive { hot: false }),
    ("naive hot", Kind::Naive { hot: true }),
];

/// One scenario in one round.
#[derive(Default, Clone, serde::Serialize)]
struct Figure {
    /// Transfers per second (loadgen: answered OK; pgbench: rows written to ledger.transfers).
    tps: f64,
    transfers: f64,
    p99_ms: Option<f64>,
    /// pgbench: mean latency of one call (one transfer, or one batch).
    latency_avg_ms: Option<f64>,
    /// Transfers per call: the mean batch the service formed (from its `transfer_batch_size`
    /// histogram), or the batch size pgbench sent.
    batch: Option<f64>,
    /// CPU seconds per process group over the scenario.
    cpu: BTreeMap<String, f64>,
    /// /proc/loadavg before and after.
    load_before: String,
    load_after: String,
    /// Backends of the bench database waiting for a lock (`pg_stat_activity.wait_event_type =
    /// 'Lock'`), and those active, on average over samples every 100 ms.
    lock_waiting: Option<f64>,
    active: Option<f64>,
    /// The transfers instance's `transfer_batch_failures_total` (a batch that ran out of lock
    /// time or failed as a whole) and `transfer_batches_held_total` over the scenario.
    batch_failures: Option<f64>,
    batches_held: Option<f64>,
    /// Busy-loop processes that ran beside it.
    hog: usize,
}

impl Figure {
    /// CPU milliseconds per transfer of `group` (= seconds per 1,000 transfers).
    fn cpu_per_1000(&self, group: &str) -> Option<f64> {
        let secs = self.cpu.get(group)?;
        (self.transfers > 0.0).then(|| secs / self.transfers * 1000.0)
    }
}

/// What the scenarios need from the run.
pub(crate) struct Ctx<'a> {
    bin_dir: &'a Path,
    args: &'a BenchArgs,
    parties: &'a Path,
    set: &'a scripts::BenchSet,
    scripts: &'a scripts::Scripts,
    /// (label, pid) of every service.
    pids: Vec<(String, u32)>,
    database: String,
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.duration_secs = args.duration_secs.min(2);
        args.clients = args.clients.min(4);
        args.accounts = args.accounts.min(10);
        args.rounds = 1;
        args.growth_transfers = args.growth_transfers.min(2_000);
    }
    let release = !args.smoke;
    let all_ports = bench_listeners();
    ports::ensure_free(&all_ports)?;
    let root = root();
    std::env::set_current_dir(&root)?;
    fresh_database(&args.database_url).await?;
    let keys_dir = root.join("var/keys");
    platform::token::Keys::load_or_create_dev(&keys_dir)?;
    let mail_dir = "var/bench-mail";
    std::fs::create_dir_all(mail_dir)?;
    let bin_dir = build(release, &["loadgen"]).await?;

    create_banker(&bin_dir, &keys_dir, &args.database_url).await?;
    // again: a release build takes minutes, long enough for something else to take a port
    ports::ensure_free(&all_ports)?;

    // Service output goes to files, as a container runtime would take it: relaying every log
    // line through this process would cost CPU the services need (the machine is shared).
    let log_dir = root.join("var/bench-logs");
    std::fs::create_dir_all(&log_dir)?;
    let work_dir = root.join("var/bench");
    std::fs::create_dir_all(&work_dir)?;
    // Redis keys of this run only (login throttle, email stream, revocations): nothing left by
    // an earlier run or another mesh counts here.
    let redis_prefix = format!("bench:{}:", std::process::id());
    let redis_url = crate::redis_url();
    let common_env = [
        ("TXN_REDIS__URL", redis_url.as_str()),
        ("TXN_TOKEN__REVOCATIONS__REDIS__URL", redis_url.as_str()),
        // every bench client comes from one IP: the gateway's per-IP limit on sign-up, login
        // and renew would refuse the setup (a guard against guessing, not a capacity limit, and
        // off the transfer path being measured)
        ("EDGE_GATEWAY_RATE_LIMIT__PER_IP_PER_MINUTE", "0"),
        // the setup logs every user in once and the scenarios re-use the tokens for the whole
        // run, which can outlast the default 15 minutes
        ("AUTH_SESSION__ACCESS_TOKEN_TTL_SECS", "86400"),
        ("TXN_REDIS__KEY_PREFIX", redis_prefix.as_str()),
        (
            "TXN_TOKEN__REVOCATIONS__REDIS__KEY_PREFIX",
            redis_prefix.as_str(),
        ),
        ("AUTH_TELEMETRY__LOG_FORMAT", "json"),
        ("ACCOUNTS_TELEMETRY__LOG_FORMAT", "json"),
        ("TRANSFERS_TELEMETRY__LOG_FORMAT", "json"),
        ("MAILER_TELEMETRY__LOG_FORMAT", "json"),
        ("EDGE_GATEWAY_TELEMETRY__LOG_FORMAT", "json"),
    ];
    let mut children = Vec::new();
    for svc in &BENCH_MESH {
        let mut env = common_env.to_vec();
        env.extend(svc.env.iter().copied());
        children.push((
            svc.label,
            spawn_logging_to(
                svc.bin,
                svc.label,
                &bin_dir,
                &keys_dir,
                &args.database_url,
                mail_dir,
                &env,
                Some(&log_dir.join(format!("{}.log", svc.label))),
            )?,
        ));
    }
    println!(
        "xtask bench: service logs in {} (tail -f to watch)",
        log_dir.display()
    );
    let parties = work_dir.join("parties.json");
    let result = async {
        for svc in &BENCH_MESH {
            wait_url(svc.label, svc.ready).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle: BTreeMap<&str, u64> = children
            .iter()
            .filter_map(|(n, c)| c.id().map(|pid| (*n, rss_kb(pid, "VmRSS"))))
            .collect();
        // setup through the public API, once: users, verification, logins, accounts, deposits
        loadgen(&bin_dir, &args, &parties, &["--setup-only"]).await?;
        let pool = sqlx::PgPool::connect(&args.database_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(std::fs::read_to_string(
            "bench/setup.sql",
        )?))
        .execute(&pool)
        .await?;
        let set = scripts::BenchSet::load(&pool).await?;
        pool.close().await;
        if set.len() < args.accounts {
            bail!(
                "bench set has {} accounts, expected {}",
                set.len(),
                args.accounts
            );
        }
        let scripts = scripts::Scripts::new(work_dir.join("scripts"))?;
        let opts: sqlx::postgres::PgConnectOptions = args.database_url.parse()?;
        let ctx = Ctx {
            bin_dir: &bin_dir,
            args: &args,
            parties: &parties,
            set: &set,
            scripts: &scripts,
            pids: children
                .iter()
                .filter_map(|(n, c)| c.id().map(|pid| ((*n).to_owned(), pid)))
                .collect(),
            database: opts.get_database().unwrap_or_default().to_owned(),
        };
        match args.scenario {
            Suite::Standard => standard(&ctx, &work_dir).await?,
            Suite::Growth => growth::run(&ctx, &work_dir).await?,
        }
        let peak: BTreeMap<&str, u64> = children
            .iter()
            .filter_map(|(n, c)| c.id().map(|pid| (*n, rss_kb(pid, "VmHWM"))))
            .collect();
        println!();
        println!("| service | idle RSS MB | peak RSS MB |");
        println!("|---|---:|---:|");
        for svc in &BENCH_MESH {
            let name = svc.label;
            println!(
                "| {name} | {:.1} | {:.1} |",
                idle.get(name).copied().unwrap_or(0) as f64 / 1024.0,
                peak.get(name).copied().unwrap_or(0) as f64 / 1024.0
            );
        }
        anyhow::Ok(())
    }
    .await;
    let clean = stop_all(&mut children).await;
    if !args.keep_database {
        drop_database(&args.database_url).await?;
    }
    // the run's Redis keys (login throttle, revocations, the email and ledger-event streams)
    match delete_redis_keys(&redis_url, &redis_prefix).await {
        Ok(n) => println!("xtask bench: deleted the run's {n} Redis keys ({redis_prefix}*)"),
        Err(e) => eprintln!("xtask bench: could not delete the Redis keys {redis_prefix}*: {e:#}"),
    }
    result?;
    if !clean {
        bail!("a service did not stop cleanly");
    }
    Ok(())
}

/// Deletes every Redis key starting with `prefix` (SCAN, then UNLINK in chunks); how many.
async fn delete_redis_keys(url: &str, prefix: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in keys.chunks(500) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(keys.len())
}

/// The standard suite: every scenario, interleaved round by round; then the tables, the JSON and
/// the chart.
async fn standard(ctx: &Ctx<'_>, work_dir: &Path) -> anyhow::Result<()> {
    let args = ctx.args;
    let plan = plan(args);
    if plan.is_empty() {
        bail!("--only {:?} matches no scenario", args.only);
    }
    let names: Vec<&'static str> = plan.iter().map(|(n, _, _)| *n).collect();
    let mut rounds: Vec<BTreeMap<&str, Figure>> = Vec::new();
    for round in 1..=args.rounds {
        println!(
            "xtask bench: round {round}/{} (load average {})",
            args.rounds,
            cpu::load_average()
        );
        let mut figures: BTreeMap<&str, Figure> = BTreeMap::new();
        for &(name, kind, hog) in &plan {
            let f = run_scenario(ctx, kind, &figures, hog).await?;
            println!(
                "  {name:<38} {:>9.0}/s{}  cpu ms/transfer: backends {:.3}, transfers {:.3}, client {:.3}  (load {} -> {}){}",
                f.tps,
                f.batch
                    .map(|b| format!(" ({b:.1}/call)"))
                    .unwrap_or_default(),
                f.cpu_per_1000(cpu::BACKENDS).unwrap_or(0.0),
                f.cpu_per_1000("transfers")
                    .or(f.cpu_per_1000("transfers-holding"))
                    .unwrap_or(0.0),
                f.cpu_per_1000("client").unwrap_or(0.0),
                f.load_before,
                f.load_after,
                match (f.lock_waiting, f.batch_failures) {
                    (Some(w), Some(b)) => format!(
                        "  lock waits {w:.2}, batch failures {b:.0}, held {:.0}",
                        f.batches_held.unwrap_or(0.0)
                    ),
                    (Some(w), None) => format!("  lock waits {w:.2}"),
                    _ => String::new(),
                },
            );
            figures.insert(name, f);
        }
        // once a round: every scenario of it, pgbench's too, left the ledger consistent
        let r = reconcile(ctx).await?;
        println!("  reconcile: ok in {r:.0} ms");
        rounds.push(figures);
    }
    let overhead = generator_overhead(ctx, &rounds).await?;
    let report = report(args, &names, &rounds, overhead);
    println!("\n{report}");
    std::fs::write(work_dir.join("report.md"), &report)?;
    std::fs::write(
        work_dir.join("rounds.json"),
        serde_json::to_vec_pretty(&rounds)?,
    )?;
    let title = format!(
        "cargo xtask bench: {} clients, {} accounts, {} s × {} rounds, {} cores",
        args.clients,
        args.accounts,
        args.duration_secs,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rows: Vec<(String, Vec<f64>)> = names
        .iter()
        .map(|name| {
            (
                (*name).to_owned(),
                rounds
                    .iter()
                    .filter_map(|r| r.get(name).map(|f| f.tps))
                    .collect(),
            )
        })
        .collect();
    let svg = chart::svg(&title, &rows);
    std::fs::write(work_dir.join("rounds.svg"), &svg)?;
    if let Some(path) = &args.chart {
        std::fs::write(path, &svg)?;
    }
    println!(
        "xtask bench: report, per-round JSON and chart in {}",
        work_dir.display()
    );
    Ok(())
}

/// The scenarios of this run in order: (name, kind, busy loops beside it); `--only` filters,
/// `--hog N` adds a `+ hog N` run right after each.
fn plan(args: &BenchArgs) -> Vec<(&'static str, Kind, usize)> {
    let mut out = Vec::new();
    for (name, kind) in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        out.push((name, kind, 0));
        if args.hog > 0 {
            // names live for the whole run (the figures are keyed by them)
            let hogged: &'static str =
                Box::leak(format!("{name} + hog {}", args.hog).into_boxed_str());
            out.push((hogged, kind, args.hog));
        }
    }
    out
}

/// `n` busy-loop processes at nice 0, killed when the returned handles are dropped.
fn start_hog(n: usize) -> anyhow::Result<Vec<tokio::process::Child>> {
    (0..n)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("start a busy loop")
        })
        .collect()
}

async fn stop_hog(hog: Vec<tokio::process::Child>) {
    for mut c in hog {
        let _ = c.kill().await;
    }
}

/// Samples `pg_stat_activity` of `database` every 100 ms until `stop` fires: (mean backends
/// waiting for a lock, mean backends active), the sampler's own session excluded. A wait that
/// has lasted over [`LONG_WAIT`] is printed at once with the sessions blocking it (whose they are
/// by `application_name`, their state, how long their transaction has been open, their query),
/// so a stall is explained even if the scenario then fails; at most [`LONG_WAITS_SHOWN`] per
/// scenario. (The naive peer's hot scenario queues its 32 clients on one row for up to ~1.5 s,
/// by design: below the bound.)
async fn sample_locks(
    url: String,
    database: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<(f64, f64)> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .ok()?;
    let (mut waiting, mut active, mut n) = (0i64, 0i64, 0u32);
    let mut reported: std::collections::HashSet<(i32, i32)> = std::collections::HashSet::new();
    let long_wait = format!("{} seconds", LONG_WAIT.as_secs());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let row: Result<(i64, i64, i64), _> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
                    count(*) FILTER (WHERE state = 'active'),
                    count(*) FILTER (WHERE wait_event_type = 'Lock'
                                     AND now() - query_start > $2::interval)
             FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .bind(&long_wait)
        .fetch_one(&mut conn)
        .await;
        let Ok((w, a, long)) = row else { continue };
        waiting += w;
        active += a;
        n += 1;
        if long > 0 && reported.len() < LONG_WAITS_SHOWN {
            report_long_waits(&mut conn, &database, &long_wait, &mut reported).await;
        }
    }
    (n > 0).then(|| (waiting as f64 / n as f64, active as f64 / n as f64))
}

/// A lock wait longer than this is printed with its blocker (see [`sample_locks`]).
const LONG_WAIT: Duration = Duration::from_secs(3);
/// At most this many (waiting, blocking) pairs are printed per scenario.
const LONG_WAITS_SHOWN: usize = 5;

/// Prints each (waiting, blocking) pair of sessions of `database` whose wait has lasted over
/// `long_wait` (an interval), once per pair, up to [`LONG_WAITS_SHOWN`] pairs.
async fn report_long_waits(
    conn: &mut sqlx::PgConnection,
    database: &str,
    long_wait: &str,
    reported: &mut std::collections::HashSet<(i32, i32)>,
) {
    type Row = (
        i32,
        String,
        f64,
        String,
        i32,
        String,
        String,
        String,
        f64,
        String,
    );
    let rows: Result<Vec<Row>, _> = sqlx::query_as(
        "SELECT w.pid, w.application_name,
                extract(epoch FROM now() - w.query_start)::float8, left(w.query, 60),
                b.pid, b.application_name, COALESCE(b.state, b.backend_type),
                COALESCE(b.wait_event_type || ':' || b.wait_event, 'not waiting'),
                COALESCE(extract(epoch FROM now() - b.xact_start)::float8, 0),
                left(b.query, 160)
         FROM pg_stat_activity w
         CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid)
         JOIN pg_stat_activity b ON b.pid = blocker.pid
         WHERE w.datname = $1 AND w.wait_event_type = 'Lock'
           AND now() - w.query_start > $2::interval",
    )
    .bind(database)
    .bind(long_wait)
    .fetch_all(&mut *conn)
    .await;
    for (wpid, wapp, wsecs, wquery, bpid, bapp, bstate, bwait, bsecs, bquery) in
        rows.unwrap_or_default()
    {
        if reported.len() < LONG_WAITS_SHOWN && reported.insert((wpid, bpid)) {
            eprintln!(
                "xtask bench: session {wpid} ({wapp:?}) has waited {wsecs:.1} s for a lock \
                 ({wquery:?}); blocked by session {bpid} ({bapp:?}, {bstate}, {bwait}, \
                 transaction open {bsecs:.1} s): {bquery:?}"
            );
        }
    }
}

/// Runs one scenario with CPU accounting; `earlier`: this round's figures so far (the batch
/// sizes the database limit uses); `hog`: busy loops to run beside it.
async fn run_scenario(
    ctx: &Ctx<'_>,
    kind: Kind,
    earlier: &BTreeMap<&str, Figure>,
    hog: usize,
) -> anyhow::Result<Figure> {
    let args = ctx.args;
    // Every scenario starts from the same table state: the hot account's dead row versions of
    // the previous scenario would otherwise slow the next one down (these machines run
    // PostgreSQL with autovacuum off, so nothing else cleans them up).
    vacuum_accounts(&args.database_url).await?;
    let pool = sqlx::PgPool::connect(&args.database_url).await?;
    let last_id: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM ledger.transfers")
        .fetch_one(&pool)
        .await?;
    let metrics_url = match kind {
        Kind::Loadgen { hold: true, .. } => Some("http://127.0.0.1:28093/metrics"),
        Kind::Loadgen { .. } => Some("http://127.0.0.1:28083/metrics"),
        _ => None,
    };
    let before = match metrics_url {
        Some(u) => batch_metrics(u).await,
        None => None,
    };
    let hog_procs = start_hog(hog)?;
    let load_before = cpu::load_average();
    let (stop_sampler, stopped) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(sample_locks(
        args.database_url.clone(),
        ctx.database.clone(),
        stopped,
    ));
    let window = cpu::start(ctx.pids.clone(), ctx.database.clone());
    let mut f = match kind {
        Kind::Loadgen { target, mode, hold } => {
            load(ctx.bin_dir, args, ctx.parties, target, mode, hold).await?
        }
        Kind::Batch { hot, size } => {
            let (size, clients) = match size {
                Size::One => (1, args.clients),
                Size::AsFormedBy(name) => (
                    earlier
                        .get(name)
                        .and_then(|f| f.batch)
                        .map_or(1, |b| b.round().max(1.0) as usize),
                    args.db_limit_clients,
                ),
            };
            let script = ctx.scripts.batch(ctx.set, size, hot)?;
            let mut f = pgbench(args, &script, clients, &[]).await?;
            f.batch = Some(size as f64);
            f
        }
        Kind::Naive { hot } => {
            let script = ctx.scripts.naive(ctx.set)?;
            let hot = format!("hot={}", u8::from(hot));
            pgbench(args, &script, args.clients, &["-D", &hot]).await?
        }
    };
    f.cpu = window.finish("client");
    let _ = stop_sampler.send(());
    if let Ok(Some((waiting, active))) = sampler.await {
        f.lock_waiting = Some(waiting);
        f.active = Some(active);
    }
    stop_hog(hog_procs).await;
    f.hog = hog;
    f.load_before = load_before;
    f.load_after = cpu::load_average();
    if !matches!(kind, Kind::Loadgen { .. }) {
        let written: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger.transfers WHERE id > $1")
                .bind(last_id)
                .fetch_one(&pool)
                .await?;
        f.transfers = written as f64;
        f.tps = f.transfers / args.duration_secs as f64;
    }
    pool.close().await;
    if let (Some(u), Some(m0)) = (metrics_url, before)
        && let Some(m1) = batch_metrics(u).await
    {
        if m1.count > m0.count {
            f.batch = Some((m1.sum - m0.sum) / (m1.count - m0.count));
        }
        f.batch_failures = Some(m1.failures - m0.failures);
        f.batches_held = Some(m1.held - m0.held);
    }
    Ok(f)
}

/// Reconcile through the API (as the banker); its duration in ms. Fails if the ledger is off.
async fn reconcile(ctx: &Ctx<'_>) -> anyhow::Result<f64> {
    let r = loadgen(ctx.bin_dir, ctx.args, ctx.parties, &["--reconcile-only"]).await?;
    Ok(r["reconcile_ms"].as_f64().unwrap_or(0.0))
}

/// What building the arrays costs inside the database-limit statement without the call:
/// (transfers per call, ms per call), at the median batch size of ours uniform.
async fn generator_overhead(
    ctx: &Ctx<'_>,
    rounds: &[BTreeMap<&str, Figure>],
) -> anyhow::Result<Option<(usize, f64)>> {
    let sizes: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r.get("database limit uniform").and_then(|f| f.batch))
        .collect();
    let Some(size) = median_of(&sizes) else {
        return Ok(None);
    };
    let size = size as usize;
    let script = ctx.scripts.generator_only(ctx.set, size)?;
    let f = pgbench(ctx.args, &script, 1, &[]).await?;
    Ok(f.latency_avg_ms.map(|ms| (size, ms)))
}

/// The batcher's figures from a transfers instance's `/metrics`.
struct BatchMetrics {
    /// `transfer_batch_size` histogram
    sum: f64,
    count: f64,
    /// `transfer_batch_failures_total`, `transfer_batches_held_total` (0 until the first)
    failures: f64,
    held: f64,
}

async fn batch_metrics(url: &str) -> Option<BatchMetrics> {
    let text = http_get(url).await?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(BatchMetrics {
        // an instance that formed no batch yet has no histogram
        sum: value("transfer_batch_size_sum").unwrap_or(0.0),
        count: value("transfer_batch_size_count").unwrap_or(0.0),
        failures: value("transfer_batch_failures_total").unwrap_or(0.0),
        held: value("transfer_batches_held_total").unwrap_or(0.0),
    })
}

/// A minimal HTTP/1.1 GET: the body of a 200 answer.
async fn http_get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(body.to_owned())
}

/// VACUUMs the accounts (the hot row's dead versions) and ANALYZEs the tables that grow with
/// every transfer. The ANALYZE matters as much: with autovacuum off nothing else updates their
/// statistics, and a connection keeps the plans it cached for `ledger.transfer_batch` while the
/// tables were empty (sequential scans of `ledger.transfers` and `ledger.idempotency_keys`)
/// until a statistics change invalidates them; the instance whose connections did the setup then
/// paid a scan of the whole ledger per call, growing with the run (issue 18, docs/benchmarks.md).
/// And the outbox, for the same reason as the accounts: each published event leaves a dead entry
/// at the left edge of `outbox_unpublished_idx`, which every relay read walks, so without a vacuum
/// (autovacuum's job in production) the relay's cost grew with the whole run (5 ms a read after
/// 750,000 events).
async fn vacuum_accounts(database_url: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    sqlx::query("VACUUM (ANALYZE) ledger.accounts")
        .execute(&pool)
        .await
        .context("VACUUM ledger.accounts")?;
    sqlx::query("VACUUM ledger.outbox")
        .execute(&pool)
        .await
        .context("VACUUM ledger.outbox")?;
    sqlx::query("ANALYZE ledger.transfers, ledger.idempotency_keys, ledger.entries")
        .execute(&pool)
        .await
        .context("ANALYZE the ledger tables")?;
    pool.close().await;
    Ok(())
}
async fn create_banker(bin_dir: &Path, keys_dir: &Path, database_url: &str) -> anyhow::Result<()> {
    let out = Command::new(bin_dir.join("auth"))
        .args([
            "create-user",
            "--username",
            BANKER,
            "--full-name",
            "Load Generator Banker",
            "--email",
            "loadgen_banker@example.com",
            "--role",
            "banker",
        ])
        .env("TXN_DATABASE__URL", database_url)
        .env(
            "AUTH_TOKEN__PRIVATE_KEY_FILE",
            keys_dir.join("token_ed25519.key"),
        )
        .env("AUTH_NEW_USER_PASSWORD", BANKER_PASSWORD)
        .env("TXN_TELEMETRY__LOG_FORMAT", "pretty")
        .stdin(Stdio::null())
        .output()
        .await
        .context("run auth create-user")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() && !text.contains("exist") && !text.contains("taken") {
        bail!("auth create-user failed: {text}");
    }
    Ok(())
}
fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs loadgen against the bench mesh with the parties file and `extra` arguments; returns the
/// JSON line it printed last.
async fn loadgen(
    bin_dir: &Path,
    args: &BenchArgs,
    parties: &Path,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(bin_dir.join("loadgen"))
        .args(extra)
        .args([
            "--gateway-grpc",
            GATEWAY_GRPC,
            "--gateway-http",
            GATEWAY_HTTP,
        ])
        .args(["--accounts", &args.accounts.to_string()])
        .args(["--clients", &args.clients.to_string()])
        .args(["--duration-secs", &args.duration_secs.to_string()])
        .arg("--parties-file")
        .arg(parties)
        .args([
            "--banker",
            BANKER,
            "--banker-password",
            BANKER_PASSWORD,
            "--tag",
            "bench",
        ])
        .env("DATABASE_URL", &args.database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run loadgen")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "loadgen {extra:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("error "))
    {
        println!("    loadgen {extra:?}: {}", line.trim());
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("loadgen printed no JSON line")
}

/// One loadgen scenario (no setup, no reconcile: the harness does both once).
async fn load(
    bin_dir: &Path,
    args: &BenchArgs,
    parties: &Path,
    target: &str,
    mode: &str,
    hold: bool,
) -> anyhow::Result<Figure> {
    let json = load_json(bin_dir, args, parties, target, mode, hold).await?;
    Ok(Figure {
        tps: json["transfers_per_s"].as_f64().unwrap_or(0.0),
        transfers: json["transfers_ok"].as_f64().unwrap_or(0.0),
        p99_ms: json["latency_ms"]["p99"].as_f64(),
        ..Figure::default()
    })
}

async fn load_json(
    bin_dir: &Path,
    args: &BenchArgs,
    parties: &Path,
    target: &str,
    mode: &str,
    hold: bool,
) -> anyhow::Result<serde_json::Value> {
    let transfers = if hold { HOLD_GRPC } else { TRANSFERS_GRPC };
    loadgen(
        bin_dir,
        args,
        parties,
        &[
            "--target",
            target,
            "--mode",
            mode,
            "--transfers-grpc",
            transfers,
            "--no-reconcile",
        ],
    )
    .await
}

/// pgbench, prepared statements, for the run's duration.
async fn pgbench(
    args: &BenchArgs,
    script: &Path,
    clients: usize,
    extra: &[&str],
) -> anyhow::Result<Figure> {
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f"])
        .arg(script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-T", &args.duration_secs.to_string()])
        .args(extra)
        .arg(&args.database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run pgbench (Debian package postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench {} failed:\n{stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let find = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Ok(Figure {
        tps: find("tps").context("pgbench printed no tps")?,
        latency_avg_ms: find("latency average"),
        ..Figure::default()
    })
}

fn median_of(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

fn min_med_max(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => "—".into(),
        1 => format!("{:.0}", s[0]),
        n => format!("{:.0} / {:.0} / {:.0}", s[0], s[n / 2], s[n - 1]),
    }
}

fn ratio_cell(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => "—".into(),
        1 => format!("{:.2}", s[0]),
        n => format!("{:.2} / {:.2} / {:.2}", s[0], s[n / 2], s[n - 1]),
    }
}

/// The ratios the issue asks for, each computed within a round: (label, numerator, denominator).
const RATIOS: [(&str, &str, &str); 14] = [
    (
        "ours gRPC direct uniform ÷ database limit",
        UNIFORM,
        "database limit uniform",
    ),
    (
        "ours HTTP through gateway ÷ database limit",
        "ours http-gateway uniform",
        "database limit uniform",
    ),
    (
        "ours gRPC through gateway ÷ database limit",
        "ours grpc-gateway uniform",
        "database limit uniform",
    ),
    (
        "ours gRPC direct hot ÷ database limit hot",
        HOT,
        "database limit hot",
    ),
    (
        "ours bulk ÷ database limit at its batch size",
        BULK,
        "database limit bulk",
    ),
    (
        "ours gRPC direct ÷ one-transfer ceiling",
        UNIFORM,
        "ceiling uniform",
    ),
    ("hot ÷ uniform (ours, gRPC direct)", HOT, UNIFORM),
    (
        "hot ÷ uniform (ours, holding)",
        "ours grpc-direct hot, holding",
        "ours grpc-direct uniform, holding",
    ),
    (
        "ours hot: holding ÷ not holding",
        "ours grpc-direct hot, holding",
        HOT,
    ),
    (
        "hold-then-post pairs ÷ transfers, hot",
        "ours grpc-direct hot, hold then post",
        HOT,
    ),
    ("ours ÷ naive, uniform", UNIFORM, "naive uniform"),
    ("ours ÷ naive, hot", HOT, "naive hot"),
    (
        "hot ÷ uniform (ceiling SQL)",
        "ceiling hot",
        "ceiling uniform",
    ),
    ("hot ÷ uniform (naive)", "naive hot", "naive uniform"),
];

/// CPU groups in the table's column order.
const CPU_COLUMNS: [&str; 8] = [
    cpu::BACKENDS,
    "transfers",
    "edge-gateway",
    "auth",
    "accounts",
    "client",
    cpu::PG_SHARED,
    cpu::MACHINE,
];

fn report(
    args: &BenchArgs,
    names: &[&str],
    rounds: &[BTreeMap<&str, Figure>],
    overhead: Option<(usize, f64)>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "## {} clients, {} accounts, {} s per scenario, {} round(s), {cores} cores; database limit at {} connection(s)\n",
        args.clients, args.accounts, args.duration_secs, args.rounds, args.db_limit_clients
    );
    let per = |name: &str, f: &dyn Fn(&Figure) -> Option<f64>| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| r.get(name).and_then(f))
            .collect()
    };
    let _ = write!(s, "| scenario |");
    for i in 1..=rounds.len() {
        let _ = write!(s, " round {i} |");
    }
    let _ = writeln!(
        s,
        " min / median / max | p99 ms (median) | transfers per call |"
    );
    let _ = write!(s, "|---|");
    for _ in rounds {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|---:|---:|");
    for &name in names {
        let tps = per(name, &|f| Some(f.tps));
        let _ = write!(s, "| {name} |");
        for v in &tps {
            let _ = write!(s, " {v:.0} |");
        }
        let p99 = median_of(&per(name, &|f| f.p99_ms)).map_or("—".into(), |v| format!("{v:.1}"));
        let batch = median_of(&per(name, &|f| f.batch)).map_or("—".into(), |v| format!("{v:.1}"));
        let _ = writeln!(s, " {} | {p99} | {batch} |", min_med_max(&tps));
    }
    let _ = write!(s, "\n| ratio (each within its round) |");
    for i in 1..=rounds.len() {
        let _ = write!(s, " round {i} |");
    }
    let _ = writeln!(s, " min / median / max |");
    let _ = write!(s, "|---|");
    for _ in rounds {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|");
    // the ratios, then each scenario beside a hog ÷ the same scenario without
    let hogged: Vec<(String, &str, &str)> = names
        .iter()
        .filter_map(|n| {
            let (plain, _) = n.split_once(" + hog ")?;
            let plain = names.iter().copied().find(|p| *p == plain)?;
            Some((format!("{n} ÷ without"), *n, plain))
        })
        .collect();
    let ratios = RATIOS
        .iter()
        .map(|(l, a, b)| ((*l).to_owned(), *a, *b))
        .chain(hogged);
    for (label, a, b) in ratios {
        let v: Vec<f64> = rounds
            .iter()
            .filter_map(|r| {
                let (x, y) = (r.get(a)?.tps, r.get(b)?.tps);
                (y > 0.0).then(|| x / y)
            })
            .collect();
        if v.is_empty() {
            continue;
        }
        let _ = write!(s, "| {label} |");
        for x in &v {
            let _ = write!(s, " {x:.2} |");
        }
        let _ = writeln!(s, " {} |", ratio_cell(&v));
    }
    let _ = writeln!(
        s,
        "\nThe batcher and the database's lock waits, median over the rounds (lock waits: backends of the \
         bench database waiting for a lock, mean of samples every 100 ms; failures: batches that ran out of \
         lock time or failed whole; held: batches held back while conflicting):\n"
    );
    let _ = writeln!(
        s,
        "| scenario | transfers per call | lock waits | active backends | batch failures | batches held |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for &name in names {
        let cell = |f: &dyn Fn(&Figure) -> Option<f64>, digits: usize| {
            median_of(&per(name, f)).map_or("—".into(), |v| format!("{v:.digits$}"))
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            cell(&|f| f.batch, 1),
            cell(&|f| f.lock_waiting, 2),
            cell(&|f| f.active, 2),
            cell(&|f| f.batch_failures, 0),
            cell(&|f| f.batches_held, 0),
        );
    }
    let _ = writeln!(
        s,
        "\nCPU seconds per 1,000 transfers (median over the rounds; `transfers` is the instance the scenario used; \
         `whole machine` is every process on it, other helpers' builds included):\n"
    );
    let _ = write!(s, "| scenario |");
    for c in CPU_COLUMNS {
        let _ = write!(s, " {c} |");
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|");
    for _ in CPU_COLUMNS {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for &name in names {
        let _ = write!(s, "| {name} |");
        for c in CPU_COLUMNS {
            let v = median_of(&per(name, &|f| {
                if c == "transfers" {
                    f.cpu_per_1000("transfers-holding")
                        .filter(|_| name.contains("holding"))
                        .or(f.cpu_per_1000("transfers"))
                } else {
                    f.cpu_per_1000(c)
                }
            }));
            let _ = write!(s, " {} |", v.map_or("—".into(), |v| format!("{v:.3}")));
        }
        let _ = writeln!(s);
    }
    if let Some((size, ms)) = overhead {
        let _ = writeln!(
            s,
            "\nGenerator overhead: building the arrays of a {size}-transfer call without calling the function takes {ms:.3} ms (1 connection), \
             inside each database-limit call."
        );
    }
    let _ = writeln!(
        s,
        "\nLoad average (1/5/15 min) before each scenario, by round:\n"
    );
    for (i, r) in rounds.iter().enumerate() {
        let loads: Vec<String> = names
            .iter()
            .filter_map(|n| {
                r.get(n)
                    .map(|f| f.load_before.split(' ').next().unwrap_or("").to_owned())
            })
            .collect();
        let _ = writeln!(s, "- round {}: {}", i + 1, loads.join(", "));
    }
    s
}
