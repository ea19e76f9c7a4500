-- Back to the ledger of holds (20261201000200) with usernames: reversals, multi-leg
-- transactions, descriptions and metadata go, idempotency keys are scoped by username again and
-- transfers lose their creator's id, and transfer_batch comes back as it was (copied here). A
-- ledger that holds a reversal or a transaction refuses to go down: without the columns a
-- reversal would read as an unrelated transfer and the legs of a transaction as separate ones.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger.transfers WHERE reverses_id IS NOT NULL OR transaction_id IS NOT NULL) THEN
        RAISE EXCEPTION 'the ledger has reversals or multi-leg transactions; migrating below 20261202000200 would misstate them';
    END IF;
END;
$$;
DROP FUNCTION ledger.transfer_batch(uuid[], text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[], boolean[], bigint[], timestamptz[], bigint[], text[], jsonb[], integer[], integer);
DROP INDEX ledger.transfers_metadata_idx;
DROP INDEX ledger.transfers_transaction_idx;
DROP INDEX ledger.transfers_reverses_idx;
ALTER TABLE ledger.transfers
    DROP CONSTRAINT reversal_fits,
    DROP CONSTRAINT reversed_within_amount,
    DROP COLUMN transaction_id,
    DROP COLUMN reversed_amount,
    DROP COLUMN reverses_id,
    DROP COLUMN metadata,
    DROP COLUMN description,
    DROP COLUMN created_by_id;
DROP TABLE ledger.transactions;

ALTER TABLE ledger.idempotency_keys ADD COLUMN username text;
UPDATE ledger.idempotency_keys k SET username = u.username FROM auth.users u WHERE u.id = k.user_id;
-- a key of a user who is gone can never be replayed by anyone
DELETE FROM ledger.idempotency_keys WHERE username IS NULL;
ALTER TABLE ledger.idempotency_keys
    ALTER COLUMN username SET NOT NULL,
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (username, key),
    DROP COLUMN user_id;
COMMENT ON COLUMN ledger.idempotency_keys.username IS 'The user the key belongs to (keys are scoped per user).';

CREATE FUNCTION ledger.transfer_batch(
    p_usernames           text[],
    p_operations          text[],
    p_from_account_ids    bigint[],
    p_to_account_ids      bigint[],
    p_amounts             bigint[],
    p_currencies          text[],
    p_max_amount          bigint,
    p_idempotency_keys    text[],
    p_request_hashes      bytea[],
    p_as_banker           boolean[],
    p_hold_ids            bigint[],
    p_expires_at          timestamptz[],
    p_lock_timeout_ms     integer
) RETURNS TABLE (
    idx                   integer,
    error                 text,
    transfer_id           bigint,
    from_account_id       bigint,
    to_account_id         bigint,
    amount                bigint,
    currency              text,
    kind                  text,
    status                text,
    hold                  boolean,
    hold_id               bigint,
    expires_at            timestamptz,
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
    item_count                  integer := coalesce(array_length(p_operations, 1), 0);
    now_at                      timestamptz;
    lock_key                    integer;
    system_currency             text;
    account_row                 ledger.accounts%ROWTYPE;
    hold_row                    ledger.transfers%ROWTYPE;
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
    -- the holds items end (ascending id), with their state as the batch changes it
    held_ids                    bigint[] := '{}';
    held_sources                bigint[] := '{}';
    held_destinations           bigint[] := '{}';
    held_amounts                bigint[] := '{}';
    held_currencies             text[] := '{}';
    held_creators               text[] := '{}';
    held_expiries               timestamptz[] := '{}';
    held_statuses               text[] := '{}';
    held_statuses_before        text[] := '{}';
    hold_slot                   integer;
    -- resolved source/destination/currency per item
    source_ids                  bigint[] := p_from_account_ids;
    destination_ids             bigint[] := p_to_account_ids;
    item_currencies             text[] := p_currencies;
    -- locked accounts (ascending id) with running balances and pending amounts
    locked_ids                  bigint[] := '{}';
    locked_owners               text[] := '{}';
    locked_currencies           text[] := '{}';
    locked_kinds                text[] := '{}';
    locked_statuses             text[] := '{}';
    running_balances            bigint[] := '{}';
    running_pending_debits      bigint[] := '{}';
    running_pending_credits     bigint[] := '{}';
    balances_before             bigint[] := '{}';
    pending_debits_before       bigint[] := '{}';
    pending_credits_before      bigint[] := '{}';
    -- per item answers of the transfers made here (for in-batch replays)
    made_transfer_ids           bigint[] := '{}';
    made_amounts                bigint[] := '{}';
    made_statuses               text[] := '{}';
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
    new_transfer_statuses       text[] := '{}';
    new_transfer_holds          boolean[] := '{}';
    new_transfer_hold_ids       bigint[] := '{}';
    new_transfer_expiries       timestamptz[] := '{}';
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
    operation                   text;
    item_amount                 bigint;
    released_amount             bigint;
    new_status                  text;
    new_transfer_id             bigint;
    debit_entry_id              bigint;
    credit_entry_id             bigint;
BEGIN
    IF item_count = 0 THEN
        RETURN;
    END IF;
    IF coalesce(array_length(p_usernames, 1), 0) <> item_count
       OR coalesce(array_length(p_from_account_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_to_account_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_amounts, 1), 0) <> item_count
       OR coalesce(array_length(p_currencies, 1), 0) <> item_count
       OR coalesce(array_length(p_idempotency_keys, 1), 0) <> item_count
       OR coalesce(array_length(p_request_hashes, 1), 0) <> item_count
       OR coalesce(array_length(p_as_banker, 1), 0) <> item_count
       OR coalesce(array_length(p_hold_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_expires_at, 1), 0) <> item_count THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'transfer_batch: arrays of different lengths';
    END IF;
    -- every lock wait below is bounded (SQLSTATE 55P03 when it runs out, nothing of the batch
    -- applied): a row held by someone else must not stall the batch, its callers and the batches
    -- queued behind it; the service splits a batch that ran out and retries its items alone
    IF p_lock_timeout_ms IS NOT NULL THEN
        PERFORM set_config('lock_timeout', greatest(p_lock_timeout_ms, 1) || 'ms', true);
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
        FROM unnest(p_operations, p_currencies) AS request(operation, currency)
        WHERE request.operation IN ('deposit', 'withdrawal') ORDER BY 1
    LOOP
        system_currencies := system_currencies || system_currency;
        system_account_ids := system_account_ids || ledger.ensure_system_account(system_currency);
    END LOOP;
    FOR item IN 1 .. item_count LOOP
        IF p_operations[item] = 'deposit' THEN
            source_ids[item] := system_account_ids[array_position(system_currencies, p_currencies[item])];
        ELSIF p_operations[item] = 'withdrawal' THEN
            destination_ids[item] := system_account_ids[array_position(system_currencies, p_currencies[item])];
        END IF;
    END LOOP;

    -- 2. The holds that items end, locked once, ascending id; their accounts join step 3.
    FOR hold_row IN
        SELECT * FROM ledger.transfers t
        WHERE t.id = ANY (p_hold_ids) AND t.hold
        ORDER BY t.id
        FOR NO KEY UPDATE
    LOOP
        held_ids := held_ids || hold_row.id;
        held_sources := held_sources || hold_row.from_account_id;
        held_destinations := held_destinations || hold_row.to_account_id;
        held_amounts := held_amounts || hold_row.amount;
        held_currencies := held_currencies || hold_row.currency;
        held_creators := held_creators || hold_row.created_by;
        held_expiries := held_expiries || hold_row.expires_at;
        held_statuses := held_statuses || hold_row.status;
        held_statuses_before := held_statuses_before || hold_row.status;
    END LOOP;
    FOR item IN 1 .. item_count LOOP
        IF p_operations[item] IN ('post', 'void', 'expire') THEN
            hold_slot := array_position(held_ids, p_hold_ids[item]);
            IF hold_slot IS NOT NULL THEN
                source_ids[item] := held_sources[hold_slot];
                destination_ids[item] := held_destinations[hold_slot];
                item_currencies[item] := held_currencies[hold_slot];
            ELSE
                source_ids[item] := NULL;
                destination_ids[item] := NULL;
            END IF;
        END IF;
    END LOOP;

    -- 3. Every account involved, locked once, ascending id.
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
        running_pending_debits := running_pending_debits || account_row.pending_debits;
        running_pending_credits := running_pending_credits || account_row.pending_credits;
        balances_before := balances_before || account_row.balance;
        pending_debits_before := pending_debits_before || account_row.pending_debits;
        pending_credits_before := pending_credits_before || account_row.pending_credits;
    END LOOP;
    -- taken once every lock is held: per account, entry times rise with entry ids
    now_at := clock_timestamp();

    -- 4. The items, in arrival order, against the running balances.
    FOR item IN 1 .. item_count LOOP
        failure := NULL;
        operation := p_operations[item];
        item_amount := p_amounts[item];
        hold_slot := NULL;
        idx := item;
        error := NULL;
        transfer_id := NULL; from_account_id := NULL; to_account_id := NULL; amount := NULL;
        currency := NULL; kind := NULL; status := NULL; hold := NULL; hold_id := NULL;
        expires_at := NULL; created_by := NULL; created_at := NULL;
        from_entry_id := NULL; from_entry_amount := NULL; from_balance_after := NULL;
        to_entry_id := NULL; to_entry_amount := NULL; to_balance_after := NULL; replayed := NULL;

        IF operation IS NULL
           OR operation NOT IN ('transfer', 'deposit', 'withdrawal', 'hold', 'post', 'void', 'expire') THEN
            failure := 'invalid_kind';
        ELSIF operation IN ('void', 'expire') THEN
            item_amount := NULL;
        -- the same checks as the service's `Amount` type (pair assertion); a post may leave it
        -- out to post the whole hold
        ELSIF item_amount IS NULL AND operation = 'post' THEN
            NULL;
        ELSIF item_amount IS NULL OR item_amount <= 0 THEN
            failure := 'invalid_amount';
        ELSIF p_max_amount IS NOT NULL AND item_amount > p_max_amount THEN
            failure := 'amount_over_limit';
        END IF;

        IF failure IS NULL AND p_idempotency_keys[item] IS NOT NULL THEN
            user_key := p_usernames[item] || chr(31) || p_idempotency_keys[item];
            match_index := array_position(stored_keys, user_key);
            IF match_index IS NOT NULL THEN
                IF stored_hashes[match_index] IS DISTINCT FROM p_request_hashes[item] THEN
                    failure := 'idempotency_key_reused';
                ELSE
                    SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, t.kind,
                           t.status, t.hold, t.hold_id, t.expires_at, t.created_by, t.created_at,
                           ef.id, ef.amount, ef.balance_after, et.id, et.amount, et.balance_after
                    INTO transfer_id, from_account_id, to_account_id, amount, currency, kind,
                         status, hold, hold_id, expires_at, created_by, created_at,
                         from_entry_id, from_entry_amount, from_balance_after,
                         to_entry_id, to_entry_amount, to_balance_after
                    FROM ledger.transfers t
                    LEFT JOIN ledger.entries ef ON ef.transfer_id = t.id AND ef.account_id = t.from_account_id
                    LEFT JOIN ledger.entries et ON et.transfer_id = t.id AND et.account_id = t.to_account_id
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
                        amount := made_amounts[claiming_item];
                        currency := item_currencies[claiming_item];
                        kind := CASE WHEN p_operations[claiming_item] IN ('deposit', 'withdrawal')
                                     THEN p_operations[claiming_item] ELSE 'transfer' END;
                        status := made_statuses[claiming_item];
                        hold := p_operations[claiming_item] = 'hold';
                        hold_id := CASE WHEN p_operations[claiming_item] IN ('post', 'void', 'expire')
                                        THEN p_hold_ids[claiming_item] END;
                        expires_at := CASE WHEN p_operations[claiming_item] = 'hold'
                                           THEN p_expires_at[claiming_item] END;
                        created_by := p_usernames[claiming_item];
                        created_at := now_at;
                        from_entry_id := made_debit_entry_ids[claiming_item];
                        from_entry_amount := CASE WHEN made_debit_entry_ids[claiming_item] IS NOT NULL
                                                  THEN -made_amounts[claiming_item] END;
                        from_balance_after := made_debit_balances[claiming_item];
                        to_entry_id := made_credit_entry_ids[claiming_item];
                        to_entry_amount := CASE WHEN made_credit_entry_ids[claiming_item] IS NOT NULL
                                                THEN made_amounts[claiming_item] END;
                        to_balance_after := made_credit_balances[claiming_item];
                        replayed := true;
                        RETURN NEXT;
                        CONTINUE;
                    END IF;
                END IF;
            END IF;
        END IF;

        -- the hold an item ends: visible to its creator and bankers, still pending, not past due
        IF failure IS NULL AND operation IN ('post', 'void', 'expire') THEN
            hold_slot := array_position(held_ids, p_hold_ids[item]);
            IF hold_slot IS NULL
               OR (held_creators[hold_slot] <> p_usernames[item] AND NOT coalesce(p_as_banker[item], false)) THEN
                failure := 'hold_not_found';
            ELSIF held_statuses[hold_slot] <> 'pending' THEN
                failure := 'hold_not_pending';
            ELSIF operation = 'expire' THEN
                IF held_expiries[hold_slot] IS NULL OR held_expiries[hold_slot] > now_at THEN
                    failure := 'hold_not_expired';
                END IF;
            ELSIF held_expiries[hold_slot] IS NOT NULL AND held_expiries[hold_slot] <= now_at THEN
                failure := 'hold_expired';
            ELSIF operation = 'post' THEN
                item_amount := coalesce(item_amount, held_amounts[hold_slot]);
                IF item_amount > held_amounts[hold_slot] THEN
                    failure := 'amount_exceeds_hold';
                END IF;
            END IF;
        END IF;

        IF failure IS NULL AND operation IN ('transfer', 'deposit', 'withdrawal', 'hold') THEN
            IF source_ids[item] = destination_ids[item] THEN
                -- a deposit into (or withdrawal from) the system account itself: no such account
                IF operation IN ('transfer', 'hold') THEN
                    failure := 'same_account';
                ELSE
                    failure := 'account_not_found';
                END IF;
            END IF;
        END IF;
        IF failure IS NULL THEN
            source_slot := array_position(locked_ids, source_ids[item]);
            destination_slot := array_position(locked_ids, destination_ids[item]);
            IF operation IN ('post', 'void', 'expire') THEN
                -- the hold's accounts were checked when it was made; money moves on a post only
                -- between active accounts, a release is always allowed
                IF operation = 'post'
                   AND (locked_statuses[source_slot] <> 'active' OR locked_statuses[destination_slot] <> 'active') THEN
                    failure := 'account_frozen';
                END IF;
            -- existence; a system account is invisible outside deposits/withdrawals
            ELSIF source_slot IS NULL OR (operation <> 'deposit' AND locked_kinds[source_slot] <> 'customer') THEN
                failure := 'account_not_found';
            ELSIF destination_slot IS NULL OR (operation <> 'withdrawal' AND locked_kinds[destination_slot] <> 'customer') THEN
                failure := 'account_not_found';
            ELSIF operation IN ('transfer', 'hold') AND locked_owners[source_slot] <> p_usernames[item] THEN
                failure := 'not_account_owner';
            ELSIF locked_currencies[source_slot] <> p_currencies[item] OR locked_currencies[destination_slot] <> p_currencies[item] THEN
                failure := 'currency_mismatch';
            ELSIF locked_statuses[source_slot] <> 'active' OR locked_statuses[destination_slot] <> 'active' THEN
                failure := 'account_frozen';
            -- what a customer may spend is the balance less what holds reserve
            ELSIF locked_kinds[source_slot] = 'customer'
                  AND running_balances[source_slot] - running_pending_debits[source_slot] < item_amount THEN
                failure := 'insufficient_funds';
            END IF;
        END IF;

        IF failure IS NOT NULL THEN
            error := failure;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- apply
        debit_entry_id := NULL;
        credit_entry_id := NULL;
        IF operation IN ('post', 'void', 'expire') THEN
            released_amount := held_amounts[hold_slot];
            running_pending_debits[source_slot] := running_pending_debits[source_slot] - released_amount;
            running_pending_credits[destination_slot] := running_pending_credits[destination_slot] - released_amount;
            new_status := CASE operation WHEN 'post' THEN 'posted' WHEN 'void' THEN 'voided' ELSE 'expired' END;
            held_statuses[hold_slot] := new_status;
            IF operation <> 'post' THEN
                item_amount := released_amount;
            END IF;
        ELSIF operation = 'hold' THEN
            running_pending_debits[source_slot] := running_pending_debits[source_slot] + item_amount;
            running_pending_credits[destination_slot] := running_pending_credits[destination_slot] + item_amount;
            new_status := 'pending';
        ELSE
            new_status := 'posted';
        END IF;
        new_transfer_id := nextval('ledger.transfers_id_seq');
        IF operation IN ('transfer', 'deposit', 'withdrawal', 'post') THEN
            running_balances[source_slot] := running_balances[source_slot] - item_amount;
            running_balances[destination_slot] := running_balances[destination_slot] + item_amount;
            debit_entry_id := nextval('ledger.entries_id_seq');
            credit_entry_id := nextval('ledger.entries_id_seq');
            new_entry_ids := new_entry_ids || debit_entry_id || credit_entry_id;
            new_entry_accounts := new_entry_accounts || source_ids[item] || destination_ids[item];
            new_entry_transfer_ids := new_entry_transfer_ids || new_transfer_id || new_transfer_id;
            new_entry_amounts := new_entry_amounts || (-item_amount) || item_amount;
            new_entry_balances := new_entry_balances || running_balances[source_slot] || running_balances[destination_slot];
        END IF;
        new_transfer_ids := new_transfer_ids || new_transfer_id;
        new_transfer_sources := new_transfer_sources || source_ids[item];
        new_transfer_destinations := new_transfer_destinations || destination_ids[item];
        new_transfer_amounts := new_transfer_amounts || item_amount;
        new_transfer_currencies := new_transfer_currencies || item_currencies[item];
        new_transfer_kinds := new_transfer_kinds
            || CASE WHEN operation IN ('deposit', 'withdrawal') THEN operation ELSE 'transfer' END;
        new_transfer_creators := new_transfer_creators || p_usernames[item];
        new_transfer_statuses := new_transfer_statuses || new_status;
        new_transfer_holds := new_transfer_holds || (operation = 'hold');
        new_transfer_hold_ids := new_transfer_hold_ids
            || CASE WHEN operation IN ('post', 'void', 'expire') THEN p_hold_ids[item] END;
        new_transfer_expiries := new_transfer_expiries
            || CASE WHEN operation = 'hold' THEN p_expires_at[item] END;
        made_transfer_ids[item] := new_transfer_id;
        made_amounts[item] := item_amount;
        made_statuses[item] := new_status;
        made_debit_entry_ids[item] := debit_entry_id;
        made_debit_balances[item] := CASE WHEN debit_entry_id IS NOT NULL THEN running_balances[source_slot] END;
        made_credit_entry_ids[item] := credit_entry_id;
        made_credit_balances[item] := CASE WHEN credit_entry_id IS NOT NULL THEN running_balances[destination_slot] END;
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
        currency := item_currencies[item];
        kind := new_transfer_kinds[array_length(new_transfer_kinds, 1)];
        status := new_status;
        hold := operation = 'hold';
        hold_id := new_transfer_hold_ids[array_length(new_transfer_hold_ids, 1)];
        expires_at := new_transfer_expiries[array_length(new_transfer_expiries, 1)];
        created_by := p_usernames[item];
        created_at := now_at;
        from_entry_id := debit_entry_id;
        from_entry_amount := CASE WHEN debit_entry_id IS NOT NULL THEN -item_amount END;
        from_balance_after := made_debit_balances[item];
        to_entry_id := credit_entry_id;
        to_entry_amount := CASE WHEN credit_entry_id IS NOT NULL THEN item_amount END;
        to_balance_after := made_credit_balances[item];
        replayed := false;
        RETURN NEXT;
    END LOOP;

    IF coalesce(array_length(new_transfer_ids, 1), 0) = 0 THEN
        RETURN;
    END IF;

    -- 5. The writes: each account and each ended hold once, then one INSERT per table.
    UPDATE ledger.accounts a
    SET balance = touched.balance, pending_debits = touched.pending_debits,
        pending_credits = touched.pending_credits, updated_at = now_at
    FROM unnest(locked_ids, running_balances, running_pending_debits, running_pending_credits,
                balances_before, pending_debits_before, pending_credits_before)
         AS touched(id, balance, pending_debits, pending_credits,
                    balance_before, pending_debits_before, pending_credits_before)
    WHERE a.id = touched.id
      AND (touched.balance, touched.pending_debits, touched.pending_credits)
          IS DISTINCT FROM (touched.balance_before, touched.pending_debits_before, touched.pending_credits_before);

    UPDATE ledger.transfers t SET status = ended.status
    FROM unnest(held_ids, held_statuses, held_statuses_before) AS ended(id, status, status_before)
    WHERE t.id = ended.id AND ended.status <> ended.status_before;

    INSERT INTO ledger.transfers (id, from_account_id, to_account_id, amount, currency, kind,
                                  created_by, created_at, status, hold, hold_id, expires_at)
    SELECT made.id, made.from_account_id, made.to_account_id, made.amount, made.currency,
           made.kind, made.created_by, now_at, made.status, made.hold, made.hold_id, made.expires_at
    FROM unnest(new_transfer_ids, new_transfer_sources, new_transfer_destinations,
                new_transfer_amounts, new_transfer_currencies, new_transfer_kinds,
                new_transfer_creators, new_transfer_statuses, new_transfer_holds,
                new_transfer_hold_ids, new_transfer_expiries)
         AS made(id, from_account_id, to_account_id, amount, currency, kind, created_by, status,
                 hold, hold_id, expires_at);

    IF coalesce(array_length(new_entry_ids, 1), 0) > 0 THEN
        INSERT INTO ledger.entries (id, account_id, transfer_id, amount, balance_after, created_at)
        SELECT made.id, made.account_id, made.transfer_id, made.amount, made.balance_after, now_at
        FROM unnest(new_entry_ids, new_entry_accounts, new_entry_transfer_ids, new_entry_amounts,
                    new_entry_balances) AS made(id, account_id, transfer_id, amount, balance_after);
    END IF;

    IF coalesce(array_length(new_key_transfer_ids, 1), 0) > 0 THEN
        INSERT INTO ledger.idempotency_keys (username, key, request_hash, transfer_id)
        SELECT made.username, made.key, made.request_hash, made.transfer_id
        FROM unnest(new_key_usernames, new_keys, new_key_hashes, new_key_transfer_ids)
             AS made(username, key, request_hash, transfer_id);
    END IF;
END;
$$;

COMMENT ON FUNCTION ledger.transfer_batch(text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[], boolean[], bigint[], timestamptz[], integer) IS 'The only way money moves: applies a batch of operations (transfer, deposit, withdrawal, hold, post, void, expire; element i of every array is item i) in one statement. Takes its locks in one global order (idempotency keys, hold rows, accounts by id), checks each item against the running balances (a customer''s available balance never goes below zero), reports a business failure in that item''s error column without failing the others, and writes accounts, transfers, entries and idempotency keys once each. Its lock waits are bounded by p_lock_timeout_ms (lock_timeout for its transaction). Amounts are minor units.';
