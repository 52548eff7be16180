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


def stage_of(topics: Topics, topic: str) -> Stage:
    """`webhooks.retry.60s` -> "60s": the stage a delay topic holds."""
    try:
        return STAGES[topics.retries.index(topic)]
    except ValueError:
        raise ValueError(f"{topic} is not a delay topic (expected one of {', '.join(topics.retries)})") from None


def delay_of(stage: Stage, delays_s: tuple[float, float, float] = DELAYS_S) -> float:
    """The delay of `stage` in the schedule `delays_s` (the setting, or the default)."""
    return delays_s[STAGES.index(stage)]
