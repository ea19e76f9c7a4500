#!/usr/bin/env bash
# The fault campaign, short: `cargo xtask chaos --quick` starts a throwaway PostgreSQL (the
# machine's initdb/pg_ctl) and Redis (redis-server) on free ports, the transfers and gateway
# binaries, sends keyed transfers through the gateway while it SIGTERMs and SIGKILLs transfers,
# crash-stops PostgreSQL and stops Redis, and fails when an answer broke its promise (a 500, a
# 200 not applied, a refusal applied, a "not applied" answer that was, a key unresolved, a
# transfer lost or doubled, Σ balances ≠ 0, reconcile not clean). About 25 s after the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v pg_config >/dev/null || { echo "pg_config is missing (PostgreSQL server binaries)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 1; }
cargo xtask chaos --quick
