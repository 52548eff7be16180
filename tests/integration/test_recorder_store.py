"""The recorder's transaction against the real database (no broker: batches are built directly)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from recorder.batch import Batch, DeadLetter
from recorder.status import WebhookState
from recorder.store import RecorderStore
from schemas.models import AttemptRecord, Outcome
from schemas.topics import Topics
from tests.integration.recorder_fixtures import (
    an_hour_ago,
    insert_webhook,
    make_attempt,
    make_dead_task,
    make_event,
    now_ms_precision,
    scalar,
    webhook_status,
)

pytestmark = pytest.mark.integration

TOPICS = Topics()


def batch_of(*items: AttemptRecord | DeadLetter) -> Batch:
    batch = Batch()
    for offset, item in enumerate(items):
        topic = TOPICS.attempts if isinstance(item, AttemptRecord) else TOPICS.dead
        batch.add(topic, 0, offset, item)
    return batch


def test_replayed_dead_letter_keeps_redriven_mark_but_a_new_death_resets_it(database_url: str) -> None:
    store = RecorderStore(database_url)
    webhook = insert_webhook(database_url, changed_at=an_hour_ago())
    first_death = now_ms_precision() - timedelta(minutes=10)
    task = make_dead_task(webhook, dead_at=first_death)
    store.write(batch_of(DeadLetter(task)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE dead_letters SET redriven_at = now()")

    store.write(batch_of(DeadLetter(task)))  # a replay of the same message
    assert scalar(database_url, "SELECT redriven_at IS NOT NULL FROM dead_letters") is True

    again = task.model_copy(update={"due_at": task.due_at + 400_000, "last_error": "timeout"})
    store.write(batch_of(DeadLetter(again)))  # redriven, failed four more times, dead again
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT redriven_at, dead_at, last_error, task->>'due_at' FROM dead_letters").fetchone()
    assert row == (None, first_death + timedelta(seconds=400), "timeout", str(again.due_at))
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 1
    store.close()


def test_one_batch_applies_status_events_in_time_order(database_url: str) -> None:
    store = RecorderStore(database_url)
    healed = insert_webhook(database_url, changed_at=an_hour_ago())
    broken = insert_webhook(database_url, changed_at=an_hour_ago())
    t = now_ms_precision() - timedelta(minutes=5)
    # Arrival order is the reverse of what happened for both webhooks.
    result = store.write(
        batch_of(
            make_attempt(healed, attempted_at=t + timedelta(seconds=30)),
            DeadLetter(make_dead_task(healed, dead_at=t)),
            DeadLetter(make_dead_task(broken, dead_at=t + timedelta(seconds=30))),
            make_attempt(broken, attempted_at=t),
        )
    )
    assert webhook_status(database_url, healed)[0] == "healthy"
    assert webhook_status(database_url, broken) == ("failing", t + timedelta(seconds=30))
    assert result.status_changes == {broken: WebhookState("failing", t + timedelta(seconds=30))}
    assert store.count_failing() == 1
    store.close()


def test_late_dead_letter_older_than_a_recorded_success_leaves_webhook_healthy(database_url: str) -> None:
    store = RecorderStore(database_url)
    webhook = insert_webhook(database_url, changed_at=an_hour_ago())
    t = now_ms_precision() - timedelta(minutes=5)
    store.write(batch_of(make_attempt(webhook, attempted_at=t)))  # healthy already: nothing to change
    store.write(batch_of(DeadLetter(make_dead_task(webhook, dead_at=t - timedelta(seconds=1)))))
    assert webhook_status(database_url, webhook)[0] == "healthy"
    # A failure after that success does mark it.
    store.write(batch_of(DeadLetter(make_dead_task(webhook, dead_at=t + timedelta(seconds=1)))))
    assert webhook_status(database_url, webhook) == ("failing", t + timedelta(seconds=1))
    store.close()


def test_rows_with_nul_characters_and_unknown_webhooks_do_not_block(database_url: str) -> None:
    store = RecorderStore(database_url)
    event = make_event()
    event = event.model_copy(update={"data": {"text": "a\x00b"}})
    record = make_attempt("wh_gone", event=event, outcome=Outcome.SUCCESS)
    record = record.model_copy(update={"response_excerpt": "ok\x00"})
    result = store.write(
        batch_of(record, DeadLetter(make_dead_task("wh_gone", dead_at=now_ms_precision(), event=event)))
    )
    assert result.attempts_inserted == 1
    assert result.status_changes == {}
    assert scalar(database_url, "SELECT response_excerpt FROM delivery_attempts") == "ok\ufffd"
    assert scalar(database_url, "SELECT event->'data'->>'text' FROM event_payloads") == "a\ufffdb"
    store.close()


def test_a_batch_is_all_or_nothing(database_url: str) -> None:
    store = RecorderStore(database_url)
    webhook = insert_webhook(database_url, changed_at=an_hour_ago())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE dead_letters ADD CONSTRAINT no_boom CHECK (last_error <> 'boom')")
    bad = make_dead_task(webhook, dead_at=now_ms_precision()).model_copy(update={"last_error": "boom"})
    with pytest.raises(psycopg.errors.CheckViolation):
        store.write(batch_of(make_attempt(webhook), DeadLetter(bad)))
    assert scalar(database_url, "SELECT count(*) FROM delivery_attempts") == 0
    assert webhook_status(database_url, webhook)[0] == "healthy"
    # The store reconnects after an error and the next batch goes through.
    assert store.write(batch_of(make_attempt(webhook))).attempts_inserted == 1
    store.close()
