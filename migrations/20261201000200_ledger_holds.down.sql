-- Back to the ledger without holds: the batch function of 20261201000100 (same parameters as
-- before holds), then the columns, constraints and indexes of holds go. A ledger that holds any
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

CREATE FUNCTION ledger.transfer_batch(
    p_usernames           text[],
    p_kinds               text[],
    p_from_account_ids    bigint[],
    p_to_account_ids      bigint[],
    p_amounts             bigint[],
    p_currencies          text[],
    p_max_amount          bigint,
    p_idempotency_keys    text[],
    p_request_hashes      bytea[]
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
    item_count                  integer := coalesce(array_length(p_kinds, 1), 0);
    now_at                      timestamptz := now();
    lock_key                    integer;
    system_currency             text;
    account_row                 ledger.accounts%ROWTYPE;
    -- idempotency keys already stored: "user<US>key", hash, transfer id
    stored_keys                 text[] := '{}';
    stored_hashes               bytea[] := '{}';
    stored_transfer_ids         bigint[] := '{}';
    -- keys claimed by an earlier item of this batch: "user<US>key", hash, item index
    claimed_keys                text[] := '{}';
    claimed_hashes              bytea[] := '{}';
    claimed_items               integer[] := '{}';
    -- system accounts by currency
    system_currencies           text[] := '{}';
    system_account_ids          bigint[] := '{}';
    -- resolved source/destination per item
    source_ids                  bigint[] := p_from_account_ids;
    destination_ids             bigint[] := p_to_account_ids;
    -- locked accounts (ascending id) with running balances
    locked_ids                  bigint[] := '{}';
    locked_owners               text[] := '{}';
    locked_currencies           text[] := '{}';
    locked_kinds                text[] := '{}';
    locked_statuses             text[] := '{}';
    running_balances            bigint[] := '{}';
    balances_before             bigint[] := '{}';
    -- per item answers of the transfers made here (for in-batch replays)
    made_transfer_ids           bigint[] := '{}';
    made_debit_entry_ids        bigint[] := '{}';
    made_debit_balances         bigint[] := '{}';
    made_credit_entry_ids       bigint[] := '{}';
    made_credit_balances        bigint[] := '{}';
    made_source_ids             bigint[] := '{}';
    made_destination_ids        bigint[] := '{}';
    -- rows to insert
    new_transfer_ids            bigint[] := '{}';
    new_transfer_sources        bigint[] := '{}';
    new_transfer_destinations   bigint[] := '{}';
    new_transfer_amounts        bigint[] := '{}';
    new_transfer_currencies     text[] := '{}';
    new_transfer_kinds          text[] := '{}';
    new_transfer_creators       text[] := '{}';
    new_entry_ids               bigint[] := '{}';
    new_entry_accounts          bigint[] := '{}';
    new_entry_transfer_ids      bigint[] := '{}';
    new_entry_amounts           bigint[] := '{}';
    new_entry_balances          bigint[] := '{}';
    new_key_usernames           text[] := '{}';
    new_keys                    text[] := '{}';
    new_key_hashes              bytea[] := '{}';
    new_key_transfer_ids        bigint[] := '{}';
    item                        integer;
    match_index                 integer;
    claiming_item               integer;
    source_slot                 integer;
    destination_slot            integer;
    failure                     text;
    user_key                    text;
    item_amount                 bigint;
    item_kind                   text;
    new_transfer_id             bigint;
    debit_entry_id              bigint;
    credit_entry_id             bigint;
BEGIN
    IF item_count = 0 THEN
        RETURN;
    END IF;
    IF coalesce(array_length(p_usernames, 1), 0) <> item_count OR coalesce(array_length(p_from_account_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_to_account_ids, 1), 0) <> item_count OR coalesce(array_length(p_amounts, 1), 0) <> item_count
       OR coalesce(array_length(p_currencies, 1), 0) <> item_count OR coalesce(array_length(p_idempotency_keys, 1), 0) <> item_count
       OR coalesce(array_length(p_request_hashes, 1), 0) <> item_count THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'transfer_batch: arrays of different lengths';
    END IF;

    -- 1. Advisory locks of the keys, ascending (see the header).
    FOR lock_key IN
        SELECT DISTINCT hashtext(request.username || chr(31) || request.idempotency_key)
        FROM unnest(p_usernames, p_idempotency_keys) AS request(username, idempotency_key)
        WHERE request.idempotency_key IS NOT NULL
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(742051, lock_key);
    END LOOP;

    SELECT coalesce(array_agg(ik.username || chr(31) || ik.key), '{}'),
           coalesce(array_agg(ik.request_hash), '{}'),
           coalesce(array_agg(ik.transfer_id), '{}')
    INTO stored_keys, stored_hashes, stored_transfer_ids
    FROM ledger.idempotency_keys ik
    WHERE (ik.username, ik.key) IN (
        SELECT request.username, request.idempotency_key
        FROM unnest(p_usernames, p_idempotency_keys) AS request(username, idempotency_key)
        WHERE request.idempotency_key IS NOT NULL);

    -- The system accounts of deposits and withdrawals.
    FOR system_currency IN
        SELECT DISTINCT request.currency
        FROM unnest(p_kinds, p_currencies) AS request(kind, currency)
        WHERE request.kind IN ('deposit', 'withdrawal') ORDER BY 1
    LOOP
        system_currencies := system_currencies || system_currency;
        system_account_ids := system_account_ids || ledger.ensure_system_account(system_currency);
    END LOOP;
    FOR item IN 1 .. item_count LOOP
        IF p_kinds[item] = 'deposit' THEN
            source_ids[item] := system_account_ids[array_position(system_currencies, p_currencies[item])];
        ELSIF p_kinds[item] = 'withdrawal' THEN
            destination_ids[item] := system_account_ids[array_position(system_currencies, p_currencies[item])];
        END IF;
    END LOOP;

    -- 2. Every account involved, locked once, ascending id.
    FOR account_row IN
        SELECT * FROM ledger.accounts a
        WHERE a.id = ANY (source_ids || destination_ids)
        ORDER BY a.id
        FOR UPDATE
    LOOP
        locked_ids := locked_ids || account_row.id;
        locked_owners := locked_owners || account_row.owner;
        locked_currencies := locked_currencies || account_row.currency;
        locked_kinds := locked_kinds || account_row.kind;
        locked_statuses := locked_statuses || account_row.status;
        running_balances := running_balances || account_row.balance;
        balances_before := balances_before || account_row.balance;
    END LOOP;

    -- 3. The items, in arrival order, against the running balances.
    FOR item IN 1 .. item_count LOOP
        failure := NULL;
        item_amount := p_amounts[item];
        item_kind := p_kinds[item];
        idx := item;
        error := NULL;
        transfer_id := NULL; from_account_id := NULL; to_account_id := NULL; amount := NULL;
        currency := NULL; kind := NULL; created_by := NULL; created_at := NULL;
        from_entry_id := NULL; from_entry_amount := NULL; from_balance_after := NULL;
        to_entry_id := NULL; to_entry_amount := NULL; to_balance_after := NULL; replayed := NULL;

        -- the same checks as the service's `Amount` type (pair assertion)
        IF item_amount IS NULL OR item_amount <= 0 THEN
            failure := 'invalid_amount';
        ELSIF p_max_amount IS NOT NULL AND item_amount > p_max_amount THEN
            failure := 'amount_over_limit';
        ELSIF item_kind IS NULL OR item_kind NOT IN ('transfer', 'deposit', 'withdrawal') THEN
            failure := 'invalid_kind';
        END IF;

        IF failure IS NULL AND p_idempotency_keys[item] IS NOT NULL THEN
            user_key := p_usernames[item] || chr(31) || p_idempotency_keys[item];
            match_index := array_position(stored_keys, user_key);
            IF match_index IS NOT NULL THEN
                IF stored_hashes[match_index] IS DISTINCT FROM p_request_hashes[item] THEN
                    failure := 'idempotency_key_reused';
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
                    WHERE t.id = stored_transfer_ids[match_index];
                    replayed := true;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            ELSE
                match_index := array_position(claimed_keys, user_key);
                IF match_index IS NOT NULL THEN
                    IF claimed_hashes[match_index] IS DISTINCT FROM p_request_hashes[item] THEN
                        failure := 'idempotency_key_reused';
                    ELSE
                        claiming_item := claimed_items[match_index];
                        transfer_id := made_transfer_ids[claiming_item];
                        from_account_id := made_source_ids[claiming_item];
                        to_account_id := made_destination_ids[claiming_item];
                        amount := p_amounts[claiming_item];
                        currency := p_currencies[claiming_item];
                        kind := p_kinds[claiming_item];
                        created_by := p_usernames[claiming_item];
                        created_at := now_at;
                        from_entry_id := made_debit_entry_ids[claiming_item];
                        from_entry_amount := -p_amounts[claiming_item];
                        from_balance_after := made_debit_balances[claiming_item];
                        to_entry_id := made_credit_entry_ids[claiming_item];
                        to_entry_amount := p_amounts[claiming_item];
                        to_balance_after := made_credit_balances[claiming_item];
                        replayed := true;
                        RETURN NEXT;
                        CONTINUE;
                    END IF;
                END IF;
            END IF;
        END IF;

        IF failure IS NULL THEN
            IF source_ids[item] = destination_ids[item] THEN
                -- a deposit into (or withdrawal from) the system account itself: no such account
                IF item_kind = 'transfer' THEN
                    failure := 'same_account';
                ELSE
                    failure := 'account_not_found';
                END IF;
            END IF;
        END IF;
        IF failure IS NULL THEN
            source_slot := array_position(locked_ids, source_ids[item]);
            destination_slot := array_position(locked_ids, destination_ids[item]);
            -- existence; a system account is invisible outside deposits/withdrawals
            IF source_slot IS NULL OR (item_kind <> 'deposit' AND locked_kinds[source_slot] <> 'customer') THEN
                failure := 'account_not_found';
            ELSIF destination_slot IS NULL OR (item_kind <> 'withdrawal' AND locked_kinds[destination_slot] <> 'customer') THEN
                failure := 'account_not_found';
            ELSIF item_kind = 'transfer' AND locked_owners[source_slot] <> p_usernames[item] THEN
                failure := 'not_account_owner';
            ELSIF locked_currencies[source_slot] <> p_currencies[item] OR locked_currencies[destination_slot] <> p_currencies[item] THEN
                failure := 'currency_mismatch';
            ELSIF locked_statuses[source_slot] <> 'active' OR locked_statuses[destination_slot] <> 'active' THEN
                failure := 'account_frozen';
            ELSIF locked_kinds[source_slot] = 'customer' AND running_balances[source_slot] < item_amount THEN
                failure := 'insufficient_funds';
            END IF;
        END IF;

        IF failure IS NOT NULL THEN
            error := failure;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- apply
        running_balances[source_slot] := running_balances[source_slot] - item_amount;
        running_balances[destination_slot] := running_balances[destination_slot] + item_amount;
        new_transfer_id := nextval('ledger.transfers_id_seq');
        debit_entry_id := nextval('ledger.entries_id_seq');
        credit_entry_id := nextval('ledger.entries_id_seq');
        new_transfer_ids := new_transfer_ids || new_transfer_id;
        new_transfer_sources := new_transfer_sources || source_ids[item];
        new_transfer_destinations := new_transfer_destinations || destination_ids[item];
        new_transfer_amounts := new_transfer_amounts || item_amount;
        new_transfer_currencies := new_transfer_currencies || p_currencies[item];
        new_transfer_kinds := new_transfer_kinds || item_kind;
        new_transfer_creators := new_transfer_creators || p_usernames[item];
        new_entry_ids := new_entry_ids || debit_entry_id || credit_entry_id;
        new_entry_accounts := new_entry_accounts || source_ids[item] || destination_ids[item];
        new_entry_transfer_ids := new_entry_transfer_ids || new_transfer_id || new_transfer_id;
        new_entry_amounts := new_entry_amounts || (-item_amount) || item_amount;
        new_entry_balances := new_entry_balances || running_balances[source_slot] || running_balances[destination_slot];
        made_transfer_ids[item] := new_transfer_id;
        made_debit_entry_ids[item] := debit_entry_id;
        made_debit_balances[item] := running_balances[source_slot];
        made_credit_entry_ids[item] := credit_entry_id;
        made_credit_balances[item] := running_balances[destination_slot];
        made_source_ids[item] := source_ids[item];
        made_destination_ids[item] := destination_ids[item];
        IF p_idempotency_keys[item] IS NOT NULL THEN
            claimed_keys := claimed_keys || user_key;
            claimed_hashes := claimed_hashes || p_request_hashes[item];
            claimed_items := claimed_items || item;
            new_key_usernames := new_key_usernames || p_usernames[item];
            new_keys := new_keys || p_idempotency_keys[item];
            new_key_hashes := new_key_hashes || p_request_hashes[item];
            new_key_transfer_ids := new_key_transfer_ids || new_transfer_id;
        END IF;

        transfer_id := new_transfer_id;
        from_account_id := source_ids[item];
        to_account_id := destination_ids[item];
        amount := item_amount;
        currency := p_currencies[item];
        kind := item_kind;
        created_by := p_usernames[item];
        created_at := now_at;
        from_entry_id := debit_entry_id;
        from_entry_amount := -item_amount;
        from_balance_after := running_balances[source_slot];
        to_entry_id := credit_entry_id;
        to_entry_amount := item_amount;
        to_balance_after := running_balances[destination_slot];
        replayed := false;
        RETURN NEXT;
    END LOOP;

    IF coalesce(array_length(new_transfer_ids, 1), 0) = 0 THEN
        RETURN;
    END IF;

    -- 4. The writes: each balance once, then one INSERT per table.
    UPDATE ledger.accounts a SET balance = touched.balance, updated_at = now_at
    FROM unnest(locked_ids, running_balances, balances_before)
         AS touched(id, balance, balance_before)
    WHERE a.id = touched.id AND touched.balance <> touched.balance_before;

    INSERT INTO ledger.transfers (id, from_account_id, to_account_id, amount, currency, kind,
                                  created_by, created_at)
    SELECT made.id, made.from_account_id, made.to_account_id, made.amount, made.currency,
           made.kind, made.created_by, now_at
    FROM unnest(new_transfer_ids, new_transfer_sources, new_transfer_destinations,
                new_transfer_amounts, new_transfer_currencies, new_transfer_kinds,
                new_transfer_creators)
         AS made(id, from_account_id, to_account_id, amount, currency, kind, created_by);

    INSERT INTO ledger.entries (id, account_id, transfer_id, amount, balance_after, created_at)
    SELECT made.id, made.account_id, made.transfer_id, made.amount, made.balance_after, now_at
    FROM unnest(new_entry_ids, new_entry_accounts, new_entry_transfer_ids, new_entry_amounts,
                new_entry_balances) AS made(id, account_id, transfer_id, amount, balance_after);

    IF coalesce(array_length(new_key_transfer_ids, 1), 0) > 0 THEN
        INSERT INTO ledger.idempotency_keys (username, key, request_hash, transfer_id)
        SELECT made.username, made.key, made.request_hash, made.transfer_id
        FROM unnest(new_key_usernames, new_keys, new_key_hashes, new_key_transfer_ids)
             AS made(username, key, request_hash, transfer_id);
    END IF;
END;
$$;
