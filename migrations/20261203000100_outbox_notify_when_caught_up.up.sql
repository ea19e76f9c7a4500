-- NOTIFY ledger_outbox only when the relay has caught up, not from every writing transaction.
--
-- Why: a transaction that has called pg_notify takes PostgreSQL's one notification-queue lock
-- (a lock on "object 0 of pg_database", AccessExclusiveLock) before its commit and holds it until
-- the commit is done, WAL flush included. Every transaction writing ledger events notified, so
-- their commits ran one at a time: driven by 32 pgbench clients, one transfer per transaction,
-- 20-22 of the 32 backends waited on that lock and the ledger wrote a few hundred transfers a
-- second (docs/benchmarks.md). Now a statement notifies only when the newest older event it can
-- see is already published (or there is none): then the relay may be idle and needs waking.
-- When that event is still unpublished, a relay is at work behind it or will be woken by whoever
-- wrote it; the relay also polls again shortly after every drain that moved rows
-- (crates/platform/src/outbox.rs), which covers a writer that looked just before the relay's
-- last empty read and committed just after it.
CREATE OR REPLACE FUNCTION ledger.outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_new bigint;
    previous_unpublished boolean;
BEGIN
    SELECT min(n.id) INTO first_new FROM new_rows n;
    IF first_new IS NULL THEN
        RETURN NULL;  -- the statement inserted nothing
    END IF;
    SELECT o.published_at IS NULL INTO previous_unpublished
    FROM ledger.outbox o
    WHERE o.id < first_new
    ORDER BY o.id DESC
    LIMIT 1;
    IF previous_unpublished IS NOT TRUE THEN
        PERFORM pg_notify('ledger_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER outbox_notify ON ledger.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON ledger.outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_notify();

COMMENT ON FUNCTION ledger.outbox_notify() IS 'Trigger (AFTER INSERT on ledger.outbox, each statement, transition table new_rows): NOTIFY ledger_outbox, which wakes the relay when the transaction commits, but only when the newest older event is already published (or there is none), so writers do not queue on the notification lock while the relay is busy; the relay polls again shortly after every drain that moved rows.';
