-- Vacuum the outboxes often, whatever their size.
--
-- Why: the relay reads the unpublished rows through a partial index (`... WHERE published_at IS
-- NULL ORDER BY id`), and every event it publishes leaves a dead entry at that index's left edge
-- until a vacuum removes it, so each read walks all of them first: 5 ms a read after 754,000
-- events in the bench (docs/benchmarks.md). With autovacuum's default trigger (20 % of the table
-- dead) an outbox that keeps 7 days of published events would collect millions of such entries
-- between vacuums. A fixed threshold, independent of the table's size, keeps the walk short.
ALTER TABLE ledger.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
ALTER TABLE auth.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
