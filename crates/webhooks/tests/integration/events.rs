//! From a ledger change to the stream and to the receiver: one event per change with its id, and
//! a relay that fails between publishing and marking publishes again (same event id), never loses.

use redis::streams::StreamRangeReply;
use test_support::TestRedis;

use crate::support::*;

/// (event_id, event_type, payload) of every entry of the ledger-events stream, oldest first.
async fn stream(redis: &TestRedis) -> Vec<(String, String, serde_json::Value)> {
    let mut conn = redis.pool.get().await.unwrap();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(ledger_model::events::stream_key(&redis.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut *conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let field = |k: &str| e.get::<String>(k).unwrap_or_else(|| panic!("field {k}"));
            (
                field("event_id"),
                field("event_type"),
                serde_json::from_str(&field("payload")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_transfer_produces_exactly_one_event_with_its_id_and_its_accounts_owners() {
    let app = App::start().await;
    let ann = app.open_account("ann").await;
    let bob = app.open_account("bob").await;
    let transfer = app.transfer(ann, bob, 250).await;
    app.eventually("3 events are on the stream", || async {
        stream(&app.redis).await.len() >= 3
    })
    .await;
    // nothing more comes
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let entries = stream(&app.redis).await;
    let types: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        types,
        ["account.opened", "account.opened", "transfer.posted"]
    );
    let transfers: Vec<_> = entries
        .iter()
        .filter(|e| e.2["transfer"]["id"] == transfer)
        .collect();
    assert_eq!(transfers.len(), 1, "exactly one event for the transfer");
    let (event_id, _, payload) = transfers[0];
    let outbox_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM ledger.outbox WHERE payload->'transfer'->>'id' = $1::text",
    )
    .bind(transfer)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        event_id,
        &outbox_id.to_string(),
        "the stream carries the outbox's id"
    );
    assert_eq!(payload["version"], 1);
    assert_eq!(payload["transfer"]["amount"], 250);
    assert_eq!(payload["account_ids"], serde_json::json!([ann, bob]));
    let mut owners: Vec<String> = payload["owner_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    owners.sort();
    let mut expected = vec![
        test_support::user_id("ann").to_string(),
        test_support::user_id("bob").to_string(),
    ];
    expected.sort();
    assert_eq!(owners, expected);
}

#[tokio::test]
async fn a_relay_failing_between_publish_and_mark_republishes_the_same_event_id_and_loses_none() {
    let app = App::start().await;
    let receiver = Receiver::start(&[], Answer::Status(200)).await;
    let token = app.depositor("ann");
    app.register(&token, &receiver.url(), false).await.unwrap();
    // the relay's mark (UPDATE of the outbox) fails twice: it has published by then, as a relay
    // that dies after XADD and before its commit would have
    sqlx::raw_sql(
        // a sequence, as its counting is not rolled back with the failing transaction
        "CREATE SEQUENCE fail_marks;
         CREATE FUNCTION fail_mark() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('fail_marks') <= 2 THEN RAISE EXCEPTION 'relay crash (test)'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER fail_mark BEFORE UPDATE ON ledger.outbox
             FOR EACH ROW EXECUTE FUNCTION fail_mark();",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let ann = app.open_account("ann").await;
    app.eventually("the event is marked published at last", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM ledger.outbox WHERE published_at IS NOT NULL",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    let entries = stream(&app.redis).await;
    assert!(
        entries.len() >= 2,
        "published again after the failed mark: {entries:?}"
    );
    assert!(
        entries.iter().all(|e| e.0 == entries[0].0),
        "every copy carries the same event id"
    );
    // the receiver gets the event (once: the copies make one delivery), with that id
    app.eventually("the receiver got the event", || async {
        !receiver.received().is_empty()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(event_ids(&receiver.received()), [entries[0].0.clone()]);
    let body = body_json(&receiver.received()[0]);
    assert_eq!(body["type"], "account.opened");
    assert_eq!(body["data"]["id"], ann);
}

#[tokio::test]
async fn each_kind_of_ledger_change_has_its_event_type_in_the_order_of_the_changes() {
    let app = App::start().await;
    let system: i64 = sqlx::query_scalar("SELECT ledger.ensure_system_account('USD')")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let ann = app.open_account("ann").await;
    let bob = app.open_account("bob").await;
    let pool = &app.db.pool;
    // the rows ledger.transfer_batch writes, by hand: a deposit, a withdrawal, a hold and its
    // void, a transfer and its partial reversal
    let deposit = insert_kind(&app, system, ann, 1_000, "deposit", "").await;
    insert_kind(&app, ann, system, 100, "withdrawal", "").await;
    let hold = insert_kind(&app, ann, bob, 50, "transfer", "hold").await;
    insert_kind(&app, ann, bob, 50, "transfer", &format!("void:{hold}")).await;
    let paid = app.transfer(ann, bob, 300).await;
    insert_kind(&app, bob, ann, 100, "transfer", &format!("reverse:{paid}")).await;
    sqlx::query(
        "UPDATE ledger.accounts SET status = 'frozen', frozen_reason = 'test' WHERE id = $1",
    )
    .bind(bob)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE ledger.accounts SET status = 'active', frozen_reason = NULL WHERE id = $1")
        .bind(bob)
        .execute(pool)
        .await
        .unwrap();
    // a balance change alone is no event
    sqlx::query("UPDATE ledger.accounts SET balance = balance WHERE id = $1")
        .bind(bob)
        .execute(pool)
        .await
        .unwrap();
    let expected = [
        "account.opened",
        "account.opened",
        "deposit.posted",
        "withdrawal.posted",
        "hold.created",
        "hold.voided",
        "transfer.posted",
        "transfer.reversed",
        "account.frozen",
        "account.unfrozen",
    ];
    app.eventually("every event is on the stream", || async {
        stream(&app.redis).await.len() >= expected.len()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let entries = stream(&app.redis).await;
    let types: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, expected, "the system account's opening is no event");
    assert_eq!(entries[2].2["transfer"]["id"], deposit);
    assert_eq!(entries[5].2["transfer"]["hold_id"], hold);
    assert_eq!(entries[7].2["transfer"]["reverses_id"], paid);
    assert_eq!(entries[8].2["account"]["frozen_reason"], "test");
    assert!(
        entries[8].2["account"].get("balance").is_none(),
        "balances are not in account events"
    );
    for known in &types {
        assert!(
            ledger_model::events::EVENT_TYPES.contains(known),
            "{known} is listed"
        );
    }
}

/// A ledger row of `kind`: `hold` (pending), `void:<hold id>` (ends it), `reverse:<id>`, or a
/// posted one; with the creator columns the schema has.
async fn insert_kind(app: &App, from: i64, to: i64, amount: i64, kind: &str, what: &str) -> i64 {
    let (hold, status, hold_id, reverses) = match what.split_once(':') {
        Some(("void", id)) => (false, "voided", id.parse::<i64>().ok(), None),
        Some(("reverse", id)) => (false, "posted", None, id.parse::<i64>().ok()),
        _ if what == "hold" => (true, "pending", None, None),
        _ => (false, "posted", None, None),
    };
    sqlx::query_scalar(
        "INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind,
             created_by, created_by_id, hold, status, hold_id, reverses_id)
         VALUES ($1, $2, $3, 'USD', $4, 'tester', gen_random_uuid(), $5, $6, $7, $8) RETURNING id",
    )
    .bind(from)
    .bind(to)
    .bind(amount)
    .bind(kind)
    .bind(hold)
    .bind(status)
    .bind(hold_id)
    .bind(reverses)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}
