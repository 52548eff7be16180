-- The delivery log partitioned by day (docs: README "Retention and replay"), so retention drops whole
-- partitions instead of running a DELETE that locks and bloats the table; and the replays of a webhook.
--
-- Keys. A partitioned table's unique keys must contain the partition key:
--   delivery_attempts: PRIMARY KEY (attempt_id, attempted_at). attempt_id is a ULID made once per attempt,
--     so it stays unique by construction; a replayed Kafka record carries the same attempted_at, lands in the
--     same partition and meets ON CONFLICT (attempt_id, attempted_at) DO NOTHING: the recorder stays idempotent.
--   event_payloads: PRIMARY KEY (event_id, logged_on), logged_on = the UTC day of the attempt that carried it.
--     One payload per event per day of the log: a delivery whose retries cross midnight, or a later replay,
--     stores the payload again in that day's partition, so every row of the log has its payload in a
--     partition dropped no earlier than its own (Redeliver works for every row still listed).
--
-- Idempotent: a table that is already partitioned is left alone. An existing table is copied whole into the
-- new layout inside this migration's transaction (no row is lost; the old table is dropped only after).

-- A day's partitions are made as plain tables, then attached: ATTACH PARTITION takes only a SHARE UPDATE
-- EXCLUSIVE lock on the parent (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE), so writers and
-- readers of the log never wait for a new day; attaching builds the parent's indexes on the empty table.
CREATE OR REPLACE FUNCTION hookfleet_create_log_day(day date) RETURNS boolean AS $$
DECLARE
    suffix text := to_char(day, 'YYYYMMDD');
    created boolean := false;
BEGIN
    -- Two recorders (or a recorder and the API) creating the same day take turns instead of colliding.
    PERFORM pg_advisory_xact_lock(hashtext('hookfleet_log_day:' || current_schema()));
    IF to_regclass('delivery_attempts_p' || suffix) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE delivery_attempts INCLUDING DEFAULTS)', 'delivery_attempts_p' || suffix);
        EXECUTE format(
            'ALTER TABLE delivery_attempts ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            'delivery_attempts_p' || suffix,
            day::timestamp AT TIME ZONE 'UTC',
            (day + 1)::timestamp AT TIME ZONE 'UTC'
        );
        created := true;
    END IF;
    IF to_regclass('event_payloads_p' || suffix) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE event_payloads INCLUDING DEFAULTS)', 'event_payloads_p' || suffix);
        EXECUTE format(
            'ALTER TABLE event_payloads ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            'event_payloads_p' || suffix, day, day + 1
        );
        created := true;
    END IF;
    RETURN created;
END;
$$ LANGUAGE plpgsql;

DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    first_day date;
    d date;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('delivery_attempts')) = 'r' THEN
        ALTER TABLE delivery_attempts RENAME TO delivery_attempts_unpartitioned;
        ALTER INDEX delivery_attempts_pkey RENAME TO delivery_attempts_unpartitioned_pkey;
        ALTER INDEX delivery_attempts_webhook_idx RENAME TO delivery_attempts_unpartitioned_webhook_idx;
        ALTER INDEX delivery_attempts_event_idx RENAME TO delivery_attempts_unpartitioned_event_idx;
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('event_payloads')) = 'r' THEN
        ALTER TABLE event_payloads RENAME TO event_payloads_unpartitioned;
        ALTER INDEX event_payloads_pkey RENAME TO event_payloads_unpartitioned_pkey;
    END IF;

    CREATE TABLE IF NOT EXISTS delivery_attempts (
        attempt_id        text NOT NULL,
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
        recorded_at       timestamptz NOT NULL DEFAULT now(),
        replay_id         text,
        PRIMARY KEY (attempt_id, attempted_at)
    ) PARTITION BY RANGE (attempted_at);
    -- "Latest deliveries of a webhook", newest first, with a stable cursor (one index per partition).
    CREATE INDEX IF NOT EXISTS delivery_attempts_webhook_idx
        ON delivery_attempts (webhook_id, attempted_at DESC, attempt_id DESC);
    CREATE INDEX IF NOT EXISTS delivery_attempts_event_idx ON delivery_attempts (event_id);

    CREATE TABLE IF NOT EXISTS event_payloads (
        event_id      text NOT NULL,
        account_id    text NOT NULL,
        event         jsonb NOT NULL,
        logged_on     date NOT NULL,
        recorded_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (event_id, logged_on)
    ) PARTITION BY RANGE (logged_on);

    -- Today and the next days now; the recorder keeps creating them ahead.
    FOR i IN 0..3 LOOP
        PERFORM hookfleet_create_log_day(today + i);
    END LOOP;

    IF to_regclass('delivery_attempts_unpartitioned') IS NOT NULL THEN
        SELECT min((attempted_at AT TIME ZONE 'UTC')::date) INTO first_day FROM delivery_attempts_unpartitioned;
        d := first_day;
        WHILE d IS NOT NULL AND d < today LOOP
            PERFORM hookfleet_create_log_day(d);
            d := d + 1;
        END LOOP;
        -- Rows dated beyond the days made above (a skewed clock) get their own day too.
        FOR d IN SELECT DISTINCT (attempted_at AT TIME ZONE 'UTC')::date FROM delivery_attempts_unpartitioned
                 WHERE attempted_at >= (today + 4)::timestamp AT TIME ZONE 'UTC' LOOP
            PERFORM hookfleet_create_log_day(d);
        END LOOP;
        INSERT INTO delivery_attempts (
            attempt_id, event_id, event_type, account_id, webhook_id, attempt, outcome, status_code, error,
            response_ms, response_excerpt, attempted_at, next_step, test, recorded_at)
        SELECT attempt_id, event_id, event_type, account_id, webhook_id, attempt, outcome, status_code, error,
            response_ms, response_excerpt, attempted_at, next_step, test, recorded_at
        FROM delivery_attempts_unpartitioned;
        DROP TABLE delivery_attempts_unpartitioned;
    END IF;

    IF to_regclass('event_payloads_unpartitioned') IS NOT NULL THEN
        -- Each payload goes to the day of every attempt that carried it (so it lives as long as they do), or
        -- to the day it was recorded when no attempt refers to it.
        CREATE TEMP TABLE payload_days ON COMMIT DROP AS
            SELECT p.event_id, p.account_id, p.event, p.recorded_at, days.day AS logged_on
            FROM event_payloads_unpartitioned p
            CROSS JOIN LATERAL (
                SELECT DISTINCT (a.attempted_at AT TIME ZONE 'UTC')::date AS day
                FROM delivery_attempts a WHERE a.event_id = p.event_id
                UNION
                SELECT (p.recorded_at AT TIME ZONE 'UTC')::date
                WHERE NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.event_id = p.event_id)
            ) days;
        FOR d IN SELECT DISTINCT logged_on FROM payload_days LOOP
            PERFORM hookfleet_create_log_day(d);
        END LOOP;
        INSERT INTO event_payloads (event_id, account_id, event, logged_on, recorded_at)
            SELECT event_id, account_id, event, logged_on, recorded_at FROM payload_days;
        DROP TABLE event_payloads_unpartitioned;
    END IF;
END;
$$;

-- A replay: the events of one webhook in a time range, re-enqueued as fresh attempts 1 at a bounded rate.
CREATE TABLE IF NOT EXISTS replays (
    id            text PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    webhook_id    text NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    since         timestamptz NOT NULL,
    until         timestamptz NOT NULL,
    event_types   text[],
    only_failed   boolean NOT NULL,
    total         integer NOT NULL,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX IF NOT EXISTS replays_webhook_idx ON replays (webhook_id, created_at);

-- The events a replay selected (fixed when it starts, so its count is the dry run's), and when each was queued.
CREATE TABLE IF NOT EXISTS replay_events (
    replay_id     text NOT NULL REFERENCES replays(id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    event_id      text NOT NULL,
    queued_at     timestamptz,
    PRIMARY KEY (replay_id, seq)
);
