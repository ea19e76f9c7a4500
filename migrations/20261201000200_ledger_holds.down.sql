-- Back to the ledger before holds: the columns, constraints and indexes of holds go, and the two
-- functions come back as they were (the one-transfer `ledger.transfer` and `ledger.transfer_batch`
-- of migrations 20261125000200 and 20261125000300, copied here). A ledger that holds any
-- hold refuses to go down: without the columns its holds would read as transfers without entries.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger.transfers WHERE hold OR hold_id IS NOT NULL) THEN
        RAISE EXCEPTION 'the ledger has holds; migrating below 20261201000200 would misstate them';
    END IF;
END;
$$;
DROP FUNCTION ledger.transfer_batch(text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[], boolean[], bigint[], timestamptz[], integer);
DROP INDEX ledger.entries_account_time_idx;
DROP INDEX ledger.transfers_open_holds_by_expiry;
DROP INDEX ledger.transfers_hold_ended_once;
ALTER TABLE ledger.transfers
    DROP CONSTRAINT only_holds_expire,
    DROP CONSTRAINT transfer_status_fits,
    DROP COLUMN expires_at,
    DROP COLUMN hold_id,
    DROP COLUMN hold,
    DROP COLUMN status;
ALTER TABLE ledger.accounts
    DROP CONSTRAINT customer_available_non_negative,
    DROP COLUMN pending_credits,
    DROP COLUMN pending_debits;

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

CREATE FUNCTION ledger.transfer_batch(
    p_usernames   text[],
    p_kinds       text[],
    p_froms       bigint[],
    p_tos         bigint[],
    p_amounts     bigint[],
    p_currencies  text[],
    p_max_amount  bigint,
    p_keys        text[],
    p_hashes      bytea[]
) RETURNS TABLE (
    idx                   integer,
    error                 text,
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
#variable_conflict use_column
DECLARE
    n           integer := coalesce(array_length(p_kinds, 1), 0);
    v_now       timestamptz := now();
    v_lock      integer;
    v_cur       text;
    v_row       ledger.accounts%ROWTYPE;
    -- idempotency keys already stored: "user<US>key", hash, transfer id
    e_keys      text[] := '{}';
    e_hashes    bytea[] := '{}';
    e_tids      bigint[] := '{}';
    -- keys claimed by an earlier item of this batch: "user<US>key", hash, item index
    b_keys      text[] := '{}';
    b_hashes    bytea[] := '{}';
    b_items     integer[] := '{}';
    -- system accounts by currency
    s_curs      text[] := '{}';
    s_ids       bigint[] := '{}';
    -- resolved source/destination per item
    v_froms     bigint[] := p_froms;
    v_tos       bigint[] := p_tos;
    -- locked accounts (ascending id) with running balances
    a_ids       bigint[] := '{}';
    a_owner     text[] := '{}';
    a_cur       text[] := '{}';
    a_kind      text[] := '{}';
    a_status    text[] := '{}';
    a_bal       bigint[] := '{}';
    a_orig      bigint[] := '{}';
    -- per item answers of the transfers made here (for in-batch replays)
    r_tid       bigint[] := '{}';
    r_fe        bigint[] := '{}';
    r_fb        bigint[] := '{}';
    r_te        bigint[] := '{}';
    r_tb        bigint[] := '{}';
    r_from      bigint[] := '{}';
    r_to        bigint[] := '{}';
    -- rows to insert
    t_ids       bigint[] := '{}';
    t_froms     bigint[] := '{}';
    t_tos       bigint[] := '{}';
    t_amounts   bigint[] := '{}';
    t_curs      text[] := '{}';
    t_kinds     text[] := '{}';
    t_users     text[] := '{}';
    en_ids      bigint[] := '{}';
    en_accs     bigint[] := '{}';
    en_tids     bigint[] := '{}';
    en_amounts  bigint[] := '{}';
    en_bals     bigint[] := '{}';
    k_users     text[] := '{}';
    k_keys      text[] := '{}';
    k_hashes    bytea[] := '{}';
    k_tids      bigint[] := '{}';
    i           integer;
    j           integer;
    fi          integer;
    ti          integer;
    v_err       text;
    v_key       text;
    v_amount    bigint;
    v_kind      text;
    v_tid       bigint;
    v_fe        bigint;
    v_te        bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF coalesce(array_length(p_usernames, 1), 0) <> n OR coalesce(array_length(p_froms, 1), 0) <> n
       OR coalesce(array_length(p_tos, 1), 0) <> n OR coalesce(array_length(p_amounts, 1), 0) <> n
       OR coalesce(array_length(p_currencies, 1), 0) <> n OR coalesce(array_length(p_keys, 1), 0) <> n
       OR coalesce(array_length(p_hashes, 1), 0) <> n THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'transfer_batch: arrays of different lengths';
    END IF;

    -- 1. Advisory locks of the keys, ascending (see the header).
    FOR v_lock IN
        SELECT DISTINCT hashtext(x.u || chr(31) || x.k)
        FROM unnest(p_usernames, p_keys) AS x(u, k)
        WHERE x.k IS NOT NULL
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(742051, v_lock);
    END LOOP;

    SELECT coalesce(array_agg(ik.username || chr(31) || ik.key), '{}'),
           coalesce(array_agg(ik.request_hash), '{}'),
           coalesce(array_agg(ik.transfer_id), '{}')
    INTO e_keys, e_hashes, e_tids
    FROM ledger.idempotency_keys ik
    WHERE (ik.username, ik.key) IN (
        SELECT x.u, x.k FROM unnest(p_usernames, p_keys) AS x(u, k) WHERE x.k IS NOT NULL);

    -- The system accounts of deposits and withdrawals.
    FOR v_cur IN
        SELECT DISTINCT x.c FROM unnest(p_kinds, p_currencies) AS x(k, c)
        WHERE x.k IN ('deposit', 'withdrawal') ORDER BY 1
    LOOP
        s_curs := s_curs || v_cur;
        s_ids := s_ids || ledger.ensure_system_account(v_cur);
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF p_kinds[i] = 'deposit' THEN
            v_froms[i] := s_ids[array_position(s_curs, p_currencies[i])];
        ELSIF p_kinds[i] = 'withdrawal' THEN
            v_tos[i] := s_ids[array_position(s_curs, p_currencies[i])];
        END IF;
    END LOOP;

    -- 2. Every account involved, locked once, ascending id.
    FOR v_row IN
        SELECT * FROM ledger.accounts a
        WHERE a.id = ANY (v_froms || v_tos)
        ORDER BY a.id
        FOR UPDATE
    LOOP
        a_ids := a_ids || v_row.id;
        a_owner := a_owner || v_row.owner;
        a_cur := a_cur || v_row.currency;
        a_kind := a_kind || v_row.kind;
        a_status := a_status || v_row.status;
        a_bal := a_bal || v_row.balance;
        a_orig := a_orig || v_row.balance;
    END LOOP;

    -- 3. The items, in arrival order, against the running balances.
    FOR i IN 1 .. n LOOP
        v_err := NULL;
        v_amount := p_amounts[i];
        v_kind := p_kinds[i];
        idx := i;
        error := NULL;
        transfer_id := NULL; from_account_id := NULL; to_account_id := NULL; amount := NULL;
        currency := NULL; kind := NULL; created_by := NULL; created_at := NULL;
        from_entry_id := NULL; from_entry_amount := NULL; from_balance_after := NULL;
        to_entry_id := NULL; to_entry_amount := NULL; to_balance_after := NULL; replayed := NULL;

        -- the same checks as the service's `Amount` type (pair assertion)
        IF v_amount IS NULL OR v_amount <= 0 THEN
            v_err := 'invalid_amount';
        ELSIF p_max_amount IS NOT NULL AND v_amount > p_max_amount THEN
            v_err := 'amount_over_limit';
        ELSIF v_kind IS NULL OR v_kind NOT IN ('transfer', 'deposit', 'withdrawal') THEN
            v_err := 'invalid_kind';
        END IF;

        IF v_err IS NULL AND p_keys[i] IS NOT NULL THEN
            v_key := p_usernames[i] || chr(31) || p_keys[i];
            j := array_position(e_keys, v_key);
            IF j IS NOT NULL THEN
                IF e_hashes[j] IS DISTINCT FROM p_hashes[i] THEN
                    v_err := 'idempotency_key_reused';
                ELSE
                    SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, t.kind,
                           t.created_by, t.created_at,
                           ef.id, ef.amount, ef.balance_after, et.id, et.amount, et.balance_after
                    INTO transfer_id, from_account_id, to_account_id, amount, currency, kind,
                         created_by, created_at, from_entry_id, from_entry_amount,
                         from_balance_after, to_entry_id, to_entry_amount, to_balance_after
                    FROM ledger.transfers t
                    JOIN ledger.entries ef ON ef.transfer_id = t.id AND ef.account_id = t.from_account_id
                    JOIN ledger.entries et ON et.transfer_id = t.id AND et.account_id = t.to_account_id
                    WHERE t.id = e_tids[j];
                    replayed := true;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            ELSE
                j := array_position(b_keys, v_key);
                IF j IS NOT NULL THEN
                    IF b_hashes[j] IS DISTINCT FROM p_hashes[i] THEN
                        v_err := 'idempotency_key_reused';
                    ELSE
                        j := b_items[j];
                        transfer_id := r_tid[j];
                        from_account_id := r_from[j];
                        to_account_id := r_to[j];
                        amount := p_amounts[j];
                        currency := p_currencies[j];
                        kind := p_kinds[j];
                        created_by := p_usernames[j];
                        created_at := v_now;
                        from_entry_id := r_fe[j];
                        from_entry_amount := -p_amounts[j];
                        from_balance_after := r_fb[j];
                        to_entry_id := r_te[j];
                        to_entry_amount := p_amounts[j];
                        to_balance_after := r_tb[j];
                        replayed := true;
                        RETURN NEXT;
                        CONTINUE;
                    END IF;
                END IF;
            END IF;
        END IF;

        IF v_err IS NULL THEN
            IF v_froms[i] = v_tos[i] THEN
                -- a deposit into (or withdrawal from) the system account itself: no such account
                v_err := CASE WHEN v_kind = 'transfer' THEN 'same_account' ELSE 'account_not_found' END;
            END IF;
        END IF;
        IF v_err IS NULL THEN
            fi := array_position(a_ids, v_froms[i]);
            ti := array_position(a_ids, v_tos[i]);
            -- existence; a system account is invisible outside deposits/withdrawals
            IF fi IS NULL OR (v_kind <> 'deposit' AND a_kind[fi] <> 'customer') THEN
                v_err := 'account_not_found';
            ELSIF ti IS NULL OR (v_kind <> 'withdrawal' AND a_kind[ti] <> 'customer') THEN
                v_err := 'account_not_found';
            ELSIF v_kind = 'transfer' AND a_owner[fi] <> p_usernames[i] THEN
                v_err := 'not_account_owner';
            ELSIF a_cur[fi] <> p_currencies[i] OR a_cur[ti] <> p_currencies[i] THEN
                v_err := 'currency_mismatch';
            ELSIF a_status[fi] <> 'active' OR a_status[ti] <> 'active' THEN
                v_err := 'account_frozen';
            ELSIF a_kind[fi] = 'customer' AND a_bal[fi] < v_amount THEN
                v_err := 'insufficient_funds';
            END IF;
        END IF;

        IF v_err IS NOT NULL THEN
            error := v_err;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- apply
        a_bal[fi] := a_bal[fi] - v_amount;
        a_bal[ti] := a_bal[ti] + v_amount;
        v_tid := nextval('ledger.transfers_id_seq');
        v_fe := nextval('ledger.entries_id_seq');
        v_te := nextval('ledger.entries_id_seq');
        t_ids := t_ids || v_tid;
        t_froms := t_froms || v_froms[i];
        t_tos := t_tos || v_tos[i];
        t_amounts := t_amounts || v_amount;
        t_curs := t_curs || p_currencies[i];
        t_kinds := t_kinds || v_kind;
        t_users := t_users || p_usernames[i];
        en_ids := en_ids || v_fe || v_te;
        en_accs := en_accs || v_froms[i] || v_tos[i];
        en_tids := en_tids || v_tid || v_tid;
        en_amounts := en_amounts || (-v_amount) || v_amount;
        en_bals := en_bals || a_bal[fi] || a_bal[ti];
        r_tid[i] := v_tid;
        r_fe[i] := v_fe;
        r_fb[i] := a_bal[fi];
        r_te[i] := v_te;
        r_tb[i] := a_bal[ti];
        r_from[i] := v_froms[i];
        r_to[i] := v_tos[i];
        IF p_keys[i] IS NOT NULL THEN
            b_keys := b_keys || v_key;
            b_hashes := b_hashes || p_hashes[i];
            b_items := b_items || i;
            k_users := k_users || p_usernames[i];
            k_keys := k_keys || p_keys[i];
            k_hashes := k_hashes || p_hashes[i];
            k_tids := k_tids || v_tid;
        END IF;

        transfer_id := v_tid;
        from_account_id := v_froms[i];
        to_account_id := v_tos[i];
        amount := v_amount;
        currency := p_currencies[i];
        kind := v_kind;
        created_by := p_usernames[i];
        created_at := v_now;
        from_entry_id := v_fe;
        from_entry_amount := -v_amount;
        from_balance_after := a_bal[fi];
        to_entry_id := v_te;
        to_entry_amount := v_amount;
        to_balance_after := a_bal[ti];
        replayed := false;
        RETURN NEXT;
    END LOOP;

    IF coalesce(array_length(t_ids, 1), 0) = 0 THEN
        RETURN;
    END IF;

    -- 4. The writes: each balance once, then one INSERT per table.
    UPDATE ledger.accounts a SET balance = v.bal, updated_at = v_now
    FROM unnest(a_ids, a_bal, a_orig) AS v(id, bal, orig)
    WHERE a.id = v.id AND v.bal <> v.orig;

    INSERT INTO ledger.transfers (id, from_account_id, to_account_id, amount, currency, kind,
                                  created_by, created_at)
    SELECT x.id, x.f, x.t, x.amt, x.cur, x.k, x.u, v_now
    FROM unnest(t_ids, t_froms, t_tos, t_amounts, t_curs, t_kinds, t_users)
         AS x(id, f, t, amt, cur, k, u);

    INSERT INTO ledger.entries (id, account_id, transfer_id, amount, balance_after, created_at)
    SELECT x.id, x.acc, x.tid, x.amt, x.bal, v_now
    FROM unnest(en_ids, en_accs, en_tids, en_amounts, en_bals) AS x(id, acc, tid, amt, bal);

    IF coalesce(array_length(k_tids, 1), 0) > 0 THEN
        INSERT INTO ledger.idempotency_keys (username, key, request_hash, transfer_id)
        SELECT x.u, x.k, x.h, x.tid
        FROM unnest(k_users, k_keys, k_hashes, k_tids) AS x(u, k, h, tid);
    END IF;
END;
$$;
