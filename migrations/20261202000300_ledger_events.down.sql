-- Takes the ledger events of 20261202000300_ledger_events.up.sql away: the triggers, their
-- functions and the outbox (with any event not yet published).
DROP TRIGGER outbox_notify ON ledger.outbox;
DROP TRIGGER accounts_outbox_status ON ledger.accounts;
DROP TRIGGER accounts_outbox_opened ON ledger.accounts;
DROP TRIGGER transfers_outbox ON ledger.transfers;
DROP FUNCTION ledger.outbox_notify();
DROP FUNCTION ledger.outbox_account_event();
DROP FUNCTION ledger.outbox_transfer_event();
DROP TABLE ledger.outbox;
