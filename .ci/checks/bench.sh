#!/usr/bin/env bash
# The benchmark's smoke run: a few seconds per scenario, 10 accounts, a debug build, against a
# database the bench creates for itself (dropped first if a previous run left it, dropped again
# at the end), on ports of its own. It asserts that the harness runs end to end from nothing, that
# the ledger reconciles after every round (loadgen fails loudly otherwise), and that the growth
# suite preloads a (small) history and measures it; the figures it prints are not meaningful at
# this size.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian package postgresql-client)" >&2; exit 1; }
export BENCH_DATABASE_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/transactions_bench_smoke}
cargo xtask bench --smoke
cargo xtask bench --smoke --scenario growth
