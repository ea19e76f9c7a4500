//! `cargo xtask schema-docs` as CI runs it: `--check` passes on the document the command wrote,
//! fails naming the line on one that differs (and leaves the file alone), and every run drops its
//! scratch database.

use std::{path::Path, process::Output};

use sqlx::{Connection, PgConnection};

/// Runs `xtask schema-docs ARGS`; also returns the process id, which names its scratch database.
async fn schema_docs(args: &[&str]) -> (Output, u32) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("schema-docs")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start xtask");
    let pid = child.id().expect("a running child has an id");
    (child.wait_with_output().await.expect("run xtask"), pid)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn scratch_databases_left(pid: u32) -> Vec<String> {
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {server}: {e}"));
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
        .bind(format!("xtask_schema_docs_{pid}_%"))
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn check_passes_on_the_written_document_and_fails_naming_a_changed_line() {
    let dir = std::env::temp_dir().join(format!("xtask-schema-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("schema.md");
    let path = file.to_str().expect("a UTF-8 temp path");

    let (wrote, pid) = schema_docs(&["--file", path]).await;
    assert!(wrote.status.success(), "{}", stderr(&wrote));
    assert_eq!(scratch_databases_left(pid).await, Vec::<String>::new());
    let (checked, _) = schema_docs(&["--check", "--file", path]).await;
    assert!(checked.status.success(), "{}", stderr(&checked));

    let written = read(&file);
    let balance = "| `balance` | `bigint` | not null | `0` |";
    assert!(
        written.contains(balance),
        "the document shows ledger.accounts.balance"
    );
    let edited = written.replacen(balance, "| `balance` | `integer` | not null | `0` |", 1);
    std::fs::write(&file, &edited).unwrap();
    let (stale, pid) = schema_docs(&["--check", "--file", path]).await;
    assert!(
        !stale.status.success(),
        "--check passed on an edited document"
    );
    let message = stderr(&stale);
    assert!(
        message.contains("differs from what the migrations generate"),
        "{message}"
    );
    assert!(message.contains("| `balance` | `integer` |"), "{message}");
    assert!(message.contains(balance), "{message}");
    assert_eq!(read(&file), edited, "--check does not write");
    assert_eq!(scratch_databases_left(pid).await, Vec::<String>::new());

    let _ = std::fs::remove_dir_all(&dir);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
