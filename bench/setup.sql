-- The bench set: the accounts loadgen created (users lg_bench_*), numbered 0..n-1 in id order, so
-- pgbench scripts and loadgen move money between the same accounts. Index 0 is the hot account.
DROP TABLE IF EXISTS public.bench_accounts;
CREATE TABLE public.bench_accounts AS
    SELECT (row_number() OVER (ORDER BY id) - 1)::int AS idx, id, owner
    FROM ledger.accounts
    WHERE owner LIKE 'lg\_bench\_%' AND currency = 'USD' AND kind = 'customer';
CREATE UNIQUE INDEX ON public.bench_accounts (idx);
ANALYZE public.bench_accounts;
