-- ledger.transfer_batch plans its statements once per session (issue 18; figures in
-- docs/benchmarks.md, "Batch SQL per item: before and after"). Its statements take the batch's
-- arrays, whose length a custom plan sees and a generic plan does not, so the plan cache kept
-- choosing custom plans and planned most of them again on every call: 13.5 % of a one-transfer
-- call's CPU was planning. The generic plans are the same index probes and hash joins. The
-- setting holds while the function runs (and the triggers it fires) and is restored when it
-- returns; nothing else changes. (A migration of its own: 20261202000600 was already applied.)
ALTER FUNCTION ledger.transfer_batch(uuid[], text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[], boolean[], bigint[], timestamptz[], bigint[], text[], jsonb[], integer[], integer)
    SET plan_cache_mode = force_generic_plan;
