//! While the database takes no connections, a transfer is answered at once `database_unavailable`
//! (nothing was sent, so nothing moved: safe to retry), never `outcome_unknown`, which is kept for
//! a connection that broke with the batch in the database's hands (issue 14, finding 4). Once the
//! database takes connections again the same service moves money without a restart.

use std::time::{Duration, Instant};

use crate::support::{App, assert_status};
use proto::transfers::v1::CreateTransferRequest;
use test_support::authed;
use tonic::Code;

fn one_cent(from: i64, to: i64, key: &str) -> CreateTransferRequest {
    CreateTransferRequest {
        from_account_id: from,
        to_account_id: to,
        amount: 1,
        currency: "USD".into(),
        request_id: key.into(),
        ..Default::default()
    }
}

async fn refuse_connections(app: &App, refuse: bool) {
    // the database's name is an identifier, not a parameter: it is the test's own, made of [a-z0-9_]
    assert!(
        app.db
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "a plain identifier: {}",
        app.db.name
    );
    let sql = format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}",
        app.db.name,
        if refuse { "false" } else { "true" }
    );
    let admin = sqlx::PgPool::connect(&test_support::database_server_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&admin)
        .await
        .unwrap();
    if refuse {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&app.db.name)
        .execute(&admin)
        .await
        .unwrap();
    }
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_takes_no_connections_is_database_unavailable_at_once_and_moves_nothing() {
    let app = App::start().await;
    let from = app.open("alice", "USD").await;
    let to = app.open("bob", "USD").await;
    app.deposit(from, 100, "USD").await;
    let token = app.token("alice");
    let mut client = app.client.clone();

    refuse_connections(&app, true).await;
    for i in 0..3 {
        let started = Instant::now();
        let err = client
            .create_transfer(authed(one_cent(from, to, &format!("down-{i}")), &token))
            .await
            .expect_err("no connection, no transfer");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "answered in {:?}",
            started.elapsed()
        );
        assert_status(err, Code::Unavailable, "database_unavailable");
    }

    refuse_connections(&app, false).await;
    let back = Instant::now();
    loop {
        match client
            .create_transfer(authed(one_cent(from, to, "after"), &token))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert_status(e, Code::Unavailable, "database_unavailable");
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "recovers without a restart"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // what was answered database_unavailable did not move: only the transfer after the outage did
    assert_eq!(app.balance(from).await, 99);
    assert_eq!(app.balance(to).await, 1);
}
