-- The batch statement's cost per item flat in the batch size, and lower (issue 18). Same
-- signature, same answers, same rows written; profile and figures in docs/benchmarks.md
-- ("Batch SQL per item: before and after").
--
-- ledger.transfer_batch (as in 20261202000200, changed only where it searched or copied per item):
-- * No linear search per item. The stored idempotency key of each element (its hash and
--   transfer), the group of elements sharing a (user id, key), the slot of the hold an element
--   ends, of the transfer it reverses and of its locked source and destination are each found
--   once for the whole batch by one join of the arrays (unnest WITH ORDINALITY, hash joins), not
--   by `array_position` over the batch's keys, holds or locked accounts for every item (which was
--   O(items x accounts) per batch). A key claimed by an earlier request of the batch is recorded
--   per key group (`group_claims[key_groups[item]]`), so finding it is one subscript.
-- * No per-item copy of the rows to insert: the transfers and entries are inserted straight from
--   the per-element arrays the requests fill anyway (`made_*`, sized to the batch up front), the
--   elements that made a transfer in element order (= transfer id order), each one's debit entry
--   before its credit entry, as before.
-- * Whether a locked transfer row is named by a hold item or a reverse item is answered by the
--   locking query (hashed subplans), not by `= ANY (p_hold_ids)` per row.
--
-- The outbox trigger on ledger.transfers becomes statement-level: one INSERT ... SELECT over the
-- statement's new rows (transition table `new_transfers`) writes the same events as the row
-- trigger of 20261202000300/20261202000500 did (same event_type rules, same payload keys and
-- values), in transfer id order, instead of a PL/pgSQL call, two lookups and one outbox INSERT
-- (with its NOTIFY trigger) per transfer row. The order argument of 20261202000300 still holds:
-- the events' ids are taken at the end of the INSERT into ledger.transfers, while the batch holds
-- its accounts' row locks, and in transfer id order. The accounts' triggers are unchanged.

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
    -- a transfer row items name, with whether a hold item and a reverse item name it
    transfer_row                record;
    replay_row                  record;
    replay_ids                  bigint[];
    stored_transaction_id       bigint;
    -- per element, found once by a join (not searched for per item): the stored idempotency
    -- key's hash and transfer (NULL: not stored), and the key's group (the first element with
    -- the same user id and key)
    element_stored_hashes       bytea[];
    element_stored_ids          bigint[];
    key_groups                  integer[];
    -- per key group: the item of this batch that claimed the key (NULL: none yet)
    group_claims                integer[] := array_fill(NULL::integer, ARRAY[item_count]);
    claimed_item                integer;
    -- per element: the slot of the hold it ends, of the transfer it reverses, of its locked
    -- source and destination (NULL: none)
    element_hold_slots          integer[];
    element_original_slots      integer[];
    element_source_slots        integer[];
    element_destination_slots   integer[];
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
    made_transfer_ids           bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_amounts                bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_kinds                  text[] := array_fill(NULL::text, ARRAY[item_count]);
    made_statuses               text[] := array_fill(NULL::text, ARRAY[item_count]);
    made_source_slots           integer[] := array_fill(NULL::integer, ARRAY[item_count]);
    made_destination_slots      integer[] := array_fill(NULL::integer, ARRAY[item_count]);
    made_debit_entry_ids        bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_debit_balances         bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_credit_entry_ids       bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_credit_balances        bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_transaction_ids        bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_original_amounts       bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    made_original_reversed      bigint[] := array_fill(NULL::bigint, ARRAY[item_count]);
    -- rows to insert (transfers and entries: from the element arrays above, set-based)
    transfer_count              integer := 0;
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
    source_slot                 integer;
    destination_slot            integer;
    as_banker                   boolean;
    destination_readable        boolean;
    failure                     text;
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

    -- per element: its key as stored (hash, transfer), and its key group
    SELECT array_agg(ik.request_hash ORDER BY request.ord),
           array_agg(ik.transfer_id ORDER BY request.ord),
           array_agg(request.key_group ORDER BY request.ord)
    INTO element_stored_hashes, element_stored_ids, key_groups
    FROM (SELECT r.ord, r.user_id, r.idempotency_key,
                 CASE WHEN r.idempotency_key IS NOT NULL
                      THEN (min(r.ord) OVER (PARTITION BY r.user_id, r.idempotency_key))::integer END
                     AS key_group
          FROM unnest(p_user_ids, p_idempotency_keys) WITH ORDINALITY AS r(user_id, idempotency_key, ord)) request
    LEFT JOIN ledger.idempotency_keys ik
           ON ik.user_id = request.user_id AND ik.key = request.idempotency_key;

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
    -- (whether an item names the row: hashed subplans, not a search of the batch's arrays per row)
    FOR transfer_row IN
        SELECT t.*, t.id IN (SELECT unnest(p_hold_ids)) AS named_as_hold,
               t.id IN (SELECT unnest(p_reversed_ids)) AS named_as_reversed
        FROM ledger.transfers t
        WHERE t.id = ANY (p_hold_ids || p_reversed_ids)
        ORDER BY t.id
        FOR NO KEY UPDATE OF t
    LOOP
        IF transfer_row.hold AND transfer_row.named_as_hold THEN
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
        IF transfer_row.named_as_reversed THEN
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
        SELECT array_agg(h.slot::integer ORDER BY r.ord), array_agg(o.slot::integer ORDER BY r.ord)
        INTO element_hold_slots, element_original_slots
        FROM unnest(p_hold_ids, p_reversed_ids) WITH ORDINALITY AS r(hold_id, reversed_id, ord)
        LEFT JOIN unnest(held_ids) WITH ORDINALITY AS h(id, slot) ON h.id = r.hold_id
        LEFT JOIN unnest(original_ids) WITH ORDINALITY AS o(id, slot) ON o.id = r.reversed_id;
        FOR item IN 1 .. item_count LOOP
            IF p_operations[item] IN ('post', 'void', 'expire') THEN
                hold_slot := element_hold_slots[item];
                source_ids[item] := held_sources[hold_slot];
                destination_ids[item] := held_destinations[hold_slot];
                item_currencies[item] := held_currencies[hold_slot];
            ELSIF p_operations[item] = 'reverse' THEN
                -- the reversal runs the other way
                original_slot := element_original_slots[item];
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
    -- per element: the slots of its source and destination
    SELECT array_agg(s.slot::integer ORDER BY r.ord), array_agg(d.slot::integer ORDER BY r.ord)
    INTO element_source_slots, element_destination_slots
    FROM unnest(source_ids, destination_ids) WITH ORDINALITY AS r(source_id, destination_id, ord)
    LEFT JOIN unnest(locked_ids) WITH ORDINALITY AS s(id, slot) ON s.id = r.source_id
    LEFT JOIN unnest(locked_ids) WITH ORDINALITY AS d(id, slot) ON d.id = r.destination_id;
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
            IF element_stored_ids[item] IS NOT NULL THEN
                IF element_stored_hashes[item] IS DISTINCT FROM p_request_hashes[item] THEN
                    failure := 'idempotency_key_reused';
                ELSE
                    -- the stored answer: the transfer, or every leg of its transaction
                    SELECT t.transaction_id INTO stored_transaction_id
                    FROM ledger.transfers t WHERE t.id = element_stored_ids[item];
                    IF stored_transaction_id IS NULL THEN
                        replay_ids := ARRAY[element_stored_ids[item]];
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
                claimed_item := group_claims[key_groups[item]];
                IF claimed_item IS NOT NULL THEN
                    IF p_request_hashes[claimed_item] IS DISTINCT FROM p_request_hashes[item]
                       OR coalesce(p_leg_counts[claimed_item], 1) <> leg_count THEN
                        failure := 'idempotency_key_reused';
                    ELSE
                        answer_from := claimed_item;
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
                    hold_slot := element_hold_slots[element];
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
                    source_slot := element_source_slots[element];
                    destination_slot := element_destination_slots[element];
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
                        original_slot := element_original_slots[element];
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
                        entry_count := entry_count + 2;
                        made_debit_entry_ids[element] := debit_entry_id;
                        made_credit_entry_ids[element] := credit_entry_id;
                    ELSE
                        made_debit_entry_ids[element] := NULL;
                        made_credit_entry_ids[element] := NULL;
                    END IF;
                    transfer_count := transfer_count + 1;
                END LOOP;
                IF p_idempotency_keys[item] IS NOT NULL THEN
                    group_claims[key_groups[item]] := item;
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

    -- the elements that made a transfer, in element order (= id order)
    INSERT INTO ledger.transfers (id, from_account_id, to_account_id, amount, currency, kind,
                                  created_by, created_by_id, created_at, status, hold, hold_id,
                                  expires_at, reverses_id, transaction_id, description, metadata)
    SELECT made.id, made.from_account_id, made.to_account_id, made.amount, made.currency,
           made.kind, made.created_by, made.created_by_id, now_at, made.status,
           made.operation = 'hold',
           CASE WHEN made.operation IN ('post', 'void', 'expire') THEN made.hold_id END,
           CASE WHEN made.operation = 'hold' THEN made.expires_at END,
           CASE WHEN made.operation = 'reverse' THEN made.reverses_id END,
           made.transaction_id, made.description, made.metadata
    FROM unnest(made_transfer_ids, source_ids, destination_ids, made_amounts, item_currencies,
                made_kinds, p_usernames, p_user_ids, made_statuses, p_operations, p_hold_ids,
                p_expires_at, p_reversed_ids, made_transaction_ids, p_descriptions, p_metadata)
         WITH ORDINALITY
         AS made(id, from_account_id, to_account_id, amount, currency, kind, created_by,
                 created_by_id, status, operation, hold_id, expires_at, reverses_id,
                 transaction_id, description, metadata, element)
    WHERE made.id IS NOT NULL
    ORDER BY made.element;

    -- per element that moved money: its debit, then its credit
    IF entry_count > 0 THEN
        INSERT INTO ledger.entries (id, account_id, transfer_id, amount, balance_after, created_at)
        SELECT entry.id, entry.account_id, made.transfer_id, entry.amount, entry.balance_after, now_at
        FROM unnest(made_transfer_ids, made_debit_entry_ids, made_credit_entry_ids, source_ids,
                    destination_ids, made_amounts, made_debit_balances, made_credit_balances)
             WITH ORDINALITY
             AS made(transfer_id, debit_id, credit_id, source_id, destination_id, amount,
                     debit_balance, credit_balance, element)
        CROSS JOIN LATERAL (VALUES (1, made.debit_id, made.source_id, -made.amount, made.debit_balance),
                                   (2, made.credit_id, made.destination_id, made.amount, made.credit_balance))
             AS entry(side, id, account_id, amount, balance_after)
        WHERE made.transfer_id IS NOT NULL AND made.debit_id IS NOT NULL
        ORDER BY made.element, entry.side;
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

-- The nil uuid owns the system accounts; it is nobody to tell (from_owner_id / to_owner_id NULL).
CREATE OR REPLACE FUNCTION ledger.outbox_transfer_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- a statement that inserted nothing announces nothing (and wakes no relay)
    IF NOT EXISTS (SELECT FROM new_transfers) THEN
        RETURN NULL;
    END IF;
    INSERT INTO ledger.outbox (event_type, payload)
    SELECT CASE WHEN t.hold THEN 'hold.created'
                WHEN t.hold_id IS NOT NULL THEN 'hold.' || t.status
                WHEN t.reverses_id IS NOT NULL THEN 'transfer.reversed'
                ELSE t.kind || '.posted' END,
           jsonb_build_object(
               'version', 1,
               'occurred_at', t.created_at,
               'account_ids', jsonb_build_array(t.from_account_id, t.to_account_id),
               'owner_ids', owners.owner_ids,
               'from_owner_id', sides.from_owner_id,
               'to_owner_id', sides.to_owner_id,
               'transfer', to_jsonb(t) - 'created_by')
    FROM new_transfers t
    LEFT JOIN LATERAL (
        SELECT nullif(f.owner_id, '00000000-0000-0000-0000-000000000000') AS from_owner_id,
               nullif(d.owner_id, '00000000-0000-0000-0000-000000000000') AS to_owner_id
        FROM ledger.accounts f, ledger.accounts d
        WHERE f.id = t.from_account_id AND d.id = t.to_account_id) sides ON true
    CROSS JOIN LATERAL (
        SELECT coalesce(jsonb_agg(DISTINCT o), '[]'::jsonb) AS owner_ids
        FROM unnest(ARRAY[sides.from_owner_id, sides.to_owner_id]) o
        WHERE o IS NOT NULL) owners
    ORDER BY t.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER transfers_outbox AFTER INSERT ON ledger.transfers
    REFERENCING NEW TABLE AS new_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_transfer_event();

COMMENT ON FUNCTION ledger.outbox_transfer_event() IS 'Trigger (AFTER INSERT on ledger.transfers, each statement, transition table new_transfers): writes one event per inserted row into ledger.outbox with the owners of its two accounts (owner_ids, from_owner_id, to_owner_id), in one INSERT, in transfer id order.';
COMMENT ON TRIGGER transfers_outbox ON ledger.transfers IS 'One ledger.outbox event per inserted transfer row, written by one statement-level INSERT (ledger.outbox_transfer_event) in transfer id order.';
