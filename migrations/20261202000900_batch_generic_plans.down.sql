-- ledger.transfer_batch plans as the session's plan_cache_mode says again.
ALTER FUNCTION ledger.transfer_batch(uuid[], text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[], boolean[], bigint[], timestamptz[], bigint[], text[], jsonb[], integer[], integer)
    RESET plan_cache_mode;
