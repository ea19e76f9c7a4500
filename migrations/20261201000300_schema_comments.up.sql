-- What every schema, table, column and ledger function holds, in the catalog itself, so that
-- `cargo xtask schema-docs` can write docs/schema.md from the live schema (and CI can check it has
-- not drifted). Each comment says what the object holds, its unit (money is always a bigint of
-- minor units of the row's currency: cents, pence) and what guards it (constraints, who writes it).
-- A table or column added later without a comment fails `cargo xtask schema-docs`.
-- Comments may use Markdown code spans (`...`): docs/schema.md shows them as written.

COMMENT ON SCHEMA auth IS 'Identity: users, login sessions, refresh tokens, email verification and the outbox of user events. Read and written only by the auth service.';
COMMENT ON SCHEMA ledger IS 'The money: accounts, transfers (including holds), double-entry lines and idempotency keys. Accounts are opened and frozen by the accounts service; money moves only through ledger.transfer_batch, called by the transfers service.';

-- ---------------------------------------------------------------------------------------------
-- auth
-- ---------------------------------------------------------------------------------------------
COMMENT ON TABLE auth.users IS 'One row per user. Inserted by sign-up (role depositor) or the operator command `auth create-user` (the only way to make a banker); updated by UpdateUser and email verification. Never deleted by the services.';
COMMENT ON COLUMN auth.users.username IS 'Login name and the identity in access tokens; CHECK `^[a-z0-9_]{3,32}$`. Sessions and verifications follow a change by ON UPDATE CASCADE; ledger.accounts.owner and ledger.transfers.created_by hold it without a foreign key.';
COMMENT ON COLUMN auth.users.full_name IS 'Display name, 1 to 100 characters (CHECK).';
COMMENT ON COLUMN auth.users.email IS 'Email address, 3 to 254 characters (CHECK); unique whatever its case (index users_email_key on lower(email)). Changing it sets email_verified back to false.';
COMMENT ON COLUMN auth.users.hashed_password IS 'argon2id hash of the password as a PHC string (algorithm, cost, salt, hash); the password itself is never stored.';
COMMENT ON COLUMN auth.users.role IS 'depositor (default, every sign-up) or banker (CHECK). Bankers may deposit, withdraw, freeze accounts and end any hold; the services check the role from the access token.';
COMMENT ON COLUMN auth.users.email_verified IS 'True once the user followed a verification link for the current email address; reset to false when the address changes.';
COMMENT ON COLUMN auth.users.password_changed_at IS 'When hashed_password last changed (sign-up, or UpdateUser with a new password, which also blocks the user''s other sessions).';
COMMENT ON COLUMN auth.users.created_at IS 'When the user signed up or was created by the operator.';

COMMENT ON TABLE auth.sessions IS 'One login session: the family of refresh tokens issued from one login. Inserted at login; blocked (never deleted) on logout, password change or refresh-token reuse; deleted with its user (ON DELETE CASCADE).';
COMMENT ON COLUMN auth.sessions.id IS 'Session id (UUID), carried in the access tokens issued for it.';
COMMENT ON COLUMN auth.sessions.username IS 'The user who logged in; foreign key to auth.users (cascades on delete and rename).';
COMMENT ON COLUMN auth.sessions.user_agent IS 'User-Agent the client sent at login; empty string when it sent none.';
COMMENT ON COLUMN auth.sessions.client_ip IS 'Client IP address as seen at login; empty string when unknown.';
COMMENT ON COLUMN auth.sessions.blocked IS 'True once the session is revoked: its refresh tokens are refused from then on. Set only by the auth service, never set back to false.';
COMMENT ON COLUMN auth.sessions.blocked_reason IS 'Why the session was blocked (logged_out, password_changed, refresh_token_reused); NULL while it is not blocked. The first reason is kept.';
COMMENT ON COLUMN auth.sessions.expires_at IS 'After this instant the session''s refresh tokens are refused; renewing does not extend it.';
COMMENT ON COLUMN auth.sessions.created_at IS 'When the user logged in.';

COMMENT ON TABLE auth.refresh_tokens IS 'Every refresh token a session has had. Inserted at login and at each renewal by the auth service; deleted with the session (ON DELETE CASCADE). At most one current token per session (index refresh_tokens_one_current).';
COMMENT ON COLUMN auth.refresh_tokens.token_hash IS 'SHA-256 of the refresh token, exactly 32 bytes (CHECK); the token itself is never stored.';
COMMENT ON COLUMN auth.refresh_tokens.session_id IS 'The session the token belongs to; foreign key to auth.sessions (cascades on delete).';
COMMENT ON COLUMN auth.refresh_tokens.rotated_at IS 'NULL for the session''s current token; set when the token is renewed. Presenting a rotated token is reuse (RFC 9700) and blocks the whole session.';
COMMENT ON COLUMN auth.refresh_tokens.created_at IS 'When the token was issued.';

COMMENT ON TABLE auth.verify_emails IS 'One email-verification code sent to a user (at sign-up and on each resend). Inserted by the auth service in the same transaction as its outbox event; marked used when the link is followed.';
COMMENT ON COLUMN auth.verify_emails.id IS 'Verification id, the email_id of the link in the email.';
COMMENT ON COLUMN auth.verify_emails.username IS 'The user to verify; foreign key to auth.users (cascades on delete and rename).';
COMMENT ON COLUMN auth.verify_emails.email IS 'The address the code was sent to. Following the link verifies the user only if this is still their address.';
COMMENT ON COLUMN auth.verify_emails.secret_code IS 'The random secret of the link (256 bits, base64url), at least 32 characters (CHECK); compared in constant time.';
COMMENT ON COLUMN auth.verify_emails.used IS 'True once the link was followed; a code verifies at most once.';
COMMENT ON COLUMN auth.verify_emails.created_at IS 'When the code was made.';
COMMENT ON COLUMN auth.verify_emails.expires_at IS 'After this instant the code is refused (created_at plus the configured verification code TTL).';

COMMENT ON TABLE auth.outbox IS 'Transactional outbox of user events: inserted in the same transaction as the change it announces, copied to the Redis stream by the auth service''s relay (in id order), and deleted by the relay once published longer ago than its retention.';
COMMENT ON COLUMN auth.outbox.id IS 'Publishing order: the relay publishes the oldest unpublished rows first.';
COMMENT ON COLUMN auth.outbox.event_id IS 'Unique id of the event (UUID, UNIQUE), sent with it so consumers such as the mailer can drop duplicates.';
COMMENT ON COLUMN auth.outbox.event_type IS 'What happened, e.g. user.created or user.verification_resent.';
COMMENT ON COLUMN auth.outbox.payload IS 'The event''s body as JSON; a W3C traceparent in it is sent as a stream field of its own.';
COMMENT ON COLUMN auth.outbox.created_at IS 'When the event was written.';
COMMENT ON COLUMN auth.outbox.published_at IS 'When the relay added the event to the Redis stream; NULL until then (index outbox_unpublished_idx finds those).';

-- ---------------------------------------------------------------------------------------------
-- ledger
-- ---------------------------------------------------------------------------------------------
COMMENT ON TABLE ledger.accounts IS 'One account per owner and currency. Customer accounts are opened by the accounts service, the system account of a currency by ledger.ensure_system_account. The balance and pending amounts are written only by ledger.transfer_batch; status and frozen_reason only by the accounts service (freeze and unfreeze).';
COMMENT ON COLUMN ledger.accounts.id IS 'Account id.';
COMMENT ON COLUMN ledger.accounts.owner IS 'Username of the owner (no foreign key into auth on purpose: each service owns its schema); @system for the bank''s system accounts. UNIQUE with currency.';
COMMENT ON COLUMN ledger.accounts.currency IS 'ISO 4217 currency code, three capital letters (CHECK `^[A-Z]{3}$`); every amount on the account is in minor units of it.';
COMMENT ON COLUMN ledger.accounts.kind IS 'customer (default) or system (CHECK): the bank''s cash account of a currency, one per currency (index accounts_one_system_per_currency), the only kind allowed below zero; deposits come from it, withdrawals go to it.';
COMMENT ON COLUMN ledger.accounts.status IS 'active (default) or frozen (CHECK). A frozen account neither sends nor receives money; holds on it can still be voided or expire.';
COMMENT ON COLUMN ledger.accounts.frozen_reason IS 'Why a banker froze the account; NULL while it is active.';
COMMENT ON COLUMN ledger.accounts.balance IS 'Posted balance in minor units of currency: always the sum of the account''s ledger.entries amounts (checked by reconcile). Never below zero for a customer (CHECK customer_balance_non_negative). Written only by ledger.transfer_batch.';
COMMENT ON COLUMN ledger.accounts.created_at IS 'When the account was opened.';
COMMENT ON COLUMN ledger.accounts.updated_at IS 'When the balance, the pending amounts or the status last changed.';
COMMENT ON COLUMN ledger.accounts.pending_debits IS 'Minor units reserved by open holds from this account (the sum of their amounts, checked by reconcile); CHECK >= 0. The available balance is balance - pending_debits, never below zero for a customer (CHECK customer_available_non_negative). Written only by ledger.transfer_batch.';
COMMENT ON COLUMN ledger.accounts.pending_credits IS 'Minor units announced by open holds to this account (the sum of their amounts, checked by reconcile); CHECK >= 0. Not spendable until a hold is posted. Written only by ledger.transfer_batch.';

COMMENT ON TABLE ledger.transfers IS 'One row per money movement, hold, or end of a hold (post, void, expiry). Written only by ledger.transfer_batch: inserted once, and a hold''s status changes once when it ends; never deleted.';
COMMENT ON COLUMN ledger.transfers.id IS 'Transfer id.';
COMMENT ON COLUMN ledger.transfers.from_account_id IS 'The account debited (the system account for a deposit); foreign key to ledger.accounts. CHECK transfer_between_two_accounts: never the same as to_account_id.';
COMMENT ON COLUMN ledger.transfers.to_account_id IS 'The account credited (the system account for a withdrawal); foreign key to ledger.accounts.';
COMMENT ON COLUMN ledger.transfers.amount IS 'Minor units of currency, > 0 (CHECK). For a hold the amount reserved; for a post the amount moved (at most the hold''s); for a void or an expiry the amount released.';
COMMENT ON COLUMN ledger.transfers.currency IS 'ISO 4217 currency code (CHECK `^[A-Z]{3}$`); the currency of both accounts.';
COMMENT ON COLUMN ledger.transfers.kind IS 'transfer (between customers; also every hold and end of a hold), deposit (from the system account) or withdrawal (to the system account) (CHECK). Deposits and withdrawals are bankers'' only.';
COMMENT ON COLUMN ledger.transfers.created_by IS 'Username of the user who asked for it (no foreign key into auth).';
COMMENT ON COLUMN ledger.transfers.created_at IS 'When it was applied: the clock after the batch holds its account locks.';
COMMENT ON COLUMN ledger.transfers.status IS 'posted (default), pending, voided or expired (CHECK). A hold is pending until it ends, then takes the status of what ended it; what ends a hold is posted, voided or expired; every other transfer is posted (CHECK transfer_status_fits).';
COMMENT ON COLUMN ledger.transfers.hold IS 'True for a hold (a two-phase transfer): it reserves its amount (pending_debits/pending_credits) and writes no entries until it is posted.';
COMMENT ON COLUMN ledger.transfers.hold_id IS 'On a post, void or expiry: the hold it ends (foreign key to ledger.transfers); NULL otherwise. Each hold is ended at most once (unique index transfers_hold_ended_once).';
COMMENT ON COLUMN ledger.transfers.expires_at IS 'A hold''s deadline: past it, the transfers service''s sweep expires the hold. NULL for a hold without one and for every other transfer (CHECK only_holds_expire).';

COMMENT ON TABLE ledger.entries IS 'Double-entry lines: a posted transfer that moves money (not a hold, a void or an expiry) has exactly two, -amount on the account debited and +amount on the account credited, summing to zero (checked by reconcile). Written only by ledger.transfer_batch; never updated or deleted.';
COMMENT ON COLUMN ledger.entries.id IS 'Entry id; per account it rises with created_at.';
COMMENT ON COLUMN ledger.entries.account_id IS 'The account the line is on; foreign key to ledger.accounts.';
COMMENT ON COLUMN ledger.entries.transfer_id IS 'The transfer that wrote the line; foreign key to ledger.transfers.';
COMMENT ON COLUMN ledger.entries.amount IS 'Signed minor units of the account''s currency: negative on the account debited, positive on the account credited; never zero (CHECK).';
COMMENT ON COLUMN ledger.entries.balance_after IS 'The account''s posted balance just after this line, in minor units. The balance at an instant T is the balance_after of the account''s last entry at or before T.';
COMMENT ON COLUMN ledger.entries.created_at IS 'When the line was written: the clock after the batch holds its account locks, so per account it rises with id (index entries_account_time_idx serves balances at an instant).';

COMMENT ON TABLE ledger.idempotency_keys IS 'Idempotency keys (Stripe semantics), one per user and key. Inserted by ledger.transfer_batch with the transfer the key first made; deleted by the transfers service''s cleanup once older than its retention.';
COMMENT ON COLUMN ledger.idempotency_keys.username IS 'The user the key belongs to (keys are scoped per user).';
COMMENT ON COLUMN ledger.idempotency_keys.key IS 'The client''s idempotency key (request_id), 1 to 255 characters (CHECK).';
COMMENT ON COLUMN ledger.idempotency_keys.request_hash IS 'SHA-256 of the request''s parameters (not the key). The same key with another hash is refused (idempotency_key_reused); with the same hash it replays transfer_id.';
COMMENT ON COLUMN ledger.idempotency_keys.transfer_id IS 'The transfer the key''s first request made; foreign key to ledger.transfers.';
COMMENT ON COLUMN ledger.idempotency_keys.created_at IS 'When the key was stored; the cleanup deletes keys older than the retention.';

COMMENT ON FUNCTION ledger.ensure_system_account(text) IS 'Returns the id of the system account (the bank''s cash account, owner @system) of a currency, creating it if missing. Idempotent and safe to call concurrently; called by the accounts and transfers services at start-up and by ledger.transfer_batch.';
COMMENT ON FUNCTION ledger.transfer_batch(text[], text[], bigint[], bigint[], bigint[], text[], bigint, text[], bytea[], boolean[], bigint[], timestamptz[], integer) IS 'The only way money moves: applies a batch of operations (transfer, deposit, withdrawal, hold, post, void, expire; element i of every array is item i) in one statement. Takes its locks in one global order (idempotency keys, hold rows, accounts by id), checks each item against the running balances (a customer''s available balance never goes below zero), reports a business failure in that item''s error column without failing the others, and writes accounts, transfers, entries and idempotency keys once each. Its lock waits are bounded by p_lock_timeout_ms (lock_timeout for its transaction). Amounts are minor units.';
