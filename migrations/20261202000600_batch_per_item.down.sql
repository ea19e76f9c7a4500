-- Puts back ledger.transfer_batch as 20261202000200_ledger_depth.up.sql made it (copied here) and
-- the row-level outbox trigger on ledger.transfers with its function as
-- 20261202000500_event_owners.up.sql made it, with their comments.
CREATE OR REPLACE FUNCTION ledger.transfer_batch(
    p_user_ids            uuid[],
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
    p_reversed_ids        bigint[],
    p_descriptions        text[],
    p_metadata            jsonb[],
    p_leg_counts          integer[],
    p_lock_timeout_ms     integer
) RETURNS TABLE (
    idx                       integer,
    error                     text,
    failed_leg                integer,
    transfer_id               bigint,
    from_account_id           bigint,
    to_account_id             bigint,
    amount                    bigint,
    currency                  text,
    kind                      text,
    status                    text,
    hold                      boolean,
    hold_id                   bigint,
    expires_at                timestamptz,
    reverses_id               bigint,
    transaction_id            bigint,
    description               text,
    metadata                  jsonb,
    created_by                text,
    created_by_id             uuid,
    created_at                timestamptz,
    from_entry_id             bigint,
    from_entry_amount         bigint,
    from_balance_after        bigint,
    to_entry_id               bigint,
    to_entry_amount           bigint,
    to_balance_after          bigint,
    reversed_amount           bigint,
    original_amount           bigint,
    original_reversed_amount  bigint,
    replayed                  boolean
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    item_count                  integer := coalesce(array_length(p_operations, 1), 0);
    now_at                      timestamptz;
    lock_key                    integer;
    system_currency             text;
    account_row                 ledger.accounts%ROWTYPE;
    transfer_row                ledger.transfers%ROWTYPE;
    replay_row                  record;
    replay_ids                  bigint[];
    stored_transaction_id       bigint;
    -- idempotency keys already stored: "user id<US>key", hash, transfer id
    stored_keys                 text[] := '{}';
    stored_hashes               bytea[] := '{}';
    stored_transfer_ids         bigint[] := '{}';
    -- keys claimed by an earlier request of this batch: "user id<US>key", hash, first element
    claimed_keys                text[] := '{}';
    claimed_hashes              bytea[] := '{}';
    claimed_items               integer[] := '{}';
    claim_count                 integer := 0;
    -- system accounts by currency
    system_currencies           text[] := '{}';
    system_account_ids          bigint[] := '{}';
    -- the holds items end (ascending id), with their state as the batch changes it
    held_ids                    bigint[] := '{}';
    held_sources                bigint[] := '{}';
    held_destinations           bigint[] := '{}';
    held_amounts                bigint[] := '{}';
    held_currencies             text[] := '{}';
    held_creator_ids            uuid[] := '{}';
    held_expiries               timestamptz[] := '{}';
    held_statuses               text[] := '{}';
    held_statuses_before        text[] := '{}';
    held_count                  integer := 0;
    hold_slot                   integer;
    -- the transfers items reverse (ascending id), with their reversed amount as the batch grows it
    original_ids                bigint[] := '{}';
    original_sources            bigint[] := '{}';
    original_destinations       bigint[] := '{}';
    original_amounts            bigint[] := '{}';
    original_currencies         text[] := '{}';
    original_kinds              text[] := '{}';
    original_reversible         boolean[] := '{}';
    original_reversed           bigint[] := '{}';
    original_reversed_before    bigint[] := '{}';
    original_count              integer := 0;
    original_slot               integer;
    -- resolved source/destination/currency per element
    source_ids                  bigint[] := p_from_account_ids;
    destination_ids             bigint[] := p_to_account_ids;
    item_currencies             text[] := p_currencies;
    -- locked accounts (ascending id) with running balances and pending amounts
    locked_ids                  bigint[] := '{}';
    locked_owner_ids            uuid[] := '{}';
    locked_currencies           text[] := '{}';
    locked_kinds                text[] := '{}';
    locked_statuses             text[] := '{}';
    running_balances            bigint[] := '{}';
    running_pending_debits      bigint[] := '{}';
    running_pending_credits     bigint[] := '{}';
    balances_before             bigint[] := '{}';
    pending_debits_before       bigint[] := '{}';
    pending_credits_before      bigint[] := '{}';
    locked_count                integer := 0;
    -- per element: what it did (for its answer, in-batch replays and undoing a failed
    -- transaction's earlier legs)
    made_transfer_ids           bigint[] := '{}';
    made_amounts                bigint[] := '{}';
    made_kinds                  text[] := '{}';
    made_statuses               text[] := '{}';
    made_source_slots           integer[] := '{}';
    made_destination_slots      integer[] := '{}';
    made_debit_entry_ids        bigint[] := '{}';
    made_debit_balances         bigint[] := '{}';
    made_credit_entry_ids       bigint[] := '{}';
    made_credit_balances        bigint[] := '{}';
    made_transaction_ids        bigint[] := '{}';
    made_original_amounts       bigint[] := '{}';
    made_original_reversed      bigint[] := '{}';
    -- rows to insert
    new_transfer_ids            bigint[] := '{}';
    new_transfer_sources        bigint[] := '{}';
    new_transfer_destinations   bigint[] := '{}';
    new_transfer_amounts        bigint[] := '{}';
    new_transfer_currencies     text[] := '{}';
    new_transfer_kinds          text[] := '{}';
    new_transfer_creators       text[] := '{}';
    new_transfer_creator_ids    uuid[] := '{}';
    new_transfer_statuses       text[] := '{}';
    new_transfer_holds          boolean[] := '{}';
    new_transfer_hold_ids       bigint[] := '{}';
    new_transfer_expiries       timestamptz[] := '{}';
    new_transfer_reverses       bigint[] := '{}';
    new_transfer_transactions   bigint[] := '{}';
    new_transfer_descriptions   text[] := '{}';
    new_transfer_metadata       jsonb[] := '{}';
    transfer_count              integer := 0;
    new_entry_ids               bigint[] := '{}';
    new_entry_accounts          bigint[] := '{}';
    new_entry_transfer_ids      bigint[] := '{}';
    new_entry_amounts           bigint[] := '{}';
    new_entry_balances          bigint[] := '{}';
    entry_count                 integer := 0;
    new_key_user_ids            uuid[] := '{}';
    new_keys                    text[] := '{}';
    new_key_hashes              bytea[] := '{}';
    new_key_transfer_ids        bigint[] := '{}';
    key_count                   integer := 0;
    new_transaction_ids         bigint[] := '{}';
    new_transaction_leg_counts  integer[] := '{}';
    new_transaction_creator_ids uuid[] := '{}';
    transaction_count           integer := 0;
    item                        integer;
    leg                         integer;
    leg_count                   integer;
    element                     integer;
    answer_from                 integer;
    failed_at                   integer;
    match_index                 integer;
    source_slot                 integer;
    destination_slot            integer;
    as_banker                   boolean;
    destination_readable        boolean;
    failure                     text;
    user_key                    text;
    operation                   text;
    item_amount                 bigint;
    released_amount             bigint;
    new_status                  text;
    new_transfer_id             bigint;
    new_transaction_id          bigint;
    debit_entry_id              bigint;
    credit_entry_id             bigint;
BEGIN
    IF item_count = 0 THEN
        RETURN;
    END IF;
    IF coalesce(array_length(p_user_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_usernames, 1), 0) <> item_count
       OR coalesce(array_length(p_from_account_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_to_account_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_amounts, 1), 0) <> item_count
       OR coalesce(array_length(p_currencies, 1), 0) <> item_count
       OR coalesce(array_length(p_idempotency_keys, 1), 0) <> item_count
       OR coalesce(array_length(p_request_hashes, 1), 0) <> item_count
       OR coalesce(array_length(p_as_banker, 1), 0) <> item_count
       OR coalesce(array_length(p_hold_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_expires_at, 1), 0) <> item_count
       OR coalesce(array_length(p_reversed_ids, 1), 0) <> item_count
       OR coalesce(array_length(p_descriptions, 1), 0) <> item_count
       OR coalesce(array_length(p_metadata, 1), 0) <> item_count
       OR coalesce(array_length(p_leg_counts, 1), 0) <> item_count THEN
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
        SELECT DISTINCT hashtext(request.user_id::text || chr(31) || request.idempotency_key)
        FROM unnest(p_user_ids, p_idempotency_keys) AS request(user_id, idempotency_key)
        WHERE request.idempotency_key IS NOT NULL
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(742051, lock_key);
    END LOOP;

    SELECT coalesce(array_agg(ik.user_id::text || chr(31) || ik.key), '{}'),
           coalesce(array_agg(ik.request_hash), '{}'),
           coalesce(array_agg(ik.transfer_id), '{}')
    INTO stored_keys, stored_hashes, stored_transfer_ids
    FROM ledger.idempotency_keys ik
    WHERE (ik.user_id, ik.key) IN (
        SELECT request.user_id, request.idempotency_key
        FROM unnest(p_user_ids, p_idempotency_keys) AS request(user_id, idempotency_key)
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
    IF array_length(system_currencies, 1) > 0 THEN
        FOR item IN 1 .. item_count LOOP
            IF p_operations[item] = 'deposit' THEN
                source_ids[item] := system_account_ids[array_position(system_currencies, p_currencies[item])];
            ELSIF p_operations[item] = 'withdrawal' THEN
                destination_ids[item] := system_account_ids[array_position(system_currencies, p_currencies[item])];
            END IF;
        END LOOP;
    END IF;

    -- 2. The transfer rows items name (holds to end, transfers to reverse), locked once,
    -- ascending id; their accounts join step 3.
    FOR transfer_row IN
        SELECT * FROM ledger.transfers t
        WHERE t.id = ANY (p_hold_ids || p_reversed_ids)
        ORDER BY t.id
        FOR NO KEY UPDATE
    LOOP
        IF transfer_row.hold AND transfer_row.id = ANY (p_hold_ids) THEN
            held_count := held_count + 1;
            held_ids[held_count] := transfer_row.id;
            held_sources[held_count] := transfer_row.from_account_id;
            held_destinations[held_count] := transfer_row.to_account_id;
            held_amounts[held_count] := transfer_row.amount;
            held_currencies[held_count] := transfer_row.currency;
            held_creator_ids[held_count] := transfer_row.created_by_id;
            held_expiries[held_count] := transfer_row.expires_at;
            held_statuses[held_count] := transfer_row.status;
            held_statuses_before[held_count] := transfer_row.status;
        END IF;
        IF transfer_row.id = ANY (p_reversed_ids) THEN
            original_count := original_count + 1;
            original_ids[original_count] := transfer_row.id;
            original_sources[original_count] := transfer_row.from_account_id;
            original_destinations[original_count] := transfer_row.to_account_id;
            original_amounts[original_count] := transfer_row.amount;
            original_currencies[original_count] := transfer_row.currency;
            original_kinds[original_count] := transfer_row.kind;
            -- only what moved money, and never a reversal
            original_reversible[original_count] := transfer_row.status = 'posted' AND NOT transfer_row.hold
                                                   AND transfer_row.reverses_id IS NULL;
            original_reversed[original_count] := transfer_row.reversed_amount;
            original_reversed_before[original_count] := transfer_row.reversed_amount;
        END IF;
    END LOOP;
    IF held_count + original_count > 0 THEN
        FOR item IN 1 .. item_count LOOP
            IF p_operations[item] IN ('post', 'void', 'expire') THEN
                hold_slot := array_position(held_ids, p_hold_ids[item]);
                source_ids[item] := held_sources[hold_slot];
                destination_ids[item] := held_destinations[hold_slot];
                item_currencies[item] := held_currencies[hold_slot];
            ELSIF p_operations[item] = 'reverse' THEN
                -- the reversal runs the other way
                original_slot := array_position(original_ids, p_reversed_ids[item]);
                source_ids[item] := original_destinations[original_slot];
                destination_ids[item] := original_sources[original_slot];
                item_currencies[item] := original_currencies[original_slot];
            END IF;
        END LOOP;
    END IF;

    -- 3. Every account involved, locked once, ascending id.
    FOR account_row IN
        SELECT * FROM ledger.accounts a
        WHERE a.id = ANY (source_ids || destination_ids)
        ORDER BY a.id
        FOR UPDATE
    LOOP
        locked_count := locked_count + 1;
        locked_ids[locked_count] := account_row.id;
        locked_owner_ids[locked_count] := account_row.owner_id;
        locked_currencies[locked_count] := account_row.currency;
        locked_kinds[locked_count] := account_row.kind;
        locked_statuses[locked_count] := account_row.status;
        running_balances[locked_count] := account_row.balance;
        running_pending_debits[locked_count] := account_row.pending_debits;
        running_pending_credits[locked_count] := account_row.pending_credits;
        balances_before[locked_count] := account_row.balance;
        pending_debits_before[locked_count] := account_row.pending_debits;
        pending_credits_before[locked_count] := account_row.pending_credits;
    END LOOP;
    -- taken once every lock is held: per account, entry times rise with entry ids
    now_at := clock_timestamp();

    -- 4. The requests, in arrival order, against the running balances.
    item := 1;
    WHILE item <= item_count LOOP
        leg_count := coalesce(p_leg_counts[item], 1);
        IF leg_count < 1 OR item + leg_count - 1 > item_count THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'transfer_batch: bad leg counts';
        END IF;
        failure := NULL;
        failed_at := NULL;
        answer_from := NULL;

        IF p_idempotency_keys[item] IS NOT NULL THEN
            user_key := p_user_ids[item]::text || chr(31) || p_idempotency_keys[item];
            match_index := array_position(stored_keys, user_key);
            IF match_index IS NOT NULL THEN
                IF stored_hashes[match_index] IS DISTINCT FROM p_request_hashes[item] THEN
                    failure := 'idempotency_key_reused';
                ELSE
                    -- the stored answer: the transfer, or every leg of its transaction
                    SELECT t.transaction_id INTO stored_transaction_id
                    FROM ledger.transfers t WHERE t.id = stored_transfer_ids[match_index];
                    IF stored_transaction_id IS NULL THEN
                        replay_ids := ARRAY[stored_transfer_ids[match_index]];
                    ELSE
                        SELECT array_agg(t.id ORDER BY t.id) INTO replay_ids
                        FROM ledger.transfers t WHERE t.transaction_id = stored_transaction_id;
                    END IF;
                    element := item;
                    FOR replay_row IN
                        SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, t.kind,
                               t.status, t.hold, t.hold_id, t.expires_at, t.reverses_id,
                               t.transaction_id, t.description, t.metadata, t.created_by,
                               t.created_by_id, t.created_at, t.reversed_amount,
                               ef.id AS debit_id, ef.amount AS debit_amount, ef.balance_after AS debit_balance,
                               et.id AS credit_id, et.amount AS credit_amount, et.balance_after AS credit_balance,
                               o.amount AS original_amount, o.reversed_amount AS original_reversed
                        FROM ledger.transfers t
                        LEFT JOIN ledger.entries ef ON ef.transfer_id = t.id AND ef.account_id = t.from_account_id
                        LEFT JOIN ledger.entries et ON et.transfer_id = t.id AND et.account_id = t.to_account_id
                        LEFT JOIN ledger.transfers o ON o.id = t.reverses_id
                        WHERE t.id = ANY (replay_ids)
                        ORDER BY t.id
                    LOOP
                        EXIT WHEN element >= item + leg_count;
                        idx := element; error := NULL; failed_leg := NULL;
                        transfer_id := replay_row.id;
                        from_account_id := replay_row.from_account_id;
                        to_account_id := replay_row.to_account_id;
                        amount := replay_row.amount;
                        currency := replay_row.currency;
                        kind := replay_row.kind;
                        status := replay_row.status;
                        hold := replay_row.hold;
                        hold_id := replay_row.hold_id;
                        expires_at := replay_row.expires_at;
                        reverses_id := replay_row.reverses_id;
                        transaction_id := replay_row.transaction_id;
                        description := replay_row.description;
                        metadata := replay_row.metadata;
                        created_by := replay_row.created_by;
                        created_by_id := replay_row.created_by_id;
                        created_at := replay_row.created_at;
                        from_entry_id := replay_row.debit_id;
                        from_entry_amount := replay_row.debit_amount;
                        from_balance_after := replay_row.debit_balance;
                        to_entry_id := replay_row.credit_id;
                        to_entry_amount := replay_row.credit_amount;
                        to_balance_after := replay_row.credit_balance;
                        reversed_amount := replay_row.reversed_amount;
                        original_amount := replay_row.original_amount;
                        original_reversed_amount := replay_row.original_reversed;
                        replayed := true;
                        RETURN NEXT;
                        element := element + 1;
                    END LOOP;
                    item := item + leg_count;
                    CONTINUE;
                END IF;
            ELSE
                match_index := array_position(claimed_keys, user_key);
                IF match_index IS NOT NULL THEN
                    IF claimed_hashes[match_index] IS DISTINCT FROM p_request_hashes[item]
                       OR coalesce(p_leg_counts[claimed_items[match_index]], 1) <> leg_count THEN
                        failure := 'idempotency_key_reused';
                    ELSE
                        answer_from := claimed_items[match_index];
                    END IF;
                END IF;
            END IF;
        END IF;

        -- each leg checked against the running state and applied to it
        IF failure IS NULL AND answer_from IS NULL THEN
            FOR leg IN 0 .. leg_count - 1 LOOP
                element := item + leg;
                operation := p_operations[element];
                item_amount := p_amounts[element];
                as_banker := coalesce(p_as_banker[element], false);
                hold_slot := NULL;
                original_slot := NULL;
                IF leg > 0 AND coalesce(p_leg_counts[element], -1) <> 0 THEN
                    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'transfer_batch: bad leg counts';
                END IF;

                IF operation IS NULL
                   OR operation NOT IN ('transfer', 'deposit', 'withdrawal', 'hold', 'post', 'void', 'expire', 'reverse')
                   OR (leg_count > 1 AND operation <> 'transfer') THEN
                    failure := 'invalid_kind';
                ELSIF operation IN ('void', 'expire') THEN
                    item_amount := NULL;
                -- the same checks as the service's `Amount` type (pair assertion); a post or a
                -- reversal may leave it out to move all there is
                ELSIF item_amount IS NULL AND operation IN ('post', 'reverse') THEN
                    NULL;
                ELSIF item_amount IS NULL OR item_amount <= 0 THEN
                    failure := 'invalid_amount';
                ELSIF p_max_amount IS NOT NULL AND item_amount > p_max_amount THEN
                    failure := 'amount_over_limit';
                END IF;

                -- the hold an item ends: visible to its creator and bankers, still pending, not past due
                IF failure IS NULL AND operation IN ('post', 'void', 'expire') THEN
                    hold_slot := array_position(held_ids, p_hold_ids[element]);
                    IF hold_slot IS NULL
                       OR (held_creator_ids[hold_slot] <> p_user_ids[element] AND NOT as_banker) THEN
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
                    IF source_ids[element] = destination_ids[element] THEN
                        -- a deposit into (or withdrawal from) the system account itself: no such account
                        IF operation IN ('transfer', 'hold') THEN
                            failure := 'same_account';
                        ELSE
                            failure := 'account_not_found';
                        END IF;
                    END IF;
                END IF;
                IF failure IS NULL THEN
                    source_slot := array_position(locked_ids, source_ids[element]);
                    destination_slot := array_position(locked_ids, destination_ids[element]);
                    destination_readable := as_banker
                        OR (destination_slot IS NOT NULL AND locked_kinds[destination_slot] = 'customer'
                            AND locked_owner_ids[destination_slot] = p_user_ids[element]);
                    IF operation IN ('post', 'void', 'expire') THEN
                        -- the hold's accounts were checked when it was made; money moves on a post only
                        -- between active accounts, a release is always allowed
                        IF operation = 'post'
                           AND (locked_statuses[source_slot] <> 'active' OR locked_statuses[destination_slot] <> 'active') THEN
                            failure := 'account_frozen';
                        END IF;
                    ELSIF operation = 'reverse' THEN
                        original_slot := array_position(original_ids, p_reversed_ids[element]);
                        -- who may see the transfer: either side's owner, a banker
                        IF original_slot IS NULL
                           OR NOT (as_banker OR destination_readable
                                   OR (locked_kinds[source_slot] = 'customer'
                                       AND locked_owner_ids[source_slot] = p_user_ids[element])) THEN
                            failure := 'transfer_not_found';
                        ELSIF NOT original_reversible[original_slot] THEN
                            failure := 'transfer_not_reversible';
                        -- a refund is its receiver's (the reversal's source), a chargeback a banker's
                        ELSIF NOT as_banker
                              AND NOT (locked_kinds[source_slot] = 'customer'
                                       AND locked_owner_ids[source_slot] = p_user_ids[element]) THEN
                            failure := 'not_account_owner';
                        ELSE
                            item_amount := coalesce(item_amount,
                                                    original_amounts[original_slot] - original_reversed[original_slot]);
                            IF item_amount <= 0
                               OR item_amount > original_amounts[original_slot] - original_reversed[original_slot] THEN
                                failure := 'amount_exceeds_reversible';
                            ELSIF locked_statuses[source_slot] <> 'active' THEN
                                failure := 'account_frozen';
                            ELSIF locked_statuses[destination_slot] <> 'active' THEN
                                failure := CASE WHEN destination_readable THEN 'account_frozen' ELSE 'account_not_found' END;
                            -- never a customer below zero, a chargeback neither
                            ELSIF locked_kinds[source_slot] = 'customer'
                                  AND running_balances[source_slot] - running_pending_debits[source_slot] < item_amount THEN
                                failure := 'insufficient_funds';
                            END IF;
                        END IF;
                    ELSIF operation IN ('transfer', 'hold') THEN
                        -- the source first: nothing about the destination before the caller may
                        -- spend from it
                        IF source_slot IS NULL OR locked_kinds[source_slot] <> 'customer' THEN
                            failure := CASE WHEN as_banker THEN 'account_not_found' ELSE 'not_account_owner' END;
                        ELSIF locked_owner_ids[source_slot] <> p_user_ids[element]
                              AND NOT (as_banker AND leg_count > 1) THEN
                            failure := 'not_account_owner';
                        ELSIF locked_currencies[source_slot] <> p_currencies[element] THEN
                            failure := 'currency_mismatch';
                        ELSIF locked_statuses[source_slot] <> 'active' THEN
                            failure := 'account_frozen';
                        -- the destination: precise only to who may read it
                        ELSIF destination_slot IS NULL OR locked_kinds[destination_slot] <> 'customer' THEN
                            failure := 'account_not_found';
                        ELSIF locked_currencies[destination_slot] <> p_currencies[element] THEN
                            failure := CASE WHEN destination_readable THEN 'currency_mismatch' ELSE 'account_not_found' END;
                        ELSIF locked_statuses[destination_slot] <> 'active' THEN
                            failure := CASE WHEN destination_readable THEN 'account_frozen' ELSE 'account_not_found' END;
                        -- what a customer may spend is the balance less what holds reserve
                        ELSIF running_balances[source_slot] - running_pending_debits[source_slot] < item_amount THEN
                            failure := 'insufficient_funds';
                        END IF;
                    -- deposits and withdrawals: bankers, who may read every account
                    ELSIF source_slot IS NULL OR (operation <> 'deposit' AND locked_kinds[source_slot] <> 'customer') THEN
                        failure := 'account_not_found';
                    ELSIF destination_slot IS NULL OR (operation <> 'withdrawal' AND locked_kinds[destination_slot] <> 'customer') THEN
                        failure := 'account_not_found';
                    ELSIF locked_currencies[source_slot] <> p_currencies[element] OR locked_currencies[destination_slot] <> p_currencies[element] THEN
                        failure := 'currency_mismatch';
                    ELSIF locked_statuses[source_slot] <> 'active' OR locked_statuses[destination_slot] <> 'active' THEN
                        failure := 'account_frozen';
                    ELSIF locked_kinds[source_slot] = 'customer'
                          AND running_balances[source_slot] - running_pending_debits[source_slot] < item_amount THEN
                        failure := 'insufficient_funds';
                    END IF;
                END IF;

                IF failure IS NOT NULL THEN
                    failed_at := leg + 1;
                    EXIT;
                END IF;

                -- apply to the running state (ids and rows once every leg passed)
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
                IF operation = 'reverse' THEN
                    original_reversed[original_slot] := original_reversed[original_slot] + item_amount;
                    made_original_amounts[element] := original_amounts[original_slot];
                    made_original_reversed[element] := original_reversed[original_slot];
                    made_kinds[element] := CASE original_kinds[original_slot]
                                               WHEN 'deposit' THEN 'withdrawal'
                                               WHEN 'withdrawal' THEN 'deposit'
                                               ELSE 'transfer' END;
                ELSE
                    made_original_amounts[element] := NULL;
                    made_original_reversed[element] := NULL;
                    made_kinds[element] := CASE WHEN operation IN ('deposit', 'withdrawal') THEN operation ELSE 'transfer' END;
                END IF;
                IF operation IN ('transfer', 'deposit', 'withdrawal', 'post', 'reverse') THEN
                    running_balances[source_slot] := running_balances[source_slot] - item_amount;
                    running_balances[destination_slot] := running_balances[destination_slot] + item_amount;
                    made_debit_balances[element] := running_balances[source_slot];
                    made_credit_balances[element] := running_balances[destination_slot];
                ELSE
                    made_debit_balances[element] := NULL;
                    made_credit_balances[element] := NULL;
                END IF;
                made_amounts[element] := item_amount;
                made_statuses[element] := new_status;
                made_source_slots[element] := source_slot;
                made_destination_slots[element] := destination_slot;
            END LOOP;

            IF failure IS NOT NULL THEN
                -- undo the legs of a transaction applied before the one that failed (only
                -- transfers: the only operation a leg may be)
                FOR leg IN 0 .. failed_at - 2 LOOP
                    element := item + leg;
                    running_balances[made_source_slots[element]] :=
                        running_balances[made_source_slots[element]] + made_amounts[element];
                    running_balances[made_destination_slots[element]] :=
                        running_balances[made_destination_slots[element]] - made_amounts[element];
                END LOOP;
            ELSE
                -- every leg passed: ids, rows to insert, the key claimed
                IF leg_count > 1 THEN
                    new_transaction_id := nextval('ledger.transactions_id_seq');
                    transaction_count := transaction_count + 1;
                    new_transaction_ids[transaction_count] := new_transaction_id;
                    new_transaction_leg_counts[transaction_count] := leg_count;
                    new_transaction_creator_ids[transaction_count] := p_user_ids[item];
                ELSE
                    new_transaction_id := NULL;
                END IF;
                FOR leg IN 0 .. leg_count - 1 LOOP
                    element := item + leg;
                    operation := p_operations[element];
                    new_transfer_id := nextval('ledger.transfers_id_seq');
                    made_transfer_ids[element] := new_transfer_id;
                    made_transaction_ids[element] := new_transaction_id;
                    IF made_debit_balances[element] IS NOT NULL THEN
                        debit_entry_id := nextval('ledger.entries_id_seq');
                        credit_entry_id := nextval('ledger.entries_id_seq');
                        entry_count := entry_count + 1;
                        new_entry_ids[entry_count] := debit_entry_id;
                        new_entry_accounts[entry_count] := source_ids[element];
                        new_entry_transfer_ids[entry_count] := new_transfer_id;
                        new_entry_amounts[entry_count] := -made_amounts[element];
                        new_entry_balances[entry_count] := made_debit_balances[element];
                        entry_count := entry_count + 1;
                        new_entry_ids[entry_count] := credit_entry_id;
                        new_entry_accounts[entry_count] := destination_ids[element];
                        new_entry_transfer_ids[entry_count] := new_transfer_id;
                        new_entry_amounts[entry_count] := made_amounts[element];
                        new_entry_balances[entry_count] := made_credit_balances[element];
                        made_debit_entry_ids[element] := debit_entry_id;
                        made_credit_entry_ids[element] := credit_entry_id;
                    ELSE
                        made_debit_entry_ids[element] := NULL;
                        made_credit_entry_ids[element] := NULL;
                    END IF;
                    transfer_count := transfer_count + 1;
                    new_transfer_ids[transfer_count] := new_transfer_id;
                    new_transfer_sources[transfer_count] := source_ids[element];
                    new_transfer_destinations[transfer_count] := destination_ids[element];
                    new_transfer_amounts[transfer_count] := made_amounts[element];
                    new_transfer_currencies[transfer_count] := item_currencies[element];
                    new_transfer_kinds[transfer_count] := made_kinds[element];
                    new_transfer_creators[transfer_count] := p_usernames[element];
                    new_transfer_creator_ids[transfer_count] := p_user_ids[element];
                    new_transfer_statuses[transfer_count] := made_statuses[element];
                    new_transfer_holds[transfer_count] := operation = 'hold';
                    new_transfer_hold_ids[transfer_count] :=
                        CASE WHEN operation IN ('post', 'void', 'expire') THEN p_hold_ids[element] END;
                    new_transfer_expiries[transfer_count] :=
                        CASE WHEN operation = 'hold' THEN p_expires_at[element] END;
                    new_transfer_reverses[transfer_count] :=
                        CASE WHEN operation = 'reverse' THEN p_reversed_ids[element] END;
                    new_transfer_transactions[transfer_count] := new_transaction_id;
                    new_transfer_descriptions[transfer_count] := p_descriptions[element];
                    new_transfer_metadata[transfer_count] := p_metadata[element];
                END LOOP;
                IF p_idempotency_keys[item] IS NOT NULL THEN
                    claim_count := claim_count + 1;
                    claimed_keys[claim_count] := user_key;
                    claimed_hashes[claim_count] := p_request_hashes[item];
                    claimed_items[claim_count] := item;
                    key_count := key_count + 1;
                    new_key_user_ids[key_count] := p_user_ids[item];
                    new_keys[key_count] := p_idempotency_keys[item];
                    new_key_hashes[key_count] := p_request_hashes[item];
                    new_key_transfer_ids[key_count] := made_transfer_ids[item];
                END IF;
                answer_from := item;
            END IF;
        END IF;

        -- the answers: one row per element of the request, from what the request (or the one
        -- of this batch it replays) made
        FOR leg IN 0 .. leg_count - 1 LOOP
            idx := item + leg;
            error := NULL; failed_leg := NULL; transfer_id := NULL; from_account_id := NULL;
            to_account_id := NULL; amount := NULL; currency := NULL; kind := NULL; status := NULL;
            hold := NULL; hold_id := NULL; expires_at := NULL; reverses_id := NULL;
            transaction_id := NULL; description := NULL; metadata := NULL; created_by := NULL;
            created_by_id := NULL; created_at := NULL; from_entry_id := NULL;
            from_entry_amount := NULL; from_balance_after := NULL; to_entry_id := NULL;
            to_entry_amount := NULL; to_balance_after := NULL; reversed_amount := NULL;
            original_amount := NULL;
            original_reversed_amount := NULL; replayed := NULL;
            IF failure IS NOT NULL THEN
                error := failure;
                failed_leg := CASE WHEN leg_count > 1 THEN failed_at END;
            ELSE
                element := answer_from + leg;
                operation := p_operations[element];
                transfer_id := made_transfer_ids[element];
                from_account_id := source_ids[element];
                to_account_id := destination_ids[element];
                amount := made_amounts[element];
                currency := item_currencies[element];
                kind := made_kinds[element];
                status := made_statuses[element];
                hold := operation = 'hold';
                hold_id := CASE WHEN operation IN ('post', 'void', 'expire') THEN p_hold_ids[element] END;
                expires_at := CASE WHEN operation = 'hold' THEN p_expires_at[element] END;
                reverses_id := CASE WHEN operation = 'reverse' THEN p_reversed_ids[element] END;
                transaction_id := made_transaction_ids[element];
                description := p_descriptions[element];
                metadata := p_metadata[element];
                created_by := p_usernames[element];
                created_by_id := p_user_ids[element];
                created_at := now_at;
                from_entry_id := made_debit_entry_ids[element];
                from_entry_amount := CASE WHEN made_debit_entry_ids[element] IS NOT NULL THEN -made_amounts[element] END;
                from_balance_after := made_debit_balances[element];
                to_entry_id := made_credit_entry_ids[element];
                to_entry_amount := CASE WHEN made_credit_entry_ids[element] IS NOT NULL THEN made_amounts[element] END;
                to_balance_after := made_credit_balances[element];
                reversed_amount := 0;
                original_amount := made_original_amounts[element];
                original_reversed_amount := made_original_reversed[element];
                replayed := answer_from <> item;
            END IF;
            RETURN NEXT;
        END LOOP;
        item := item + leg_count;
    END LOOP;

    IF transfer_count = 0 THEN
        RETURN;
    END IF;

    -- 5. The writes: each account, each ended hold and each reversed transfer once, then one
    -- INSERT per table.
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

    IF held_count > 0 THEN
        UPDATE ledger.transfers t SET status = ended.status
        FROM unnest(held_ids, held_statuses, held_statuses_before) AS ended(id, status, status_before)
        WHERE t.id = ended.id AND ended.status <> ended.status_before;
    END IF;

    IF original_count > 0 THEN
        UPDATE ledger.transfers t SET reversed_amount = reversed.amount
        FROM unnest(original_ids, original_reversed, original_reversed_before)
             AS reversed(id, amount, amount_before)
        WHERE t.id = reversed.id AND reversed.amount <> reversed.amount_before;
    END IF;

    IF transaction_count > 0 THEN
        INSERT INTO ledger.transactions (id, leg_count, created_by_id, created_at)
        SELECT made.id, made.leg_count, made.created_by_id, now_at
        FROM unnest(new_transaction_ids, new_transaction_leg_counts, new_transaction_creator_ids)
             AS made(id, leg_count, created_by_id);
    END IF;

    INSERT INTO ledger.transfers (id, from_account_id, to_account_id, amount, currency, kind,
                                  created_by, created_by_id, created_at, status, hold, hold_id,
                                  expires_at, reverses_id, transaction_id, description, metadata)
    SELECT made.id, made.from_account_id, made.to_account_id, made.amount, made.currency,
           made.kind, made.created_by, made.created_by_id, now_at, made.status, made.hold,
           made.hold_id, made.expires_at, made.reverses_id, made.transaction_id,
           made.description, made.metadata
    FROM unnest(new_transfer_ids, new_transfer_sources, new_transfer_destinations,
                new_transfer_amounts, new_transfer_currencies, new_transfer_kinds,
                new_transfer_creators, new_transfer_creator_ids, new_transfer_statuses,
                new_transfer_holds, new_transfer_hold_ids, new_transfer_expiries,
                new_transfer_reverses, new_transfer_transactions, new_transfer_descriptions,
                new_transfer_metadata)
         AS made(id, from_account_id, to_account_id, amount, currency, kind, created_by,
                 created_by_id, status, hold, hold_id, expires_at, reverses_id, transaction_id,
                 description, metadata);

    IF entry_count > 0 THEN
        INSERT INTO ledger.entries (id, account_id, transfer_id, amount, balance_after, created_at)
        SELECT made.id, made.account_id, made.transfer_id, made.amount, made.balance_after, now_at
        FROM unnest(new_entry_ids, new_entry_accounts, new_entry_transfer_ids, new_entry_amounts,
                    new_entry_balances) AS made(id, account_id, transfer_id, amount, balance_after);
    END IF;

    IF key_count > 0 THEN
        INSERT INTO ledger.idempotency_keys (user_id, key, request_hash, transfer_id)
        SELECT made.user_id, made.key, made.request_hash, made.transfer_id
        FROM unnest(new_key_user_ids, new_keys, new_key_hashes, new_key_transfer_ids)
             AS made(user_id, key, request_hash, transfer_id);
    END IF;
END;
$$;

DROP TRIGGER transfers_outbox ON ledger.transfers;
CREATE OR REPLACE FUNCTION ledger.outbox_transfer_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_row       jsonb := to_jsonb(NEW) - 'created_by';
    v_type      text;
    v_from      uuid;
    v_to        uuid;
    v_owners    jsonb;
BEGIN
    IF NEW.hold THEN
        v_type := 'hold.created';
    ELSIF NEW.hold_id IS NOT NULL THEN
        v_type := 'hold.' || NEW.status;
    ELSIF v_row->>'reverses_id' IS NOT NULL THEN
        v_type := 'transfer.reversed';
    ELSE
        v_type := NEW.kind || '.posted';
    END IF;
    SELECT nullif(f.owner_id, '00000000-0000-0000-0000-000000000000'),
           nullif(t.owner_id, '00000000-0000-0000-0000-000000000000')
      INTO v_from, v_to
      FROM ledger.accounts f, ledger.accounts t
     WHERE f.id = NEW.from_account_id AND t.id = NEW.to_account_id;
    SELECT coalesce(jsonb_agg(DISTINCT o), '[]'::jsonb) INTO v_owners
      FROM unnest(ARRAY[v_from, v_to]) o WHERE o IS NOT NULL;
    INSERT INTO ledger.outbox (event_type, payload)
    VALUES (v_type, jsonb_build_object(
        'version', 1,
        'occurred_at', NEW.created_at,
        'account_ids', jsonb_build_array(NEW.from_account_id, NEW.to_account_id),
        'owner_ids', v_owners,
        'from_owner_id', v_from,
        'to_owner_id', v_to,
        'transfer', v_row));
    RETURN NULL;
END;
$$;

CREATE TRIGGER transfers_outbox AFTER INSERT ON ledger.transfers
    FOR EACH ROW EXECUTE FUNCTION ledger.outbox_transfer_event();

COMMENT ON FUNCTION ledger.outbox_transfer_event() IS 'Trigger (AFTER INSERT on ledger.transfers, each row): writes the row''s event into ledger.outbox with the owners of its two accounts (owner_ids, from_owner_id, to_owner_id).';
