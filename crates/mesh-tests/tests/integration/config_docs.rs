//! docs/configuration.md against the config structs, so a new key cannot go undocumented and a
//! removed one cannot linger: every key of each service's `Config::default()` (serialised to JSON,
//! flattened to dotted keys such as `batch.max_size`) must be in the doc's tables, and every key a
//! row names must exist in the services that row names.
//!
//! The doc's first table (no `service` column) holds the shared keys, which any service may have;
//! the second names the service(s) in its first column. A key whose last part is `*` or
//! `<name>` (`relay.redis.*`, `upstreams.<service>`) covers everything below it, and the key itself
//! when its default is empty. `migrate` is a binary-only crate, so its config cannot be reached
//! here; it has only `database.*` and `telemetry.*`, both shared.

use std::collections::BTreeSet;

use serde_json::Value;

const DOC: &str = include_str!("../../../../docs/configuration.md");
const DOC_PATH: &str = "docs/configuration.md";

/// Each service's name (as the doc's `service` column writes it) and its config keys.
fn services() -> Vec<(&'static str, BTreeSet<String>)> {
    fn keys(config: serde_json::Result<Value>) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        flatten("", &config.expect("a Config serialises to JSON"), &mut keys);
        keys
    }
    vec![
        (
            "auth",
            keys(serde_json::to_value(auth::config::Config::default())),
        ),
        (
            "accounts",
            keys(serde_json::to_value(accounts::config::Config::default())),
        ),
        (
            "transfers",
            keys(serde_json::to_value(transfers::config::Config::default())),
        ),
        (
            "mailer",
            keys(serde_json::to_value(mailer::config::Config::default())),
        ),
        (
            "edge-gateway",
            keys(serde_json::to_value(edge_gateway::config::Config::default())),
        ),
        (
            "webhooks",
            keys(serde_json::to_value(webhooks::config::Config::default())),
        ),
    ]
}

/// Objects become `parent.child`; anything else (numbers, strings, lists, null) is one key.
fn flatten(prefix: &str, value: &Value, keys: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (name, field) in fields {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&key, field, keys);
            }
        }
        _ => {
            keys.insert(prefix.to_owned());
        }
    }
}

/// One row of a table in the doc.
struct Row {
    line: usize,
    /// `None` in the shared table.
    services: Option<Vec<String>>,
    keys: Vec<String>,
}

/// Every row of every table with a `key` column.
fn rows(known_services: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    let lines: Vec<&str> = DOC.lines().collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        let is_table = lines[i].starts_with('|') && lines[i + 1].starts_with("|---");
        if !is_table {
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        let key_column = header.iter().position(|c| *c == "key");
        let service_column = header.iter().position(|c| *c == "service");
        i += 2;
        while i < lines.len() && lines[i].starts_with('|') {
            if let Some(key_column) = key_column {
                let line = i + 1;
                let cells = cells(lines[i]);
                let services = service_column.map(|column| {
                    let services: Vec<String> = cells[column]
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .collect();
                    for service in &services {
                        assert!(
                            known_services.contains(&service.as_str()),
                            "{DOC_PATH}:{line}: unknown service `{service}` (known: {known_services:?})"
                        );
                    }
                    services
                });
                let keys = keys_in(cells[key_column], line);
                rows.push(Row {
                    line,
                    services,
                    keys,
                });
            }
            i += 1;
        }
    }
    assert!(
        !rows.is_empty(),
        "{DOC_PATH} has no table with a `key` column"
    );
    rows
}

fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// The keys of a `key` cell: each whole key in backticks, several separated by ` / `.
fn keys_in(cell: &str, line: usize) -> Vec<String> {
    let parts: Vec<&str> = cell.split('`').collect();
    assert!(
        parts.len() % 2 == 1,
        "{DOC_PATH}:{line}: unbalanced backticks in `{cell}`"
    );
    let separators_only = parts
        .iter()
        .step_by(2)
        .all(|between| between.chars().all(|c| c == '/' || c.is_whitespace()));
    assert!(
        separators_only && parts.len() > 1,
        "{DOC_PATH}:{line}: the key cell must list whole keys in backticks separated by ` / `, got {cell}"
    );
    let keys: Vec<String> = parts
        .iter()
        .skip(1)
        .step_by(2)
        .map(|k| (*k).to_owned())
        .collect();
    for key in &keys {
        let segments: Vec<&str> = key.split('.').collect();
        let (last, init) = segments
            .split_last()
            .expect("split yields one part at least");
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let wildcard = *last == "*" || (last.starts_with('<') && last.ends_with('>'));
        assert!(
            init.iter().all(|s| plain(s)) && (plain(last) || (wildcard && !init.is_empty())),
            "{DOC_PATH}:{line}: `{key}` is not a dotted key (a last part `*` or `<name>` is allowed)"
        );
    }
    keys
}

/// True when the doc's `documented` key stands for the config key `key`.
fn covers(documented: &str, key: &str) -> bool {
    if documented == key {
        return true;
    }
    let Some((prefix, last)) = documented.rsplit_once('.') else {
        return false;
    };
    let wildcard = last == "*" || last.starts_with('<');
    wildcard
        && (key == prefix
            || key
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.')))
}

#[test]
fn every_config_key_of_every_service_is_in_the_configuration_doc() {
    let services = services();
    let names: Vec<&str> = services.iter().map(|(name, _)| *name).collect();
    let rows = rows(&names);
    let mut failures = Vec::new();
    for (service, keys) in &services {
        let documented: Vec<&str> = rows
            .iter()
            .filter(|row| {
                row.services
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == service))
            })
            .flat_map(|row| row.keys.iter().map(String::as_str))
            .collect();
        let missing: Vec<&str> = keys
            .iter()
            .filter(|key| !documented.iter().any(|d| covers(d, key)))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{service}: not in {DOC_PATH} (add a row naming {service}, or to the shared table): {}",
                missing.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_key_in_the_configuration_doc_exists_in_the_services_its_row_names() {
    let services = services();
    let names: Vec<&str> = services.iter().map(|(name, _)| *name).collect();
    let mut failures = Vec::new();
    for row in rows(&names) {
        for documented in &row.keys {
            let has = |keys: &BTreeSet<String>| keys.iter().any(|key| covers(documented, key));
            match &row.services {
                None => {
                    if !services.iter().any(|(_, keys)| has(keys)) {
                        failures.push(format!(
                            "{DOC_PATH}:{}: `{documented}` is a key of no service",
                            row.line
                        ));
                    }
                }
                Some(named) => {
                    for (service, keys) in services
                        .iter()
                        .filter(|(s, _)| named.iter().any(|n| n == s))
                    {
                        if !has(keys) {
                            failures.push(format!(
                                "{DOC_PATH}:{}: `{documented}` is not a key of {service}",
                                row.line
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_doc_key_with_a_wildcard_covers_what_is_below_it_and_nothing_beside_it() {
    assert!(covers("upstreams.<service>", "upstreams.auth"));
    assert!(covers("relay.redis.*", "relay.redis"));
    assert!(covers("relay.redis.*", "relay.redis.url"));
    assert!(!covers("relay.redis.*", "relay.redis_url"));
    assert!(!covers("relay.redis", "relay.redis.url"));
    assert!(!covers("batch.max_size", "batch.max_size_bytes"));
}
