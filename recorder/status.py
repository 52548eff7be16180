"""Webhook status flips (healthy <-> failing), decided in time order, no I/O.

Attempts and dead letters travel on different topics and partitions, and replays happen, so the recorder
sees them out of order. Each change therefore compares times, never arrival order:

- a success (test deliveries included) heals a `failing` webhook only if it happened after the time the
  webhook last became/stayed failing (`changed_at`); an older success changes nothing;
- a dead letter marks a `healthy` webhook failing at the dead-letter time, unless the webhook changed
  status later than that, or a success later than that is already recorded;
- a dead letter on a `failing` webhook moves `changed_at` forward to the latest dead-letter time, so a
  success that happened between two dead letters cannot heal it after the fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Literal

from recorder.batch import DeadLetter
from schemas.models import AttemptRecord, Outcome

Status = Literal["healthy", "failing"]


class Signal(IntEnum):
    # The value orders same-millisecond ties: a dead letter is applied before a success.
    DEAD = 0
    SUCCESS = 1


@dataclass(frozen=True, slots=True, order=True)
class StatusEvent:
    at: datetime
    signal: Signal


@dataclass(frozen=True, slots=True)
class WebhookState:
    status: Status
    changed_at: datetime


def status_events(attempts: Iterable[AttemptRecord], dead: Iterable[DeadLetter]) -> dict[str, list[StatusEvent]]:
    """Per webhook, the successes and dead letters of a batch, oldest first."""
    events: dict[str, list[StatusEvent]] = {}
    for record in attempts:
        if record.outcome is Outcome.SUCCESS:
            events.setdefault(record.webhook_id, []).append(StatusEvent(record.attempted_at, Signal.SUCCESS))
    for letter in dead:
        events.setdefault(letter.task.webhook_id, []).append(StatusEvent(letter.dead_at, Signal.DEAD))
    for webhook_events in events.values():
        webhook_events.sort()
    return events


def decide_status(
    current: WebhookState, events: Sequence[StatusEvent], latest_success: datetime | None
) -> WebhookState:
    """The state after applying `events` (oldest first) to `current`.

    `latest_success` is the newest recorded success of this webhook (this batch's rows included) later than
    the batch's oldest dead letter, or None: it answers "did a later success already happen?".
    """
    return replay_status(current, events, latest_success)[0]


def replay_status(
    current: WebhookState, events: Sequence[StatusEvent], latest_success: datetime | None
) -> tuple[WebhookState, datetime | None]:
    """`decide_status`, and when the webhook last went healthy -> failing in `events` (None: it did not).

    That time is the failing spell's start (`failing_since`): the dead letter that flipped it, not the
    latest one of the batch, which `changed_at` moves on to."""
    state = current
    began: datetime | None = None
    for event in events:
        if event.signal is Signal.SUCCESS:
            if state.status == "failing" and event.at > state.changed_at:
                state = WebhookState("healthy", event.at)
        elif state.status == "failing":
            if event.at > state.changed_at:
                state = WebhookState("failing", event.at)
        elif event.at > state.changed_at and (latest_success is None or latest_success <= event.at):
            state = WebhookState("failing", event.at)
            began = event.at
    return state, began
