-- The bench set: the accounts loadgen created (users lg_bench_*), numbered 1..n in id order, so
-- pgbench scripts and loadgen move money between the same accounts (loadgen's party 0 is index 1,
-- the hot account). `cargo xtask bench` reads it once and writes its ids, owners and owners' user
-- ids into the run's pgbench scripts.
DROP TABLE IF EXISTS public.bench_accounts;
CREATE TABLE public.bench_accounts AS
    SELECT row_number() OVER (ORDER BY a.id)::int AS idx, a.id, a.owner, a.owner_id
    FROM ledger.accounts a
    WHERE a.owner LIKE 'lg\_bench\_%' AND a.currency = 'USD' AND a.kind = 'customer';
CREATE UNIQUE INDEX ON public.bench_accounts (idx);
ANALYZE public.bench_accounts;
