//! The bulk transfer call over HTTP/JSON through the gateway: `POST /v1/transfers:batch` is a
//! route of the contract by itself (and in the OpenAPI document), a file of 1,000 items, larger
//! than the gateway's ordinary body limit, goes through under `limits.bulk_body_limit_bytes`, and
//! each item comes back with its own answer in order.

use std::time::Duration;

use platform::token::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support;

fn reason(body: &Value) -> &str {
    body["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["reason"].as_str()))
        .unwrap_or("")
}

#[tokio::test]
async fn a_thousand_item_payroll_file_over_http_gets_one_answer_per_item() {
    let mesh = support::Mesh::start().await;
    let gateway = mesh.start_gateway().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |path: &str| format!("{}{path}", gateway.http_url());

    let payer_token = mesh.token("acme_payroll", Role::Depositor);
    let payer = mesh.open_account(&payer_token, "USD").await;
    let mut payees = Vec::new();
    for i in 0..4 {
        let token = mesh.token(&format!("employee_{i}"), Role::Depositor);
        payees.push(mesh.open_account(&token, "USD").await);
    }
    mesh.deposit(payer, 1_000, "USD").await;

    let items: Vec<Value> = (0..1_000)
        .map(|i| {
            json!({
                "from_account_id": payer.to_string(),
                "to_account_id": payees[i % 4].to_string(),
                // item 500 is a mistake of its own; the other 999 move 1 each
                "amount": if i == 500 { "0" } else { "1" },
                "currency": "USD",
                "request_id": format!("payroll-2026-12-{i:06}"),
                "description": format!("December salary, employee {i:06}"),
                "metadata": {"employee_id": format!("E{i:06}")},
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "items": items })).unwrap();
    assert!(
        body.len() > 64 * 1024,
        "the file ({} bytes) is beyond the ordinary body limit",
        body.len()
    );

    let resp = http
        .post(url("/v1/transfers:batch"))
        .bearer_auth(&payer_token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 1_000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["request_id"], format!("payroll-2026-12-{i:06}"), "{r}");
        if i == 500 {
            assert_eq!(r["error"]["reason"], "invalid_amount", "{r}");
            assert_eq!(r["error"]["code"], 3, "{r}");
            assert_eq!(
                r["error"]["field_violations"][0]["field"], "items[500].amount",
                "{r}"
            );
            assert!(r.get("result").is_none(), "{r}");
        } else {
            assert_eq!(r["result"]["transfer"]["amount"], "1", "{r}");
            assert_eq!(r["result"]["replayed"], false, "{r}");
            assert_eq!(
                r["result"]["transfer"]["metadata"]["employee_id"],
                format!("E{i:06}"),
                "{r}"
            );
        }
    }
    // each item debited the payer once: the balances after them are 999 down to 1, in whatever
    // order the request's group commits (up to 4 of 256) took the payer's row
    let mut after: Vec<i64> = results
        .iter()
        .filter_map(|r| r["result"]["from_account_balance"].as_str())
        .map(|b| b.parse().unwrap())
        .collect();
    after.sort_unstable();
    assert_eq!(after, (1..=999).collect::<Vec<i64>>());

    // the same file again: every applied item replays, nothing moves twice
    let again: Value = http
        .post(url("/v1/transfers:batch"))
        .bearer_auth(&payer_token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let replayed = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"]["replayed"] == true)
        .count();
    assert_eq!(replayed, 999, "{again}");
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM ledger.accounts WHERE id = $1")
        .bind(payer)
        .fetch_one(&mesh.db.pool)
        .await
        .unwrap();
    assert_eq!(balance, 1);

    // the larger limit is the bulk route's alone
    let resp = http
        .post(url("/v1/transfers"))
        .bearer_auth(&payer_token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(reason(&err), "body_too_large", "{err}");

    // over the service's maximum: 400 with its reason, nothing applied
    let too_many: Vec<Value> = (0..1_001)
        .map(|i| {
            json!({"from_account_id": payer.to_string(), "to_account_id": payees[0].to_string(),
                "amount": "1", "currency": "USD", "request_id": format!("x-{i}")})
        })
        .collect();
    let resp = http
        .post(url("/v1/transfers:batch"))
        .bearer_auth(&payer_token)
        .json(&json!({ "items": too_many }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(reason(&err), "bulk_items_out_of_range", "{err}");

    // the route is in the OpenAPI document, generated from the contract like every other
    let doc: Value = http
        .get(url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/v1/transfers:batch"]["post"];
    assert!(
        op.is_object(),
        "no POST /v1/transfers:batch in {}",
        doc["paths"]
    );
    assert!(
        op.to_string().contains("CreateTransfersRequest")
            || op.to_string().contains("CreateTransfers"),
        "{op}"
    );

    gateway.stop().await.unwrap();
    mesh.stop().await;
}
