//! `cargo xtask bench --scenario growth`: what a long history costs. The same measurements on the
//! small ledger the setup leaves, then after `--growth-transfers` transfers of history are
//! preloaded in SQL (`bench/growth.sql`): transfer throughput (gRPC direct, uniform) with its CPU
//! per transfer, the read RPCs' latency (GetTransfer, ListEntries, ListTransfers: p50 / p99), and
//! Reconcile's duration. Rounds run small first, then large (the history cannot be taken back
//! between rounds), so drift of the machine between the phases shows up as a difference too:
//! read the load averages beside the figures.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Instant};

use super::{Ctx, cpu, load_json, median_of, min_med_max, reconcile, scripts, vacuum_accounts};

#[derive(Default, Clone, serde::Serialize)]
struct Phase {
    /// metric name -> one value per round
    metrics: BTreeMap<String, Vec<f64>>,
    loads: Vec<String>,
    transfers_in_ledger: i64,
    preload_secs: Option<f64>,
    /// The first incremental Reconcile after the preload (CLI): it sums the whole preload, so
    /// it costs what a full check does; the rounds' runs then cover only their own transfers.
    catch_up_ms: Option<f64>,
}

impl Phase {
    fn push(&mut self, k: &str, v: f64) {
        self.metrics.entry(k.to_owned()).or_default().push(v);
    }
}

const CHUNK: u64 = 500_000;

pub(crate) async fn run(ctx: &Ctx<'_>, work_dir: &Path) -> anyhow::Result<()> {
    let args = ctx.args;
    let mut phases: Vec<(String, Phase)> = Vec::new();
    for large in [false, true] {
        let mut phase = Phase::default();
        if large {
            let t0 = Instant::now();
            preload(ctx, args.growth_transfers).await?;
            phase.preload_secs = Some(t0.elapsed().as_secs_f64());
            // through the CLI (no request deadline): over the RPC a run summing ten million
            // transfers' entries outlasts the call's deadline
            phase.catch_up_ms = Some(reconcile_cli(ctx, false).await?);
            println!(
                "xtask bench: preloaded {} transfers in {:.0} s",
                args.growth_transfers,
                t0.elapsed().as_secs_f64()
            );
        }
        let pool = sqlx::PgPool::connect(&args.database_url).await?;
        phase.transfers_in_ledger = sqlx::query_scalar("SELECT count(*) FROM ledger.transfers")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        let label = format!("{} transfers in the ledger", phase.transfers_in_ledger);
        for round in 1..=args.rounds {
            println!(
                "xtask bench: growth, {label}, round {round}/{} (load {})",
                args.rounds,
                cpu::load_average()
            );
            phase.loads.push(cpu::load_average());
            vacuum_accounts(&args.database_url).await?;
            let window = cpu::start(ctx.pids.clone(), ctx.database.clone());
            let t = load_json(
                ctx.bin_dir,
                args,
                ctx.parties,
                "grpc-direct",
                "uniform",
                false,
            )
            .await?;
            let cpu = window.finish("client");
            let ok = t["transfers_ok"].as_f64().unwrap_or(0.0);
            phase.push("transfers/s", t["transfers_per_s"].as_f64().unwrap_or(0.0));
            phase.push(
                "transfer p99 ms",
                t["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            );
            if ok > 0.0 {
                for (group, key) in [
                    (cpu::BACKENDS, "CPU ms per transfer, postgres backends"),
                    ("transfers", "CPU ms per transfer, transfers service"),
                ] {
                    phase.push(key, cpu.get(group).copied().unwrap_or(0.0) / ok * 1000.0);
                }
            }
            // The reads twice: at the suite's clients (32) they saturate the two cores the
            // database, the service and loadgen share, so their p99 is mostly time spent
            // queueing for a core (the same on a small ledger as on a large one); at one client
            // nothing waits, so what is left is the call's own cost, which is what grows with
            // the history if anything does. No write load runs during either.
            let r = load_json(
                ctx.bin_dir,
                args,
                ctx.parties,
                "grpc-direct",
                "reads",
                false,
            )
            .await?;
            push_reads(&mut phase, &r, &format!("{} clients", args.clients));
            let r1 = reads_at_one_client(ctx).await?;
            push_reads(&mut phase, &r1, "1 client");
            // the RPC's default: incremental, over what was written since the previous run (the
            // round's transfers: the preload's catch-up ran through the CLI before the rounds)
            phase.push("Reconcile ms (RPC, incremental)", reconcile(ctx).await?);
            // the CLI (process start and one connection included): the full check, then
            // incremental again right after it (the floor: nothing new since)
            phase.push("Reconcile ms (CLI --full)", reconcile_cli(ctx, true).await?);
            phase.push(
                "Reconcile ms (CLI, incremental, nothing new)",
                reconcile_cli(ctx, false).await?,
            );
        }
        phases.push((label, phase));
    }
    let report = report(args.rounds, &phases);
    println!("\n{report}");
    std::fs::write(work_dir.join("growth.md"), &report)?;
    std::fs::write(
        work_dir.join("growth.json"),
        serde_json::to_vec_pretty(&phases)?,
    )?;
    Ok(())
}

/// The read RPCs' p50 / p99 and the calls per second of one loadgen `reads` run.
fn push_reads(phase: &mut Phase, r: &serde_json::Value, clients: &str) {
    for rpc in ["GetTransfer", "ListEntries", "ListTransfers"] {
        for p in ["p50", "p99"] {
            if let Some(v) = r["by_rpc"][rpc][p].as_f64() {
                phase.push(&format!("{rpc} {p} ms, {clients}"), v);
            }
        }
    }
    phase.push(
        &format!("reads/s (all three), {clients}"),
        r["transfers_per_s"].as_f64().unwrap_or(0.0),
    );
}

/// loadgen's `reads` mix with one client, as [`super::load_json`] runs it otherwise (that one
/// always passes the suite's `--clients`, and loadgen takes an option once).
async fn reads_at_one_client(ctx: &Ctx<'_>) -> anyhow::Result<serde_json::Value> {
    let args = ctx.args;
    let out = tokio::process::Command::new(ctx.bin_dir.join("loadgen"))
        .args([
            "--target",
            "grpc-direct",
            "--mode",
            "reads",
            "--no-reconcile",
        ])
        .args(["--transfers-grpc", super::TRANSFERS_GRPC])
        .args(["--gateway-grpc", super::GATEWAY_GRPC])
        .args(["--gateway-http", super::GATEWAY_HTTP])
        .args(["--accounts", &args.accounts.to_string()])
        .args(["--clients", "1"])
        .args(["--duration-secs", &args.duration_secs.to_string()])
        .arg("--parties-file")
        .arg(ctx.parties)
        .args([
            "--banker",
            super::BANKER,
            "--banker-password",
            super::BANKER_PASSWORD,
        ])
        .args(["--tag", "bench"])
        .env("DATABASE_URL", &args.database_url)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "loadgen reads at 1 client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| anyhow::anyhow!("loadgen printed no JSON line"))
}

/// `transfers reconcile [--full]` against the bench database: wall-clock milliseconds.
async fn reconcile_cli(ctx: &Ctx<'_>, full: bool) -> anyhow::Result<f64> {
    let mut cmd = tokio::process::Command::new(ctx.bin_dir.join("transfers"));
    cmd.arg("reconcile")
        .env("TXN_DATABASE__URL", &ctx.args.database_url)
        .env("TRANSFERS_DATABASE__URL", &ctx.args.database_url)
        .env("TRANSFERS_TELEMETRY__LOG_FORMAT", "json");
    if full {
        cmd.arg("--full");
    }
    let t0 = Instant::now();
    let out = cmd.output().await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        out.status.success(),
        "transfers reconcile{} failed: {}{}",
        if full { " --full" } else { "" },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(ms)
}

/// Preloads `count` transfers in chunks, then VACUUM ANALYZE of the ledger tables (as autovacuum
/// would have done over a history that long).
async fn preload(ctx: &Ctx<'_>, count: u64) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&ctx.args.database_url)
        .await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await?;
    let mut done = 0;
    while done < count {
        let n = CHUNK.min(count - done);
        let sql = scripts::growth(ctx.set, n)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
        done += n;
        println!("  preloaded {done}/{count} (load {})", cpu::load_average());
    }
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await?;
    for table in ["ledger.transfers", "ledger.entries", "ledger.accounts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {table}")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn report(rounds: usize, phases: &[(String, Phase)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Growth: {rounds} round(s) per ledger size (min / median / max)\n"
    );
    let _ = write!(s, "| metric |");
    for (label, _) in phases {
        let _ = write!(s, " {label} |");
    }
    let _ = writeln!(s, " large ÷ small (medians) |");
    let _ = writeln!(s, "|---|{}---:|", "---:|".repeat(phases.len()));
    let keys: Vec<String> = phases
        .first()
        .map(|(_, p)| p.metrics.keys().cloned().collect())
        .unwrap_or_default();
    for k in keys {
        let _ = write!(s, "| {k} |");
        let mut meds = Vec::new();
        for (_, p) in phases {
            let v = p.metrics.get(&k).cloned().unwrap_or_default();
            let cell = if k.contains("ms") {
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                match sorted.len() {
                    0 => "—".into(),
                    n => format!(
                        "{:.2} / {:.2} / {:.2}",
                        sorted[0],
                        sorted[n / 2],
                        sorted[n - 1]
                    ),
                }
            } else {
                min_med_max(&v)
            };
            meds.push(median_of(&v));
            let _ = write!(s, " {cell} |");
        }
        let ratio = match (
            meds.first().copied().flatten(),
            meds.last().copied().flatten(),
        ) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
            _ => "—".into(),
        };
        let _ = writeln!(s, " {ratio} |");
    }
    for (label, p) in phases {
        let _ = writeln!(
            s,
            "\n{label}: load average at each round {}{}",
            p.loads.join("; "),
            p.preload_secs
                .map(|t| format!("; preload took {t:.0} s"))
                .unwrap_or_default()
        );
        if let Some(ms) = p.catch_up_ms {
            let _ = writeln!(
                s,
                "\n{label}: the first incremental Reconcile after the preload (CLI, summing the whole preload) took {ms:.0} ms"
            );
        }
    }
    s
}
