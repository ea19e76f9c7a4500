//! `database.read_url`: GetAccount and ListAccounts read the second database (a replica in
//! production; here a second test database holding other rows, so the test can tell which one
//! answered), while opening an account writes the primary.

use accounts::config::Config;
use platform::token::Role;
use proto::accounts::v1::{
    CreateAccountRequest, GetAccountRequest, ListAccountsRequest,
    accounts_service_client::AccountsServiceClient,
};
use test_support::{TestDb, access_token, authed, channel, spawn, test_keys};

#[tokio::test]
async fn get_and_list_read_the_replica_and_opening_writes_the_primary() {
    let primary = TestDb::new().await;
    let replica = TestDb::new().await;
    let on_replica: i64 = sqlx::query_scalar(
        "INSERT INTO ledger.accounts (id, owner, owner_id, currency, balance)
         VALUES (777001, 'alice', $1, 'EUR', 777) RETURNING id",
    )
    .bind(test_support::user_id("alice"))
    .fetch_one(&replica.pool)
    .await
    .unwrap();

    let keys = test_keys();
    let mut cfg = Config {
        database: primary.config(),
        ..Config::default()
    };
    cfg.database.read_url = Some(replica.url.clone());
    cfg.token.public_key = Some(keys.public_b64());
    let running =
        spawn(move |listeners, shutdown| accounts::startup::run(cfg, listeners, shutdown)).await;
    let mut client = AccountsServiceClient::new(channel(running.grpc_addr).await);
    let token = access_token(&keys, "alice", Role::Depositor, true);

    let opened = client
        .create_account(authed(
            CreateAccountRequest {
                currency: "USD".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let count = |db: &TestDb, id: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ledger.accounts WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&primary, opened.id).await, 1, "opened on the primary");
    assert_eq!(count(&replica, opened.id).await, 0);

    let listed = client
        .list_accounts(authed(ListAccountsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<(i64, i64)> = listed.accounts.iter().map(|a| (a.id, a.balance)).collect();
    assert_eq!(
        seen,
        vec![(on_replica, 777)],
        "ListAccounts read the replica"
    );
    let got = client
        .get_account(authed(GetAccountRequest { id: on_replica }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.currency.as_str(), got.balance), ("EUR", 777));
    // the account just opened is not on the replica yet: NOT_FOUND there (replica lag)
    let missing = client
        .get_account(authed(GetAccountRequest { id: opened.id }, &token))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}
