-- "You received money" emails (issue 21): the user's opt-out, and what the mailer knows of users.
--
-- auth: each user says whether they want the email (default yes) and counts the changes of what
-- the mailer needs to know (address, its verification, the preference, the name), so the mailer,
-- which learns them from `user.contact_updated` events that may arrive out of order, keeps the
-- newest (the higher version wins; a replayed event changes nothing).
ALTER TABLE auth.users
    ADD COLUMN notify_money_received boolean NOT NULL DEFAULT true,
    ADD COLUMN contact_version       bigint  NOT NULL DEFAULT 1 CHECK (contact_version > 0);
COMMENT ON COLUMN auth.users.notify_money_received IS 'Whether the mailer sends this user a "you received money" email when one of their accounts is credited by someone else (default true); set by UpdateUser (notify_money_received), shown by GetUser.';
COMMENT ON COLUMN auth.users.contact_version IS 'Counts the changes of email, email_verified, full_name and notify_money_received (1 at sign-up). Each change writes a user.contact_updated event carrying it; the mailer keeps the event with the highest version per user.';

-- mailer: the recipients of "money received" emails, kept from auth's user events (event-carried
-- state: the mailer calls no other service). Written only by the mailer.
CREATE SCHEMA mailer;
COMMENT ON SCHEMA mailer IS 'The mailer''s own state: who may get a "money received" email, learned from auth''s user events.';
CREATE TABLE mailer.recipients (
    user_id               uuid        PRIMARY KEY,
    email                 text,
    full_name             text,
    email_verified        boolean     NOT NULL DEFAULT false,
    notify_money_received boolean     NOT NULL DEFAULT false,
    version               bigint      NOT NULL,
    deleted               boolean     NOT NULL DEFAULT false,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recipients_contact_or_deleted CHECK (deleted OR (email IS NOT NULL AND full_name IS NOT NULL)),
    CONSTRAINT recipients_deleted_forgets CHECK (NOT deleted OR (email IS NULL AND full_name IS NULL))
);
COMMENT ON TABLE mailer.recipients IS 'One row per user the mailer has heard of: upserted from user.contact_updated events (a row is replaced only by a higher version), turned into a tombstone by user.deleted. The "money received" email goes only to a row that is not deleted, has email_verified and notify_money_received.';
COMMENT ON COLUMN mailer.recipients.user_id IS 'auth.users.id (no foreign key: another service''s table); the to_owner_id of ledger events.';
COMMENT ON COLUMN mailer.recipients.email IS 'The user''s current address as of `version`; NULL once the user is deleted (forgotten).';
COMMENT ON COLUMN mailer.recipients.full_name IS 'The name the email greets; NULL once the user is deleted.';
COMMENT ON COLUMN mailer.recipients.email_verified IS 'Whether that address is verified (no email goes to an unverified one).';
COMMENT ON COLUMN mailer.recipients.notify_money_received IS 'The user''s choice: false means no "money received" email.';
COMMENT ON COLUMN mailer.recipients.version IS 'auth.users.contact_version of the event this row holds; a tombstone has the largest bigint, so no older event brings a deleted user back.';
COMMENT ON COLUMN mailer.recipients.deleted IS 'The user was deleted (user.deleted): a tombstone without contact data.';
COMMENT ON COLUMN mailer.recipients.updated_at IS 'When the mailer last wrote the row.';

-- Backfill: every existing user once as an event, so the mailer knows the users from before this
-- migration (auth's relay publishes these like any other event).
INSERT INTO auth.outbox (event_id, event_type, payload)
SELECT gen_random_uuid(), 'user.contact_updated', jsonb_build_object(
           'user_id', id,
           'username', username,
           'full_name', full_name,
           'email', email,
           'email_verified', email_verified,
           'notify_money_received', notify_money_received,
           'version', contact_version)
  FROM auth.users
 ORDER BY created_at, id;
