//! Migrations are reversible: all the way down and up again leaves a working ledger.

use crate::support::App;
use proto::transfers::v1::CreateTransferRequest;
use test_support::{TestDb, authed};

#[tokio::test]
async fn down_migrations_then_up_again_leave_a_working_ledger() {
    let db = TestDb::new().await;
    platform::db::migrate_down(&db.pool, 0)
        .await
        .expect("every down migration applies");
    let ledger_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'ledger')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!ledger_left, "the down migrations remove the ledger schema");
    platform::db::migrate(&db.pool)
        .await
        .expect("migrations apply again");

    let app = App::start_on(db, |_| {}).await;
    let alice = app.open("alice", "GBP").await;
    let bob = app.open("bob", "GBP").await;
    app.deposit(alice, 1_000, "GBP").await;
    let result = app
        .client
        .clone()
        .create_transfer(authed(
            CreateTransferRequest {
                from_account_id: alice,
                to_account_id: bob,
                amount: 250,
                currency: "gbp".into(),
                request_id: "after-redo".into(),
                ..Default::default()
            },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.from_account_balance, 750);
    assert!(app.reconcile().await.ok);
}
