//! The ledger outbox (issue 21) written by the statement-level trigger on `ledger.transfers`
//! (migration 20261202000600, issue 18): exactly one event per transfer row, whatever the
//! statement that inserted it, with the event type the row calls for, the owners of its two
//! sides, the row itself (without `created_by`), and event ids in transfer id order.
//!
//! Rows come from the service under concurrency (the batcher's multi-row batches) and from two
//! direct calls of `ledger.transfer_batch` that insert many rows of every kind in one statement
//! (deposits, transfers, holds, a withdrawal; then a post, a void, a refund and a failed item).

use std::collections::HashSet;

use crate::support::App;
use futures::{StreamExt, stream};
use proto::transfers::v1::CreateTransferRequest;
use serde_json::{Value, json};
use test_support::{authed, user_id};
use uuid::Uuid;

const NIL: Uuid = Uuid::nil();

/// A transfer row (id, the row as JSON, its source's and destination's owners, NULL for a system
/// account) with the ids, types and payloads of the events naming it.
type EventRow = (
    i64,
    Value,
    Option<Uuid>,
    Option<Uuid>,
    Vec<i64>,
    Vec<String>,
    Vec<Value>,
);

/// One element of a direct `ledger.transfer_batch` call.
struct Item {
    user: &'static str,
    banker: bool,
    operation: &'static str,
    from: Option<i64>,
    to: Option<i64>,
    amount: Option<i64>,
    hold_id: Option<i64>,
    reversed_id: Option<i64>,
}

fn item(user: &'static str, operation: &'static str, from: Option<i64>, to: Option<i64>) -> Item {
    Item {
        user,
        banker: user == "bank_ann",
        operation,
        from,
        to,
        amount: None,
        hold_id: None,
        reversed_id: None,
    }
}

impl Item {
    fn amount(mut self, amount: i64) -> Self {
        self.amount = Some(amount);
        self
    }
}

/// Calls `ledger.transfer_batch` once with `items` (no idempotency keys); returns per element
/// (error, transfer id).
async fn call(app: &App, items: &[Item]) -> Vec<(Option<String>, Option<i64>)> {
    let n = items.len();
    sqlx::query_as(
        "SELECT error, transfer_id FROM ledger.transfer_batch(
             p_user_ids => $1, p_usernames => $2, p_operations => $3, p_from_account_ids => $4,
             p_to_account_ids => $5, p_amounts => $6, p_currencies => $7, p_max_amount => 1000000,
             p_idempotency_keys => $8, p_request_hashes => $9, p_as_banker => $10,
             p_hold_ids => $11, p_expires_at => $12, p_reversed_ids => $13, p_descriptions => $14,
             p_metadata => $15, p_leg_counts => $16, p_lock_timeout_ms => 5000)
         ORDER BY idx",
    )
    .bind(items.iter().map(|i| user_id(i.user)).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.user).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.operation).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.from).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.to).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.amount).collect::<Vec<_>>())
    .bind(vec!["USD"; n])
    .bind(vec![None::<String>; n])
    .bind(vec![None::<Vec<u8>>; n])
    .bind(items.iter().map(|i| i.banker).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.hold_id).collect::<Vec<_>>())
    .bind(vec![None::<chrono::DateTime<chrono::Utc>>; n])
    .bind(items.iter().map(|i| i.reversed_id).collect::<Vec<_>>())
    .bind(vec![None::<String>; n])
    .bind(vec![None::<Value>; n])
    .bind(vec![1_i32; n])
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

fn made(rows: &[(Option<String>, Option<i64>)], i: usize) -> i64 {
    assert_eq!(rows[i].0, None, "element {i} applies");
    rows[i].1.unwrap()
}

#[tokio::test]
async fn every_transfer_row_has_one_event_in_id_order_with_its_type_and_owners() {
    let app = App::start().await;
    let alice = app.open("alice", "USD").await;
    let bob = app.open("bob", "USD").await;
    let carol = app.open("carol", "USD").await;
    let system: i64 = sqlx::query_scalar("SELECT ledger.ensure_system_account('USD')")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    // one statement, many rows of several kinds
    let first = call(
        &app,
        &[
            item("bank_ann", "deposit", None, Some(alice)).amount(5_000),
            item("bank_ann", "deposit", None, Some(bob)).amount(5_000),
            item("alice", "transfer", Some(alice), Some(bob)).amount(300),
            item("bob", "transfer", Some(bob), Some(carol)).amount(200),
            item("alice", "hold", Some(alice), Some(carol)).amount(100),
            item("alice", "hold", Some(alice), Some(carol)).amount(50),
            item("bank_ann", "withdrawal", Some(bob), None).amount(10),
        ],
    )
    .await;
    let alice_to_bob = made(&first, 2);
    let (hold1, hold2) = (made(&first, 4), made(&first, 5));
    let second = call(
        &app,
        &[
            Item {
                hold_id: Some(hold1),
                ..item("alice", "post", None, None).amount(60)
            },
            Item {
                hold_id: Some(hold2),
                ..item("alice", "void", None, None)
            },
            Item {
                reversed_id: Some(alice_to_bob),
                ..item("bob", "reverse", None, None).amount(100)
            },
            // fails (more than alice has): no row, no event
            item("alice", "transfer", Some(alice), Some(bob)).amount(999_999),
            item("carol", "transfer", Some(carol), Some(alice)).amount(5),
        ],
    )
    .await;
    for i in [0, 1, 2, 4] {
        made(&second, i);
    }
    assert_eq!(second[3].0.as_deref(), Some("insufficient_funds"));

    // and the service's own batches, under concurrency
    let token = app.token("alice");
    let client = app.client.clone();
    let answers: Vec<_> = stream::iter(0..40)
        .map(|i| {
            let mut client = client.clone();
            let token = token.clone();
            async move {
                client
                    .create_transfer(authed(
                        CreateTransferRequest {
                            from_account_id: alice,
                            to_account_id: if i % 2 == 0 { bob } else { carol },
                            amount: 1 + i,
                            currency: "USD".into(),
                            request_id: String::new(),
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
            }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    // every transfer row with the events naming it, in transfer id order
    let rows: Vec<EventRow> =
        sqlx::query_as(
            "SELECT t.id, to_jsonb(t), nullif(f.owner_id, $1), nullif(d.owner_id, $1),
                    coalesce(array_agg(o.id ORDER BY o.id) FILTER (WHERE o.id IS NOT NULL), '{}'),
                    coalesce(array_agg(o.event_type ORDER BY o.id) FILTER (WHERE o.id IS NOT NULL), '{}'),
                    coalesce(array_agg(o.payload ORDER BY o.id) FILTER (WHERE o.id IS NOT NULL), '{}')
             FROM ledger.transfers t
             JOIN ledger.accounts f ON f.id = t.from_account_id
             JOIN ledger.accounts d ON d.id = t.to_account_id
             LEFT JOIN ledger.outbox o ON o.event_type NOT LIKE 'account.%'
                                      AND (o.payload->'transfer'->>'id')::bigint = t.id
             GROUP BY t.id, f.owner_id, d.owner_id
             ORDER BY t.id",
        )
        .bind(NIL)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 7 + 4 + 40, "the transfer rows written");
    let transfer_events: i64 = app
        .count("SELECT count(*) FROM ledger.outbox WHERE event_type NOT LIKE 'account.%'")
        .await;
    assert_eq!(
        transfer_events,
        rows.len() as i64,
        "no event without its row"
    );

    let mut types = HashSet::new();
    let mut last_event = 0;
    for (id, row, from_owner, to_owner, event_ids, event_types, payloads) in &rows {
        assert_eq!(
            event_ids.len(),
            1,
            "transfer {id}: one event, got {event_types:?}"
        );
        assert!(
            event_ids[0] > last_event,
            "transfer {id}: events in transfer id order"
        );
        last_event = event_ids[0];
        let expected_type = if row["hold"] == json!(true) {
            "hold.created".to_string()
        } else if !row["hold_id"].is_null() {
            format!("hold.{}", row["status"].as_str().unwrap())
        } else if !row["reverses_id"].is_null() {
            "transfer.reversed".to_string()
        } else {
            format!("{}.posted", row["kind"].as_str().unwrap())
        };
        assert_eq!(event_types[0], expected_type, "transfer {id}");
        types.insert(expected_type);

        // the row as inserted, less created_by: a hold was pending then, nothing was reversed yet
        let payload = &payloads[0];
        let mut transfer = row.clone();
        let fields = transfer.as_object_mut().unwrap();
        fields.remove("created_by");
        if row["hold"] == json!(true) {
            fields.insert("status".into(), json!("pending"));
        }
        fields.insert("reversed_amount".into(), json!(0));
        assert_eq!(
            payload["transfer"], transfer,
            "transfer {id}: the row as inserted"
        );
        assert_eq!(payload["version"], json!(1));
        assert_eq!(payload["occurred_at"], row["created_at"]);
        assert_eq!(
            payload["account_ids"],
            json!([row["from_account_id"], row["to_account_id"]])
        );
        assert_eq!(payload["from_owner_id"], json!(from_owner), "transfer {id}");
        assert_eq!(payload["to_owner_id"], json!(to_owner), "transfer {id}");
        let mut owners: Vec<Uuid> = from_owner.iter().chain(to_owner.iter()).copied().collect();
        owners.sort();
        owners.dedup();
        assert_eq!(payload["owner_ids"], json!(owners), "transfer {id}");
    }
    for t in [
        "deposit.posted",
        "withdrawal.posted",
        "transfer.posted",
        "hold.created",
        "hold.posted",
        "hold.voided",
        "transfer.reversed",
    ] {
        assert!(types.contains(t), "{t} among the events: {types:?}");
    }
    // the system account's side has no owner to tell
    let deposit = rows
        .iter()
        .find(|r| r.1["from_account_id"] == json!(system));
    assert_eq!(deposit.map(|r| r.2), Some(None));
}
