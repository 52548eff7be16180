-- An operational outbox row whose sending fails (e.g. a mail the mail library refuses) no longer rolls back
-- and comes back on every start: hookfleet/poison.py marks it `failed` with a short error, tries it again
-- with a bounded backoff at `next_attempt_at`, and gives up (next_attempt_at NULL) after the last try.
-- `published`: its event is on webhooks.events already, so a retry only mails (no second event).
ALTER TABLE operational_outbox
    ADD COLUMN state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    ADD COLUMN published boolean NOT NULL DEFAULT false,
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text CHECK (char_length(last_error) <= 200),
    ADD COLUMN next_attempt_at timestamptz DEFAULT now();
CREATE INDEX IF NOT EXISTS operational_outbox_due_idx ON operational_outbox (next_attempt_at, created_at)
    WHERE next_attempt_at IS NOT NULL;
