"""Rows of the delivery log as PostgreSQL stores them: one shaping for every writer (the recorder's
batches and the API's Test), so both write the same columns and survive the same odd input."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel

from schemas.models import AttemptRecord


def without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; replace it so one odd response never blocks the log."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def storable_text(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "\ufffd")


ATTEMPT_COLUMNS = (
    "attempt_id",
    "event_id",
    "event_type",
    "account_id",
    "webhook_id",
    "attempt",
    "outcome",
    "status_code",
    "error",
    "response_ms",
    "response_excerpt",
    "attempted_at",
    "next_step",
    "test",
    "replay_id",
)


def attempt_row(record: AttemptRecord) -> tuple[object, ...]:
    """One delivery_attempts row, in ATTEMPT_COLUMNS order."""
    return (
        record.attempt_id,
        record.event_id,
        str(record.event_type),
        record.account_id,
        record.webhook_id,
        record.attempt,
        str(record.outcome),
        record.status_code,
        storable_text(record.error),
        record.response_ms,
        storable_text(record.response_excerpt),
        record.attempted_at,
        record.next_step,
        record.test,
        record.replay_id,
    )


def json_text(model: BaseModel) -> str:
    """The model's wire JSON, made storable as jsonb.

    A U+0000 anywhere in the model is written as the escape `\\u0000`, so JSON without that text has
    nothing to replace and is stored as serialised; only the rest is parsed and cleaned (the recorder
    stores one payload per delivery, and the parse and re-dump cost it 25 us each).
    """
    text = model.model_dump_json()
    if "\\u0000" not in text:
        return text
    return json.dumps(without_nul(json.loads(text)), separators=(",", ":"))


def log_day(at: datetime) -> date:
    """The UTC day, hence the partition, a row of the log belongs to."""
    return at.astimezone(UTC).date()


def payload_rows(records: list[AttemptRecord]) -> list[tuple[str, str, str, date]]:
    """event_payloads rows (event id, account id, event JSON, log day): one per event and day of the log
    carried by the records, so each day partition holds the payloads its attempts need."""
    rows: dict[tuple[str, date], tuple[str, str, str, date]] = {}
    for record in records:
        if record.event is None:
            continue
        key = (record.event.id, log_day(record.attempted_at))
        if key not in rows:
            rows[key] = (record.event.id, record.event.account_id, json_text(record.event), key[1])
    return list(rows.values())


INSERT_PAYLOAD = (
    "INSERT INTO event_payloads (event_id, account_id, event, logged_on) VALUES (%s, %s, %s::json, %s) "
    "ON CONFLICT (event_id, logged_on) DO NOTHING"
)


LATENCY_BOUNDS_MS = (
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500,
    600, 800, 1000, 1200, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000,
)  # fmt: skip
"""Lower bounds of the response-time histogram's buckets (each at most ~25% wide): bucket i holds the times in
[bound i-1, bound i), bucket 0 those below 1 ms, the last those of 10 s and more. Migration 0008 backfilled
with these same bounds (a unit test checks it)."""

_HOUR = "date_bin('1 hour', attempted_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
_BOUNDS = "'{" + ",".join(map(str, LATENCY_BOUNDS_MS)) + "}'::int[]"
_BUCKETS = ", ".join(
    f"count(*) FILTER (WHERE width_bucket(response_ms, {_BOUNDS}) = {i})" for i in range(len(LATENCY_BOUNDS_MS) + 1)
)


def rollup_sql(source: str) -> str:
    """Add the attempts of `source` (a table, a CTE or a subquery with the delivery_attempts columns) to
    `webhook_stats_hourly`: per webhook and UTC hour, attempts by outcome and a response-time histogram.

    Why a rollup: the health view reads at most 168 rows per webhook instead of aggregating up to millions of
    log rows (bench/RESULTS.md "Webhook health stats"). Rows are added in (webhook, hour) order, so two
    writers lock them in the same order and never deadlock. `dropped` rows are no attempt.
    """
    return (
        "INSERT INTO webhook_stats_hourly AS s (webhook_id, hour, account_id, success, http_error, timeout,"  # noqa: S608 - `source` is a fixed text of the callers
        " connection_error, first_attempts, latency) "
        f"SELECT webhook_id, {_HOUR}, min(account_id),"
        " count(*) FILTER (WHERE outcome = 'success'), count(*) FILTER (WHERE outcome = 'http_error'),"
        " count(*) FILTER (WHERE outcome = 'timeout'),"
        " count(*) FILTER (WHERE outcome IN ('connection_error', 'tls_error', 'blocked')),"
        f" count(*) FILTER (WHERE attempt = 1), ARRAY[{_BUCKETS}]::int[] "
        f"FROM {source} WHERE outcome <> 'dropped' GROUP BY 1, 2 ORDER BY 1, 2 "
        "ON CONFLICT (webhook_id, hour) DO UPDATE SET success = s.success + excluded.success,"
        " http_error = s.http_error + excluded.http_error, timeout = s.timeout + excluded.timeout,"
        " connection_error = s.connection_error + excluded.connection_error,"
        " first_attempts = s.first_attempts + excluded.first_attempts,"
        " latency = ARRAY(SELECT a + b FROM unnest(s.latency, excluded.latency)"
        " WITH ORDINALITY AS t(a, b, i) ORDER BY i)"
    )
