DROP INDEX ledger.transfers_pending_holds_idx;
DROP TABLE ledger.reconcile_account_totals;
DROP TABLE ledger.reconcile_checkpoint;
