-- The outboxes are vacuumed by autovacuum's defaults again.
ALTER TABLE ledger.outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
ALTER TABLE auth.outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
