"""Redrive of dead letters against the real broker and the real database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from api.redrive import redrive
from hookfleet.cli import main
from hookfleet.kafka import KafkaProducer
from recorder.batch import Batch, DeadLetter
from recorder.store import RecorderStore
from schemas.models import DeliveryTask
from schemas.topics import Topics
from tests.integration.recorder_fixtures import (
    an_hour_ago,
    insert_webhook,
    make_dead_task,
    make_event,
    read_topic,
    scalar,
)

pytestmark = pytest.mark.integration


def dead_letters(database_url: str, *tasks: DeliveryTask) -> None:
    """Recorded exactly as the recorder records them from the dead topic."""
    batch = Batch()
    for offset, task in enumerate(tasks):
        batch.add(Topics().dead, 0, offset, DeadLetter(task))
    store = RecorderStore(database_url)
    store.write(batch)
    store.close()


def redriven(database_url: str, event_id: str) -> bool:
    return bool(
        scalar(database_url, "SELECT redriven_at IS NOT NULL FROM dead_letters WHERE event_id = %s", (event_id,))
    )


def test_redrive_publishes_fresh_first_attempts_of_only_that_webhook_since_the_time(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    webhook = insert_webhook(database_url, changed_at=an_hour_ago() - timedelta(hours=5))
    other = insert_webhook(database_url, changed_at=an_hour_ago() - timedelta(hours=5))
    now = datetime.now(UTC)
    old, mid, new = (make_dead_task(webhook, dead_at=now - timedelta(hours=h)) for h in (3, 2, 1))
    bystander = make_dead_task(other, dead_at=now - timedelta(hours=1))
    dead_letters(database_url, old, mid, new, bystander)

    before_ms = int(time.time() * 1000)
    count = redrive(database_url, producer, topics, webhook, since=now - timedelta(hours=2, minutes=1))
    after_ms = int(time.time() * 1000)
    assert count == 2

    published = [
        DeliveryTask.model_validate_json(m.value() or b"") for m in read_topic(kafka_bootstrap, topics.deliveries, 2)
    ]
    assert sorted(t.event.id for t in published) == sorted([mid.event.id, new.event.id])
    for task in published:
        original = mid if task.event.id == mid.event.id else new
        assert task.event == original.event  # same event, same id: receivers dedupe on it
        assert (task.webhook_id, task.attempt, task.parked, task.last_error) == (webhook, 1, False, None)
        assert before_ms <= task.due_at <= after_ms
    assert [redriven(database_url, t.event.id) for t in (old, mid, new, bystander)] == [False, True, True, False]

    # Nothing left to redrive in that window: a second run publishes nothing.
    assert redrive(database_url, producer, topics, webhook, since=now - timedelta(hours=2, minutes=1)) == 0
    assert len(read_topic(kafka_bootstrap, topics.deliveries, 3, timeout_s=3)) == 2


def test_redrive_is_limited_to_the_account_that_owns_the_webhook(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    webhook = insert_webhook(database_url, account_id="acct_owner", changed_at=an_hour_ago())
    task = make_dead_task(webhook, dead_at=datetime.now(UTC), event=make_event("acct_owner"))
    dead_letters(database_url, task)
    assert redrive(database_url, producer, topics, webhook, None, account_id="acct_intruder") == 0
    assert not redriven(database_url, task.event.id)
    assert redrive(database_url, producer, topics, webhook, None, account_id="acct_owner") == 1
    assert redriven(database_url, task.event.id)


def test_a_redriven_dead_letter_that_dies_again_can_be_redriven_again(
    kafka_bootstrap: str, topics: Topics, database_url: str, producer: KafkaProducer
) -> None:
    webhook = insert_webhook(database_url, changed_at=an_hour_ago())
    task = make_dead_task(webhook, dead_at=datetime.now(UTC) - timedelta(minutes=10))
    dead_letters(database_url, task)
    assert redrive(database_url, producer, topics, webhook, None) == 1
    dead_letters(database_url, task.model_copy(update={"due_at": task.due_at + 60_000}))
    assert not redriven(database_url, task.event.id)
    assert redrive(database_url, producer, topics, webhook, None) == 1
    assert len(read_topic(kafka_bootstrap, topics.deliveries, 2)) == 2


def test_cli_redrive_prints_the_count(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    webhook = insert_webhook(database_url, changed_at=an_hour_ago())
    dead_letters(database_url, make_dead_task(webhook, dead_at=datetime.now(UTC)))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("HOOKFLEET_TOPIC_PREFIX", topics.prefix)
    assert main(["dead-letters", "redrive", "--webhook", webhook, "--since", "2020-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out == f"redriven 1 dead letter(s) of {webhook}\n"
    assert len(read_topic(kafka_bootstrap, topics.deliveries, 1)) == 1


@pytest.mark.parametrize(
    ("since", "message"),
    [
        (
            "yesterday",
            "hookfleet: error: --since must be an RFC 3339 time such as 2025-01-31T12:00:00Z (got 'yesterday')",
        ),
        ("2025-01-31T12:00:00", "hookfleet: error: --since needs a time zone, e.g. 2025-01-31T12:00:00Z"),
    ],
)
def test_cli_redrive_bad_since_is_one_line(since: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dead-letters", "redrive", "--webhook", "wh_1", "--since", since]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(message)
