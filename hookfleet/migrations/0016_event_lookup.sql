-- "Where did event X go" and the delivery log searched across an account's webhooks
-- (docs/architecture.md#api: GET /v1/events/{event_id}, GET /v1/deliveries).
--
-- delivery_attempts is partitioned by day (0007): an index made on the parent is made on every day partition,
-- and every partition made later gets it when it is attached (hookfleet_create_log_day). Each is one
-- transaction's plain CREATE INDEX, so the log's writers wait while a large existing log is indexed
-- (deploy/README.md#migrations-and-rollouts; measured in bench/RESULTS.md "Delivery log search").
--
-- 1. The account's log, newest first, with the same keyset order as a webhook's log: the first page, a time
--    range, and filters that match many rows (an event type, success) read one range of it per day, in order.
CREATE INDEX IF NOT EXISTS delivery_attempts_account_idx
    ON delivery_attempts (account_id, attempted_at DESC, attempt_id DESC);

-- 2. By event type: a type the account rarely gets (or never) is read from its own range instead of a scan of
--    every row of the account (the settings page filters by type).
CREATE INDEX IF NOT EXISTS delivery_attempts_account_type_idx
    ON delivery_attempts (account_id, event_type, attempted_at DESC, attempt_id DESC);

-- 3. Failed attempts only (partial indexes, so a 2xx costs the writers nothing here), by outcome and by HTTP
--    status: a search for an outcome other than success, or for a failed status (a status implies its outcome,
--    delivery/outcome.py, and the API states it), reads only those failures, in order, instead of stepping over
--    every success of the account.
CREATE INDEX IF NOT EXISTS delivery_attempts_account_failed_idx
    ON delivery_attempts (account_id, outcome, attempted_at DESC, attempt_id DESC)
    WHERE outcome <> 'success';
CREATE INDEX IF NOT EXISTS delivery_attempts_account_failed_status_idx
    ON delivery_attempts (account_id, status_code, attempted_at DESC, attempt_id DESC)
    WHERE outcome <> 'success';

-- 4. The dead letters and the replays of one event: both tables were keyed by webhook and by replay only.
CREATE INDEX IF NOT EXISTS dead_letters_event_idx ON dead_letters (event_id);
CREATE INDEX IF NOT EXISTS replay_events_event_idx ON replay_events (event_id);
