-- The naive peer, the seed's way: one statement per round trip inside a transaction — insert the
-- transfer, insert two entries, update both balances in id order — so the row locks are held
-- across five client round trips. Same account choice as transfer_batch.sql; the account ids are
-- constants of the prepared first statement (@IDS@ etc. filled by `cargo xtask bench`, see
-- transfer_batch.sql), which returns them to pgbench (\gset) for the others: no lookup per call.
-- Variables: hot (0 uniform, 1 every transfer touches index 1).
\set other random(2, @N@)
\set dir random(0, 1)
\set u random(1, @N@)
\set a (:hot * (:dir * :other + (1 - :dir))) + ((1 - :hot) * :u)
\set b (:hot * ((1 - :dir) * :other + :dir)) + ((1 - :hot) * ((:u + :other - 2) % @N@ + 1))
\set amount random(1, 100)
BEGIN;
INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind, created_by, created_by_id)
    SELECT c.ids[:a::int], c.ids[:b::int], :amount::bigint, 'USD', 'transfer', c.owners[:a::int], c.owner_ids[:a::int]
    FROM (SELECT @IDS@::bigint[] AS ids, @OWNERS@::text[] AS owners, @OWNER_IDS@::uuid[] AS owner_ids) c
    RETURNING id AS tr, from_account_id AS f, to_account_id AS t \gset
INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after) VALUES (:f, :tr, -(:amount::bigint), 0);
INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after) VALUES (:t, :tr, :amount::bigint, 0);
UPDATE ledger.accounts SET balance = balance + (CASE WHEN id = :f::bigint THEN -(:amount::bigint) ELSE :amount::bigint END) WHERE id = least(:f::bigint, :t::bigint);
UPDATE ledger.accounts SET balance = balance + (CASE WHEN id = :f::bigint THEN -(:amount::bigint) ELSE :amount::bigint END) WHERE id = greatest(:f::bigint, :t::bigint);
COMMIT;
