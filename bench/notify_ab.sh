#!/usr/bin/env bash
# A/B of the ledger outbox NOTIFY trigger (docs/benchmarks.md, "The NOTIFY fix alone"): the bench's
# ceiling statement (bench/transfer_batch.sql, one transfer per call, filled as bench/batch_cpu.sh fills
# it) at 32 pgbench clients, the old trigger function (every statement notifies: the migration's down
# file) and the new one (only when caught up: its up file) swapped in turn, with a stand-in relay
# marking events published every 100 ms; 3 interleaved rounds. Run from the repository root on a quiet
# machine with PostgreSQL on 127.0.0.1 (trust); it makes and drops its own database ab_notify_bench.
set -euo pipefail
cd "$(dirname "$0")/.."
db=ab_notify_bench
url=postgresql://postgres@127.0.0.1/$db
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
createdb -h 127.0.0.1 -U postgres $db
for f in migrations/*.up.sql; do psql -h 127.0.0.1 -U postgres -d $db -q -1 -v ON_ERROR_STOP=1 -f $f >/dev/null; done
psql -h 127.0.0.1 -U postgres -d $db -q -c "INSERT INTO ledger.accounts (owner, owner_id, currency, kind, balance)
    SELECT 'lg_bench_' || lpad(g::text, 4, '0'), md5('ab:' || g)::uuid, 'USD', 'customer', 1000000000000
    FROM generate_series(1, 1000) g" -f bench/setup.sql >/dev/null
psql -h 127.0.0.1 -U postgres -d $db -qc 'VACUUM ANALYZE' 
q() { psql "$url" -X -At -v ON_ERROR_STOP=1 -c "$1"; }
n=$(q "SELECT count(*) FROM public.bench_accounts")
ids=$(q "SELECT '''{' || string_agg(id::text, ',' ORDER BY idx) || '}'''  FROM public.bench_accounts")
owners=$(q "SELECT '''{' || string_agg(owner, ',' ORDER BY idx) || '}''' FROM public.bench_accounts")
owner_ids=$(q "SELECT '''{' || string_agg(coalesce(owner_id::text, 'NULL'), ',' ORDER BY idx) || '}''' FROM public.bench_accounts")
size=1
pick="SELECT u AS a, (u + o - 2) % $n + 1 AS b, m FROM (SELECT 1 + floor(random() * $n)::int AS u, 2 + floor(random() * $((n - 1)))::int AS o, 1 + floor(random() * 100)::bigint AS m FROM generate_series(1, $size)) p"
statement=$(grep -v '^[[:space:]]*--' bench/transfer_batch.sql | tr -s '[:space:]' ' ' | sed 's/;[[:space:]]*$//')
statement=${statement//@IDS@/$ids}
statement=${statement//@OWNERS@/$owners}
statement=${statement//@OWNER_IDS@/$owner_ids}
statement=${statement//@N@/$n}
statement=${statement//@SIZE@/$size}
statement=${statement//@PICK@/$pick}
script=$(mktemp)
echo "$statement;" > "$script"
relay() { while true; do psql "$url" -X -qc "UPDATE ledger.outbox SET published_at = now() WHERE published_at IS NULL" >/dev/null 2>&1; sleep 0.1; done; }
one() { # $1 = old|new
  if [ "$1" = old ]; then f=migrations/20261203000100_outbox_notify_when_caught_up.down.sql; else f=migrations/20261203000100_outbox_notify_when_caught_up.up.sql; fi
  psql "$url" -q -1 -v ON_ERROR_STOP=1 -f $f >/dev/null
  psql "$url" -qc "VACUUM ANALYZE ledger.accounts" -c "VACUUM ledger.outbox" >/dev/null
  before=$(q "SELECT count(*) FROM ledger.transfers")
  out=$(pgbench -n -M prepared -f "$script" -c 32 -j 2 -T 8 "$url" 2>&1)
  after=$(q "SELECT count(*) FROM ledger.transfers")
  lat=$(echo "$out" | grep -E "latency average" | awk '{print $4}')
  echo "$1 $(( (after - before) / 8 )) transfers/s, latency avg $lat ms, load $(cut -d' ' -f1 /proc/loadavg)"
}
relay & rpid=$!
trap 'kill $rpid 2>/dev/null; rm -f "$script"; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
for r in 1 2 3; do
  if [ $((r % 2)) = 1 ]; then one old; one new; else one new; one old; fi
done
