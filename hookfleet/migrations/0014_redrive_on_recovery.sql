-- Redrive on recovery (docs/architecture.md#redrive-on-recovery): a webhook that opts in gets the dead letters
-- of its failing spell queued again, oldest first, when it succeeds again.
ALTER TABLE webhooks ADD COLUMN redrive_on_recovery boolean NOT NULL DEFAULT false;

-- The queue: written in the transaction that heals the webhook and marks those dead letters `redriven_at`
-- (so a second recovery never queues them again), drained by the recorders at
-- HOOKFLEET_RECOVERY_REDRIVE_RATE per webhook: a row is due at queued_at + position / rate. A row is deleted in
-- the transaction that sent its task (after the broker acknowledged it), so a recorder crash loses nothing.
CREATE TABLE recovery_redrives (
    webhook_id  text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id    text NOT NULL,
    position    integer NOT NULL,  -- 0, 1, ... in the webhook's queue: oldest dead letter first
    queued_at   timestamptz NOT NULL,
    task        jsonb NOT NULL,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX recovery_redrives_order_idx ON recovery_redrives (webhook_id, position);
