#!/usr/bin/env bash
# docs/schema.md is what the migrations generate: `cargo xtask schema-docs --check` applies them to
# a scratch database on the server of DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres;
# dropped again), renders the document from the catalog and fails, listing the differing lines,
# when the committed file differs, or naming schema.table.column when a table, column or function
# of the schemas auth and ledger has no comment. The fix: `cargo xtask schema-docs`, then commit.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo xtask schema-docs --check
