"""Where a failed or deferred delivery goes next: pure functions (docs/architecture.md#retries).

attempt 1 fails -> retry.10s (due +10 s); 2 -> retry.60s (+60 s); 3 -> retry.5m (+300 s); 4 -> dead.
The attempt number travels with the task, never derived from consumer state, so any dispatcher can
pick up any retry. The schedule itself lives in schemas/retry_schedule.py.

Per-status policy (docs/architecture.md#failure-policy):
- `410 Gone`: the receiver says the endpoint no longer exists: no further attempt, the webhook is
  switched off (stage "disabled"; the recorder applies it from the attempt record).
- `429` / `503` with `Retry-After`: the next attempt is due no earlier than the schedule *and* no earlier
  than Retry-After, capped at `cap_s`. The attempt count and the dead-letter rule do not change.
- everything else: the schedule.
A wait longer than the stage's own delay goes to the longest delay topic that the wait outlasts, and the
retry scheduler relays it from there until due (`schemas.retry_schedule.delay_index_for_wait`): every
delay topic then stays in due order, so a long wait never holds the tasks queued behind it and is never
held behind them either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from schemas.retry_schedule import DELAYS_S, MAX_ATTEMPTS, RETRY_AFTER_CAP_S, STAGES, delay_index_for_wait
from schemas.retry_schedule import Stage as DelayStage
from schemas.topics import Topics

Stage = DelayStage | Literal["dead", "disabled"]

GONE = 410
"""The receiver says the endpoint is gone for good: stop, and switch the webhook off."""
RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Statuses whose `Retry-After` header is honoured (RFC 9110 §10.2.3 names 503 and 3xx; RFC 6585 adds 429)."""


@dataclass(frozen=True, slots=True)
class FailureRoute:
    stage: Stage
    topic: str  # for "disabled": nothing is queued; only the attempt record is written, to the attempts topic
    next_attempt: int  # for "dead" / "disabled": the attempt that failed last
    due_at_ms: int  # for "dead" / "disabled": when it was decided


def retry_wait_s(
    scheduled_s: float, status_code: int | None, retry_after_s: float | None, cap_s: float = RETRY_AFTER_CAP_S
) -> float:
    """The wait before the next attempt: the schedule's, or a longer Retry-After (429/503 only), capped."""
    if status_code not in RETRY_AFTER_STATUSES or retry_after_s is None or not math.isfinite(retry_after_s):
        return scheduled_s
    return max(scheduled_s, min(retry_after_s, cap_s))


@dataclass(frozen=True, slots=True)
class Decision:
    """What an attempt's outcome means: the step its log row records and, for a failure, where it goes."""

    step: Literal["done", "retry", "dead", "disabled"]
    route: FailureRoute | None
    """None for "done"; for "retry" the delay topic and due time, for "dead"/"disabled" when it was decided."""


DONE = Decision("done", None)
"""Every success decides the same (made once: this is on every delivery's path)."""


def decide(
    attempt: int,
    ok: bool,
    now_ms: int,
    topics: Topics,
    delays_s: tuple[float, float, float] = DELAYS_S,
    status_code: int | None = None,
    retry_after_s: float | None = None,
    cap_s: float = RETRY_AFTER_CAP_S,
) -> Decision:
    """The one outcome rule for an attempt, for unordered and ordered (FIFO) webhooks alike: a success is
    done; a failure is switched off (410), dead-lettered (attempt 4) or retried (`route_failure`). An ordered
    webhook waits out a retry in its lane instead of queueing it, which is the caller's business."""
    if ok:
        return DONE
    route = route_failure(attempt, now_ms, topics, delays_s, status_code, retry_after_s, cap_s)
    if route.stage == "disabled":
        return Decision("disabled", route)
    if route.stage == "dead":
        return Decision("dead", route)
    return Decision("retry", route)


def delay_topic_for(wait_s: float, topics: Topics, delays_s: tuple[float, float, float]) -> tuple[DelayStage, str]:
    """The longest delay topic that `wait_s` outlasts (the retry scheduler relays the rest); the shortest
    when the wait is shorter than every delay, which a retry's never is (it is at least its stage's)."""
    index = delay_index_for_wait(wait_s, delays_s)
    index = 0 if index is None else index
    return STAGES[index], topics.retries[index]


def route_failure(
    failed_attempt: int,
    failed_at_ms: int,
    topics: Topics,
    delays_s: tuple[float, float, float] = DELAYS_S,
    status_code: int | None = None,
    retry_after_s: float | None = None,
    cap_s: float = RETRY_AFTER_CAP_S,
) -> FailureRoute:
    """The delay topic (or dead letter, or switch-off) for a task whose attempt `failed_attempt` just failed."""
    if not 1 <= failed_attempt <= MAX_ATTEMPTS:
        raise ValueError(f"attempt must be 1..{MAX_ATTEMPTS} (got {failed_attempt})")
    if status_code == GONE:
        return FailureRoute("disabled", topics.attempts, failed_attempt, failed_at_ms)
    if failed_attempt == MAX_ATTEMPTS:
        return FailureRoute("dead", topics.dead, failed_attempt, failed_at_ms)
    index = failed_attempt - 1
    wait_s = retry_wait_s(delays_s[index], status_code, retry_after_s, cap_s)
    if wait_s == delays_s[index]:
        stage, topic = STAGES[index], topics.retries[index]
    else:
        stage, topic = delay_topic_for(wait_s, topics, delays_s)
    return FailureRoute(stage, topic, failed_attempt + 1, failed_at_ms + round(wait_s * 1000))


PARKS_HEADER = "hookfleet-parks"
"""How often a task has been parked: a message header, not a task field, so a dispatcher or retry scheduler
of an earlier version passes it through instead of refusing the task."""


def parks_of(headers: Sequence[tuple[str, str | bytes | None]] | None) -> int:
    """The park count a consumed task carries (0 when absent or unreadable)."""
    for name, value in headers or ():
        if name == PARKS_HEADER and isinstance(value, bytes) and value.isdigit() and len(value) < 6:
            return int(value)
    return 0


def route_park(
    attempt: int, now_ms: int, topics: Topics, delays_s: tuple[float, float, float] = DELAYS_S, parks: int = 0
) -> FailureRoute:
    """A deferred delivery (a slow or hanging webhook), same attempt number (nothing was tried).

    The first park waits the first delay (10 s), the second the second (60 s), every further one the last
    (5 min): a webhook that hangs for an hour then re-parks its backlog every 5 min instead of every 10 s,
    so what a hanging webhook costs the fleet stops growing with how long it hangs.
    """
    index = min(max(parks, 0), len(STAGES) - 1)
    return FailureRoute(STAGES[index], topics.retries[index], attempt, now_ms + round(delays_s[index] * 1000))
