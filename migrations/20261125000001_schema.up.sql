-- The whole schema, created at once so services never race on it.
-- Schema `auth` is read and written only by the auth service; schema `ledger` by accounts and transfers.

CREATE SCHEMA auth;
CREATE SCHEMA ledger;

-- ---------------------------------------------------------------------------------------------
-- auth
-- ---------------------------------------------------------------------------------------------
CREATE TABLE auth.users (
    username            text        PRIMARY KEY CHECK (username ~ '^[a-z0-9_]{3,32}$'),
    full_name           text        NOT NULL CHECK (char_length(full_name) BETWEEN 1 AND 100),
    email               text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    hashed_password     text        NOT NULL,
    role                text        NOT NULL DEFAULT 'depositor' CHECK (role IN ('depositor', 'banker')),
    email_verified      boolean     NOT NULL DEFAULT false,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- one user per address, whatever its case
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email));

-- A login session. The refresh token itself is never stored: only its SHA-256.
CREATE TABLE auth.sessions (
    id             uuid        PRIMARY KEY,
    username       text        NOT NULL REFERENCES auth.users (username) ON DELETE CASCADE ON UPDATE CASCADE,
    user_agent     text        NOT NULL DEFAULT '',
    client_ip      text        NOT NULL DEFAULT '',
    blocked        boolean     NOT NULL DEFAULT false,
    blocked_reason text,
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_username_idx ON auth.sessions (username);

-- Every refresh token a session has had. `rotated_at` NULL marks the current one; presenting a
-- rotated one is reuse (RFC 9700) and revokes the session.
CREATE TABLE auth.refresh_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id  uuid        NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    rotated_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);
-- at most one current token per session
CREATE UNIQUE INDEX refresh_tokens_one_current ON auth.refresh_tokens (session_id) WHERE rotated_at IS NULL;

CREATE TABLE auth.verify_emails (
    id          bigserial   PRIMARY KEY,
    username    text        NOT NULL REFERENCES auth.users (username) ON DELETE CASCADE ON UPDATE CASCADE,
    email       text        NOT NULL,
    secret_code text        NOT NULL CHECK (char_length(secret_code) >= 32),
    used        boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX verify_emails_username_idx ON auth.verify_emails (username, id DESC);

-- Transactional outbox: written in the same transaction as the business change, moved to a Redis
-- Stream by the relay. `id` gives the publishing order.
CREATE TABLE auth.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON auth.outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON auth.outbox (published_at) WHERE published_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- ledger
-- ---------------------------------------------------------------------------------------------
-- `owner` is a username; there is no foreign key into `auth` on purpose: each service owns its
-- schema and may live in its own database later.
CREATE TABLE ledger.accounts (
    id            bigserial   PRIMARY KEY,
    owner         text        NOT NULL,
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind          text        NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'system')),
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    frozen_reason text,
    balance       bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- only the bank's cash account may go below zero
    CONSTRAINT customer_balance_non_negative CHECK (kind = 'system' OR balance >= 0),
    CONSTRAINT one_account_per_owner_and_currency UNIQUE (owner, currency)
);
CREATE UNIQUE INDEX accounts_one_system_per_currency ON ledger.accounts (currency) WHERE kind = 'system';
CREATE INDEX accounts_owner_idx ON ledger.accounts (owner, id DESC);
CREATE INDEX accounts_list_idx ON ledger.accounts (id DESC);

CREATE TABLE ledger.transfers (
    id              bigserial   PRIMARY KEY,
    from_account_id bigint      NOT NULL REFERENCES ledger.accounts (id),
    to_account_id   bigint      NOT NULL REFERENCES ledger.accounts (id),
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind            text        NOT NULL CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transfer_between_two_accounts CHECK (from_account_id <> to_account_id)
);
CREATE INDEX transfers_from_idx ON ledger.transfers (from_account_id, id DESC);
CREATE INDEX transfers_to_idx ON ledger.transfers (to_account_id, id DESC);

CREATE TABLE ledger.entries (
    id            bigserial   PRIMARY KEY,
    account_id    bigint      NOT NULL REFERENCES ledger.accounts (id),
    transfer_id   bigint      NOT NULL REFERENCES ledger.transfers (id),
    amount        bigint      NOT NULL CHECK (amount <> 0),
    balance_after bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_account_idx ON ledger.entries (account_id, id DESC);
CREATE INDEX entries_transfer_idx ON ledger.entries (transfer_id);

-- Idempotency keys (Stripe semantics), scoped per user. `request_hash` is a digest of the
-- request's parameters: the same key with other parameters is refused.
CREATE TABLE ledger.idempotency_keys (
    username     text        NOT NULL,
    key          text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash bytea       NOT NULL,
    transfer_id  bigint      NOT NULL REFERENCES ledger.transfers (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, key)
);
CREATE INDEX idempotency_keys_created_idx ON ledger.idempotency_keys (created_at);
