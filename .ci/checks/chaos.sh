#!/usr/bin/env bash
# The fault campaign, short: `cargo xtask chaos --quick` starts a throwaway PostgreSQL (the
# machine's initdb/pg_ctl) and Redis (redis-server) on free ports, the transfers, gateway and
# mailer binaries and an SMTP sink, sends keyed transfers through the gateway while it SIGTERMs
# and SIGKILLs transfers, SIGKILLs the gateway, holds one account's row FOR UPDATE, SIGKILLs the
# mailer with mail pending, crash-stops PostgreSQL and stops Redis, and after each fault checks
# the invariants; it fails when one broke (a 500, a 200 not applied, a refusal applied, a "not
# applied" answer that was, a key unresolved, a transfer lost or doubled, Σ balances ≠ 0, a
# balance ≠ Σ its entries, the clients' model ≠ the database, an email lost, late or sent twice,
# reconcile not clean). About 45 s after the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v pg_config >/dev/null || { echo "pg_config is missing (PostgreSQL server binaries)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is missing" >&2; exit 1; }
cargo xtask chaos --quick
