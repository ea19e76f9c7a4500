//! `cargo xtask bench`: starts the mesh against a database of its own, sets up the accounts
//! through the public API (loadgen), then runs every scenario for the same duration and
//! concurrency, interleaved round by round so machine drift hits all of them alike, and prints one
//! table with the ratios the benchmark issue asks for, plus each service's idle and peak RSS.

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::Command;

use crate::{
    SERVICES, build, migrate_url, ports, root, spawn_logging_to, stop_all, wait_ready, wait_url,
};

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
    /// Interleaved rounds; the table shows the median of each scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A few seconds, small N, debug build: proves the harness runs (CI).
    #[arg(long)]
    smoke: bool,
    /// Database for the benchmark (created if missing; kept apart from the dev database).
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/transactions_bench"
    )]
    database_url: String,
}

const BANKER: &str = "loadgen_banker";
/// gRPC address of the second transfers instance (`batch.hold_conflicting = true`).
const HOLD_GRPC: &str = "http://127.0.0.1:50063";
/// Where the second transfers instance listens, besides the mesh's own ports.
const HOLD_PORTS: [ports::Listener<'static>; 2] = [
    ports::listener("transfers (holding)", "gRPC", "127.0.0.1:50063"),
    ports::listener("transfers (holding)", "side HTTP", "127.0.0.1:8093"),
];
const BANKER_PASSWORD: &str = "loadgen-banker-password";

#[derive(Clone, Copy)]
enum Kind {
    Loadgen {
        target: &'static str,
        mode: &'static str,
        /// true: the second transfers instance, run with `batch.hold_conflicting = true`
        hold: bool,
    },
    Pgbench {
        script: &'static str,
        hot: bool,
    },
}

const SCENARIOS: [(&str, Kind); 11] = [
    (
        "ours grpc-direct uniform",
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
        "ours grpc-direct hot",
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
        "ceiling uniform",
        Kind::Pgbench {
            script: "bench/ceiling.sql",
            hot: false,
        },
    ),
    (
        "ceiling hot",
        Kind::Pgbench {
            script: "bench/ceiling.sql",
            hot: true,
        },
    ),
    (
        "naive uniform",
        Kind::Pgbench {
            script: "bench/naive.sql",
            hot: false,
        },
    ),
    (
        "naive hot",
        Kind::Pgbench {
            script: "bench/naive.sql",
            hot: true,
        },
    ),
];

#[derive(Default, Clone)]
struct Figure {
    tps: f64,
    p99_ms: Option<f64>,
    latency_avg_ms: Option<f64>,
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.duration_secs = args.duration_secs.min(2);
        args.clients = args.clients.min(4);
        args.accounts = args.accounts.min(10);
        args.rounds = 1;
    }
    let release = !args.smoke;
    let all_ports = [&ports::MESH[..], &HOLD_PORTS[..]].concat();
    ports::ensure_free(&all_ports)?;
    let root = root();
    std::env::set_current_dir(&root)?;
    migrate_url(&args.database_url).await?;
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
    // every bench client comes from one IP: the gateway's per-IP limit on sign-up, login and
    // renew would refuse the setup (it is a guard against guessing, not a capacity limit, and is
    // off the transfer path being measured)
    let common_env = [
        ("EDGE_GATEWAY_RATE_LIMIT__PER_IP_PER_MINUTE", "0"),
        ("AUTH_TELEMETRY__LOG_FORMAT", "json"),
        ("ACCOUNTS_TELEMETRY__LOG_FORMAT", "json"),
        ("TRANSFERS_TELEMETRY__LOG_FORMAT", "json"),
        ("MAILER_TELEMETRY__LOG_FORMAT", "json"),
        ("EDGE_GATEWAY_TELEMETRY__LOG_FORMAT", "json"),
    ];
    let mut children = Vec::new();
    for (name, _) in SERVICES {
        let log = log_dir.join(format!("{name}.log"));
        children.push((
            name,
            spawn_logging_to(
                name,
                name,
                &bin_dir,
                &keys_dir,
                &args.database_url,
                mail_dir,
                &common_env,
                Some(&log),
            )?,
        ));
    }
    // A second transfers instance, the same binary with `batch.hold_conflicting = true`, so the
    // table shows what holding conflicting batches back does, side by side in the same run.
    let mut hold_env = common_env.to_vec();
    hold_env.extend([
        ("TRANSFERS_SERVER__GRPC_ADDR", "127.0.0.1:50063"),
        ("TRANSFERS_SERVER__HTTP_ADDR", "127.0.0.1:8093"),
        ("TRANSFERS_BATCH__HOLD_CONFLICTING", "true"),
    ]);
    children.push((
        "transfers (holding)",
        spawn_logging_to(
            "transfers",
            "transfers-holding",
            &bin_dir,
            &keys_dir,
            &args.database_url,
            mail_dir,
            &hold_env,
            Some(&log_dir.join("transfers-holding.log")),
        )?,
    ));
    println!(
        "xtask bench: service logs in {} (tail -f to watch)",
        log_dir.display()
    );
    let result = async {
        wait_ready().await?;
        wait_url("transfers (holding)", "http://127.0.0.1:8093/readyz").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle: BTreeMap<&str, u64> = children
            .iter()
            .filter_map(|(n, c)| c.id().map(|pid| (*n, rss_kb(pid, "VmRSS"))))
            .collect();
        // setup through the public API: users, verification, accounts, deposits
        loadgen(&bin_dir, &args, "grpc-direct", "uniform", false, Some(1)).await?;
        let pool = sqlx::PgPool::connect(&args.database_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(std::fs::read_to_string(
            "bench/setup.sql",
        )?))
        .execute(&pool)
        .await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_accounts")
            .fetch_one(&pool)
            .await?;
        if (n as usize) < args.accounts {
            bail!("bench set has {n} accounts, expected {}", args.accounts);
        }
        pool.close().await;

        let mut figures: BTreeMap<&str, Vec<Figure>> = BTreeMap::new();
        for round in 1..=args.rounds {
            println!("xtask bench: round {round}/{}", args.rounds);
            for (name, kind) in SCENARIOS {
                // Every scenario starts from the same table state: the hot account's dead row
                // versions of the previous scenario would otherwise slow the next one down (these
                // machines run PostgreSQL with autovacuum off, so nothing else cleans them up).
                vacuum_accounts(&args.database_url).await?;
                let f = match kind {
                    Kind::Loadgen { target, mode, hold } => {
                        loadgen(&bin_dir, &args, target, mode, hold, None).await?
                    }
                    Kind::Pgbench { script, hot } => pgbench(&args, script, hot).await?,
                };
                println!("  {name:<28} {:>9.0}/s", f.tps);
                figures.entry(name).or_default().push(f);
            }
        }
        let peak: BTreeMap<&str, u64> = children
            .iter()
            .filter_map(|(n, c)| c.id().map(|pid| (*n, rss_kb(pid, "VmHWM"))))
            .collect();
        print_table(&args, &figures, &idle, &peak);
        anyhow::Ok(())
    }
    .await;
    let clean = stop_all(&mut children).await;
    result?;
    if !clean {
        bail!("a service did not stop cleanly");
    }
    Ok(())
}

async fn vacuum_accounts(database_url: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    sqlx::query("VACUUM (ANALYZE) ledger.accounts")
        .execute(&pool)
        .await
        .context("VACUUM ledger.accounts")?;
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

async fn loadgen(
    bin_dir: &Path,
    args: &BenchArgs,
    target: &str,
    mode: &str,
    hold: bool,
    count: Option<u64>,
) -> anyhow::Result<Figure> {
    let transfers = if hold {
        HOLD_GRPC
    } else {
        "http://127.0.0.1:50053"
    };
    let out = Command::new(bin_dir.join("loadgen"))
        .args(["--target", target, "--mode", mode])
        .args(["--transfers-grpc", transfers])
        .args(["--accounts", &args.accounts.to_string()])
        .args(["--clients", &args.clients.to_string()])
        .args(["--duration-secs", &args.duration_secs.to_string()])
        .args(["--count", &count.unwrap_or(0).to_string()])
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
            "loadgen {target} {mode} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("loadgen printed no JSON line")?;
    for line in stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("error "))
    {
        println!("    loadgen {target} {mode}: {}", line.trim());
    }
    Ok(Figure {
        tps: json["transfers_per_s"].as_f64().unwrap_or(0.0),
        p99_ms: json["latency_ms"]["p99"].as_f64(),
        latency_avg_ms: None,
    })
}

async fn pgbench(args: &BenchArgs, script: &str, hot: bool) -> anyhow::Result<Figure> {
    let out = Command::new("pgbench")
        .args(["-n", "-f", script])
        .args(["-c", &args.clients.to_string(), "-j", "2"])
        .args(["-T", &args.duration_secs.to_string()])
        .args(["-D", &format!("naccounts={}", args.accounts)])
        .args(["-D", &format!("hot={}", u8::from(hot))])
        .arg(&args.database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run pgbench (Debian package postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench {script} failed:\n{stdout}\n{}",
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
        p99_ms: None,
        latency_avg_ms: find("latency average"),
    })
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

fn median(v: &[Figure]) -> Figure {
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| a.tps.total_cmp(&b.tps));
    sorted[sorted.len() / 2].clone()
}

fn print_table(
    args: &BenchArgs,
    figures: &BTreeMap<&str, Vec<Figure>>,
    idle: &BTreeMap<&str, u64>,
    peak: &BTreeMap<&str, u64>,
) {
    let m: BTreeMap<&str, Figure> = figures.iter().map(|(k, v)| (*k, median(v))).collect();
    let tps = |k: &str| m.get(k).map(|f| f.tps).unwrap_or(0.0);
    println!();
    println!(
        "## {} clients, {} accounts, {} s per scenario, {} round(s), median shown",
        args.clients, args.accounts, args.duration_secs, args.rounds
    );
    println!();
    println!("| scenario | transfers/s | p99 ms | avg ms |");
    println!("|---|---:|---:|---:|");
    for (name, _) in SCENARIOS {
        let f = &m[name];
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into());
        println!(
            "| {name} | {:.0} | {} | {} |",
            f.tps,
            opt(f.p99_ms),
            opt(f.latency_avg_ms)
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!();
    println!("| ratio | value |");
    println!("|---|---:|");
    let c = tps("ceiling uniform");
    for (label, v) in [
        (
            "HTTP through gateway ÷ ceiling",
            ratio(tps("ours http-gateway uniform"), c),
        ),
        (
            "gRPC through gateway ÷ ceiling",
            ratio(tps("ours grpc-gateway uniform"), c),
        ),
        (
            "gRPC direct ÷ ceiling",
            ratio(tps("ours grpc-direct uniform"), c),
        ),
        (
            "hot ÷ uniform (ours, gRPC direct)",
            ratio(tps("ours grpc-direct hot"), tps("ours grpc-direct uniform")),
        ),
        (
            "hot ÷ uniform (ours holding conflicting batches)",
            ratio(
                tps("ours grpc-direct hot, holding"),
                tps("ours grpc-direct uniform, holding"),
            ),
        ),
        (
            "ours hot: holding ÷ not holding conflicting batches",
            ratio(
                tps("ours grpc-direct hot, holding"),
                tps("ours grpc-direct hot"),
            ),
        ),
        (
            "hot: hold-then-post pairs ÷ transfers (gRPC direct)",
            ratio(
                tps("ours grpc-direct hot, hold then post"),
                tps("ours grpc-direct hot"),
            ),
        ),
        ("hot ÷ uniform (ceiling SQL)", ratio(tps("ceiling hot"), c)),
        (
            "hot ÷ uniform (naive peer)",
            ratio(tps("naive hot"), tps("naive uniform")),
        ),
        (
            "ours ÷ naive, uniform (gRPC direct)",
            ratio(tps("ours grpc-direct uniform"), tps("naive uniform")),
        ),
        (
            "ours ÷ naive, hot (gRPC direct)",
            ratio(tps("ours grpc-direct hot"), tps("naive hot")),
        ),
    ] {
        println!("| {label} | {v:.2} |");
    }
    println!();
    println!("| service | idle RSS MB | peak RSS MB |");
    println!("|---|---:|---:|");
    for (name, _) in SERVICES {
        println!(
            "| {name} | {:.1} | {:.1} |",
            idle.get(name).copied().unwrap_or(0) as f64 / 1024.0,
            peak.get(name).copied().unwrap_or(0) as f64 / 1024.0
        );
    }
}
