//! Load generator: sets up N verified users with one funded account each through the public API
//! (or reads them, with their access tokens, from the `--parties-file` an earlier `--setup-only`
//! run wrote, so a series of runs logs each user in once), then runs C concurrent clients making
//! transfers (each with its own idempotency key) or reads for D seconds against one target, prints
//! calls/s, latency percentiles and errors by reason, one JSON line for machines, and finally runs
//! Reconcile (timed) and fails loudly if the ledger is off.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use proto::{
    accounts::v1::{CreateAccountRequest, accounts_service_client::AccountsServiceClient},
    auth::v1::{
        CreateUserRequest, LoginUserRequest, VerifyEmailRequest,
        auth_service_client::AuthServiceClient,
    },
    transfers::v1::{
        CreateTransferRequest, CreateTransfersRequest, DepositRequest, GetTransferRequest,
        ListEntriesRequest, ListTransfersRequest, PostTransferRequest, ReconcileRequest,
        transfers_service_client::TransfersServiceClient,
    },
};
use rand::Rng;
use tonic::transport::Channel;
use tonic_types::StatusExt;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Target {
    /// HTTP/JSON through the edge gateway.
    HttpGateway,
    /// gRPC through the edge gateway.
    GrpcGateway,
    /// gRPC straight to the transfers service.
    GrpcDirect,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Mode {
    /// Source and destination drawn uniformly from all accounts.
    Uniform,
    /// Every transfer touches account 0 (half from it, half to it).
    Hot,
    /// As `hot`, but each transfer is two-phase: a hold, then its post (capture) for the whole
    /// amount. One completed pair counts as one transfer; its latency is both calls. gRPC only.
    HotHoldPost,
    /// The read RPCs, in turn: GetTransfer, ListEntries and ListTransfers (first page, 20) of a
    /// random party's own account; latency percentiles per RPC. gRPC only.
    Reads,
    /// Bulk requests (CreateTransfers) of `--bulk-items` transfers each, every item with its own
    /// key: from the caller's own account (a party drawn per request) to destinations drawn
    /// uniformly, as a payroll or payout file. Counts transfers (items answered OK) per second;
    /// latency is the whole call's. gRPC only.
    Bulk,
}

#[derive(Parser, Debug)]
#[command(about = "Transfers load generator")]
struct Args {
    #[arg(long, value_enum, default_value = "grpc-direct")]
    target: Target,
    #[arg(long, value_enum, default_value = "uniform")]
    mode: Mode,
    /// Users (one account each).
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Stop after this many transfers instead (0 = use the duration).
    #[arg(long, default_value_t = 0)]
    count: u64,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway_http: String,
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    gateway_grpc: String,
    #[arg(long, default_value = "http://127.0.0.1:50053")]
    transfers_grpc: String,
    /// The banker who funds the accounts and runs Reconcile.
    #[arg(long, default_value = "loadgen_banker")]
    banker: String,
    #[arg(
        long,
        env = "LOADGEN_BANKER_PASSWORD",
        default_value = "loadgen-banker-password"
    )]
    banker_password: String,
    /// Reads verification codes (the emails a user would click) from this database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/transactions"
    )]
    database_url: String,
    /// Reuse the users of an earlier run with this tag (setup is skipped when they exist).
    #[arg(long, default_value = "bench")]
    tag: String,
    /// Label printed in the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Where the parties (account ids and access tokens, the banker's too) are kept: written by
    /// `--setup-only`, read instead of setting up otherwise.
    #[arg(long)]
    parties_file: Option<std::path::PathBuf>,
    /// Set up the parties, write `--parties-file`, and stop.
    #[arg(long)]
    setup_only: bool,
    /// Skip the Reconcile at the end (a harness that reconciles once per round).
    #[arg(long)]
    no_reconcile: bool,
    /// Only run Reconcile (timed) with the banker of `--parties-file`.
    #[arg(long)]
    reconcile_only: bool,
    /// `--mode bulk`: transfers per request.
    #[arg(long, default_value_t = 100)]
    bulk_items: usize,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Party {
    token: String,
    account_id: i64,
}

/// What `--setup-only` keeps for the runs after it.
#[derive(serde::Serialize, serde::Deserialize)]
struct PartiesFile {
    banker: String,
    parties: Vec<Party>,
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

/// A fresh idempotency key on a request, as a real client sends with every money movement.
fn with_new_key<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    let key = uuid::Uuid::new_v4().to_string();
    req.metadata_mut()
        .insert("idempotency-key", key.parse().expect("uuid"));
    req
}

fn reason(status: &tonic::Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_else(|| "-".into());
    format!("{:?}/{reason}", status.code())
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

async fn login(
    auth: &mut AuthServiceClient<Channel>,
    username: &str,
    password: &str,
) -> anyhow::Result<String> {
    let r = auth
        .login_user(LoginUserRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .with_context(|| format!("login {username}"))?;
    Ok(r.into_inner().access_token)
}

/// Users set up at once: logins are argon2id hashes, which the auth service runs a few at a time.
const SETUP_CONCURRENCY: usize = 8;

/// Creates (or reuses) the users and accounts, each funded by a banker deposit, a few users at a
/// time. The parties come back in account id order (party 0 has the lowest id), as the pgbench
/// scripts number them (`bench/setup.sql`).
async fn setup(args: &Args, gw: Channel) -> anyhow::Result<(String, Vec<Party>)> {
    use futures::{StreamExt, TryStreamExt};

    let mut auth = AuthServiceClient::new(gw.clone());
    let banker = login(&mut auth, &args.banker, &args.banker_password).await?;
    let db = sqlx::PgPool::connect(&args.database_url)
        .await
        .with_context(|| format!("cannot reach {}", args.database_url))?;
    let mut parties: Vec<Party> = futures::stream::iter(0..args.accounts)
        .map(|i| setup_party(args, &gw, &db, &banker, i))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    parties.sort_by_key(|p| p.account_id);
    db.close().await;
    Ok((banker, parties))
}

/// User `i`: signs up and verifies the email (unless it exists), logs in, opens a USD account
/// (or finds it) and has the banker fund it.
async fn setup_party(
    args: &Args,
    gw: &Channel,
    db: &sqlx::PgPool,
    banker: &str,
    i: usize,
) -> anyhow::Result<Party> {
    let mut auth = AuthServiceClient::new(gw.clone());
    let password = "loadgen-password-1";
    let username = format!("lg_{}_{i}", args.tag);
    // sign up first: a login attempt for a user that does not exist yet is a failed login, and
    // the login throttle counts those per client IP (every bench user shares one)
    match auth
        .create_user(CreateUserRequest {
            username: username.clone(),
            full_name: format!("Load Gen {i}"),
            email: format!("{username}@example.com"),
            password: password.into(),
        })
        .await
    {
        Ok(_) => {
            // the user clicks the link in the email: its id and code are in auth.verify_emails
            let (email_id, secret_code): (i64, String) = sqlx::query_as(
                "SELECT id, secret_code FROM auth.verify_emails WHERE username = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(&username)
            .fetch_one(db)
            .await?;
            auth.verify_email(VerifyEmailRequest {
                email_id,
                secret_code,
            })
            .await?;
        }
        // a user from an earlier run against the same database just logs in
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => bail!("create user {username}: {s}"),
    }
    let token = login(&mut auth, &username, password).await?;
    open_and_fund(gw, banker, token).await
}

/// Opens the user's USD account (or finds it) and has the banker fund it.
async fn open_and_fund(gw: &Channel, banker: &str, token: String) -> anyhow::Result<Party> {
    let mut accounts = AccountsServiceClient::new(gw.clone());
    let mut transfers = TransfersServiceClient::new(gw.clone());
    let account_id = match accounts
        .create_account(bearer(
            CreateAccountRequest {
                currency: "USD".into(),
            },
            &token,
        ))
        .await
    {
        Ok(a) => a.into_inner().id,
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            let list = accounts
                .list_accounts(bearer(
                    proto::accounts::v1::ListAccountsRequest::default(),
                    &token,
                ))
                .await?
                .into_inner();
            list.accounts
                .into_iter()
                .find(|a| a.currency == "USD")
                .context("account exists but is not listed")?
                .id
        }
        Err(s) => bail!("create account: {s}"),
    };
    transfers
        .deposit(bearer(
            DepositRequest {
                account_id,
                amount: 10_000_000,
                currency: "USD".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            banker,
        ))
        .await
        .with_context(|| format!("deposit into {account_id}"))?;
    Ok(Party { token, account_id })
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    /// `reads` mode: latencies per RPC.
    by_rpc: BTreeMap<&'static str, Vec<u64>>,
    /// `bulk` mode: items answered OK (`errors` counts refused items by reason).
    items_ok: u64,
}

/// The read RPCs of `--mode reads`, taken in turn.
const READS: [&str; 3] = ["GetTransfer", "ListEntries", "ListTransfers"];

enum Client {
    Grpc(TransfersServiceClient<Channel>),
    Http(reqwest::Client, String),
}

impl Client {
    /// A hold of `amount` from `from` to `to`, then its post for the whole amount, each with an
    /// idempotency key as a real client would send.
    async fn hold_then_post(
        &mut self,
        from: &Party,
        to: &Party,
        amount: i64,
    ) -> Result<(), String> {
        let Client::Grpc(c) = self else {
            return Err("hot-hold-post runs over gRPC only".into());
        };
        let hold = c
            .create_transfer(with_new_key(bearer(
                CreateTransferRequest {
                    from_account_id: from.account_id,
                    to_account_id: to.account_id,
                    amount,
                    currency: "USD".into(),
                    pending: true,
                    ..Default::default()
                },
                &from.token,
            )))
            .await
            .map_err(|s| format!("hold/{}", reason(&s)))?
            .into_inner();
        let id = hold.transfer.map(|t| t.id).unwrap_or_default();
        c.post_transfer(with_new_key(bearer(
            PostTransferRequest {
                id,
                ..Default::default()
            },
            &from.token,
        )))
        .await
        .map(|_| ())
        .map_err(|s| format!("post/{}", reason(&s)))
    }

    /// One read RPC of `READS` about `party`'s own account (`transfer_id`: one of its transfers).
    async fn read(&mut self, rpc: &str, party: &Party, transfer_id: i64) -> Result<(), String> {
        let Client::Grpc(c) = self else {
            return Err("reads run over gRPC only".into());
        };
        let r = match rpc {
            "GetTransfer" => c
                .get_transfer(bearer(GetTransferRequest { id: transfer_id }, &party.token))
                .await
                .map(|_| ()),
            "ListEntries" => c
                .list_entries(bearer(
                    ListEntriesRequest {
                        account_id: party.account_id,
                        page_size: 20,
                        ..Default::default()
                    },
                    &party.token,
                ))
                .await
                .map(|_| ()),
            _ => c
                .list_transfers(bearer(
                    ListTransfersRequest {
                        account_id: party.account_id,
                        page_size: 20,
                        ..Default::default()
                    },
                    &party.token,
                ))
                .await
                .map(|_| ()),
        };
        r.map_err(|s| format!("{rpc}/{}", reason(&s)))
    }

    /// One bulk request from `from` to each of `to` (amounts 1..=100), each item with a fresh
    /// key: the items answered OK, and each refused item's reason (a refused call: its reason for
    /// every item).
    async fn bulk(&mut self, from: &Party, to: &[&Party]) -> (u64, Vec<String>) {
        let Client::Grpc(c) = self else {
            return (0, vec!["bulk runs over gRPC only".into(); to.len()]);
        };
        let items = {
            let mut rng = rand::rng();
            to.iter()
                .map(|p| CreateTransferRequest {
                    from_account_id: from.account_id,
                    to_account_id: p.account_id,
                    amount: rng.random_range(1..=100),
                    currency: "USD".into(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                })
                .collect()
        };
        match c
            .create_transfers(bearer(CreateTransfersRequest { items }, &from.token))
            .await
        {
            Ok(r) => {
                let mut ok = 0;
                let mut refused = Vec::new();
                for r in r.into_inner().results {
                    match r.outcome {
                        Some(proto::transfers::v1::bulk_transfer_result::Outcome::Result(_)) => {
                            ok += 1
                        }
                        Some(proto::transfers::v1::bulk_transfer_result::Outcome::Error(e)) => {
                            refused.push(format!("item/{}", e.reason))
                        }
                        None => refused.push("item/no outcome".into()),
                    }
                }
                (ok, refused)
            }
            Err(s) => (0, vec![format!("bulk/{}", reason(&s)); to.len()]),
        }
    }

    async fn transfer(&mut self, from: &Party, to: &Party, amount: i64) -> Result<(), String> {
        let key = uuid::Uuid::new_v4().to_string();
        match self {
            Client::Grpc(c) => {
                let mut req = bearer(
                    CreateTransferRequest {
                        from_account_id: from.account_id,
                        to_account_id: to.account_id,
                        amount,
                        currency: "USD".into(),
                        request_id: String::new(),
                        ..Default::default()
                    },
                    &from.token,
                );
                req.metadata_mut()
                    .insert("idempotency-key", key.parse().expect("uuid"));
                c.create_transfer(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| reason(&s))
            }
            Client::Http(c, base) => {
                let resp = c
                    .post(format!("{base}/v1/transfers"))
                    .bearer_auth(&from.token)
                    .header("Idempotency-Key", key)
                    .json(&serde_json::json!({
                        "from_account_id": from.account_id.to_string(),
                        "to_account_id": to.account_id.to_string(),
                        "amount": amount.to_string(),
                        "currency": "USD",
                    }))
                    .send()
                    .await
                    .map_err(|e| format!("http/{e}"))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    let status = resp.status().as_u16();
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    let reason = body["details"]
                        .as_array()
                        .and_then(|d| {
                            d.iter()
                                .find_map(|x| x["reason"].as_str().map(str::to_owned))
                        })
                        .unwrap_or_else(|| "-".into());
                    Err(format!("HTTP {status}/{reason}"))
                }
            }
        }
    }
}

/// For `reads`: (party index, one of its transfers) for up to 64 parties, from ListTransfers.
async fn known_transfers(args: &Args, parties: &[Party]) -> anyhow::Result<Vec<(usize, i64)>> {
    let mut c = TransfersServiceClient::new(connect(&args.transfers_grpc).await?);
    let mut known = Vec::new();
    for (i, p) in parties.iter().enumerate().take(64) {
        let page = c
            .list_transfers(bearer(
                ListTransfersRequest {
                    account_id: p.account_id,
                    page_size: 1,
                    ..Default::default()
                },
                &p.token,
            ))
            .await?
            .into_inner();
        known.extend(page.transfers.first().map(|t| (i, t.id)));
    }
    if known.is_empty() {
        bail!("reads: no party has a transfer to read");
    }
    Ok(known)
}

async fn run_load(args: &Args, parties: Arc<Vec<Party>>) -> anyhow::Result<(Outcome, Duration)> {
    let known = Arc::new(if args.mode == Mode::Reads {
        known_transfers(args, &parties).await?
    } else {
        Vec::new()
    });
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let remaining = Arc::new(std::sync::atomic::AtomicI64::new(if args.count > 0 {
        args.count as i64
    } else {
        i64::MAX
    }));
    // one connection (HTTP/2) per 8 clients, as a real client pool would
    let mut channels = Vec::new();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let per_conn = 8;
    for _ in 0..args.clients.div_ceil(per_conn) {
        channels.push(match args.target {
            Target::GrpcDirect => Some(connect(&args.transfers_grpc).await?),
            Target::GrpcGateway => Some(connect(&args.gateway_grpc).await?),
            Target::HttpGateway => None,
        });
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let parties = parties.clone();
        let remaining = remaining.clone();
        let mut client = match &channels[c / per_conn] {
            Some(ch) => Client::Grpc(TransfersServiceClient::new(ch.clone())),
            None => Client::Http(http.clone(), args.gateway_http.clone()),
        };
        let mode = args.mode;
        let bulk_items = args.bulk_items;
        let known = known.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let n = parties.len();
            let mut turn = c;
            while Instant::now() < deadline
                && remaining.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0
            {
                if mode == Mode::Reads {
                    let rpc = READS[turn % READS.len()];
                    turn += 1;
                    let (p, id) = known[rand::rng().random_range(0..known.len())];
                    let t0 = Instant::now();
                    let result = client.read(rpc, &parties[p], id).await;
                    let us = t0.elapsed().as_micros() as u64;
                    out.latencies_us.push(us);
                    out.by_rpc.entry(rpc).or_default().push(us);
                    if let Err(e) = result {
                        *out.errors.entry(e).or_default() += 1;
                    }
                    continue;
                }
                if mode == Mode::Bulk {
                    let (from, to) = {
                        let mut rng = rand::rng();
                        let a = rng.random_range(0..n);
                        let to: Vec<&Party> = (0..bulk_items)
                            .map(|_| &parties[(a + rng.random_range(1..n)) % n])
                            .collect();
                        (&parties[a], to)
                    };
                    let t0 = Instant::now();
                    let (ok, refused) = client.bulk(from, &to).await;
                    out.latencies_us.push(t0.elapsed().as_micros() as u64);
                    out.items_ok += ok;
                    for e in refused {
                        *out.errors.entry(e).or_default() += 1;
                    }
                    continue;
                }
                let (a, b, amount) = {
                    let mut rng = rand::rng();
                    let (a, b) = match mode {
                        Mode::Uniform => {
                            let a = rng.random_range(0..n);
                            let b = (a + rng.random_range(1..n)) % n;
                            (a, b)
                        }
                        Mode::Hot | Mode::HotHoldPost | Mode::Reads | Mode::Bulk => {
                            let other = rng.random_range(1..n);
                            if rng.random_bool(0.5) {
                                (0, other)
                            } else {
                                (other, 0)
                            }
                        }
                    };
                    (a, b, rng.random_range(1..=100))
                };
                let t0 = Instant::now();
                let result = if mode == Mode::HotHoldPost {
                    client
                        .hold_then_post(&parties[a], &parties[b], amount)
                        .await
                } else {
                    client.transfer(&parties[a], &parties[b], amount).await
                };
                out.latencies_us.push(t0.elapsed().as_micros() as u64);
                if let Err(e) = result {
                    *out.errors.entry(e).or_default() += 1;
                }
            }
            out
        }));
    }
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await?;
        all.latencies_us.extend(o.latencies_us);
        all.items_ok += o.items_ok;
        for (k, v) in o.by_rpc {
            all.by_rpc.entry(k).or_default().extend(v);
        }
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    Ok((all, started.elapsed()))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs Reconcile as the banker: (ok, violations, how long it took).
async fn reconcile(gw: Channel, banker: &str) -> anyhow::Result<(bool, Vec<String>, Duration)> {
    let t0 = Instant::now();
    let r = TransfersServiceClient::new(gw)
        .reconcile(bearer(ReconcileRequest::default(), banker))
        .await?
        .into_inner();
    Ok((r.ok, r.violations, t0.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.accounts < 2 {
        bail!("--accounts must be at least 2");
    }
    if args.bulk_items == 0 {
        bail!("--bulk-items must be at least 1");
    }
    let gw = connect(&args.gateway_grpc).await?;
    let (banker, parties) = match &args.parties_file {
        Some(path) if !args.setup_only => {
            let file: PartiesFile = serde_json::from_slice(
                &std::fs::read(path).with_context(|| format!("read {}", path.display()))?,
            )?;
            if file.parties.len() < args.accounts {
                bail!(
                    "{} holds {} parties, fewer than --accounts {}",
                    path.display(),
                    file.parties.len(),
                    args.accounts
                );
            }
            let mut parties = file.parties;
            parties.truncate(args.accounts);
            (file.banker, parties)
        }
        _ => setup(&args, gw.clone()).await?,
    };
    if args.setup_only {
        let path = args
            .parties_file
            .as_ref()
            .context("--setup-only needs --parties-file")?;
        let file = PartiesFile { banker, parties };
        std::fs::write(path, serde_json::to_vec(&file)?)?;
        println!(
            "{}",
            serde_json::json!({"label": args.label, "parties": file.parties.len()})
        );
        return Ok(());
    }
    if args.reconcile_only {
        let (ok, violations, took) = reconcile(gw, &banker).await?;
        println!(
            "{}",
            serde_json::json!({"label": args.label, "reconcile_ok": ok, "reconcile_ms": took.as_secs_f64() * 1000.0})
        );
        if !ok {
            bail!("RECONCILE FAILED: {violations:?}");
        }
        return Ok(());
    }
    let (mut outcome, elapsed) = run_load(&args, Arc::new(parties)).await?;
    outcome.latencies_us.sort_unstable();
    let total = outcome.latencies_us.len() as u64;
    let failed: u64 = outcome.errors.values().sum();
    // bulk: transfers are the items, a call carries `--bulk-items` of them
    let ok = if args.mode == Mode::Bulk {
        outcome.items_ok
    } else {
        total - failed
    };
    let tps = ok as f64 / elapsed.as_secs_f64();
    let l = &outcome.latencies_us;
    if args.mode == Mode::Bulk {
        println!(
            "bulk: {total} calls of {} items; {ok} transfers OK, {failed} items refused",
            args.bulk_items
        );
    }
    println!(
        "{:?} {:?}: {ok} calls in {:.1}s = {tps:.0}/s; latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}; errors {failed}",
        args.target,
        args.mode,
        elapsed.as_secs_f64(),
        percentile(l, 0.50),
        percentile(l, 0.95),
        percentile(l, 0.99),
        percentile(l, 1.0),
    );
    for (k, v) in &outcome.errors {
        println!("  error {k}: {v}");
    }
    let by_rpc: serde_json::Map<String, serde_json::Value> = outcome
        .by_rpc
        .iter_mut()
        .map(|(rpc, v)| {
            v.sort_unstable();
            (
                (*rpc).to_owned(),
                serde_json::json!({"calls": v.len(), "p50": percentile(v, 0.50), "p99": percentile(v, 0.99)}),
            )
        })
        .collect();
    let (reconcile_ok, violations, reconcile_ms) = if args.no_reconcile {
        (true, Vec::new(), None)
    } else {
        let (ok, v, took) = reconcile(gw, &banker).await?;
        (ok, v, Some(took.as_secs_f64() * 1000.0))
    };
    println!(
        "{}",
        serde_json::json!({
            "label": args.label,
            "target": format!("{:?}", args.target),
            "mode": format!("{:?}", args.mode),
            "clients": args.clients,
            "accounts": args.accounts,
            "calls": total,
            "items_per_call": (args.mode == Mode::Bulk).then_some(args.bulk_items),
            "elapsed_s": elapsed.as_secs_f64(),
            "transfers_ok": ok,
            "errors": outcome.errors,
            "transfers_per_s": tps,
            "latency_ms": {
                "p50": percentile(l, 0.50), "p95": percentile(l, 0.95),
                "p99": percentile(l, 0.99), "max": percentile(l, 1.0)
            },
            "by_rpc": by_rpc,
            "reconcile_ok": reconcile_ok,
            "reconcile_ms": reconcile_ms,
        })
    );
    if !reconcile_ok {
        bail!("RECONCILE FAILED: {violations:?}");
    }
    Ok(())
}
