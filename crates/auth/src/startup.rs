//! Builds the service from config and runs it (gRPC API + outbox relay) until shutdown.

use std::path::Path;

use anyhow::Context;
use platform::{Listeners, Shutdown, config::Validate, http::Readiness, token::Keys};
use proto::auth::v1::auth_service_server::AuthServiceServer;

use crate::{
    config::Config,
    domain::{Auth, Hasher, Throttle, relay},
    grpc::AuthApi,
};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    // again here (config::load did it too) so a config built in code is held to the same rules
    cfg.validate()?;
    let db = platform::db::pool(&cfg.database)?;
    let redis = platform::redis::pool(&cfg.redis)?;
    platform::db::check_at_start(&db, &cfg.database).await?;
    platform::redis::check_at_start(&redis, &cfg.redis).await?;
    let keys = signing_keys(&cfg)?;
    let hasher = Hasher::new(&cfg.password)?;
    hasher.warm_up();
    // revoked sessions are published by this service's relay, so they are read where it writes
    let relay_redis_cfg = cfg.relay.redis.clone().unwrap_or_else(|| cfg.redis.clone());
    let revocations = platform::config::RevocationsConfig {
        redis: relay_redis_cfg.clone(),
        ..cfg.token.revocations.clone()
    };
    let tokens =
        platform::revocations::follow(keys.maker(cfg.token.kind), &revocations, shutdown.clone())?;
    let auth = Auth {
        db: db.clone(),
        redis: redis.clone(),
        key_prefix: cfg.redis.key_prefix.clone(),
        hasher,
        tokens,
        throttle: Throttle::new(
            redis.clone(),
            &cfg.redis.key_prefix,
            cfg.login_throttle.clone(),
            cfg.verification.clone(),
        ),
        session: cfg.session.clone(),
        verification: cfg.verification.clone(),
    };

    let relay = if cfg.relay.enabled {
        let relay_redis = platform::redis::pool(&relay_redis_cfg).context("relay redis pool")?;
        if cfg.relay.redis.is_some() {
            platform::redis::check_at_start(&relay_redis, &relay_redis_cfg)
                .await
                .context("relay.redis")?;
        }
        Some(tokio::spawn(relay::run(
            db.clone(),
            relay_redis,
            relay_redis_cfg,
            cfg.relay.clone(),
            shutdown.clone(),
        )))
    } else {
        None
    };

    let routes = tonic::service::Routes::new(AuthServiceServer::new(AuthApi::new(auth)));
    let readiness = Readiness::new().postgres(db.clone()).redis(redis.clone());
    let result = platform::serve_all(
        &cfg.server,
        listeners,
        routes,
        &[proto::service_names::AUTH],
        readiness,
        shutdown.clone(),
    )
    .await;
    // the servers are down (by signal or by error): stop the relay too, then close the pool
    shutdown.trigger();
    if let Some(handle) = relay {
        platform::shutdown::join_background("outbox relay", handle).await;
    }
    db.close().await;
    result
}

/// The signing key: `token.private_key(_file)` when configured, else a development key pair kept
/// under `dev_key_dir` (created on first run; never for production).
fn signing_keys(cfg: &Config) -> anyhow::Result<Keys> {
    let configured = cfg
        .token
        .private_key
        .as_deref()
        .is_some_and(|k| !k.trim().is_empty())
        || cfg.token.private_key_file.is_some();
    let keys = if configured {
        Keys::from_config(&cfg.token)?
    } else {
        tracing::warn!(dir = %cfg.dev_key_dir,
            "no token.private_key configured: using the development key pair under dev_key_dir");
        Keys::load_or_create_dev(Path::new(&cfg.dev_key_dir))?
    };
    if keys.private_b64().is_none() {
        anyhow::bail!("the auth service needs a private token key to sign access tokens");
    }
    let public_only = platform::config::TokenConfig {
        private_key: None,
        private_key_file: None,
        ..cfg.token.clone()
    };
    if let Ok(public) = Keys::from_config(&public_only)
        && public.public_b64() != keys.public_b64()
    {
        tracing::warn!(
            "token.public_key does not match the private key: other services will \
                        reject the tokens this service issues"
        );
    }
    Ok(keys)
}
