-- The ledger's SQL functions: the per-currency system accounts and the one-round-trip transfer.
--
-- Business failures are raised with SQLSTATE 'LD000' and the stable reason as the message
-- (`insufficient_funds`, `account_frozen`, ...); the transfers service maps each reason to a gRPC
-- status. Any other SQLSTATE is an unexpected failure.

-- The bank's cash account of one currency: owner `@system` (not a valid username, so no user can
-- collide with it), kind `system`, the only kind allowed below zero. Idempotent; returns its id.
CREATE FUNCTION ledger.ensure_system_account(p_currency text) RETURNS bigint
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

-- Moves money, in ONE statement (so one round trip from the service).
--
-- Why one round trip: the two account rows stay locked from the `FOR UPDATE` below until COMMIT.
-- Driven from the application, every check and write would be a network round trip made while
-- holding those locks, and on a hot account (the bank's cash account takes every deposit) lock
-- hold time is what bounds throughput. Inside one function the locks are held for the few
-- microseconds the writes take, and the statement's implicit transaction commits at once.
--
-- The transaction runs at READ COMMITTED: each statement below sees rows committed before it
-- started, and `FOR UPDATE` waits for, then re-reads, a row another transfer holds, so the
-- balance checked is the latest one.
--
-- Deadlocks: both rows are locked by one statement in ascending id order. Two transfers between
-- the same accounts in opposite directions both lock the lower id first, so neither can hold
-- one row while waiting for the other's. The foreign keys of `transfers`/`entries` take KEY SHARE
-- locks on rows this transaction already holds FOR UPDATE, so they add no wait.
--
-- Idempotency (p_key not NULL): the key row can only be written after the transfer exists
-- (`transfer_id` is NOT NULL with a foreign key), so requests with the same (user, key) are first
-- serialised on a transaction-scoped advisory lock. The first one moves the money and writes the
-- key row; the others wait for its COMMIT, then find the key: same request hash → the original
-- transfer with `replayed = true`, other hash → `idempotency_key_reused`. The key row's primary
-- key remains the backstop: a duplicate that got past the lock fails with unique_violation and
-- no money moves twice.
--
-- p_kind: 'transfer' (p_from owned by p_username → p_to, customer accounts only), 'deposit'
-- (system account of p_currency → p_to) or 'withdrawal' (p_from → system account of p_currency).
-- Authorisation of the kind (banker only for deposit/withdrawal) is checked by the service.
CREATE FUNCTION ledger.transfer(
    p_username     text,
    p_kind         text,
    p_from         bigint,
    p_to           bigint,
    p_amount       bigint,
    p_currency     text,
    p_max_amount   bigint,
    p_key          text,
    p_request_hash bytea
) RETURNS TABLE (
    transfer_id           bigint,
    from_account_id       bigint,
    to_account_id         bigint,
    amount                bigint,
    currency              text,
    kind                  text,
    created_by            text,
    created_at            timestamptz,
    from_entry_id         bigint,
    from_entry_amount     bigint,
    from_balance_after    bigint,
    to_entry_id           bigint,
    to_entry_amount       bigint,
    to_balance_after      bigint,
    replayed              boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_existing_hash bytea;
    v_existing_id   bigint;
    v_from          ledger.accounts%ROWTYPE;
    v_to            ledger.accounts%ROWTYPE;
    v_row           ledger.accounts%ROWTYPE;
    v_transfer_id   bigint;
    v_created_at    timestamptz;
    v_from_balance  bigint;
    v_to_balance    bigint;
    v_from_entry    bigint;
    v_to_entry      bigint;
BEGIN
    -- The same checks as the service's `Amount` type (pair assertion): never trust one layer.
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'invalid_amount';
    END IF;
    IF p_max_amount IS NOT NULL AND p_amount > p_max_amount THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'amount_over_limit';
    END IF;
    IF p_kind NOT IN ('transfer', 'deposit', 'withdrawal') THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'invalid_kind';
    END IF;

    IF p_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(742051, hashtext(p_username || chr(31) || p_key));
        SELECT k.request_hash, k.transfer_id INTO v_existing_hash, v_existing_id
        FROM ledger.idempotency_keys k
        WHERE k.username = p_username AND k.key = p_key;
        IF v_existing_id IS NOT NULL THEN
            IF v_existing_hash <> p_request_hash THEN
                RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'idempotency_key_reused';
            END IF;
            RETURN QUERY
            SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, t.kind,
                   t.created_by, t.created_at,
                   ef.id, ef.amount, ef.balance_after, et.id, et.amount, et.balance_after, true
            FROM ledger.transfers t
            JOIN ledger.entries ef ON ef.transfer_id = t.id AND ef.account_id = t.from_account_id
            JOIN ledger.entries et ON et.transfer_id = t.id AND et.account_id = t.to_account_id
            WHERE t.id = v_existing_id;
            RETURN;
        END IF;
    END IF;

    IF p_kind = 'deposit' THEN
        p_from := ledger.ensure_system_account(p_currency);
    ELSIF p_kind = 'withdrawal' THEN
        p_to := ledger.ensure_system_account(p_currency);
    END IF;
    IF p_from = p_to THEN
        IF p_kind = 'transfer' THEN
            RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'same_account';
        END IF;
        -- a deposit into (or withdrawal from) the system account itself: no such customer account
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'account_not_found';
    END IF;

    -- Lock both rows, lower id first (see above).
    FOR v_row IN
        SELECT * FROM ledger.accounts a WHERE a.id IN (p_from, p_to) ORDER BY a.id FOR UPDATE
    LOOP
        IF v_row.id = p_from THEN
            v_from := v_row;
        ELSE
            v_to := v_row;
        END IF;
    END LOOP;

    -- Existence and ownership. A system account is invisible outside deposits/withdrawals.
    IF v_from.id IS NULL OR (p_kind <> 'deposit' AND v_from.kind <> 'customer') THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'account_not_found', DETAIL = 'from';
    END IF;
    IF v_to.id IS NULL OR (p_kind <> 'withdrawal' AND v_to.kind <> 'customer') THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'account_not_found', DETAIL = 'to';
    END IF;
    IF p_kind = 'transfer' AND v_from.owner <> p_username THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'not_account_owner';
    END IF;
    IF v_from.currency <> p_currency OR v_to.currency <> p_currency THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'currency_mismatch';
    END IF;
    IF v_from.status <> 'active' OR v_to.status <> 'active' THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'account_frozen';
    END IF;
    IF v_from.kind = 'customer' AND v_from.balance < p_amount THEN
        RAISE EXCEPTION USING ERRCODE = 'LD000', MESSAGE = 'insufficient_funds';
    END IF;

    INSERT INTO ledger.transfers AS t (from_account_id, to_account_id, amount, currency, kind, created_by)
    VALUES (p_from, p_to, p_amount, p_currency, p_kind, p_username)
    RETURNING t.id, t.created_at INTO v_transfer_id, v_created_at;

    UPDATE ledger.accounts a SET balance = a.balance - p_amount, updated_at = v_created_at
    WHERE a.id = p_from RETURNING a.balance INTO v_from_balance;
    UPDATE ledger.accounts a SET balance = a.balance + p_amount, updated_at = v_created_at
    WHERE a.id = p_to RETURNING a.balance INTO v_to_balance;

    INSERT INTO ledger.entries AS e (account_id, transfer_id, amount, balance_after, created_at)
    VALUES (p_from, v_transfer_id, -p_amount, v_from_balance, v_created_at)
    RETURNING e.id INTO v_from_entry;
    INSERT INTO ledger.entries AS e (account_id, transfer_id, amount, balance_after, created_at)
    VALUES (p_to, v_transfer_id, p_amount, v_to_balance, v_created_at)
    RETURNING e.id INTO v_to_entry;

    IF p_key IS NOT NULL THEN
        INSERT INTO ledger.idempotency_keys (username, key, request_hash, transfer_id)
        VALUES (p_username, p_key, p_request_hash, v_transfer_id);
    END IF;

    RETURN QUERY SELECT v_transfer_id, p_from, p_to, p_amount, p_currency, p_kind, p_username,
        v_created_at, v_from_entry, -p_amount, v_from_balance, v_to_entry, p_amount, v_to_balance,
        false;
END;
$$;
