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
    """The model's wire JSON, made storable as jsonb."""
    raw = json.loads(model.model_dump_json())
    return json.dumps(without_nul(raw), separators=(",", ":"))


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
