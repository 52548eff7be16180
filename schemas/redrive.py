"""A dead letter or a past event queued again: one shape for every writer (the API's Recover, replay and the
CLI, the recorder's redrive on recovery)."""

from __future__ import annotations

from schemas.models import DeliveryTask, Event


def fresh_task(event: Event, webhook_id: str, now_ms: int, replay_id: str | None = None) -> DeliveryTask:
    """`event` for `webhook_id` as a fresh attempt 1, due at once (redrive, replay)."""
    return DeliveryTask(event=event, webhook_id=webhook_id, attempt=1, due_at=now_ms, replay_id=replay_id)


def fresh_attempt(dead: DeliveryTask, now_ms: int) -> DeliveryTask:
    """The same event for the same webhook, starting over at attempt 1, due at once."""
    return fresh_task(dead.event, dead.webhook_id, now_ms)
