"""Reading delay-topic messages: a task, or a reason that names the problem without echoing the payload."""

from __future__ import annotations

import json

import pytest

from hookfleet.stream.diversion import Invalid, read_as
from schemas.models import DeliveryTask
from schemas.retry_schedule import DELAYS_S, MAX_ATTEMPTS, STAGES, delay_of, stage_of
from schemas.topics import Topics

TASK = {
    "event": {
        "id": "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W",
        "type": "message.read",
        "created_at": "2025-01-02T03:04:05.678Z",
        "account_id": "acct_42",
        "data": {"secret_looking": "s3cr3t-value"},
    },
    "webhook_id": "wh_01JD8Z6Q3K4M5N6P7R8S9T0V1W",
    "attempt": 2,
    "due_at": 1_700_000_010_000,
}


def test_valid_task_is_read() -> None:
    task = read_as(DeliveryTask, json.dumps(TASK).encode())
    assert isinstance(task, DeliveryTask)
    assert task.due_at == 1_700_000_010_000


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (None, "empty", "empty message value: expected a DeliveryTask JSON object"),
        (b"", "empty", "empty message value: expected a DeliveryTask JSON object"),
        (
            b"not json",
            "invalid_json",
            "value: Invalid JSON: expected ident at line 1 column 2",
        ),
        (
            json.dumps({**TASK, "due_at": "soon"}).encode(),
            "invalid_value",
            "due_at: Input should be a valid integer",
        ),
        (
            json.dumps({**TASK, "webhook_id": "nope", "attempt": 9}).encode(),
            "invalid_value",
            "webhook_id: String should match pattern '^wh_[0-9A-Za-z]{1,64}$' (+1 more)",
        ),
    ],
)
def test_malformed_message_names_the_problem(value: bytes | None, kind: str, reason: str) -> None:
    assert read_as(DeliveryTask, value) == Invalid(kind, reason)  # type: ignore[arg-type]


def test_reason_never_echoes_the_payload() -> None:
    bad = {**TASK, "attempt": "s3cr3t-value"}
    result = read_as(DeliveryTask, json.dumps(bad).encode())
    assert isinstance(result, Invalid)
    assert "s3cr3t" not in result.reason
    assert len(result.reason) <= 200


def test_stage_comes_from_the_delay_topic() -> None:
    topics = Topics.with_prefix("t1.")
    assert [stage_of(topics, t) for t in topics.retries] == ["10s", "60s", "5m"]
    with pytest.raises(ValueError, match="not a delay topic"):
        stage_of(topics, topics.deliveries)


def test_schedule_has_one_delay_topic_per_retry() -> None:
    topics = Topics()
    assert len(STAGES) == len(DELAYS_S) == len(topics.retries) == MAX_ATTEMPTS - 1
    assert [delay_of(stage) for stage in STAGES] == [10.0, 60.0, 300.0]
    assert delay_of("60s", (1.0, 2.0, 3.0)) == 2.0
