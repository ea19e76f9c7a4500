-- Every statement that writes ledger events notifies again.
CREATE OR REPLACE FUNCTION ledger.outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_outbox', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER outbox_notify ON ledger.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON ledger.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_notify();

COMMENT ON FUNCTION ledger.outbox_notify() IS 'Trigger (AFTER INSERT on ledger.outbox, each statement): NOTIFY ledger_outbox, which wakes the relay when the transaction commits.';
