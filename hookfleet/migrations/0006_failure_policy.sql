-- Failure policy (docs/architecture.md#failure-policy): why and since when a webhook is off, since when it
-- has been failing, when it was last switched on by hand, its custom request headers, the account's
-- notification address, and the outbox of operational events (webhook.failing / .recovered / .disabled).
ALTER TABLE webhooks
    ADD COLUMN disabled_reason text CHECK (disabled_reason IN ('gone', 'failing', 'manual')),
    ADD COLUMN disabled_at timestamptz,
    -- When the webhook last went from healthy to failing (NULL while healthy): auto-disable counts from here.
    ADD COLUMN failing_since timestamptz,
    -- When it was last switched on: a 410 or a failure older than this does not switch it off again.
    ADD COLUMN enabled_at timestamptz,
    -- AES-GCM ciphertext of the JSON map of custom headers (hookfleet/secretbox.py), like the secret.
    ADD COLUMN headers_ciphertext bytea;
UPDATE webhooks SET failing_since = status_changed_at WHERE status = 'failing';
UPDATE webhooks SET disabled_reason = 'manual', disabled_at = updated_at WHERE NOT active;

ALTER TABLE accounts ADD COLUMN notification_email text CHECK (char_length(notification_email) <= 254);

-- Written in the same transaction as the state change that causes it, so a change notifies exactly when
-- it is committed; a recorder sends and deletes the rows it locks (SKIP LOCKED: two recorders never send
-- the same row).
CREATE TABLE operational_outbox (
    event_id      text PRIMARY KEY,
    account_id    text NOT NULL,
    event         jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
