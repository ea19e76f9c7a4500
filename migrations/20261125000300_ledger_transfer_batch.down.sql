DROP FUNCTION IF EXISTS ledger.transfer_batch(text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[]);
