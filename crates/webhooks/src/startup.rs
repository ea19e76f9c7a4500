//! Builds the service from config and runs it until shutdown: the gRPC API, the consumer of the
//! ledger-events stream and the deliverer.

use std::{sync::Arc, time::Duration};

use platform::{Listeners, Shutdown, config::Validate, http::Readiness, token::Keys};
use proto::webhooks::v1::webhooks_service_server::WebhooksServiceServer;

use crate::{
    config::Config,
    consumer::Consumer,
    domain::{Deliverer, Endpoints, Policy},
    grpc::WebhooksApi,
};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    let tokens = Keys::from_config(&cfg.token)?.maker(cfg.token.kind);
    let tokens = platform::revocations::follow(tokens, &cfg.token.revocations, shutdown.clone())?;
    let db = platform::db::pool(&cfg.database)?;
    platform::db::check_at_start(&db, &cfg.database).await?;
    let redis = platform::redis::pool(&cfg.redis)?;
    platform::redis::check_at_start(&redis, &cfg.redis).await?;

    let consumer = Consumer {
        db: db.clone(),
        client: platform::redis::client(&cfg.redis)?,
        stream: ledger_model::events::stream_key(&cfg.redis.key_prefix),
        name: consumer_name(&cfg.consumer.consumer),
        cfg: cfg.consumer.clone(),
        redis_timeout: Duration::from_millis(cfg.redis.timeout_ms),
    };
    let consumer = tokio::spawn(consumer.run(shutdown.clone()));
    let deliverer = Arc::new(Deliverer::new(db.clone(), cfg.delivery.clone())?);
    let deliverer = tokio::spawn(deliverer.run(shutdown.clone()));

    let api = WebhooksApi {
        endpoints: Endpoints {
            db: db.clone(),
            policy: Policy {
                allow_private: cfg.delivery.allow_private_destinations,
            },
            max_per_user: cfg.endpoints.max_per_user,
            max_page_size: cfg.endpoints.max_page_size,
        },
        tokens,
    };
    let routes = tonic::service::Routes::new(WebhooksServiceServer::new(api));
    let readiness = Readiness::new().postgres(db.clone()).redis(redis);
    let result = platform::serve_all(
        &cfg.server,
        listeners,
        routes,
        &[proto::service_names::WEBHOOKS],
        readiness,
        shutdown.clone(),
    )
    .await;
    // the servers are down (by signal or by error): stop the loops too, then close the pool
    shutdown.trigger();
    for (name, task) in [("consumer", consumer), ("deliverer", deliverer)] {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "webhooks background task failed");
        }
    }
    db.close().await;
    result
}

/// The configured consumer name, else one unique to this process (host name and pid).
fn consumer_name(configured: &str) -> String {
    if !configured.trim().is_empty() {
        return configured.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "webhooks".into());
    format!("{host}-{}", std::process::id())
}
