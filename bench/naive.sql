-- The naive peer, the seed's way: one statement per round trip inside a transaction — insert the
-- transfer, insert two entries, update both balances in id order — so the row locks are held
-- across five client round trips. Same account choice as ceiling.sql.
\set other random(1, :naccounts - 1)
\set dir random(0, 1)
\set u random(0, :naccounts - 1)
\set a (:hot * :dir * :other) + ((1 - :hot) * :u)
\set b (:hot * (1 - :dir) * :other) + ((1 - :hot) * ((:u + :other) % :naccounts))
\set amount random(1, 100)
SELECT f.id AS f, t.id AS t, quote_literal(f.owner) AS o FROM bench_accounts f, bench_accounts t WHERE f.idx = :a AND t.idx = :b \gset
BEGIN;
INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind, created_by) VALUES (:f, :t, :amount, 'USD', 'transfer', :o) RETURNING id AS tr \gset
INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after) VALUES (:f, :tr, -:amount, 0);
INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after) VALUES (:t, :tr, :amount, 0);
UPDATE ledger.accounts SET balance = balance + (CASE WHEN id = :f THEN -:amount ELSE :amount END) WHERE id = least(:f, :t);
UPDATE ledger.accounts SET balance = balance + (CASE WHEN id = :f THEN -:amount ELSE :amount END) WHERE id = greatest(:f, :t);
COMMIT;
