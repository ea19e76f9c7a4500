//! PostgreSQL pool and the embedded migrations.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

use crate::config::DatabaseConfig;

/// Every migration under `migrations/`, embedded at compile time (no database needed to build).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Builds a pool. Connections are opened lazily so a service starts (and reports not-ready)
/// while the database is still coming up; [`check_at_start`] refuses what waiting cannot fix.
/// Inside a Tokio runtime it also starts the pool's circuit breaker ([`breaker`]), unless
/// `database.breaker_probe_interval_ms` is 0.
pub fn pool(cfg: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    cfg.validate()
        .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
    let opts = connect_options(cfg)?;
    let pool = PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(cfg.min_connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_lazy_with(opts.clone());
    if cfg.breaker_probe_interval_ms > 0
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        runtime.spawn(breaker(
            pool.clone(),
            opts,
            Duration::from_millis(cfg.breaker_probe_interval_ms),
            Duration::from_millis(cfg.connect_timeout_ms),
        ));
    }
    Ok(pool)
}

/// The pool of the reads that may be served by a replica: on `database.read_url` when set (the
/// same pool settings, breaker and TLS as the primary's), else the primary's own `primary`
/// (a clone: the same connections). Money movements and reads that must see the caller's own
/// writes never use it.
pub fn read_pool(cfg: &DatabaseConfig, primary: &PgPool) -> Result<PgPool, sqlx::Error> {
    match cfg.read_url.as_deref().map(str::trim) {
        None => Ok(primary.clone()),
        Some("") => Err(sqlx::Error::Configuration(
            "database.read_url is empty; leave it unset to read the primary".into(),
        )),
        Some(url) => pool(&DatabaseConfig {
            url: url.to_owned(),
            read_url: None,
            ..cfg.clone()
        }),
    }
}

/// The pool's circuit breaker. sqlx keeps retrying a refused connection until the acquire
/// timeout, so while the database is down every caller would wait that long; this makes them
/// fail at once instead. A probe connection of its own runs `SELECT 1` every `interval`; when
/// that fails and no new connection can be made within `connect_timeout` (the database is
/// gone, not merely busy: a saturated pool never trips it), the pool's connect options are
/// pointed at a socket that does not exist, so every new connection fails at once with an I/O
/// error (`database_unavailable`, 503, through `ApiError::from`), including the connects sqlx is
/// retrying right then. The probe keeps trying the real options every `interval`; the first that
/// connects puts them back (closed: callers reach the database again, no restart). Ends when the
/// pool is closed, or when the database answers that it does not exist (dropped: nothing to wait
/// for).
async fn breaker(
    pool: PgPool,
    real: PgConnectOptions,
    interval: Duration,
    connect_timeout: Duration,
) {
    use sqlx::{ConnectOptions, Connection};
    let connect = || async {
        match tokio::time::timeout(connect_timeout, real.connect()).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    };
    let mut probe = None;
    let mut open = false;
    while !pool.is_closed() {
        let alive = match probe.as_mut() {
            Some(conn) => {
                let ping = sqlx::query("SELECT 1").execute(&mut *conn);
                matches!(tokio::time::timeout(connect_timeout, ping).await, Ok(Ok(_)))
            }
            None => false,
        };
        if !alive {
            probe = None; // broken: dropped
            match connect().await {
                Ok(conn) => probe = Some(conn),
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => return,
                Err(e) => {
                    if !open {
                        open = true;
                        pool.set_connect_options(breaker_open_options());
                        metrics::gauge!("db_breaker_open").set(1.0);
                        tracing::error!(error = %error_chain(&e), "database unreachable: circuit breaker open, queries fail at once");
                    }
                }
            }
        }
        if open && probe.is_some() {
            open = false;
            pool.set_connect_options(real.clone());
            metrics::gauge!("db_breaker_open").set(0.0);
            tracing::info!("database reachable again: circuit breaker closed");
        }
        tokio::time::sleep(interval).await;
    }
    if let Some(conn) = probe {
        let _ = conn.close().await;
    }
}

/// Connect options that fail at once with an I/O error: a Unix socket that does not exist.
fn breaker_open_options() -> PgConnectOptions {
    PgConnectOptions::new().socket("/nonexistent/database-circuit-breaker-open")
}

/// True when `e` is the server ending the session rather than refusing the statement: SQLSTATE
/// class 08 (connection exception) or 57P01–57P03 (terminated by an administrator or a shutdown,
/// crashed, not accepting connections). A backend sends these whenever it is told to go, also
/// after its statement's commit reached the WAL, so such an error proves nothing about whether
/// the statement applied, unlike every other error the database reports.
pub fn ended_by_server(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
}

/// The URL with `database.ssl_mode` and `database.ssl_root_cert` applied over it (they win over
/// the URL's `sslmode` / `sslrootcert`). A CA file that cannot be read or holds no certificate is
/// refused here, naming the key, rather than at the first connection.
pub fn connect_options(cfg: &DatabaseConfig) -> Result<PgConnectOptions, sqlx::Error> {
    let config_error = |msg: String| sqlx::Error::Configuration(msg.into());
    let mut opts: PgConnectOptions = cfg.url.parse()?;
    if let Some(mode) = cfg.ssl_mode.as_deref() {
        let mode: PgSslMode = mode.parse().map_err(|_| {
            config_error(format!(
                "database.ssl_mode must be one of disable, allow, prefer, require, verify-ca, \
                 verify-full (got {mode:?})"
            ))
        })?;
        opts = opts.ssl_mode(mode);
    }
    if let Some(path) = &cfg.ssl_root_cert {
        crate::tls::read_ca_file(path)
            .map_err(|e| config_error(format!("database.ssl_root_cert: {e}")))?;
        opts = opts.ssl_root_cert(path);
    }
    Ok(opts)
}

/// One connection at start-up. A TLS failure (the CA in `database.ssl_root_cert` did not sign the
/// server's certificate, the certificate is not for the URL's host, or `database.ssl_mode =
/// disable` against a server that requires TLS) does not heal by waiting, so it stops start-up
/// naming the setting; anything else (the database is down or still starting) is logged and left
/// to readiness, which keeps the service out of the load balancer until the database answers.
pub async fn check_at_start(pool: &PgPool, cfg: &DatabaseConfig) -> anyhow::Result<()> {
    let error = match pool.acquire().await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if let Some(fatal) = explain_setting_error(&error, cfg) {
        return Err(fatal);
    }
    tracing::warn!(error = %error_chain(&error), "database not reachable at start-up; not ready until it is");
    Ok(())
}

/// `Some` when `error` (from connecting with `cfg`) is a TLS setting's fault: the error, naming
/// the setting. `migrate` uses it on its first connection too.
pub fn explain_setting_error(error: &sqlx::Error, cfg: &DatabaseConfig) -> Option<anyhow::Error> {
    let chain = error_chain(error);
    let host = connect_options(cfg)
        .map(|o| o.get_host().to_owned())
        .unwrap_or_default();
    let setting = match crate::tls::certificate_problem(&chain) {
        Some(crate::tls::CertificateProblem::UnknownIssuer) => format!(
            "database.ssl_root_cert ({}) does not hold the CA that signed the server's certificate",
            describe_path(cfg.ssl_root_cert.as_deref())
        ),
        Some(crate::tls::CertificateProblem::WrongName) => format!(
            "the server's certificate is not valid for the host {host:?} of database.url \
             (database.ssl_mode = verify-full checks the name; connect by the name in the \
             certificate)"
        ),
        Some(crate::tls::CertificateProblem::Other) => format!(
            "TLS to the database failed; check database.ssl_mode and database.ssl_root_cert ({})",
            describe_path(cfg.ssl_root_cert.as_deref())
        ),
        None if matches!(error, sqlx::Error::Tls(_)) => {
            "TLS to the database failed; check database.ssl_mode and database.ssl_root_cert"
                .to_owned()
        }
        // PostgreSQL's answer to a plaintext client when pg_hba.conf has only `hostssl` lines
        None if chain.contains("no encryption") => "the database requires TLS but \
             database.ssl_mode (or the URL's sslmode) is disable: set database.ssl_mode = \
             verify-full and database.ssl_root_cert"
            .to_owned(),
        None => return None,
    };
    Some(anyhow::anyhow!("{setting}: {chain}"))
}

/// An error and its sources on one line (the TLS cause sits a few sources down).
fn error_chain(error: &sqlx::Error) -> String {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = e.source();
    }
    chain
}

fn describe_path(path: Option<&std::path::Path>) -> String {
    path.map_or_else(
        || "unset: the URL's sslrootcert or the public roots".to_owned(),
        |p| p.display().to_string(),
    )
}

/// Applies every pending migration. Running it twice is harmless; concurrent runs are serialised
/// by sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts migrations down to (excluding) `target` version; `0` reverts everything.
pub async fn migrate_down(pool: &PgPool, target: i64) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.undo(pool, target).await
}

/// Creates the database named in `url` if it does not exist (connects to `postgres` to do so).
pub async fn create_database_if_missing(url: &str) -> Result<(), sqlx::Error> {
    create_database_if_missing_with(&DatabaseConfig {
        url: url.to_owned(),
        ..DatabaseConfig::default()
    })
    .await
}

/// [`create_database_if_missing`] over the TLS settings of `cfg` (`migrate up` against RDS).
pub async fn create_database_if_missing_with(cfg: &DatabaseConfig) -> Result<(), sqlx::Error> {
    let opts = connect_options(cfg)?;
    let name = opts
        .get_database()
        .ok_or_else(|| sqlx::Error::Configuration("DATABASE url names no database".into()))?
        .to_owned();
    let admin = opts.clone().database("postgres");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&pool)
            .await?;
    if !exists {
        // identifiers cannot be bound as parameters; quote it as an identifier instead
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(())
}

/// Readiness: one round trip.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
