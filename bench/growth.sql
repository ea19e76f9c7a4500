-- The growth suite's history: @COUNT@ transfers between the bench accounts, uniform amounts 1..100,
-- with their two entries each and the balances moved by their sum, in one statement (the bench
-- runs it in chunks). Generated in SQL, not through the service: it stands for history that was
-- written, published and settled long ago, so it runs with session_replication_role = replica
-- (no outbox trigger, no foreign-key triggers: the rows are consistent by construction, and
-- Reconcile checks them like any others). Entries carry balance_after 0 (Reconcile does not read
-- it). Placeholders as in transfer_batch.sql.
WITH c AS (
    SELECT @IDS@::bigint[] AS ids, @OWNERS@::text[] AS owners, @OWNER_IDS@::uuid[] AS owner_ids
), p AS (
    SELECT u AS a, (u + o - 2) % @N@ + 1 AS b, m
    FROM (SELECT 1 + floor(random() * @N@)::int AS u, 2 + floor(random() * (@N@ - 1))::int AS o,
                 1 + floor(random() * 100)::bigint AS m
          FROM generate_series(1, @COUNT@)) r
), t AS (
    INSERT INTO ledger.transfers (from_account_id, to_account_id, amount, currency, kind, created_by, created_by_id)
    SELECT c.ids[p.a], c.ids[p.b], p.m, 'USD', 'transfer', c.owners[p.a], c.owner_ids[p.a]
    FROM c, p
    RETURNING id, from_account_id, to_account_id, amount
), e AS (
    INSERT INTO ledger.entries (account_id, transfer_id, amount, balance_after)
    SELECT from_account_id, id, -amount, 0 FROM t
    UNION ALL
    SELECT to_account_id, id, amount, 0 FROM t
    RETURNING account_id, amount
)
UPDATE ledger.accounts a SET balance = a.balance + d.delta
FROM (SELECT account_id, sum(amount) AS delta FROM e GROUP BY account_id) d
WHERE a.id = d.account_id;
