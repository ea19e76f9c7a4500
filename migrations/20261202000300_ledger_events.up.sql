-- Ledger events (issue 21): every money movement and account change writes one event into
-- ledger.outbox IN THE SAME TRANSACTION as the change, by the triggers below, so there is no event
-- without its change and no change without its event. The transfers service's relay (platform's
-- outbox relay, the one auth uses) moves the rows in id order to the Redis Stream
-- `{key_prefix}events:ledger`; the webhooks service reads it.
--
-- Why triggers and not inserts in ledger.transfer_batch: the batch function writes every row of a
-- group commit in a few set-based statements; a row trigger fires for each row those statements
-- write, in that same statement, whatever the function becomes (legs, reversals), and an account
-- change by the accounts service is covered the same way. The trigger is on the hot path (one
-- outbox insert per transfer row): it reads the two accounts (already locked and cached by the
-- batch) for their owners and builds the payload from the row itself (to_jsonb), so a column
-- added to ledger.transfers later appears in the event without editing this function.
--
-- Order per account: an event's id is taken when its transfer row is inserted, which is after
-- the batch holds its accounts' row locks; a later change of the same account waits for those
-- locks, so it gets a larger id and commits later. The relay publishes committed rows in id
-- order, one relay at a time, so per account the stream has the events in the order of the
-- changes. (Across accounts, a smaller id may commit after a larger one and come later.)
--
-- What each row writes (event_type):
--   INSERT ledger.transfers: hold.created (hold), hold.posted / hold.voided / hold.expired (the
--     row that ends a hold: hold_id set; the hold row's own status update announces nothing
--     more), transfer.reversed (reverses_id set), else transfer.posted, deposit.posted or
--     withdrawal.posted by kind.
--   INSERT ledger.accounts (customer accounts): account.opened.
--   UPDATE OF status ledger.accounts: account.frozen / account.unfrozen.
-- The payload (version 1) is documented in docs/events.md.

CREATE TABLE ledger.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    event_type   text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON ledger.outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON ledger.outbox (published_at) WHERE published_at IS NOT NULL;

-- The nil uuid owns the system accounts; it is nobody to tell.
CREATE FUNCTION ledger.outbox_transfer_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_row    jsonb := to_jsonb(NEW) - 'created_by';
    v_type   text;
    v_owners jsonb;
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
    -- owner_id read through to_jsonb, so this function does not depend on the column's migration
    SELECT coalesce(jsonb_agg(DISTINCT o.owner_id), '[]'::jsonb) INTO v_owners
    FROM ledger.accounts a, LATERAL (SELECT to_jsonb(a)->'owner_id' AS owner_id) o
    WHERE a.id IN (NEW.from_account_id, NEW.to_account_id)
      AND o.owner_id IS NOT NULL
      AND o.owner_id <> '"00000000-0000-0000-0000-000000000000"'::jsonb;
    INSERT INTO ledger.outbox (event_type, payload)
    VALUES (v_type, jsonb_build_object(
        'version', 1,
        'occurred_at', NEW.created_at,
        'account_ids', jsonb_build_array(NEW.from_account_id, NEW.to_account_id),
        'owner_ids', v_owners,
        'transfer', v_row));
    RETURN NULL;
END;
$$;

CREATE FUNCTION ledger.outbox_account_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_row  jsonb := to_jsonb(NEW);
    v_type text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_type := 'account.opened';
    ELSIF NEW.status = 'frozen' THEN
        v_type := 'account.frozen';
    ELSE
        v_type := 'account.unfrozen';
    END IF;
    INSERT INTO ledger.outbox (event_type, payload)
    VALUES (v_type, jsonb_build_object(
        'version', 1,
        'occurred_at', now(),
        'account_ids', jsonb_build_array(NEW.id),
        'owner_ids', CASE WHEN v_row ? 'owner_id' THEN jsonb_build_array(v_row->'owner_id')
                          ELSE '[]'::jsonb END,
        'account', v_row - ARRAY['balance', 'pending_debits', 'pending_credits', 'updated_at']));
    RETURN NULL;
END;
$$;

-- One NOTIFY per statement, not per row: a batch of a thousand transfers wakes the relay once.
CREATE FUNCTION ledger.outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER transfers_outbox AFTER INSERT ON ledger.transfers
    FOR EACH ROW EXECUTE FUNCTION ledger.outbox_transfer_event();
CREATE TRIGGER accounts_outbox_opened AFTER INSERT ON ledger.accounts
    FOR EACH ROW WHEN (NEW.kind = 'customer') EXECUTE FUNCTION ledger.outbox_account_event();
CREATE TRIGGER accounts_outbox_status AFTER UPDATE OF status ON ledger.accounts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.kind = 'customer')
    EXECUTE FUNCTION ledger.outbox_account_event();
CREATE TRIGGER outbox_notify AFTER INSERT ON ledger.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_notify();

COMMENT ON TABLE ledger.outbox IS 'Transactional outbox of ledger events: written by triggers on ledger.transfers and ledger.accounts in the same transaction as the change, copied to the Redis stream {key_prefix}events:ledger by the transfers service''s relay (in id order), deleted by the relay once published longer ago than its retention. Shapes in docs/events.md.';
COMMENT ON COLUMN ledger.outbox.id IS 'Publishing order: the relay publishes the oldest unpublished rows first; per account it follows the order of the changes (taken under the account''s row lock).';
COMMENT ON COLUMN ledger.outbox.event_id IS 'Unique id of the event (UUID, UNIQUE), sent with every delivery of it so receivers can drop duplicates.';
COMMENT ON COLUMN ledger.outbox.event_type IS 'What happened: transfer.posted, deposit.posted, withdrawal.posted, hold.created, hold.posted, hold.voided, hold.expired, transfer.reversed, account.opened, account.frozen or account.unfrozen.';
COMMENT ON COLUMN ledger.outbox.payload IS 'The event as JSON (version 1): occurred_at, account_ids, owner_ids (the owning users, for authorisation; not delivered) and the transfer or account row.';
COMMENT ON COLUMN ledger.outbox.created_at IS 'When the event was written (the transaction''s start time).';
COMMENT ON COLUMN ledger.outbox.published_at IS 'When the relay added the event to the Redis stream; NULL until then (index outbox_unpublished_idx finds those).';
COMMENT ON FUNCTION ledger.outbox_transfer_event() IS 'Trigger (AFTER INSERT on ledger.transfers, each row): writes the row''s event into ledger.outbox with the owners of its two accounts.';
COMMENT ON FUNCTION ledger.outbox_account_event() IS 'Trigger (AFTER INSERT and AFTER UPDATE OF status on ledger.accounts, customer accounts): writes account.opened, account.frozen or account.unfrozen into ledger.outbox.';
COMMENT ON FUNCTION ledger.outbox_notify() IS 'Trigger (AFTER INSERT on ledger.outbox, each statement): NOTIFY ledger_outbox, which wakes the relay when the transaction commits.';
