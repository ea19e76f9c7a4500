DROP FUNCTION IF EXISTS ledger.transfer(text, text, bigint, bigint, bigint, text, bigint, text, bytea);
DROP FUNCTION IF EXISTS ledger.ensure_system_account(text);
