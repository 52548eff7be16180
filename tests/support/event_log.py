"""One event's trail in the delivery log, written by the recorder's own batch write (attempts and a dead letter),
for the tests of the event view through the CLI and the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from delivery.deliverer import DeliveryResult, attempt_record
from producer.publisher import build_event
from recorder.batch import Batch, DeadLetter
from recorder.store import RecorderStore
from schemas.catalog import EventType
from schemas.models import DeliveryTask, NextStep, Outcome


def log_event(database_url: str, account: str, webhooks: tuple[str, str]) -> str:
    """One event as the recorder logs it: delivered to the first webhook on attempt 2, dead-lettered at the second."""
    now = datetime.now(UTC) - timedelta(minutes=10)
    event = build_event(account, EventType.MESSAGE_READ, {"message_id": "m-7"}, created_at=now)
    delivered, dead = webhooks
    batch = Batch()
    steps: list[tuple[str, int, int, NextStep]] = [(delivered, 1, 500, "retry"), (delivered, 2, 200, "done")]
    steps += [(dead, n, 503, "dead" if n == 4 else "retry") for n in (1, 2, 3, 4)]
    for offset, (webhook_id, attempt, status, step) in enumerate(steps):
        outcome = Outcome.SUCCESS if status == 200 else Outcome.HTTP_ERROR
        at = now + timedelta(seconds=offset)
        result = DeliveryResult(outcome, status, None if status == 200 else f"http {status}", 40 + offset, "", at)
        batch.add("attempts", 0, offset, attempt_record(event, webhook_id, attempt, result, step))
    task = DeliveryTask(
        event=event, webhook_id=dead, attempt=4, due_at=int((now.timestamp() + 6) * 1000), last_error="http 503"
    )
    batch.add("dead", 0, len(steps), DeadLetter(task))
    store = RecorderStore(database_url)
    try:
        store.write(batch)
    finally:
        store.close()
    return event.id
