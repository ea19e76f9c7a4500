-- Takes 20261202000800_money_received_email.up.sql back: the mailer's recipients, the user's
-- preference and version, and the contact events not yet published (nobody would read them).
DROP SCHEMA mailer CASCADE;
DELETE FROM auth.outbox WHERE event_type = 'user.contact_updated' AND published_at IS NULL;
ALTER TABLE auth.users
    DROP COLUMN contact_version,
    DROP COLUMN notify_money_received;
