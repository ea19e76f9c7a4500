//! PostgreSQL pool and the embedded migrations.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseConfig;

/// Every migration under `migrations/`, embedded at compile time (no database needed to build).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Builds a pool. Connections are opened lazily so a service starts (and reports not-ready)
/// while the database is still coming up.
pub fn pool(cfg: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = cfg.url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(cfg.min_connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_lazy_with(opts))
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
    let opts: PgConnectOptions = url.parse()?;
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
