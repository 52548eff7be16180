"""Redrive on recovery in the recorder's store, against real PostgreSQL: what a recovery queues, in which
order and how often; how the queue drains, paced, one recorder per webhook, and what a crash leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from recorder.batch import Batch, DeadLetter
from recorder.store import RecorderStore, RedriveBacklog, RedriveItem, RedriveSent
from schemas.models import AttemptRecord, DeliveryTask
from schemas.topics import Topics
from tests.integration.recorder_fixtures import insert_webhook, make_attempt, make_dead_task, scalar

pytestmark = pytest.mark.integration

FAST = timedelta(0)
"""Every queued row is due at once."""


def _batch(*items: AttemptRecord | DeliveryTask) -> Batch:
    batch = Batch()
    for offset, item in enumerate(items):
        if isinstance(item, DeliveryTask):
            batch.add(Topics().dead, 0, offset, DeadLetter(item))
        else:
            batch.add(Topics().attempts, 0, offset, item)
    return batch


def _opted_in_webhook(database_url: str) -> str:
    webhook = insert_webhook(database_url, changed_at=datetime.now(UTC) - timedelta(hours=2))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE webhooks SET redrive_on_recovery = true WHERE id = %s", (webhook,))
    return webhook


def _fail(store: RecorderStore, webhook: str, minutes_ago: list[int]) -> list[DeliveryTask]:
    """Dead letters at those times (one batch): the webhook turns failing."""
    now = datetime.now(UTC)
    dead = [make_dead_task(webhook, dead_at=now - timedelta(minutes=m)) for m in minutes_ago]
    store.write(_batch(*dead))
    return dead


def _redriven_at(database_url: str, task: DeliveryTask) -> datetime | None:
    return scalar(  # type: ignore[no-any-return]
        database_url,
        "SELECT redriven_at FROM dead_letters WHERE webhook_id = %s AND event_id = %s",
        (task.webhook_id, task.event.id),
    )


def test_a_recovery_queues_its_spells_dead_letters_oldest_first_once_and_a_failed_send_leaves_them_queued(
    database_url: str,
) -> None:
    store = RecorderStore(database_url)
    webhook = _opted_in_webhook(database_url)
    # Given three dead letters written newest first in one batch (the webhook turns failing at the oldest)
    dead = _fail(store, webhook, [10, 30, 20])
    assert scalar(database_url, "SELECT failing_since FROM webhooks WHERE id = %s", (webhook,)) == min(
        datetime.fromtimestamp(d.due_at / 1000, UTC) for d in dead
    )
    # When a delivery succeeds: the recovery queues all three, oldest first, and marks them redriven
    result = store.write(_batch(make_attempt(webhook)))
    assert result.redrives_queued == 3
    oldest_first = [d.event.id for d in sorted(dead, key=lambda d: d.due_at)]
    assert all(_redriven_at(database_url, d) is not None for d in dead)

    # When the send fails (the broker unreachable, or a crash before the commit): nothing is lost
    def broken(items: list[RedriveItem]) -> RedriveSent:
        raise psycopg.OperationalError("the recorder died here")

    with pytest.raises(psycopg.OperationalError):
        store.drain_redrives(broken, FAST)
    assert scalar(database_url, "SELECT count(*) FROM recovery_redrives") == 3
    # Then the next drain sends them in queue order, once, and deletes them
    sent: list[RedriveItem] = []

    def send(items: list[RedriveItem]) -> RedriveSent:
        sent.extend(items)
        return RedriveSent(refused=[], held=[])

    assert store.drain_redrives(send, FAST) == 3
    assert [item.event_id for item in sent] == oldest_first
    assert [DeliveryTask.model_validate_json(i.task_json).event.id for i in sent] == oldest_first
    assert store.drain_redrives(send, FAST) == 0 and len(sent) == 3
    # And a second spell and recovery queue only its own dead letter, not the first spell's again
    [again] = _fail(store, webhook, [0])
    assert store.write(_batch(make_attempt(webhook))).redrives_queued == 1
    assert store.drain_redrives(send, FAST) == 1 and sent[-1].event_id == again.event.id
    store.close()


def test_the_queue_is_paced_per_webhook_skips_a_webhook_another_recorder_drains_and_hands_back_refused_rows(
    database_url: str,
) -> None:
    store = RecorderStore(database_url)
    webhook = _opted_in_webhook(database_url)
    plain = insert_webhook(database_url, changed_at=datetime.now(UTC) - timedelta(hours=2))
    dead = _fail(store, webhook, [3, 2, 1])
    _fail(store, plain, [3])
    result = store.write(_batch(make_attempt(webhook), make_attempt(plain)))
    assert result.redrives_queued == 3  # the webhook that did not opt in queues nothing
    assert scalar(database_url, "SELECT count(*) FROM recovery_redrives WHERE webhook_id = %s", (plain,)) == 0
    sent: list[RedriveItem] = []

    def send(items: list[RedriveItem]) -> RedriveSent:
        sent.extend(items)
        return RedriveSent(refused=[], held=[])

    # Paced: with one row an hour, only the first is due
    assert store.drain_redrives(send, timedelta(hours=1)) == 1 and sent[0].event_id == dead[0].event.id
    assert store.drain_redrives(send, timedelta(hours=1)) == 0
    # Another recorder draining this webhook (its advisory lock held) is left alone
    lock_key = "hashtextextended('hookfleet.recovery_redrive:' || %s, 0)"
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute(f"SELECT pg_advisory_lock({lock_key})", (webhook,))
        assert store.drain_redrives(send, FAST) == 0
        other.execute(f"SELECT pg_advisory_unlock({lock_key})", (webhook,))  # a closing session frees it later

    # A row that can never be sent is dropped from the queue and its dead letter left for a manual Recover
    def poison(items: list[RedriveItem]) -> RedriveSent:
        return RedriveSent(refused=[i for i in items if i.event_id == dead[1].event.id], held=[])

    assert store.drain_redrives(poison, FAST) == 1  # two claimed, one of them never sendable
    assert scalar(database_url, "SELECT count(*) FROM recovery_redrives") == 0
    assert _redriven_at(database_url, dead[1]) is None and _redriven_at(database_url, dead[2]) is not None
    store.close()


def test_rows_a_send_holds_stay_queued_and_only_those(database_url: str) -> None:
    # Given two recovered webhooks with queued redrives
    store = RecorderStore(database_url)
    held_webhook, other = _opted_in_webhook(database_url), _opted_in_webhook(database_url)
    held_dead = _fail(store, held_webhook, [3, 2, 1])
    _fail(store, other, [2, 1])
    store.write(_batch(make_attempt(held_webhook), make_attempt(other)))
    first = sorted(held_dead, key=lambda d: d.due_at)[0].event.id

    # When the send holds one webhook's tasks from its second on (its partition refused them for now)
    def holding(items: list[RedriveItem]) -> RedriveSent:
        mine = [i for i in items if i.webhook_id == held_webhook]
        return RedriveSent(refused=[], held=mine[1:])

    assert store.drain_redrives(holding, FAST) == 3  # the other's two and the held webhook's first
    # Then only the held rows stay queued, their dead letters still marked redriven; the next drain sends them
    rows = "SELECT count(*) FROM recovery_redrives WHERE webhook_id = %s"
    assert scalar(database_url, rows, (held_webhook,)) == 2 and scalar(database_url, rows, (other,)) == 0
    assert all(_redriven_at(database_url, d) is not None for d in held_dead)
    sent: list[RedriveItem] = []

    def send(items: list[RedriveItem]) -> RedriveSent:
        sent.extend(items)
        return RedriveSent(refused=[], held=[])

    assert store.drain_redrives(send, FAST) == 2
    assert {i.webhook_id for i in sent} == {held_webhook} and first not in {i.event_id for i in sent}
    store.close()


def _queue(database_url: str, webhook: str, positions: range, queued: str) -> None:
    """Queued redrives of `webhook` at those positions; `queued` is a PostgreSQL interval before now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for position in positions:
            conn.execute(
                "INSERT INTO recovery_redrives (webhook_id, event_id, position, queued_at, task)"
                " VALUES (%s, %s, %s, now() - %s::interval, '{}')",
                (webhook, f"evt_{webhook}_{position}", position, queued),
            )


def test_the_backlog_counts_every_queued_redrive_and_how_long_the_most_overdue_one_waited_past_its_due_time(
    database_url: str,
) -> None:
    store = RecorderStore(database_url)
    hour = timedelta(hours=1)  # one redrive an hour per webhook: row n is due n hours after its queue began
    try:
        assert store.redrive_backlog(hour) == RedriveBacklog(0, 0.0)
        # Given a queue that began now, its first row sent: the rest are due later, none is overdue
        fresh = insert_webhook(database_url, changed_at=datetime.now(UTC))
        _queue(database_url, fresh, range(1, 3), "0 seconds")
        assert store.redrive_backlog(hour) == RedriveBacklog(2, 0.0)

        # When another webhook's queue began 20 minutes ago and nothing sent its first row
        stuck = insert_webhook(database_url, changed_at=datetime.now(UTC))
        _queue(database_url, stuck, range(3), "20 minutes")
        backlog = store.redrive_backlog(hour)

        # Then every row is counted, and the overdue wait is that first row's, due 20 minutes ago
        assert backlog.queued == 5
        assert 20 * 60 <= backlog.oldest_overdue_s < 21 * 60
    finally:
        store.close()
