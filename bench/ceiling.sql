-- The ceiling: exactly the one statement the transfers service sends for one transfer that
-- arrives alone (ledger.transfer_batch with a batch of one: idempotency key, ordered locks,
-- checks, transfer + two entries + balances), with no network hop to a service, no auth and no
-- serialisation, and the lock timeout (500 ms) the service passes by default. It runs the
-- service's own SQL path; there is no second implementation.
-- Variables: naccounts (size of the bench set), hot (0 uniform, 1 every transfer touches idx 0).
\set other random(1, :naccounts - 1)
\set dir random(0, 1)
\set u random(0, :naccounts - 1)
\set a (:hot * :dir * :other) + ((1 - :hot) * :u)
\set b (:hot * (1 - :dir) * :other) + ((1 - :hot) * ((:u + :other) % :naccounts))
\set amount random(1, 100)
SELECT f.id AS f, t.id AS t, quote_literal(f.owner) AS o FROM bench_accounts f, bench_accounts t WHERE f.idx = :a AND t.idx = :b \gset
SELECT error, transfer_id FROM ledger.transfer_batch(ARRAY[:o], ARRAY['transfer'], ARRAY[:f]::bigint[], ARRAY[:t]::bigint[], ARRAY[:amount]::bigint[], ARRAY['USD'], 100000000, ARRAY[gen_random_uuid()::text], ARRAY['\x00'::bytea], ARRAY[false], ARRAY[NULL]::bigint[], ARRAY[NULL]::timestamptz[], 500);
