-- The webhook detail view: its health stats, and the exact body of each logged delivery.
--
-- 1. GET /v1/webhooks/{id}/stats aggregates one webhook's attempts of the last 24 h or 7 d by hour and outcome,
--    with response-time percentiles. This index lets it read only the index (an index-only scan, no heap
--    fetch per row): the webhook's rows of the window in time order, with every column the query reads.
--    Created on the partitioned parent, so every day partition (and each one attached later) gets its own.
CREATE INDEX IF NOT EXISTS delivery_attempts_stats_idx
    ON delivery_attempts (webhook_id, attempted_at) INCLUDE (account_id, outcome, attempt, response_ms);

-- 2. event_payloads.event keeps the event's JSON text as written (json), not jsonb: jsonb reorders object keys,
--    so a body rebuilt from it was not the bytes the receiver got and signed-over. With json the stored text is
--    parsed back into the same key order, and the wire model serialises it to the original bytes (Redeliver,
--    replay, and the delivery detail's request body). Rows stored before this keep jsonb's order.
DO $$
BEGIN
    IF (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = 'event_payloads'::regclass AND attname = 'event') = 'jsonb' THEN
        ALTER TABLE event_payloads ALTER COLUMN event TYPE json USING event::json;
    END IF;
END;
$$;
