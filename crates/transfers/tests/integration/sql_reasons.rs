//! The ledger's SQL and the service agree on every business failure: each reason a function in
//! the `ledger` schema can report is one the Rust side knows (`Refusal::ALL`), and each one the
//! Rust side knows is still reported somewhere (no dead reasons).

use std::collections::BTreeSet;

use test_support::TestDb;
use transfers::domain::Refusal;

#[tokio::test]
async fn every_reason_the_ledger_sql_can_report_is_one_the_service_knows() {
    let db = TestDb::new().await;
    let sources: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.proname::text, p.prosrc FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ledger'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        sources.iter().any(|(name, _)| name == "transfer_batch"),
        "the batch function exists"
    );
    // `failure := 'reason'` (transfer_batch's convention) or a raised business failure
    let assigned = regex::Regex::new(r"failure\s*:=\s*'([a-z_]+)'").unwrap();
    let raised = regex::Regex::new(r"ERRCODE\s*=\s*'LD000'[^;]*MESSAGE\s*=\s*'([a-z_]+)'").unwrap();
    let mut in_sql = BTreeSet::new();
    for (name, source) in &sources {
        for found in assigned
            .captures_iter(source)
            .chain(raised.captures_iter(source))
        {
            in_sql.insert((found[1].to_owned(), name.clone()));
        }
    }
    let unknown: Vec<_> = in_sql
        .iter()
        .filter(|(reason, _)| Refusal::from_reason(reason).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "reasons the SQL reports but transfers::domain::Refusal does not know (reason, function): {unknown:?}"
    );
    let reported: BTreeSet<&str> = in_sql.iter().map(|(reason, _)| reason.as_str()).collect();
    let dead: Vec<&str> = Refusal::ALL
        .iter()
        .map(|r| r.reason())
        .filter(|r| !reported.contains(r))
        .collect();
    assert!(
        dead.is_empty(),
        "reasons Refusal knows that no ledger SQL function reports any more: {dead:?}"
    );
}
