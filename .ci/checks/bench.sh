#!/usr/bin/env bash
# The benchmark's smoke run: a few seconds per scenario, 10 accounts, a debug build. It asserts only
# that the harness runs end to end and that the ledger reconciles afterwards (loadgen fails loudly
# otherwise); the figures it prints are not meaningful at this size.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian package postgresql-client)" >&2; exit 1; }
BENCH_DATABASE_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/transactions_bench_smoke} \
  cargo xtask bench --smoke
