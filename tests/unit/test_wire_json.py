"""The delivery path's JSON builders against the pydantic models every consumer validates with."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from delivery.wire_json import attempt_json, event_bytes, task_json
from producer.publisher import build_event
from schemas.models import AttemptRecord, DeliveryTask, Event, Outcome

OPERATIONAL = build_event(
    "acct_1",
    "message.failed",
    {"webhook_id": "wh_other", "nested": {"webhook_id": "wh_x", "list": [{}]}, "text": ',"webhook_id":"wh_y"'},
)
WHEN = datetime(2026, 11, 29, 23, 59, 58, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"parked": True},
        {"last_error": 'HTTP 500 "boom" \u00e9\n,"webhook_id":"wh_z"', "replay_id": "rpl_01ABC"},
        {"last_error": "x" * 300},
    ],
)
def test_task_json_reads_as_the_model_and_gives_the_event_bytes_back(options: dict[str, object]) -> None:
    body = OPERATIONAL.body()
    raw = task_json(body, "wh_01ABC", 3, 1_700_000_000_123, **options)  # type: ignore[arg-type]
    task = DeliveryTask.model_validate_json(raw)
    expected = {"parked": False, "last_error": None, "replay_id": None} | options
    if isinstance(expected["last_error"], str):
        expected["last_error"] = expected["last_error"][:200]
    assert task == DeliveryTask.model_validate(
        {"event": OPERATIONAL, "webhook_id": "wh_01ABC", "attempt": 3, "due_at": 1_700_000_000_123, **expected}
    )
    assert event_bytes(raw, task) == body


def test_event_bytes_of_a_task_the_model_wrote() -> None:
    task = DeliveryTask(event=OPERATIONAL, webhook_id="wh_01ABC", attempt=2, due_at=5, last_error='a,"webhook_id":"b')
    raw = task.model_dump_json().encode()
    assert event_bytes(raw, DeliveryTask.model_validate_json(raw)) == OPERATIONAL.body()


@pytest.mark.parametrize(
    "raw",
    [
        # spaces after the colon: not hookfleet's layout
        b'{"event": %s, "webhook_id": "wh_01ABC", "attempt": 1, "due_at": 0}',
        # a field between the event and webhook_id: the slice would end in "1", not "}"
        b'{"event":%s,"attempt":1,"webhook_id":"wh_01ABC","due_at":0}',
        # webhook_id first
        b'{"webhook_id":"wh_01ABC","event":%s,"attempt":1,"due_at":0}',
    ],
)
def test_event_bytes_of_any_other_layout_is_the_canonical_body(raw: bytes) -> None:
    spaced = OPERATIONAL.model_dump_json(indent=1).encode()
    message = raw % spaced
    task = DeliveryTask.model_validate_json(message)
    assert event_bytes(message, task) == OPERATIONAL.body()


def _record(event: Event, **fields: object) -> dict[str, object]:
    values: dict[str, object] = {
        "attempt_id": "att_01ABC",
        "outcome": Outcome.HTTP_ERROR,
        "status_code": 503,
        "error": "HTTP 503",
        "response_ms": 12,
        "excerpt": 'busy \u00e9 "\x01\x7f',
        "attempted_at": WHEN,
        "next_step": "retry",
    }
    return values | fields


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"test": True, "replay_id": "rpl_01ABC"},
        {"outcome": Outcome.TIMEOUT, "status_code": None, "error": "timeout after 10s", "excerpt": ""},
        {"outcome": Outcome.DROPPED, "status_code": None, "response_ms": None, "next_step": "dropped"},
        {"outcome": Outcome.SUCCESS, "status_code": 200, "error": None, "next_step": "done"},
    ],
)
def test_attempt_json_is_byte_for_byte_the_models_json(fields: dict[str, object]) -> None:
    values = _record(OPERATIONAL, **fields)
    raw = attempt_json(OPERATIONAL.body(), OPERATIONAL, "wh_01ABC", 2, **values)  # type: ignore[arg-type]
    model = AttemptRecord.model_validate(
        {
            "event_id": OPERATIONAL.id,
            "event_type": OPERATIONAL.type,
            "account_id": OPERATIONAL.account_id,
            "webhook_id": "wh_01ABC",
            "attempt": 2,
            "response_excerpt": values.pop("excerpt"),
            "event": OPERATIONAL,
            **values,
        },
        strict=False,
    )
    assert raw == model.model_dump_json().encode()


def test_attempt_json_cuts_receiver_text_to_the_models_limits() -> None:
    values = _record(OPERATIONAL, error="e" * 500, excerpt="\u00e9" * 900)
    raw = attempt_json(OPERATIONAL.body(), OPERATIONAL, "wh_01ABC", 1, **values)  # type: ignore[arg-type]
    record = AttemptRecord.model_validate_json(raw)
    assert record.error == "e" * 200 and record.response_excerpt == "\u00e9" * 512
    assert record.event == OPERATIONAL
