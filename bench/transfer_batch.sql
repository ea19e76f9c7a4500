-- The ONE place the bench calls ledger.transfer_batch: the ceiling (a batch of one, as the service
-- sends a transfer that arrives alone) and the database limit (batches of the size the service
-- forms) both run this statement under `pgbench -M prepared`. When the function's signature
-- changes, change the named arguments below (and nothing else in the bench).
--
-- `cargo xtask bench` fills the @NAME@ placeholders when it writes the run's scripts (var/bench/):
--   @IDS@ @OWNERS@ @OWNER_IDS@  the bench accounts' ids, owners' usernames and user ids, as array
--                               literals in account id order: constants of the prepared
--                               statement, so nothing is looked up per call;
--   @N@                         how many accounts; @SIZE@ transfers per call;
--   @PICK@                      the account choice (uniform, or every transfer touching index 1).
-- Per call the statement draws @SIZE@ pairs of accounts, amounts and fresh idempotency keys (as a
-- client sends a new key with each request) and passes them as the arrays the batcher binds; what
-- that costs beside the function is measured by the bench (`generator overhead` in
-- docs/benchmarks.md). The lock timeout is 60 s, not the service's 500 ms: pgbench ends a client
-- at its first error (PostgreSQL 15's pgbench retries only serialization failures and deadlocks),
-- and on shared cores a hot account's lock can be held past 500 ms (the service answers
-- account_busy then) and, rarely, past 5 s (a CI run aborted on that); a timeout that no wait
-- reaches changes nothing else, and a stall shows as a slow scenario with the sessions behind it
-- printed by the bench's lock sampler, not as a failed run. 60 s still ends a run that would hang.
SELECT r.*
FROM (
    SELECT array_agg(c.owner_ids[x.a]) AS user_ids,
           array_agg(c.owners[x.a]) AS usernames,
           array_agg(c.ids[x.a]) AS froms,
           array_agg(c.ids[x.b]) AS tos,
           array_agg(x.m) AS amounts,
           array_agg(gen_random_uuid()::text) AS idempotency_keys,
           array_agg(sha256(convert_to(c.owners[x.a], 'UTF8'))) AS request_hashes
    FROM (SELECT @IDS@::bigint[] AS ids, @OWNERS@::text[] AS owners, @OWNER_IDS@::uuid[] AS owner_ids) c,
         LATERAL (@PICK@) x
) g,
LATERAL ledger.transfer_batch(
    p_user_ids         => g.user_ids,
    p_usernames        => g.usernames,
    p_operations       => array_fill('transfer'::text, ARRAY[@SIZE@]),
    p_from_account_ids => g.froms,
    p_to_account_ids   => g.tos,
    p_amounts          => g.amounts,
    p_currencies       => array_fill('USD'::text, ARRAY[@SIZE@]),
    p_max_amount       => 100000000,
    p_idempotency_keys => g.idempotency_keys,
    p_request_hashes   => g.request_hashes,
    p_as_banker        => array_fill(false, ARRAY[@SIZE@]),
    p_hold_ids         => array_fill(NULL::bigint, ARRAY[@SIZE@]),
    p_expires_at       => array_fill(NULL::timestamptz, ARRAY[@SIZE@]),
    p_reversed_ids     => array_fill(NULL::bigint, ARRAY[@SIZE@]),
    p_descriptions     => array_fill(NULL::text, ARRAY[@SIZE@]),
    p_metadata         => array_fill(NULL::jsonb, ARRAY[@SIZE@]),
    p_leg_counts       => array_fill(1, ARRAY[@SIZE@]),
    p_lock_timeout_ms  => 60000
) r;
