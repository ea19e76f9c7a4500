-- Puts back the transfer event trigger function of 20261202000300_ledger_events.up.sql (without
-- from_owner_id / to_owner_id) and its comments.
CREATE OR REPLACE FUNCTION ledger.outbox_transfer_event() RETURNS trigger
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
COMMENT ON COLUMN ledger.outbox.payload IS 'The event as JSON (version 1): occurred_at, account_ids, owner_ids (the owning users, for authorisation; not delivered) and the transfer or account row.';
COMMENT ON FUNCTION ledger.outbox_transfer_event() IS 'Trigger (AFTER INSERT on ledger.transfers, each row): writes the row''s event into ledger.outbox with the owners of its two accounts.';
