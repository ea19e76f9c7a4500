-- Webhooks (issue 21): endpoints that want ledger events, one delivery per endpoint and event,
-- and the log of every attempt. Read and written only by the webhooks service, which fills
-- deliveries from the ledger-events stream (`{key_prefix}events:ledger`) and sends them.

CREATE SCHEMA webhooks;

CREATE TABLE webhooks.endpoints (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id     uuid        NOT NULL,
    url          text        NOT NULL CHECK (char_length(url) BETWEEN 8 AND 2048),
    secret       text        NOT NULL CHECK (char_length(secret) >= 32),
    all_accounts boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_owner_idx ON webhooks.endpoints (owner_id, created_at DESC);
CREATE INDEX endpoints_all_accounts_idx ON webhooks.endpoints (id) WHERE all_accounts;

CREATE TABLE webhooks.deliveries (
    id              bigserial   PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhooks.endpoints (id) ON DELETE CASCADE,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT one_delivery_per_endpoint_and_event UNIQUE (endpoint_id, event_id)
);
CREATE INDEX deliveries_due_idx ON webhooks.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint_idx ON webhooks.deliveries (endpoint_id, id DESC);
CREATE INDEX deliveries_dead_idx ON webhooks.deliveries (endpoint_id, id DESC) WHERE status = 'dead';

CREATE TABLE webhooks.attempts (
    id           bigserial   PRIMARY KEY,
    delivery_id  bigint      NOT NULL REFERENCES webhooks.deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  bigint      NOT NULL CHECK (duration_ms >= 0)
);
CREATE INDEX attempts_delivery_idx ON webhooks.attempts (delivery_id, id);

COMMENT ON SCHEMA webhooks IS 'Webhook endpoints, their deliveries of ledger events and the log of attempts. Read and written only by the webhooks service.';
COMMENT ON TABLE webhooks.endpoints IS 'One URL that wants ledger events: a depositor''s gets the events of their own accounts, a banker''s may get all (all_accounts). Inserted by CreateEndpoint, removed by DeleteEndpoint (with its deliveries).';
COMMENT ON COLUMN webhooks.endpoints.id IS 'Endpoint id (random uuid).';
COMMENT ON COLUMN webhooks.endpoints.owner_id IS 'Id of the user who registered it (auth.users.id, no foreign key: each service owns its schema); only they read its deliveries.';
COMMENT ON COLUMN webhooks.endpoints.url IS 'Where events are POSTed: http(s) only, 8 to 2048 characters (CHECK); a loopback, private or link-local destination is refused at registration and at connect time unless the operator allows it (delivery.allow_private_destinations).';
COMMENT ON COLUMN webhooks.endpoints.secret IS 'The signing secret (whsec_ and 32 random bytes in hex), shown once at registration; every delivery is signed with HMAC-SHA256 under it (docs/events.md). Kept in clear because signing needs it.';
COMMENT ON COLUMN webhooks.endpoints.all_accounts IS 'True: every ledger event (bankers only). False: the events of accounts the owner owns (the event''s owner_ids).';
COMMENT ON COLUMN webhooks.endpoints.created_at IS 'When it was registered.';
COMMENT ON TABLE webhooks.deliveries IS 'One ledger event to send to one endpoint, at least once. Inserted by the stream consumer (ON CONFLICT DO NOTHING on one_delivery_per_endpoint_and_event, so a duplicate stream entry makes no second delivery); sent and retried by the deliverer with exponential backoff; dead after delivery.max_attempts failures; ReplayDelivery makes a dead one pending again.';
COMMENT ON COLUMN webhooks.deliveries.id IS 'Delivery id; per endpoint it rises with arrival.';
COMMENT ON COLUMN webhooks.deliveries.endpoint_id IS 'The endpoint it goes to; foreign key to webhooks.endpoints (cascades on delete).';
COMMENT ON COLUMN webhooks.deliveries.event_id IS 'The ledger event''s id (ledger.outbox.event_id), sent as the body''s id and in the Webhook-Id header so receivers drop duplicates.';
COMMENT ON COLUMN webhooks.deliveries.event_type IS 'The event''s type, e.g. transfer.posted (docs/events.md).';
COMMENT ON COLUMN webhooks.deliveries.body IS 'The exact JSON body sent (and signed) on every attempt.';
COMMENT ON COLUMN webhooks.deliveries.status IS 'pending (to send or retry), delivered (a 2xx answer) or dead (every attempt failed; see ReplayDelivery) (CHECK).';
COMMENT ON COLUMN webhooks.deliveries.attempts IS 'Attempts made so far (each logged in webhooks.attempts); reset by a replay.';
COMMENT ON COLUMN webhooks.deliveries.next_attempt_at IS 'When a pending delivery is due: now on arrival, then after each failure delivery.backoff_initial_ms doubling up to delivery.backoff_max_ms; while an attempt is in flight, the end of its lease (so no other replica takes it).';
COMMENT ON COLUMN webhooks.deliveries.last_error IS 'What the last failed attempt met (an HTTP status or a network error); NULL before any failure.';
COMMENT ON COLUMN webhooks.deliveries.created_at IS 'When the consumer took the event for this endpoint.';
COMMENT ON COLUMN webhooks.deliveries.delivered_at IS 'When the receiver answered 2xx; NULL until then.';
COMMENT ON TABLE webhooks.attempts IS 'The delivery log: one row per attempt to send a delivery, written by the deliverer; read by ListDeliveryAttempts.';
COMMENT ON COLUMN webhooks.attempts.id IS 'Attempt id; per delivery it rises with time.';
COMMENT ON COLUMN webhooks.attempts.delivery_id IS 'The delivery tried; foreign key to webhooks.deliveries (cascades on delete).';
COMMENT ON COLUMN webhooks.attempts.attempted_at IS 'When the attempt ended.';
COMMENT ON COLUMN webhooks.attempts.status_code IS 'The receiver''s HTTP status; NULL when no answer came (refused destination, timeout, connection error).';
COMMENT ON COLUMN webhooks.attempts.error IS 'Why the attempt failed (non-2xx, timeout, refused destination); NULL when it succeeded.';
COMMENT ON COLUMN webhooks.attempts.duration_ms IS 'How long the attempt took, in milliseconds.';
