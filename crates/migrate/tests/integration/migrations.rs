//! The schema migrates up, down and up again, and running `up` twice is harmless.

use test_support::TestDb;

async fn tables(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
         WHERE table_schema IN ('auth', 'ledger') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn up_down_up_leaves_the_same_schema_and_up_twice_is_harmless() {
    let db = TestDb::empty().await;
    platform::db::migrate(&db.pool).await.unwrap();
    let first = tables(&db.pool).await;
    for t in [
        "auth.users",
        "auth.sessions",
        "auth.refresh_tokens",
        "auth.verify_emails",
        "auth.outbox",
        "ledger.accounts",
        "ledger.transfers",
        "ledger.entries",
        "ledger.idempotency_keys",
    ] {
        assert!(
            first.iter().any(|x| x == t),
            "{t} missing after up: {first:?}"
        );
    }
    platform::db::migrate(&db.pool)
        .await
        .expect("second up is a no-op");

    platform::db::migrate_down(&db.pool, 0).await.unwrap();
    assert!(
        tables(&db.pool).await.is_empty(),
        "down removes every table"
    );

    platform::db::migrate(&db.pool).await.unwrap();
    assert_eq!(tables(&db.pool).await, first);
}

#[tokio::test]
async fn database_constraints_hold_without_the_services() {
    let db = TestDb::new().await;
    let p = &db.pool;
    let a: i64 = sqlx::query_scalar(
        "INSERT INTO ledger.accounts (owner, owner_id, currency)
         VALUES ('alice', '00000000-0000-0000-0000-00000000000a', 'USD') RETURNING id",
    )
    .fetch_one(p)
    .await
    .unwrap();
    // one account per owner and currency: the owner is the user's id, whatever the username
    let dup = sqlx::query(
        "INSERT INTO ledger.accounts (owner, owner_id, currency)
         VALUES ('alice2', '00000000-0000-0000-0000-00000000000a', 'USD')",
    )
    .execute(p)
    .await;
    assert!(dup.is_err());
    // a customer account needs its owner's id, and only the bank's accounts have the nil id
    for (owner_id, kind) in [
        (None, "customer"),
        (Some("00000000-0000-0000-0000-000000000000"), "customer"),
        (Some("00000000-0000-0000-0000-00000000000c"), "system"),
    ] {
        let r = sqlx::query(
            "INSERT INTO ledger.accounts (owner, owner_id, currency, kind) VALUES ('carl', $1::uuid, 'EUR', $2)",
        )
        .bind(owner_id)
        .bind(kind)
        .execute(p)
        .await;
        assert!(
            r.is_err(),
            "{kind} account with owner_id {owner_id:?} must be refused"
        );
    }
    // a customer balance never goes below zero
    let neg = sqlx::query("UPDATE ledger.accounts SET balance = -1 WHERE id = $1")
        .bind(a)
        .execute(p)
        .await;
    assert!(neg.is_err());
    // transfers move a positive amount between two different accounts
    let b: i64 = sqlx::query_scalar(
        "INSERT INTO ledger.accounts (owner, owner_id, currency)
         VALUES ('bob', '00000000-0000-0000-0000-00000000000b', 'USD') RETURNING id",
    )
    .fetch_one(p)
    .await
    .unwrap();
    for (from, to, amount) in [(a, b, 0_i64), (a, b, -5), (a, a, 5)] {
        let r = sqlx::query(
            "INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind, created_by)
             VALUES ($1, $2, $3, 'USD', 'transfer', 'alice')",
        )
        .bind(from)
        .bind(to)
        .bind(amount)
        .execute(p)
        .await;
        assert!(
            r.is_err(),
            "transfer {from}->{to} of {amount} must be refused"
        );
    }
    // usernames are checked by the database too
    let bad = sqlx::query("INSERT INTO auth.users (username, full_name, email, hashed_password) VALUES ('A!', 'x', 'a@b.c', 'h')")
        .execute(p)
        .await;
    assert!(bad.is_err());
}
