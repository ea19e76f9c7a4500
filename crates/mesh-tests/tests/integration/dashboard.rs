//! The Grafana dashboard (`deploy/grafana/transactions-api.json`) stays true to the code: it is a
//! valid dashboard, and every metric its queries use is one a service emits (a renamed metric
//! fails here instead of leaving an empty panel).

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// Metric names in a PromQL expression (names followed by a selector, range or closing paren).
fn metrics_in(expr: &str) -> Vec<String> {
    let grouping = regex::Regex::new(r"\b(by|without)\s*\([^)]*\)").unwrap();
    let name = regex::Regex::new(r"(^|[^\w$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[\{\[\)]").unwrap();
    let expr = expr.replace("$__rate_interval", "5m");
    let expr = grouping.replace_all(&expr, "");
    name.captures_iter(&expr).map(|c| c[2].to_owned()).collect()
}

#[test]
fn the_dashboard_is_valid_and_uses_only_metrics_the_services_emit() {
    let path = repo().join("deploy/grafana/transactions-api.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "transactions-api");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id: {p}"
        );
        assert!(p["gridPos"]["w"].as_i64().is_some_and(|w| w > 0 && w <= 24));
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());

    // what the services' code emits (their src/, not tests, not this crate)
    let mut source = String::new();
    for krate in std::fs::read_dir(repo().join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        if krate.file_name() != "mesh-tests" && src.is_dir() {
            rust_sources(&src, &mut source);
        }
    }
    let mut used = BTreeSet::new();
    for e in &exprs {
        let found = metrics_in(e);
        assert!(!found.is_empty(), "no metric found in {e}");
        used.extend(found);
    }
    for m in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| m.strip_suffix(s))
            .unwrap_or(m);
        assert!(
            source.contains(&format!("\"{base}\"")),
            "the dashboard queries {m}, which no service emits"
        );
    }
    for must in [
        "grpc_server_requests_total",
        "grpc_server_duration_seconds_bucket",
        "transfers_total",
        "transfer_amount_minor_total",
        "outbox_backlog",
        "mailer_stream_pending",
        "emails_dead_lettered_total",
        "emails_sent_total",
        "emails_failed_total",
        "login_failures_total",
        "login_throttled_total",
        "db_pool_connections",
    ] {
        assert!(used.contains(must), "the dashboard shows {must}");
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metrics_in(
            r#"sum by (job, rpc) (rate(grpc_server_requests_total{job=~"$service"}[$__rate_interval]))"#
        ),
        ["grpc_server_requests_total"]
    );
    assert_eq!(
        metrics_in("max by (job) (outbox_backlog)"),
        ["outbox_backlog"]
    );
    assert_eq!(
        metrics_in("sum(increase(mailer_stream_entries_lost_total[1h]))"),
        ["mailer_stream_entries_lost_total"]
    );
}
