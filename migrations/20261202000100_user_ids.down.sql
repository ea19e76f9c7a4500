-- Takes 20261202000100_user_ids.up.sql back: accounts belong to a username again. Fails if two
-- accounts of the same username and currency exist (possible once a username was reused), which
-- the old constraint cannot hold; resolve those by hand first.

CREATE OR REPLACE FUNCTION ledger.ensure_system_account(p_currency text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM ledger.accounts WHERE kind = 'system' AND currency = p_currency;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    INSERT INTO ledger.accounts (owner, currency, kind)
    VALUES ('@system', p_currency, 'system')
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        -- a concurrent caller created it first
        SELECT id INTO v_id FROM ledger.accounts WHERE kind = 'system' AND currency = p_currency;
    END IF;
    RETURN v_id;
END;
$$;
COMMENT ON FUNCTION ledger.ensure_system_account(text) IS 'Returns the id of the system account (the bank''s cash account, owner @system) of a currency, creating it if missing. Idempotent and safe to call concurrently; called by the accounts and transfers services at start-up and by ledger.transfer_batch.';

DROP INDEX ledger.accounts_owner_id_idx;
ALTER TABLE ledger.accounts
    DROP CONSTRAINT system_owner_id_is_nil,
    DROP CONSTRAINT one_account_per_owner_id_and_currency,
    ADD CONSTRAINT one_account_per_owner_and_currency UNIQUE (owner, currency),
    DROP COLUMN owner_id;

ALTER TABLE auth.users DROP COLUMN id;

COMMENT ON TABLE auth.users IS 'One row per user. Inserted by sign-up (role depositor) or the operator command `auth create-user` (the only way to make a banker); updated by UpdateUser and email verification. Never deleted by the services.';
COMMENT ON COLUMN auth.users.username IS 'Login name and the identity in access tokens; CHECK `^[a-z0-9_]{3,32}$`. Sessions and verifications follow a change by ON UPDATE CASCADE; ledger.accounts.owner and ledger.transfers.created_by hold it without a foreign key.';
COMMENT ON COLUMN ledger.accounts.owner IS 'Username of the owner (no foreign key into auth on purpose: each service owns its schema); @system for the bank''s system accounts. UNIQUE with currency.';
