//! `database.read_url`: GetTransfer, ListTransfers and ListEntries read the second database (a
//! replica in production; here a second test database holding different rows, so the test can
//! tell which one answered), while money moves and GetBalance stay on the primary.

use crate::support::App;
use proto::transfers::v1::{
    CreateTransferRequest, GetBalanceRequest, GetTransferRequest, ListEntriesRequest,
    ListTransfersRequest,
};
use test_support::{TestDb, authed};

/// Writes into `replica` an account row for each of `alice` and `bob` (same ids as on the
/// primary) and one transfer of 4242 between them with its entries, none of which the primary
/// has. Triggers and foreign keys off: it stands for rows a replica received.
async fn seed_replica(replica: &TestDb, alice: i64, bob: i64) -> i64 {
    let mut conn = replica.pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (id, owner) in [(alice, "alice"), (bob, "bob")] {
        sqlx::query(
            "INSERT INTO ledger.accounts (id, owner, owner_id, currency, balance)
             VALUES ($1, $2, $3, 'USD', 0)",
        )
        .bind(id)
        .bind(owner)
        .bind(test_support::user_id(owner))
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let transfer: i64 = sqlx::query_scalar(
        "INSERT INTO ledger.transfers (id, from_account_id, to_account_id, amount, currency, kind, created_by, created_by_id)
         VALUES (900001, $1, $2, 4242, 'USD', 'transfer', 'alice', $3) RETURNING id",
    )
    .bind(alice)
    .bind(bob)
    .bind(test_support::user_id("alice"))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after)
         VALUES ($1, $3, -4242, 0), ($2, $3, 4242, 4242)",
    )
    .bind(alice)
    .bind(bob)
    .bind(transfer)
    .execute(&mut *conn)
    .await
    .unwrap();
    transfer
}

#[tokio::test]
async fn list_and_get_read_the_replica_while_transfers_and_balances_use_the_primary() {
    let replica = TestDb::new().await;
    let read_url = replica.url.clone();
    let app = App::start_with(move |cfg| cfg.database.read_url = Some(read_url)).await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    app.deposit(alice, 1_000, "USD").await;
    let on_replica = seed_replica(&replica, alice, bob).await;

    // a transfer moves money on the primary (the replica, not being one, never sees it)
    let mut client = app.client.clone();
    let moved = client
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: alice,
                to_account_id: bob,
                amount: 300,
                currency: "USD".into(),
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    let on_primary = moved.transfer.unwrap().id;
    assert_eq!(app.balance(alice).await, 700);
    let count = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ledger.transfers WHERE amount = 300")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&app.db).await, 1, "the transfer is on the primary");
    assert_eq!(count(&replica).await, 0);

    // the list and get RPCs answer from the replica
    let token = app.token("alice");
    let listed = client
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: alice,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<(i64, i64)> = listed.transfers.iter().map(|t| (t.id, t.amount)).collect();
    assert_eq!(
        ids,
        vec![(on_replica, 4242)],
        "ListTransfers read the replica"
    );
    let entries = client
        .list_entries(authed(
            ListEntriesRequest {
                account_id: alice,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let amounts: Vec<i64> = entries.entries.iter().map(|e| e.amount).collect();
    assert_eq!(amounts, vec![-4242], "ListEntries read the replica");
    let got = client
        .get_transfer(authed(GetTransferRequest { id: on_replica }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.amount, 4242);
    // the primary's transfer is not on the replica: NOT_FOUND there (what replica lag looks like)
    let missing = client
        .get_transfer(authed(GetTransferRequest { id: on_primary }, &token))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // GetBalance reads the primary: the balance the transfer just left
    let balance = client
        .get_balance(authed(
            GetBalanceRequest {
                account_id: alice,
                as_of: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.balance, 700, "GetBalance read the primary");
}

#[tokio::test]
async fn without_read_url_the_reads_see_the_primary() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let deposit = app.deposit(alice, 55, "USD").await.transfer.unwrap().id;
    let listed = app
        .client
        .clone()
        .list_transfers(authed(
            ListTransfersRequest {
                account_id: alice,
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = listed.transfers.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![deposit]);
}

#[tokio::test]
async fn an_empty_read_url_is_refused_at_start() {
    let db = TestDb::new().await;
    let mut cfg = transfers::config::Config {
        database: db.config(),
        ..Default::default()
    };
    cfg.database.read_url = Some("  ".into());
    let err = platform::db::read_pool(&cfg.database, &db.pool).unwrap_err();
    assert!(err.to_string().contains("database.read_url"), "{err}");
}
