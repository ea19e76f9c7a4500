-- Incremental reconciliation (issue 18, "cost as the ledger grows"): Reconcile used to sum every
-- entry of the history on each run. It now keeps a checkpoint: per account, the sum of its
-- entries up to an entry id watermark, verified by an earlier run; a run checks each balance
-- against checkpoint + the entries since, checks the transfers, holds, transactions and reversals
-- made since the previous watermarks, and advances the checkpoint. The full check rebuilds the
-- checkpoint from every entry. Only the transfers service's Reconcile reads or writes these
-- tables; the batch never touches them (no foreign key either: the key-share lock a foreign key
-- check takes on ledger.accounts would wait for the batch's row locks, and the batch for it).

CREATE TABLE ledger.reconcile_checkpoint (
    id                    boolean     PRIMARY KEY DEFAULT true CHECK (id),
    entry_watermark       bigint      NOT NULL CHECK (entry_watermark >= 0),
    transfer_watermark    bigint      NOT NULL CHECK (transfer_watermark >= 0),
    transaction_watermark bigint      NOT NULL CHECK (transaction_watermark >= 0),
    verified_at           timestamptz NOT NULL DEFAULT now(),
    full_verified_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE ledger.reconcile_checkpoint IS 'The one checkpoint of the incremental Reconcile (at most one row): every entry, transfer and transaction with an id at or below its watermarks was committed (or rolled back for good) before the run that wrote it took its snapshot, and was checked by that run or an earlier one. Written only by Reconcile, and only when its run found no violation.';
COMMENT ON COLUMN ledger.reconcile_checkpoint.id IS 'Always true: makes the table hold at most one row.';
COMMENT ON COLUMN ledger.reconcile_checkpoint.entry_watermark IS 'ledger.entries ids at or below this are summed in ledger.reconcile_account_totals; no entry with such an id can still commit (Reconcile waited for every transaction older than its reading of the sequence).';
COMMENT ON COLUMN ledger.reconcile_checkpoint.transfer_watermark IS 'ledger.transfers ids at or below this were checked (two entries, holds ended at most once, reversals within the amount); the next incremental run checks only later ids and the older transfers they end or reverse.';
COMMENT ON COLUMN ledger.reconcile_checkpoint.transaction_watermark IS 'ledger.transactions ids at or below this were checked for all their legs; the next incremental run checks only later ids.';
COMMENT ON COLUMN ledger.reconcile_checkpoint.verified_at IS 'When the run that wrote the watermarks took its snapshot (the last clean Reconcile, full or incremental).';
COMMENT ON COLUMN ledger.reconcile_checkpoint.full_verified_at IS 'When the last clean full Reconcile (every entry summed again) took its snapshot: rows at or below the watermarks changed after it are only caught by the next full run.';

CREATE TABLE ledger.reconcile_account_totals (
    account_id    bigint PRIMARY KEY,
    entries_total bigint NOT NULL,
    entries       bigint NOT NULL CHECK (entries >= 0)
);

COMMENT ON TABLE ledger.reconcile_account_totals IS 'Per account, its entries up to ledger.reconcile_checkpoint.entry_watermark as a verified run summed them. An account without a row had no entry at or below the watermark. Written only by Reconcile.';
COMMENT ON COLUMN ledger.reconcile_account_totals.account_id IS 'The account (ledger.accounts.id; no foreign key, see the migration).';
COMMENT ON COLUMN ledger.reconcile_account_totals.entries_total IS 'Σ ledger.entries.amount of the account with id <= the entry watermark, minor units.';
COMMENT ON COLUMN ledger.reconcile_account_totals.entries IS 'How many entries of the account have id <= the entry watermark.';

-- The holds check reads the open holds of every account on each run; without an index of its
-- own that is a scan of every transfer of the history. Status is already in the predicate of
-- transfers_open_holds_by_expiry, so the status updates that end holds were not HOT before
-- either: this adds no cost of that kind to the batch.
CREATE INDEX transfers_pending_holds_idx ON ledger.transfers (from_account_id, to_account_id)
    INCLUDE (amount) WHERE hold AND status = 'pending';
COMMENT ON INDEX ledger.transfers_pending_holds_idx IS 'The open holds (hold, status pending) with their accounts and amounts: Reconcile compares them with each account''s pending debits and credits without reading the history.';
