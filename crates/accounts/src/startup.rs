//! Builds the service from config and runs it until shutdown.

use platform::{Listeners, Shutdown, config::Validate, http::Readiness, token::Keys};
use proto::accounts::v1::accounts_service_server::AccountsServiceServer;

use crate::{
    config::Config,
    domain::{Accounts, Currencies},
    grpc::AccountsApi,
};

pub async fn run(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    cfg.validate()?;
    let currencies = Currencies::from_config(&cfg.currencies)?;
    let tokens = Keys::from_config(&cfg.token)?.maker(cfg.token.kind);
    let tokens = platform::revocations::follow(tokens, &cfg.token.revocations, shutdown.clone())?;
    let db = platform::db::pool(&cfg.database)?;
    platform::db::check_at_start(&db, &cfg.database).await?;
    // GetAccount/ListAccounts on a replica when database.read_url is set (not in readiness: a
    // replica down fails those reads, accounts still open and freeze)
    let replica = platform::db::read_pool(&cfg.database, &db)?;
    tokio::spawn(ledger_model::keep_ensuring_system_accounts(
        db.clone(),
        currencies.clone(),
        shutdown.clone(),
    ));
    let api = AccountsApi {
        accounts: Accounts { db: db.clone() },
        reads: Accounts {
            db: replica.clone(),
        },
        tokens,
        currencies,
    };
    let routes = tonic::service::Routes::new(AccountsServiceServer::new(api));
    let readiness = Readiness::new().postgres(db.clone());
    let result = platform::serve_all(
        &cfg.server,
        listeners,
        routes,
        &[proto::service_names::ACCOUNTS],
        readiness,
        shutdown,
    )
    .await;
    replica.close().await;
    db.close().await;
    result
}
