-- The payload of every event that reached the delivery log, once per event, so that any row of the log
-- can be redelivered ("Redeliver" in the API) byte-for-byte. Filled by the recorder from
-- AttemptRecord.event (ON CONFLICT DO NOTHING); pruned with the log.
CREATE TABLE event_payloads (
    event_id      text PRIMARY KEY,
    account_id    text NOT NULL,
    event         jsonb NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
