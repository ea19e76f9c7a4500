//! `migrate up` (the binary, as the Helm hook Job runs it) against a throwaway PostgreSQL that
//! accepts only TLS: `verify-full` with the test's CA applies the schema; a wrong CA, a wrong host
//! name and `sslmode=disable` each fail with a message naming the setting.

use std::process::Command;

use test_support::servers::ThrowawayPostgres;

/// Runs `migrate up` with `env`; its exit status and stderr+stdout.
fn migrate_up(env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_migrate"));
    cmd.arg("up")
        .env_remove("DATABASE_URL")
        .env_remove("TXN_DATABASE__URL")
        .env("MIGRATE_TELEMETRY__LOG_FORMAT", "pretty")
        .env("MIGRATE_DATABASE__ACQUIRE_TIMEOUT_MS", "5000");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

#[test]
fn migrate_up_over_tls_and_its_misconfigurations() {
    let pg = ThrowawayPostgres::start();
    let ca = pg.certs.ca.display().to_string();
    let other_ca = pg.certs.other_ca.display().to_string();
    // a database that does not exist yet: `migrate up` creates it, over TLS too
    let url = |host: &str| {
        (
            "MIGRATE_DATABASE__URL",
            format!("postgres://postgres@{host}:{}/app", pg.port),
        )
    };
    let mode = |m: &str| ("MIGRATE_DATABASE__SSL_MODE", m.to_owned());
    let root = |path: &str| ("MIGRATE_DATABASE__SSL_ROOT_CERT", path.to_owned());

    let (ok, text) = migrate_up(&[url("localhost"), mode("verify-full"), root(&other_ca)]);
    assert!(!ok && text.contains("database.ssl_root_cert"), "{text}");

    let (ok, text) = migrate_up(&[url("127.0.0.1"), mode("verify-full"), root(&ca)]);
    assert!(!ok && text.contains("database.url"), "{text}");

    let (ok, text) = migrate_up(&[url("localhost"), mode("disable")]);
    assert!(!ok && text.contains("database.ssl_mode"), "{text}");

    // right: the database is created and migrated, over TLS
    let (ok, text) = migrate_up(&[url("localhost"), mode("verify-full"), root(&ca)]);
    assert!(ok, "{text}");
    let (ok, text) = migrate_up(&[url("localhost"), mode("verify-full"), root(&ca)]);
    assert!(ok, "a second run is harmless: {text}");
}
