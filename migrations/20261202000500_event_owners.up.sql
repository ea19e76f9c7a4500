-- Transfer events name the owner of each side (issue 21, "money received" emails): the mailer
-- writes to the owner of the credited account (`to_owner_id`) and skips a user's move between
-- their own accounts (`from_owner_id` = `to_owner_id`). Both are user ids, NULL for a system
-- account (the nil uuid owns those; it is nobody to tell). `owner_ids` (the distinct owners, used
-- by the webhooks service for authorisation) stays as it was. The payload stays version 1: the
-- two keys are additions, and like `owner_ids` they are not delivered to webhook receivers.
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
COMMENT ON COLUMN ledger.outbox.payload IS 'The event as JSON (version 1): occurred_at, account_ids, owner_ids (the owning users, for authorisation; not delivered), for transfers from_owner_id and to_owner_id (the owner of each side, NULL for a system account; the mailer''s "money received" email) and the transfer or account row.';
COMMENT ON FUNCTION ledger.outbox_transfer_event() IS 'Trigger (AFTER INSERT on ledger.transfers, each row): writes the row''s event into ledger.outbox with the owners of its two accounts (owner_ids, from_owner_id, to_owner_id).';
