//! The mesh under test: auth, accounts and transfers in-process on ephemeral ports, sharing one
//! fresh database and one Redis namespace; gRPC clients; a strict Prometheus text parser; an SMTP
//! server that records what the mailer sends ([`smtp`]); running a test alone in a child process
//! ([`ran_in_own_process`]).

pub mod smtp;

pub use test_support::ran_in_own_process;

use std::{collections::BTreeMap, time::Duration};

use platform::token::{Keys, Role};
use proto::{
    accounts::v1::{CreateAccountRequest, accounts_service_client::AccountsServiceClient},
    auth::v1::auth_service_client::AuthServiceClient,
    transfers::v1::{DepositRequest, transfers_service_client::TransfersServiceClient},
};
use test_support::{Running, TestDb, TestRedis};
use tonic::transport::Channel;

pub struct Mesh {
    pub auth: Running,
    pub accounts: Running,
    pub transfers: Running,
    pub keys: Keys,
    pub db: TestDb,
    pub redis: TestRedis,
    pub auth_client: AuthServiceClient<Channel>,
    pub accounts_client: AccountsServiceClient<Channel>,
    pub transfers_client: TransfersServiceClient<Channel>,
}

impl Mesh {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let redis = TestRedis::new().await;
        let keys = test_support::test_keys();

        let mut auth_cfg = auth::config::Config {
            database: db.config(),
            redis: redis.config(),
            ..Default::default()
        };
        auth_cfg.token.private_key = keys.private_b64();
        auth_cfg.server.gateway_secret = Some(gateway_secret());
        let auth = test_support::spawn(move |l, s| auth::startup::run(auth_cfg, l, s)).await;

        let mut accounts_cfg = accounts::config::Config {
            database: db.config(),
            ..Default::default()
        };
        accounts_cfg.token.public_key = Some(keys.public_b64());
        // revoked sessions from auth's relay, in this mesh's Redis namespace
        accounts_cfg.token.revocations.redis = redis.config();
        accounts_cfg.server.gateway_secret = Some(gateway_secret());
        let accounts =
            test_support::spawn(move |l, s| accounts::startup::run(accounts_cfg, l, s)).await;

        let mut transfers_cfg = transfers::config::Config {
            database: db.config(),
            ..Default::default()
        };
        transfers_cfg.token.public_key = Some(keys.public_b64());
        // revoked sessions from auth's relay, in this mesh's Redis namespace
        transfers_cfg.token.revocations.redis = redis.config();
        transfers_cfg.server.gateway_secret = Some(gateway_secret());
        let transfers =
            test_support::spawn(move |l, s| transfers::startup::run(transfers_cfg, l, s)).await;

        let auth_client = AuthServiceClient::new(test_support::channel(auth.grpc_addr).await);
        let accounts_client =
            AccountsServiceClient::new(test_support::channel(accounts.grpc_addr).await);
        let transfers_client =
            TransfersServiceClient::new(test_support::channel(transfers.grpc_addr).await);
        let mesh = Self {
            auth,
            accounts,
            transfers,
            keys,
            db,
            redis,
            auth_client,
            accounts_client,
            transfers_client,
        };
        for svc in [&mesh.auth, &mesh.accounts, &mesh.transfers] {
            wait_ready(svc).await;
        }
        mesh
    }

    /// An access token signed with the mesh's keys (verified email).
    pub fn token(&self, username: &str, role: Role) -> String {
        test_support::access_token(&self.keys, username, role, true)
    }

    /// Opens an account for `token`'s user.
    pub async fn open_account(&self, token: &str, currency: &str) -> i64 {
        self.accounts_client
            .clone()
            .create_account(test_support::authed(
                CreateAccountRequest {
                    currency: currency.into(),
                },
                token,
            ))
            .await
            .expect("create account")
            .into_inner()
            .id
    }

    /// A banker deposits `amount` into `account_id`.
    pub async fn deposit(&self, account_id: i64, amount: i64, currency: &str) {
        let banker = self.token("bea_banker", Role::Banker);
        self.transfers_client
            .clone()
            .deposit(test_support::authed(
                DepositRequest {
                    account_id,
                    amount,
                    currency: currency.into(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                },
                &banker,
            ))
            .await
            .expect("deposit");
    }

    /// The edge gateway in front of this mesh (generous timeout for a loaded 2-core machine, no
    /// per-IP rate limit), ready.
    pub async fn start_gateway(&self) -> Running {
        let mut cfg = edge_gateway::config::Config::default();
        cfg.upstreams.insert("auth".into(), self.auth.grpc_url());
        cfg.upstreams
            .insert("accounts".into(), self.accounts.grpc_url());
        cfg.upstreams
            .insert("transfers".into(), self.transfers.grpc_url());
        cfg.limits.request_timeout_ms = 30_000;
        cfg.rate_limit.per_ip_per_minute = 0;
        cfg.server.gateway_secret = Some(gateway_secret());
        let gateway = test_support::spawn(move |l, s| edge_gateway::startup::run(cfg, l, s)).await;
        // the gateway's /readyz is on its private admin port, not the public HTTP one
        wait_ready_at(&gateway.admin_url()).await;
        gateway
    }

    /// The mailer on this mesh's Redis, writing `.eml` files to `mail_dir`.
    pub async fn start_mailer(&self, mail_dir: std::path::PathBuf) -> Running {
        let cfg = mailer::config::Config {
            redis: self.redis.config(),
            database: self.db.config(), // its recipients table
            consumer_name: "mesh-mailer".into(),
            transport: mailer::config::TransportConfig {
                kind: mailer::config::TransportKind::File,
                file_dir: mail_dir,
                ..Default::default()
            },
            block_ms: 200,
            ..Default::default()
        };
        test_support::spawn(move |l, s| mailer::startup::run(cfg, l.http, s)).await
    }

    pub async fn stop(self) {
        for svc in [self.transfers, self.accounts, self.auth] {
            svc.stop().await.expect("service stops cleanly");
        }
    }
}

/// `server.gateway_secret` of the mesh: the gateway vouches with it for the client IP it
/// forwards, and the services believe `x-client-ip` only with it.
pub fn gateway_secret() -> platform::config::GatewaySecret {
    platform::config::GatewaySecret("mesh-test-gateway-secret".into())
}

/// Waits (generously: the machine is shared) until `/readyz` answers 200.
pub async fn wait_ready(svc: &Running) {
    wait_ready_at(&svc.http_url()).await
}

/// [`wait_ready`] for the HTTP port at `base` (`http://host:port`).
pub async fn wait_ready_at(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not become ready");
}

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape: every sample, parsed strictly.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`; 0 when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// GETs `/metrics` of `svc` and parses it.
pub async fn scrape(svc: &Running) -> Scrape {
    let resp = reqwest::get(format!("{}/metrics", svc.http_url()))
        .await
        .expect("GET /metrics");
    assert!(resp.status().is_success(), "/metrics: {}", resp.status());
    let text = resp.text().await.unwrap();
    parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{text}"))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        t => t.parse().map_err(|_| format!("bad value {t:?}")),
    }
}

/// Parses the Prometheus text exposition format (0.0.4) strictly: every line is a comment, a
/// `# HELP`/`# TYPE` line, blank, or a sample whose family was typed before it.
pub fn parse_prometheus(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| at("TYPE without name".into()))?;
                    let kind = words.next().ok_or_else(|| at("TYPE without type".into()))?;
                    if !valid_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if scrape.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("second TYPE for one family".into()));
                    }
                }
                Some("HELP") => {
                    let name = words.next().ok_or_else(|| at("HELP without name".into()))?;
                    if !valid_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                }
                _ => {} // a plain comment
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(at("sample without value".into())),
        };
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = chars.next().unwrap().0;
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(at("unterminated labels".into())),
                };
                let mut key_end = start;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        key_end = i;
                        break;
                    }
                }
                let key = &body[start..key_end];
                if !valid_name(key) || key.contains(':') {
                    return Err(at(format!("bad label name {key:?}")));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(at("label value not quoted".into()));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            _ => return Err(at("bad escape in label value".into())),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(at("unterminated label value".into())),
                    }
                }
                if labels.insert(key.to_owned(), value).is_some() {
                    return Err(at(format!("label {key} twice")));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = i;
                        break;
                    }
                    _ => return Err(at("expected , or } after a label".into())),
                }
            }
            &body[end + 1..]
        } else {
            rest
        };
        let mut parts = rest.split_whitespace();
        let value = parse_value(parts.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| scrape.types.contains_key(*f))
            .unwrap_or(name);
        if !scrape.types.contains_key(family) {
            return Err(at("sample before its # TYPE".into()));
        }
        scrape.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(scrape)
}
