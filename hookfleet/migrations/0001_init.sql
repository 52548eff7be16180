-- Accounts, webhooks, the delivery log and dead letters (docs/architecture.md#tables).

CREATE TABLE accounts (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 hashes; the plaintext is shown once when created.
CREATE TABLE api_keys (
    key_hash      bytea PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    label         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhooks (
    id                   text PRIMARY KEY,
    account_id           text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                 text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    url                  text NOT NULL CHECK (url LIKE 'https://%'),
    events               text[] NOT NULL CHECK (cardinality(events) > 0),
    -- AES-GCM ciphertext of the secret (hookfleet/secretbox.py); never stored in plaintext.
    secret_ciphertext    bytea NOT NULL,
    -- During a rotation the previous secret keeps signing until previous_secret_expires_at.
    previous_secret_ciphertext bytea,
    previous_secret_expires_at timestamptz,
    active               boolean NOT NULL DEFAULT true,
    status               text NOT NULL DEFAULT 'healthy' CHECK (status IN ('healthy', 'failing')),
    status_changed_at    timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_account_idx ON webhooks (account_id);

CREATE TABLE delivery_attempts (
    attempt_id        text PRIMARY KEY,
    event_id          text NOT NULL,
    event_type        text NOT NULL,
    account_id        text NOT NULL,
    webhook_id        text NOT NULL,
    attempt           smallint NOT NULL,
    outcome           text NOT NULL,
    status_code       smallint,
    error             text,
    response_ms       integer,
    response_excerpt  text NOT NULL DEFAULT '',
    attempted_at      timestamptz NOT NULL,
    next_step         text NOT NULL,
    test              boolean NOT NULL DEFAULT false,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
-- "Latest deliveries of a webhook", newest first, with a stable cursor.
CREATE INDEX delivery_attempts_webhook_idx ON delivery_attempts (webhook_id, attempted_at DESC, attempt_id DESC);
CREATE INDEX delivery_attempts_event_idx ON delivery_attempts (event_id);

CREATE TABLE dead_letters (
    event_id       text NOT NULL,
    webhook_id     text NOT NULL,
    account_id     text NOT NULL,
    event_type     text NOT NULL,
    task           jsonb NOT NULL,
    last_error     text,
    dead_at        timestamptz NOT NULL,
    redriven_at    timestamptz,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX dead_letters_webhook_time_idx ON dead_letters (webhook_id, dead_at);

-- Dispatchers keep an in-memory subscription index; this tells them which webhook changed.
CREATE FUNCTION hookfleet_notify_webhook_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hookfleet_webhooks', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER webhooks_notify
    AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION hookfleet_notify_webhook_change();
