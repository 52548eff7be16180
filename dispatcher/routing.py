"""Where a failed or deferred delivery goes next: pure functions (docs/architecture.md#retries).

attempt 1 fails -> retry.10s (due +10 s); 2 -> retry.60s (+60 s); 3 -> retry.5m (+300 s); 4 -> dead.
The attempt number travels with the task, never derived from consumer state, so any dispatcher can
pick up any retry. The schedule itself lives in schemas/retry_schedule.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.retry_schedule import DELAYS_S, MAX_ATTEMPTS, STAGES
from schemas.retry_schedule import Stage as DelayStage
from schemas.topics import Topics

Stage = DelayStage | Literal["dead"]


@dataclass(frozen=True, slots=True)
class FailureRoute:
    stage: Stage
    topic: str
    next_attempt: int  # for "dead": the attempt that failed last
    due_at_ms: int  # for "dead": when it was dead-lettered


def route_failure(
    failed_attempt: int, failed_at_ms: int, topics: Topics, delays_s: tuple[float, float, float] = DELAYS_S
) -> FailureRoute:
    """The delay topic (or the dead-letter topic) for a task whose attempt `failed_attempt` just failed."""
    if not 1 <= failed_attempt <= MAX_ATTEMPTS:
        raise ValueError(f"attempt must be 1..{MAX_ATTEMPTS} (got {failed_attempt})")
    if failed_attempt == MAX_ATTEMPTS:
        return FailureRoute("dead", topics.dead, failed_attempt, failed_at_ms)
    index = failed_attempt - 1
    return FailureRoute(
        STAGES[index], topics.retries[index], failed_attempt + 1, failed_at_ms + round(delays_s[index] * 1000)
    )


def route_park(
    attempt: int, now_ms: int, topics: Topics, delays_s: tuple[float, float, float] = DELAYS_S
) -> FailureRoute:
    """A deferred delivery (a slow or hanging webhook): first delay topic, same attempt number (nothing
    was tried)."""
    return FailureRoute(STAGES[0], topics.retry_10s, attempt, now_ms + round(delays_s[0] * 1000))
