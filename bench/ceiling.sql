-- The ceiling: exactly the one statement the transfers service sends for one transfer
-- (ledger.transfer: idempotency key, ordered locks, checks, transfer + two entries + balances),
-- with no network hop to a service, no auth and no serialisation.
-- Variables: naccounts (size of the bench set), hot (0 uniform, 1 every transfer touches idx 0).
\set other random(1, :naccounts - 1)
\set dir random(0, 1)
\set u random(0, :naccounts - 1)
\set a (:hot * :dir * :other) + ((1 - :hot) * :u)
\set b (:hot * (1 - :dir) * :other) + ((1 - :hot) * ((:u + :other) % :naccounts))
\set amount random(1, 100)
SELECT f.id AS f, t.id AS t, quote_literal(f.owner) AS o FROM bench_accounts f, bench_accounts t WHERE f.idx = :a AND t.idx = :b \gset
SELECT transfer_id FROM ledger.transfer(:o, 'transfer', :f, :t, :amount, 'USD', 100000000, gen_random_uuid()::text, '\x00'::bytea);
