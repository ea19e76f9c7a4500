-- Stable user ids (issue 15, finding 11): accounts belong to a user's id, not to a username a
-- later user may take again once the first is deleted.
--
-- auth.users gains `id` (a random uuid, backfilled for existing users); access tokens carry it
-- (claim `uid`). ledger.accounts gains `owner_id`: the id of the user who opened the account,
-- backfilled from auth.users by username. Ownership checks and "my accounts" use owner_id;
-- `owner` stays as the owner's username at opening, for display and the banker's owner filter.
-- A customer account whose username has no user (left over from before this migration) gets an
-- id no user has (derived from the username), so no new user ever owns it. System accounts have
-- the nil uuid (no user has it either).

ALTER TABLE auth.users ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE auth.users ADD CONSTRAINT users_id_key UNIQUE (id);

ALTER TABLE ledger.accounts ADD COLUMN owner_id uuid;
UPDATE ledger.accounts a SET owner_id = u.id FROM auth.users u WHERE a.kind = 'customer' AND u.username = a.owner;
UPDATE ledger.accounts SET owner_id = '00000000-0000-0000-0000-000000000000' WHERE kind = 'system';
UPDATE ledger.accounts SET owner_id = md5('orphan:' || owner)::uuid WHERE owner_id IS NULL;
ALTER TABLE ledger.accounts
    ALTER COLUMN owner_id SET NOT NULL,
    DROP CONSTRAINT one_account_per_owner_and_currency,
    ADD CONSTRAINT one_account_per_owner_id_and_currency UNIQUE (owner_id, currency),
    -- the nil id is the bank's, and only the bank's
    ADD CONSTRAINT system_owner_id_is_nil
        CHECK ((kind = 'system') = (owner_id = '00000000-0000-0000-0000-000000000000'));
CREATE INDEX accounts_owner_id_idx ON ledger.accounts (owner_id, id DESC);

-- The system account of a currency is owned by the nil id.
CREATE OR REPLACE FUNCTION ledger.ensure_system_account(p_currency text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM ledger.accounts WHERE kind = 'system' AND currency = p_currency;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    INSERT INTO ledger.accounts (owner, owner_id, currency, kind)
    VALUES ('@system', '00000000-0000-0000-0000-000000000000', p_currency, 'system')
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        -- a concurrent caller created it first
        SELECT id INTO v_id FROM ledger.accounts WHERE kind = 'system' AND currency = p_currency;
    END IF;
    RETURN v_id;
END;
$$;

COMMENT ON TABLE auth.users IS 'One row per user. Inserted by sign-up (role depositor) or the operator command `auth create-user` (the only way to make a banker); updated by UpdateUser and email verification; deleted by DeleteUser (the user itself with its password, or a banker), which takes its sessions, refresh tokens and verifications with it. The user''s accounts stay in the ledger, owned by the deleted id.';
COMMENT ON COLUMN auth.users.id IS 'The user''s stable id (random uuid, UNIQUE), never reused: access tokens carry it (claim uid) and ledger.accounts.owner_id holds it without a foreign key. A user who later takes a deleted user''s username gets a new id and none of the old accounts.';
COMMENT ON COLUMN auth.users.username IS 'Login name, shown in access tokens; CHECK `^[a-z0-9_]{3,32}$`. Free again once its user is deleted. Sessions and verifications follow a change by ON UPDATE CASCADE; ledger.accounts.owner and ledger.transfers.created_by hold it without a foreign key, for display only (ownership is by ledger.accounts.owner_id).';
COMMENT ON COLUMN ledger.accounts.owner IS 'Username of the owner when the account was opened (no foreign key into auth on purpose: each service owns its schema), for display and the banker''s owner filter; @system for the bank''s system accounts. Ownership is owner_id, not this.';
COMMENT ON COLUMN ledger.accounts.owner_id IS 'Id of the owning user (auth.users.id, no foreign key: each service owns its schema); the nil uuid for the bank''s system accounts and only for them (CHECK system_owner_id_is_nil). UNIQUE with currency. Access checks and the caller''s account list use it; an account of a deleted user keeps its id, which no other user ever gets.';
COMMENT ON FUNCTION ledger.ensure_system_account(text) IS 'Returns the id of the system account (the bank''s cash account, owner @system, owner_id the nil uuid) of a currency, creating it if missing. Idempotent and safe to call concurrently; called by the accounts and transfers services at start-up and by ledger.transfer_batch.';
