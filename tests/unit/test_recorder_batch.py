"""Recorder batches: parsing, per-partition offsets, dropping revoked partitions, storable rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hookfleet.attempt_rows import ATTEMPT_COLUMNS, attempt_row, json_text, payload_rows, without_nul
from hookfleet.stream.diversion import Invalid
from recorder.batch import Batch, DeadLetter, Unreadable, dead_letter_row, parse_message
from schemas.catalog import EventType
from schemas.models import AttemptRecord, DeliveryTask, Event, Outcome
from schemas.topics import Topics

TOPICS = Topics.with_prefix("x.")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVENT = Event(id="evt_1", type=EventType("message.read"), created_at=T0, account_id="acct_1", data={"k": "v"})


def attempt(n: int = 1, *, event: Event | None = None, excerpt: str = "") -> AttemptRecord:
    return AttemptRecord(
        attempt_id=f"att_{n}",
        event_id="evt_1",
        event_type=EventType("message.read"),
        account_id="acct_1",
        webhook_id="wh_1",
        attempt=1,
        outcome=Outcome.HTTP_ERROR,
        status_code=500,
        response_excerpt=excerpt,
        attempted_at=T0,
        next_step="retry",
        event=event,
    )


def dead_letter(webhook: str = "wh_1", due_at: int = 1_740_830_400_000, event: Event = EVENT) -> DeadLetter:
    return DeadLetter(DeliveryTask(event=event, webhook_id=webhook, attempt=4, due_at=due_at, last_error="http 500"))


def test_parse_attempt_and_dead_letter() -> None:
    record = attempt()
    assert parse_message(TOPICS, TOPICS.attempts, b"wh_1", record.model_dump_json().encode()) == record
    letter = dead_letter()
    parsed = parse_message(TOPICS, TOPICS.dead, b"wh_1", letter.task.model_dump_json().encode())
    assert parsed == letter
    assert isinstance(parsed, DeadLetter)
    assert parsed.dead_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_garbage_is_invalid_with_a_short_reason_naming_the_problem() -> None:
    parsed = parse_message(TOPICS, TOPICS.attempts, b"k", b"not json")
    assert isinstance(parsed, Unreadable)
    assert parsed.invalid.reason.startswith("value: Invalid JSON")
    assert (parsed.source_topic, parsed.key, parsed.value) == (TOPICS.attempts, b"k", b"not json")


def test_wrong_shape_reason_names_the_field() -> None:
    body = json.loads(attempt().model_dump_json())
    body["outcome"] = "exploded"
    parsed = parse_message(TOPICS, TOPICS.attempts, None, json.dumps(body).encode())
    assert isinstance(parsed, Unreadable)
    assert "outcome" in parsed.invalid.reason
    assert len(parsed.invalid.reason) <= 200


def test_attempt_on_the_dead_topic_is_invalid() -> None:
    parsed = parse_message(TOPICS, TOPICS.dead, None, attempt().model_dump_json().encode())
    assert isinstance(parsed, Unreadable)
    assert parsed.invalid.reason.startswith("event: Input should be an object")


def test_empty_value_is_invalid() -> None:
    parsed = parse_message(TOPICS, TOPICS.dead, b"k", None)
    assert isinstance(parsed, Unreadable)
    assert parsed.invalid == Invalid("empty", "empty message value: expected a DeliveryTask JSON object")


def test_dropping_revoked_partitions_keeps_the_rest() -> None:
    batch = Batch()
    batch.add(TOPICS.attempts, 0, 1, attempt(1))
    batch.add(TOPICS.attempts, 1, 1, attempt(2))
    batch.add(TOPICS.dead, 1, 5, dead_letter())
    assert batch.drop({(TOPICS.attempts, 1), (TOPICS.dead, 1), (TOPICS.dead, 2)}) == 2
    assert batch.size == 1
    assert [a.attempt_id for a in batch.attempts] == ["att_1"]
    assert batch.dead_letters == []
    assert list(batch.shares) == [(TOPICS.attempts, 0)]


def test_invalid_messages_are_cleared_once_routed() -> None:
    batch = Batch()
    batch.add(TOPICS.attempts, 0, 1, Unreadable(TOPICS.attempts, None, b"x", Invalid("invalid_value", "bad")))
    batch.clear_invalid()
    assert batch.invalid == []
    assert batch.size == 1, "still counted: its offset is committed with the batch"


def test_dead_letters_are_unique_per_webhook_and_event_keeping_the_latest() -> None:
    batch = Batch()
    batch.add(TOPICS.dead, 0, 1, dead_letter(due_at=2_000))
    batch.add(TOPICS.dead, 1, 1, dead_letter(due_at=5_000))
    batch.add(TOPICS.dead, 1, 2, dead_letter(due_at=3_000))
    batch.add(TOPICS.dead, 1, 3, dead_letter(webhook="wh_2", due_at=1_000))
    got = sorted((d.task.webhook_id, d.task.due_at) for d in batch.dead_letters)
    assert got == [("wh_1", 5_000), ("wh_2", 1_000)]


def test_nul_characters_cannot_reach_postgresql() -> None:
    row = attempt(excerpt="ok\x00tail")
    assert dict(zip(ATTEMPT_COLUMNS, attempt_row(row), strict=True))["response_excerpt"] == "ok\ufffdtail"
    assert without_nul({"a\x00": ["x\x00", 1, None, {"b": "\x00"}]}) == {
        "a\ufffd": ["x\ufffd", 1, None, {"b": "\ufffd"}]
    }
    event = Event(id="evt_2", type=EventType("contact.created"), created_at=T0, account_id="acct_1", data={"n": "\x00"})
    task_json = dead_letter_row(dead_letter(event=event))[4]
    assert isinstance(task_json, str)
    assert "\\u0000" not in task_json
    assert json.loads(task_json)["event"]["data"] == {"n": "\ufffd"}


def test_json_text_replaces_nul_only_where_there_is_one() -> None:
    def event(data: dict[str, str]) -> Event:
        return Event(id="evt_3", type=EventType("contact.created"), created_at=T0, account_id="acct_1", data=data)

    clean = event({"n": "é"})
    assert json_text(clean) == clean.model_dump_json()  # stored as serialised
    literal = event({"n": "\\u0000"})  # six characters, not a NUL: kept
    assert json.loads(json_text(literal))["data"] == {"n": "\\u0000"}
    nul = event({"k\x00": "a\x00"})
    assert "\\u0000" not in json_text(nul)
    assert json.loads(json_text(nul))["data"] == {"k\ufffd": "a\ufffd"}


def test_attempt_row_follows_the_column_order() -> None:
    row = dict(zip(ATTEMPT_COLUMNS, attempt_row(attempt()), strict=True))
    assert row["attempt_id"] == "att_1"
    assert row["outcome"] == "http_error"
    assert row["event_type"] == "message.read"
    assert row["status_code"] == 500
    assert row["attempted_at"] == T0
    assert row["test"] is False


def test_payload_rows_once_per_event_and_only_when_carried() -> None:
    rows = payload_rows([attempt(1, event=EVENT), attempt(2, event=EVENT), attempt(3)])
    assert len(rows) == 1
    event_id, account_id, body, day = rows[0]
    assert (event_id, account_id, day) == ("evt_1", "acct_1", T0.astimezone(UTC).date())
    assert Event.model_validate_json(body) == EVENT


def test_payload_rows_once_per_event_and_log_day() -> None:
    """Each day partition of the log holds the payloads of its own attempts, so they are dropped together."""
    next_day = attempt(2, event=EVENT).model_copy(update={"attempted_at": T0 + timedelta(days=1)})
    rows = payload_rows([attempt(1, event=EVENT), next_day, attempt(3, event=EVENT)])
    assert sorted(row[3] for row in rows) == [T0.date(), (T0 + timedelta(days=1)).date()]


def test_attempt_row_carries_the_replay_id() -> None:
    row = dict(zip(ATTEMPT_COLUMNS, attempt_row(attempt(1).model_copy(update={"replay_id": "rpl_1"})), strict=True))
    assert row["replay_id"] == "rpl_1"
