#!/usr/bin/env bash
# The database's CPU per transfer of `ledger.transfer_batch`, by hand (docs/benchmarks.md, "Batch
# SQL per item: before and after"): bench/transfer_batch.sql filled as `cargo xtask bench` fills it
# (crates/xtask/src/bench/scripts.rs, uniform pick), prepared once in ONE psql session (as
# `pgbench -M prepared`), one warm-up call, then TRANSFERS / SIZE calls, each its own transaction;
# the CPU is that backend's own, read by itself from /proc/self/schedstat (ns on a CPU) before and
# after, so nothing else on the machine is counted.
#
# usage: bench/batch_cpu.sh DATABASE_URL SIZE TRANSFERS
#   prints: size calls backend_cpu_ns wall_s cpu_ms_per_transfer
# The database needs public.bench_accounts (bench/setup.sql) and a server where the connecting
# role may read /proc (pg_read_file: a superuser), with PostgreSQL on this machine.
set -euo pipefail
url=$1
size=$2
total=$3
calls=$((total / size))
here=$(cd "$(dirname "$0")" && pwd)

q() { psql "$url" -X -At -v ON_ERROR_STOP=1 -c "$1"; }
n=$(q "SELECT count(*) FROM public.bench_accounts")
ids=$(q "SELECT '''{' || string_agg(id::text, ',' ORDER BY idx) || '}'''  FROM public.bench_accounts")
owners=$(q "SELECT '''{' || string_agg(owner, ',' ORDER BY idx) || '}''' FROM public.bench_accounts")
owner_ids=$(q "SELECT '''{' || string_agg(coalesce(owner_id::text, 'NULL'), ',' ORDER BY idx) || '}''' FROM public.bench_accounts")
pick="SELECT u AS a, (u + o - 2) % $n + 1 AS b, m FROM (SELECT 1 + floor(random() * $n)::int AS u, 2 + floor(random() * $((n - 1)))::int AS o, 1 + floor(random() * 100)::bigint AS m FROM generate_series(1, $size)) p"

statement=$(grep -v '^[[:space:]]*--' "$here/transfer_batch.sql" | tr -s '[:space:]' ' ' | sed 's/;[[:space:]]*$//')
statement=${statement//@IDS@/$ids}
statement=${statement//@OWNERS@/$owners}
statement=${statement//@OWNER_IDS@/$owner_ids}
statement=${statement//@N@/$n}
statement=${statement//@SIZE@/$size}
statement=${statement//@PICK@/$pick}

script=$(mktemp)
trap 'rm -f "$script"' EXIT
{
    echo '\set ON_ERROR_STOP 1'
    echo "PREPARE batch AS $statement;"
    echo '\o /dev/null'
    echo 'EXECUTE batch;'
    echo "SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS c0, clock_timestamp() AS t0 \\gset"
    for _ in $(seq "$calls"); do echo 'EXECUTE batch;'; done
    echo '\o'
    echo "SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint - :c0 AS cpu_ns, extract(epoch FROM clock_timestamp() - :'t0') AS wall \\gset"
    echo '\echo :cpu_ns :wall'
} >"$script"
read -r cpu_ns wall < <(psql "$url" -X -q -f "$script")
awk -v s="$size" -v c="$calls" -v ns="$cpu_ns" -v w="$wall" \
    'BEGIN { printf "%d %d %d %.3f %.3f\n", s, c, ns, w, ns / 1e6 / (c * s) }'
