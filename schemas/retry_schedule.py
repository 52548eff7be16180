"""The retry schedule: how often a delivery is tried and how long each delay topic holds it
(docs/architecture.md#retries).

attempt 1 is immediate; when it fails the task waits in `retry.10s`, then `retry.60s`, then `retry.5m`;
when attempt 4 fails it is dead-lettered. Stage i's delay topic is `Topics.retries[i]`. Delays are a
setting (`retry_delays_s`, tests shorten them); these are the defaults every role starts from.
"""

from __future__ import annotations

from typing import Literal

from schemas.topics import Topics

Stage = Literal["10s", "60s", "5m"]

STAGES: tuple[Stage, Stage, Stage] = ("10s", "60s", "5m")
"""One per delay topic, in schedule order (`Topics.retries`); also the metric label of that topic."""

DELAYS_S: tuple[float, float, float] = (10.0, 60.0, 300.0)
"""How long after the failed attempt the next one is due, per stage."""

RETRY_AFTER_CAP_S = 3600.0
"""Default cap on a receiver's `Retry-After` (setting `retry_after_cap_s`): a longer wait is cut to this."""

MAX_ATTEMPTS = len(STAGES) + 1
"""Attempt 1 plus one retry per stage: attempt 4's failure is final."""

ORDER_TOLERANCE_S = 0.25
"""How far a task may be due from its topic's delay after it was written and still count as in order (the
writer stamps the message a moment after it computed `due_at`; rounding). It bounds what holding a
partition's head can add to the lateness of the tasks behind it, well inside the 1 s accuracy target;
anything further off is relayed, and the last seconds of a wait are held in memory."""


def stage_of(topics: Topics, topic: str) -> Stage:
    """`webhooks.retry.60s` -> "60s": the stage a delay topic holds."""
    try:
        return STAGES[topics.retries.index(topic)]
    except ValueError:
        raise ValueError(f"{topic} is not a delay topic (expected one of {', '.join(topics.retries)})") from None


def delay_of(stage: Stage, delays_s: tuple[float, float, float] = DELAYS_S) -> float:
    """The delay of `stage` in the schedule `delays_s` (the setting, or the default)."""
    return delays_s[STAGES.index(stage)]


def delay_index_for_wait(wait_s: float, delays_s: tuple[float, float, float] = DELAYS_S) -> int | None:
    """The delay topic for a task due `wait_s` from now: the longest delay the wait outlasts (within
    `ORDER_TOLERANCE_S`); None when the wait is shorter than every delay.

    Why the longest delay *not longer* than the wait: the retry scheduler holds a delay topic's partition
    at its head task, so a task is only on time if nothing ahead of it is due later. A task written at `w`
    to the topic of delay `d` is acted on at `min(due, w + d)`; when every task's due is at least
    `w + d - tolerance`, that instant never decreases (beyond the tolerance) along a partition, whose
    order is write order. A task put in a longer topic than its wait (due sooner than the topic's delay)
    would wait behind tasks written before it for up to the difference. What the wait exceeds the chosen
    delay by is covered by relays: at `w + d` the scheduler writes the task again, to the topic this
    function picks for what is left; a remainder shorter than every delay it holds itself.
    """
    chosen: int | None = None
    for index, delay in enumerate(delays_s):
        if delay <= wait_s + ORDER_TOLERANCE_S and (chosen is None or delay > delays_s[chosen]):
            chosen = index
    return chosen
