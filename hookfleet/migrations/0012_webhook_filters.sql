-- A webhook's filter (schemas/event_filter.py): a CEL expression over the event, checked by the API when it
-- is saved, evaluated by the dispatcher's fan-out after the event-type match. NULL: every event of the
-- subscribed types. The length bound is the API's (1,000 characters), kept here too.
ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS filter text CHECK (char_length(filter) <= 1000);

-- The filter preview reads one account's stored payloads of the last days, newest first, a page at a time
-- (api/filter_preview.py): without this index every page would scan the whole log of those days.
CREATE INDEX IF NOT EXISTS event_payloads_account_idx ON event_payloads (account_id, logged_on DESC, event_id DESC);
