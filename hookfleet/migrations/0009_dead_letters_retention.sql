-- Dead letters go with the log: each holds the whole event (so it can be redriven), so keeping them past
-- HOOKFLEET_RETENTION_DAYS kept payloads the retention says are gone. `hookfleet db prune` and the recorder's
-- maintenance delete those older than the horizon, by `dead_at`, in bounded batches (hookfleet/retention.py);
-- this index serves that range (the existing one leads with webhook_id).
CREATE INDEX IF NOT EXISTS dead_letters_dead_at_idx ON dead_letters (dead_at);
